//! Capability probe: what this kernel lets the enforcer load, learnt by loading the
//! smallest program of each kind (`bpf/probe.bpf.c`) at start-up, and which per-syscall
//! tracepoints tracefs offers.

use std::path::{Path, PathBuf};

use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm, RawTracePoint};
use aya::{Btf, Ebpf};
use serde::Serialize;

static PROBE_OBJ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));

/// Whether one kind of program can be had here, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Probe {
    Available,
    Unavailable { reason: String },
}

impl Probe {
    pub fn is_available(&self) -> bool {
        matches!(self, Probe::Available)
    }

    /// The reason it is unavailable, or `None`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Probe::Available => None,
            Probe::Unavailable { reason } => Some(reason),
        }
    }

    fn from_result(r: Result<(), String>) -> Probe {
        match r {
            Ok(()) => Probe::Available,
            Err(e) => Probe::Unavailable { reason: e },
        }
    }
}

/// What the kernel accepts, probed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// BPF LSM programs (`lsm/bprm_check_security`): exec deny with EPERM.
    pub bpf_lsm: Probe,
    /// BTF-typed raw tracepoints (`tp_btf`): process lifecycle.
    pub tp_btf: Probe,
    /// cgroup `sock_addr` programs (`connect4/6`, `sendmsg4/6`): network isolation.
    pub cgroup_sock_addr: Probe,
    /// The `bpf_send_signal` helper: SIGKILL at exec, the exec-deny fallback.
    pub send_signal: Probe,
    /// `tracepoint/syscalls/sys_{enter,exit}_*` for every syscall of interest this kernel
    /// implements: syscall capture with one program per syscall of interest; unavailable,
    /// the `raw_tp/sys_enter`/`sys_exit` pair runs for every syscall instead.
    pub syscall_tracepoints: Probe,
}

impl Capabilities {
    /// Loads each probe program (and attaches the LSM one briefly: some kernels accept the
    /// load and refuse the attach).
    pub fn probe(btf: &Btf, cgroup_root: &std::path::Path) -> Capabilities {
        let mut ebpf = match Ebpf::load(PROBE_OBJ) {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("cannot parse the probe object: {}", error_text(&e));
                let un = Probe::Unavailable { reason };
                return Capabilities {
                    bpf_lsm: un.clone(),
                    tp_btf: un.clone(),
                    cgroup_sock_addr: un.clone(),
                    send_signal: un,
                    syscall_tracepoints: SyscallTracepoints::probe().capability(),
                };
            }
        };
        let bpf_lsm = Probe::from_result(probe_lsm(&mut ebpf, btf));
        let tp_btf = Probe::from_result(probe_tp_btf(&mut ebpf, btf));
        let cgroup_sock_addr = Probe::from_result(probe_sock_addr(&mut ebpf, cgroup_root));
        let send_signal = Probe::from_result(probe_send_signal(&mut ebpf));
        Capabilities {
            bpf_lsm,
            tp_btf,
            cgroup_sock_addr,
            send_signal,
            syscall_tracepoints: SyscallTracepoints::probe().capability(),
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the probe object"))?;
    p.try_into().map_err(|e| error_text(&e))
}

fn probe_lsm(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let p: &mut Lsm = program(ebpf, "probe_lsm")?;
    p.load("bprm_check_security", btf)
        .map_err(|e| format!("loading lsm/bprm_check_security: {}", error_text(&e)))?;
    let id = p
        .attach()
        .map_err(|e| format!("attaching lsm/bprm_check_security: {}", error_text(&e)))?;
    p.detach(id).map_err(|e| error_text(&e))
}

fn probe_tp_btf(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), String> {
    let p: &mut BtfTracePoint = program(ebpf, "probe_tp_btf")?;
    p.load("sched_process_exec", btf)
        .map_err(|e| format!("loading tp_btf/sched_process_exec: {}", error_text(&e)))
}

fn probe_sock_addr(ebpf: &mut Ebpf, cgroup_root: &std::path::Path) -> Result<(), String> {
    let p: &mut CgroupSockAddr = program(ebpf, "probe_sock_addr")?;
    p.load()
        .map_err(|e| format!("loading cgroup/connect4: {}", error_text(&e)))?;
    let dir = std::fs::File::open(cgroup_root)
        .map_err(|e| format!("opening cgroup2 root {}: {e}", cgroup_root.display()))?;
    let id = p
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| format!("attaching cgroup/connect4: {}", error_text(&e)))?;
    p.detach(id).map_err(|e| error_text(&e))
}

fn probe_send_signal(ebpf: &mut Ebpf) -> Result<(), String> {
    let p: &mut RawTracePoint = program(ebpf, "probe_send_signal")?;
    p.load().map_err(|e| {
        format!(
            "loading a program calling bpf_send_signal: {}",
            error_text(&e)
        )
    })
}

/// The syscalls of interest (x86_64 names), in the order of the `SYSCALL_TP` lines of
/// `bpf/tether.bpf.c` and of its `interesting()`: each has the programs
/// `tether_enter_NAME` and `tether_exit_NAME`.
pub const SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "connect",
    "accept",
    "accept4",
    "listen",
    "bind",
    "sendto",
    "socket",
    "ptrace",
    "setns",
    "unshare",
    "mount",
    "init_module",
    "finit_module",
    "bpf",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "memfd_create",
    "execveat",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "dup2",
    "dup3",
];

