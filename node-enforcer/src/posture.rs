//! Per-rule enforcement posture: which mechanism enforces a rule on this kernel, or why it
//! only detects. A rule that asks for `block` and cannot get it is loud: a warning at load,
//! a metric (`tether_node_rule_posture{...,degraded="true"}`) and `tether node status`.
//!
//! Exec deny is compiled into the kernel from the rules themselves: every enforce rule with
//! `block` or `kill` is evaluated on synthetic `execve` events of candidate binaries (the
//! executables on this host's standard paths and every word of the rule's condition), in a
//! container and on the host, with varied parents, users and arguments. The names it
//! matches for every variation go into the kernel deny map; a rule whose verdict changes with
//! anything but the name cannot be decided in the kernel and is reported as such.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use policies::{
    ActionKind, ContainerInfo, Event, K8sInfo, Mode, ProcInfo, RuleInfo, RuleSet, Source,
    SyscallEvent, UserInfo,
};
use serde::Serialize;

use crate::probe::Capabilities;

/// How one rule is enforced here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePosture {
    pub rule: String,
    /// The rule's id in kernel maps (1-based index in the rule set).
    pub rule_id: u32,
    pub mode: String,
    pub actions: Vec<String>,
    /// One line per mechanism, e.g. `block: kernel SIGKILL at exec (sched_process_exec) of nc, ncat`.
    pub mechanisms: Vec<String>,
    /// True when an action the rule asks for cannot be had as asked.
    pub degraded: bool,
    /// Why, when degraded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Binary names the kernel kills (or refuses) at exec for this rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exec_deny: Vec<String>,
    /// The rule isolates the cgroup of a matching event (in-kernel network cut).
    pub isolates: bool,
    /// The rule kills the matching process from user space (after the match).
    pub kills_after_match: bool,
}

/// Postures of every `syscall` rule.
pub fn compute(rules: &RuleSet, caps: &Capabilities) -> Vec<RulePosture> {
    let candidates = candidate_names();
    rules
        .rules()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.source == Source::Syscall)
        .map(|(i, r)| {
            one(
                rules,
                r,
                u32::try_from(i + 1).unwrap_or(u32::MAX),
                caps,
                &candidates,
            )
        })
        .collect()
}

