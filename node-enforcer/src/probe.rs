//! Capability probe: what this kernel lets the enforcer load, learnt by loading the
//! smallest program of each kind (`bpf/probe.bpf.c`) at start-up.

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
    /// BPF LSM programs (`lsm/bprm_check_security`, `lsm/file_open`): exec and file-write deny.
    pub bpf_lsm: Probe,
    /// BTF-typed raw tracepoints (`tp_btf`): process lifecycle.
    pub tp_btf: Probe,
    /// cgroup `sock_addr` programs (`connect4/6`, `sendmsg4/6`): network isolation.
    pub cgroup_sock_addr: Probe,
    /// The `bpf_send_signal` helper: SIGKILL at exec, the exec-deny fallback.
    pub send_signal: Probe,
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