const TRACEFS: &str = "/sys/kernel/tracing";
const TRACEFS_DEBUG: &str = "/sys/kernel/debug/tracing";
const TRACEFS_MAGIC: i64 = 0x7472_6163;

/// Which per-syscall tracepoints this kernel offers for [`SYSCALLS`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyscallTracepoints {
    /// Both `sys_enter_NAME` and `sys_exit_NAME` exist.
    pub present: Vec<&'static str>,
    /// No tracepoint because the kernel does not implement the call (it is built out, e.g.
    /// `init_module` without module support: the call fails with ENOSYS and does nothing).
    pub not_implemented: Vec<&'static str>,
    /// Implemented (or not known not to be) yet without a tracepoint.
    pub missing: Vec<&'static str>,
    /// Why nothing could be looked up (no tracefs), when so.
    pub error: Option<String>,
}

impl SyscallTracepoints {
    /// Looks the tracepoints up in tracefs, mounting tracefs at `/sys/kernel/tracing` when
    /// no `events` directory is found.
    pub fn probe() -> SyscallTracepoints {
        let events = match ensure_tracefs() {
            Ok(dir) => dir.join("events/syscalls"),
            Err(e) => {
                return SyscallTracepoints {
                    missing: SYSCALLS.to_vec(),
                    error: Some(e),
                    ..SyscallTracepoints::default()
                }
            }
        };
        let mut out = SyscallTracepoints::default();
        let mut absent = Vec::new();
        for name in SYSCALLS {
            let has = |dir: &str| events.join(format!("{dir}_{name}")).join("id").exists();
            if has("sys_enter") && has("sys_exit") {
                out.present.push(*name);
            } else {
                absent.push(*name);
            }
        }
        if !absent.is_empty() {
            let weak = weak_syscall_symbols(&absent);
            for name in absent {
                if weak.contains(&name) {
                    out.not_implemented.push(name);
                } else {
                    out.missing.push(name);
                }
            }
        }
        out
    }

    /// As a capability: available, or why not.
    pub fn capability(&self) -> Probe {
        if let Some(e) = &self.error {
            return Probe::Unavailable { reason: e.clone() };
        }
        if !self.missing.is_empty() {
            return Probe::Unavailable {
                reason: format!(
                    "no tracepoint syscalls/sys_enter_/sys_exit_ for {} (CONFIG_FTRACE_SYSCALLS?)",
                    self.missing.join(", ")
                ),
            };
        }
        if self.present.is_empty() {
            return Probe::Unavailable {
                reason: "no syscall tracepoint found in tracefs".into(),
            };
        }
        Probe::Available
    }
}

/// The tracefs directory holding `events/`, mounting tracefs at `/sys/kernel/tracing` when
/// neither it nor `/sys/kernel/debug/tracing` has one.
pub fn ensure_tracefs() -> Result<PathBuf, String> {
    for dir in [TRACEFS, TRACEFS_DEBUG] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "no tracefs with an events directory at {TRACEFS} or {TRACEFS_DEBUG}, and mounting tracefs at {TRACEFS} failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !is_tracefs(TRACEFS) || !Path::new(TRACEFS).join("events").is_dir() {
        return Err(format!(
            "tracefs mounted at {TRACEFS} has no events directory"
        ));
    }
    tracing::info!(path = TRACEFS, "mounted tracefs");
    Ok(PathBuf::from(TRACEFS))
}

fn is_tracefs(p: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(p) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == TRACEFS_MAGIC
    }
}

/// Of `names`, those whose x86_64 entry point `__x64_sys_NAME` is a weak symbol in
/// `/proc/kallsyms`: the `COND_SYSCALL` stub of a syscall built out of this kernel.
fn weak_syscall_symbols(names: &[&'static str]) -> Vec<&'static str> {
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return Vec::new();
    };
    let mut weak = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(sym)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Some(name) = sym.strip_prefix("__x64_sys_") else {
            continue;
        };
        if let Some(n) = names.iter().find(|n| **n == name) {
            if kind.eq_ignore_ascii_case("w") && !weak.contains(n) {
                weak.push(*n);
            }
        }
    }
    weak
}

/// An error with its chain of sources, on one line.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    let s = s.replace(". Verifier output: ", "").replace('\n', " ");
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SYSCALLS` names exactly the `SYSCALL_TP(...)` lines of the kernel object, in order.
    #[test]
    fn syscalls_match_the_kernel_programs() {
        let src = include_str!("../bpf/tether.bpf.c");
        let in_c: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("SYSCALL_TP("))
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(in_c, SYSCALLS);
    }

    #[test]
    fn missing_tracepoints_make_the_capability_unavailable() {
        let t = SyscallTracepoints {
            present: vec!["openat"],
            not_implemented: vec!["init_module"],
            missing: vec!["openat2"],
            error: None,
        };
        let reason = t.capability().reason().unwrap_or("").to_string();
        assert!(
            reason.contains("openat2") && !reason.contains("init_module"),
            "{reason}"
        );
        let ok = SyscallTracepoints {
            missing: Vec::new(),
            ..t
        };
        assert!(ok.capability().is_available());
        let none = SyscallTracepoints {
            error: Some("no tracefs".into()),
            ..SyscallTracepoints::default()
        };
        assert_eq!(none.capability().reason(), Some("no tracefs"));
    }
}