fn one(
    rules: &RuleSet,
    r: &Arc<RuleInfo>,
    rule_id: u32,
    caps: &Capabilities,
    candidates: &BTreeSet<String>,
) -> RulePosture {
    let mut p = RulePosture {
        rule: r.name.clone(),
        rule_id,
        mode: r.tether.mode.as_str().into(),
        actions: r
            .tether
            .actions
            .iter()
            .map(|a| a.as_str().to_string())
            .collect(),
        mechanisms: Vec::new(),
        degraded: false,
        warnings: Vec::new(),
        exec_deny: Vec::new(),
        isolates: false,
        kills_after_match: false,
    };
    if r.tether.mode == Mode::Detect || !r.enabled {
        p.mechanisms.push("detect: alerts only".into());
        return p;
    }
    let wants = |a: ActionKind| r.tether.actions.contains(&a);
    let cond = r.condition.as_str();
    if wants(ActionKind::Block) || wants(ActionKind::Kill) {
        let names = exec_names(rules, r, candidates, cond);
        match names {
            ExecNames::Exact(names) if !names.is_empty() => {
                let list = names.iter().cloned().collect::<Vec<_>>().join(", ");
                if caps.bpf_lsm.is_available() {
                    p.mechanisms.push(format!(
                        "block: kernel deny at exec (lsm/bprm_check_security, EPERM) of {list}"
                    ));
                } else if caps.send_signal.is_available() {
                    p.mechanisms.push(format!(
                        "block: kernel SIGKILL at exec (tp_btf/sched_process_exec, before the new image runs) of {list}; BPF LSM unavailable: {}",
                        caps.bpf_lsm.reason().unwrap_or("refused")
                    ));
                } else {
                    p.degraded = true;
                    p.warnings.push(format!(
                        "exec block needs BPF LSM or bpf_send_signal, both unavailable ({}; {})",
                        caps.bpf_lsm.reason().unwrap_or(""),
                        caps.send_signal.reason().unwrap_or("")
                    ));
                }
                p.exec_deny = names.into_iter().collect();
            }
            ExecNames::Exact(_) | ExecNames::None => {
                if mentions_network(cond) {
                    isolate_posture(&mut p, caps, "block (network)");
                } else if mentions_file(cond) {
                    if caps.bpf_lsm.is_available() {
                        p.mechanisms.push("block: file writes refused by lsm/file_open where the rule names path prefixes; otherwise kill after match".into());
                        p.kills_after_match = true;
                    } else {
                        p.degraded = true;
                        p.kills_after_match = true;
                        p.warnings.push(format!(
                            "file-write block needs BPF LSM (lsm/file_open), unavailable here: {}; the writer is killed after the match instead, the write is not prevented",
                            caps.bpf_lsm.reason().unwrap_or("refused")
                        ));
                        p.mechanisms.push("kill: SIGKILL from user space after the match (the write already happened)".into());
                    }
                } else {
                    p.kills_after_match = true;
                    if wants(ActionKind::Block) {
                        p.degraded = true;
                        p.warnings.push("block cannot be compiled into the kernel for this rule's events: the process is killed after the match instead".into());
                    }
                    p.mechanisms
                        .push("kill: SIGKILL from user space after the match".into());
                }
            }
            ExecNames::Conditional(names) => {
                p.kills_after_match = true;
                p.degraded = wants(ActionKind::Block);
                p.warnings.push(format!(
                    "the exec verdict depends on more than the binary name ({}): it cannot be decided in the kernel; the process is killed from user space after the match",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
                p.mechanisms.push(
                    "kill: SIGKILL from user space after the match (the new image may run briefly)"
                        .into(),
                );
            }
        }
    }
    if wants(ActionKind::Isolate) {
        isolate_posture(&mut p, caps, "isolate");
    }
    for a in &r.tether.actions {
        if !matches!(
            a,
            ActionKind::Block | ActionKind::Kill | ActionKind::Isolate
        ) {
            p.mechanisms.push(format!(
                "{}: carried out by the engine's responders, not in the kernel",
                a.as_str()
            ));
        }
    }
    p
}

fn isolate_posture(p: &mut RulePosture, caps: &Capabilities, what: &str) {
    if caps.cgroup_sock_addr.is_available() {
        p.isolates = true;
        p.mechanisms.push(format!(
            "{what}: the pod's cgroup is cut in the kernel at the first match (cgroup connect4/connect6/sendmsg4/sendmsg6 refuse with EPERM)"
        ));
    } else {
        p.degraded = true;
        p.warnings.push(format!(
            "{what} needs cgroup sock_addr programs, unavailable here: {}",
            caps.cgroup_sock_addr.reason().unwrap_or("refused")
        ));
    }
}

fn mentions_network(cond: &str) -> bool {
    [
        "connect",
        "outbound",
        "inbound",
        "fd.sip",
        "fd.dip",
        "fd.sport",
        "fd.dport",
        "fd.l4proto",
        "sendto",
        "accept",
    ]
    .iter()
    .any(|w| cond.contains(w))
}

fn mentions_file(cond: &str) -> bool {
    [
        "open_write",
        "open_read",
        "evt.is_open",
        "fd.name",
        "fd.directory",
        "fd.filename",
        "openat",
        "open",
    ]
    .iter()
    .any(|w| cond.contains(w))
}

enum ExecNames {
    /// The rule matches exactly these names, whatever else the exec carries.
    Exact(BTreeSet<String>),
    /// These names match only in some contexts.
    Conditional(BTreeSet<String>),
    None,
}

fn exec_names(
    rules: &RuleSet,
    r: &RuleInfo,
    candidates: &BTreeSet<String>,
    cond: &str,
) -> ExecNames {
    let mut names: BTreeSet<String> = candidates.clone();
    for w in cond.split(|c: char| !(c.is_ascii_alphanumeric() || "._-+".contains(c))) {
        if !w.is_empty() && w.len() <= 64 && !w.contains('.') {
            names.insert(w.to_string());
        }
    }
    let mut exact = BTreeSet::new();
    let mut conditional = BTreeSet::new();
    for name in &names {
        let verdicts: Vec<bool> = VARIANTS
            .iter()
            .map(|v| fires(rules, &r.name, &synthetic_exec(name, v)))
            .collect();
        if verdicts.iter().all(|x| *x) {
            exact.insert(name.clone());
        } else if verdicts.iter().any(|x| *x) {
            conditional.insert(name.clone());
        }
    }
    if !conditional.is_empty() {
        ExecNames::Conditional(conditional)
    } else if !exact.is_empty() {
        ExecNames::Exact(exact)
    } else {
        ExecNames::None
    }
}

/// Contexts an exec is tried in: parent, user, argument and tty variations, in a container.
struct Variant {
    parent: &'static str,
    uid: i64,
    args: &'static [&'static str],
    tty: i64,
}

const VARIANTS: &[Variant] = &[
    Variant {
        parent: "runc",
        uid: 0,
        args: &[],
        tty: 0,
    },
    Variant {
        parent: "sh",
        uid: 1000,
        args: &["-c", "true"],
        tty: 34816,
    },
    Variant {
        parent: "containerd-shim",
        uid: 65534,
        args: &["--version"],
        tty: 0,
    },
];

fn synthetic_exec(name: &str, v: &Variant) -> Event {
    let ev = SyscallEvent {
        evt_type: "execve".into(),
        evt_res: 0,
        time_ns: 1,
        proc: ProcInfo {
            pid: 4242,
            ppid: 4241,
            name: name.into(),
            exe: name.into(),
            exepath: format!("/usr/bin/{name}"),
            args: v.args.iter().map(|s| (*s).to_string()).collect(),
            tty: v.tty,
            pname: v.parent.into(),
            pexe: v.parent.into(),
            pexepath: format!("/usr/bin/{}", v.parent),
            pcmdline: v.parent.into(),
            ancestors: vec![v.parent.into()],
            ancestor_exepaths: vec![format!("/usr/bin/{}", v.parent)],
            ..ProcInfo::default()
        },
        user: UserInfo {
            uid: v.uid,
            loginuid: -1,
            name: if v.uid == 0 {
                "root".into()
            } else {
                String::new()
            },
            ..UserInfo::default()
        },
        container: ContainerInfo {
            id: "0123456789ab".into(),
            ..ContainerInfo::default()
        },
        k8s: K8sInfo::default(),
        ..SyscallEvent::default()
    };
    let mut ev = ev;
    ev.args
        .insert("filename".into(), format!("/usr/bin/{name}"));
    Event::from_syscall(ev)
}

fn fires(rules: &RuleSet, rule: &str, ev: &Event) -> bool {
    rules.evaluate(ev).iter().any(|m| m.rule.name == rule)
}

/// Executables in the standard paths of this host.
fn candidate_names() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = HashSet::new();
    for dir in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ] {
        let Ok(canon) = std::fs::canonicalize(dir) else {
            continue;
        };
        if !seen.insert(canon) {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.filter_map(Result::ok) {
                if let Some(n) = e.file_name().to_str() {
                    out.insert(n.to_string());
                }
            }
        }
    }
    out
}
