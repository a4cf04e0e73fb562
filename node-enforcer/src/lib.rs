//! `tether node`: eBPF visibility and in-kernel enforcement on one node.
//!
//! The kernel side (`bpf/*.bpf.c`, compiled by `build.rs`) reports process lifecycle and the
//! syscalls Falco's stable rules need, filtered in the kernel, through one ring buffer; it
//! enforces exec deny (BPF LSM where the kernel allows it, else SIGKILL at exec) and network
//! isolation per cgroup. User space ([`loader`]) probes capabilities, loads, pins and
//! re-adopts the programs; the process table, the cgroup -> container -> pod resolver and
//! the rule evaluation turn kernel records into Falco-compatible alerts.

pub mod abi;
pub mod cgroups;
pub mod cli;
pub mod events;
pub mod falco;
pub mod loader;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod posture;
pub mod prefilter;
pub mod probe;
pub mod proctable;

pub use events::{decode, KernelEvent};
pub use loader::{Enforcer, LoadError, LoaderOptions, PIN_DIR};
pub use probe::{Capabilities, Probe};
