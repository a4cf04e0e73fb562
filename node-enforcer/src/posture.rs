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
    /// How each action the rule asks for is carried out here, in the rule's order. Filled
    /// for `detect` rules too, with what `enforce` would do, so that their alerts can say
    /// what would have happened; only `enforce` rules fill `exec_deny`, `isolates` and
    /// `kills_after_match` (what is actually applied).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<ActionPlan>,
}

/// One action of a rule and how this node carries it out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionPlan {
    /// The action as the rule names it (`block`, `kill`, `isolate`, `taint`, ...).
    pub action: String,
    pub handling: Handling,
}

/// How the node carries out one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Handling {
    /// The kernel stops execs of the rule's `exec_deny` names: refused with EPERM by
    /// `lsm/bprm_check_security` (`lsm`), else SIGKILL at `sched_process_exec`.
    ExecDeny { lsm: bool },
    /// SIGKILL of the matching process from user space, after the match.
    KillAfterMatch,
    /// The pod's cgroup is cut from the network in the kernel at the match.
    Isolate,
    /// Cannot be had on this kernel (the posture is degraded).
    Unavailable { why: String },
    /// Not the node's: the engine's responders carry it out.
    Engine,
}

impl Handling {
    /// What enforcement does with a matching event, in words.
    pub fn describe(&self) -> String {
        match self {
            Handling::ExecDeny { lsm: true } => {
                "the exec refused in the kernel with EPERM (lsm/bprm_check_security)".into()
            }
            Handling::ExecDeny { lsm: false } => {
                "SIGKILL in the kernel at exec (tp_btf/sched_process_exec), before the new image runs".into()
            }
            Handling::KillAfterMatch => "SIGKILL from user space after the match".into(),
            Handling::Isolate => {
                "the pod's cgroup cut from the network in the kernel (connect/sendmsg refused with EPERM)".into()
            }
            Handling::Unavailable { why } => format!("not possible on this node: {why}"),
            Handling::Engine => "carried out by the engine's responders, not by the node".into(),
        }
    }
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
        plan: Vec::new(),
    };
    if !r.enabled {
        p.mechanisms.push("detect: alerts only".into());
        return p;
    }
    enforcement(rules, r, caps, candidates, &mut p);
    if r.tether.mode == Mode::Detect {
        // Nothing is applied for a detect rule: only the plan stays, for its alerts'
        // dry-run actions.
        return RulePosture {
            mechanisms: vec!["detect: alerts only".into()],
            degraded: false,
            warnings: Vec::new(),
            exec_deny: Vec::new(),
            isolates: false,
            kills_after_match: false,
            ..p
        };
    }
    p
}

/// Fills the mechanisms, warnings and plan of `p` as if the rule enforced.
fn enforcement(
    rules: &RuleSet,
    r: &RuleInfo,
    caps: &Capabilities,
    candidates: &BTreeSet<String>,
    p: &mut RulePosture,
) {
    let wants = |a: ActionKind| r.tether.actions.contains(&a);
    let cond = r.condition.as_str();
    // how block and kill are had (one mechanism serves both)
    let mut stop = Handling::KillAfterMatch;
    if wants(ActionKind::Block) || wants(ActionKind::Kill) {
        let names = exec_names(rules, r, candidates, cond);
        match names {
            ExecNames::Exact(names) if !names.is_empty() => {
                let list = names.iter().cloned().collect::<Vec<_>>().join(", ");
                if caps.bpf_lsm.is_available() {
                    p.mechanisms.push(format!(
                        "block: kernel deny at exec (lsm/bprm_check_security, EPERM) of {list}"
                    ));
                    stop = Handling::ExecDeny { lsm: true };
                } else if caps.send_signal.is_available() {
                    p.mechanisms.push(format!(
                        "block: kernel SIGKILL at exec (tp_btf/sched_process_exec, before the new image runs) of {list}; BPF LSM unavailable: {}",
                        caps.bpf_lsm.reason().unwrap_or("refused")
                    ));
                    stop = Handling::ExecDeny { lsm: false };
                } else {
                    p.degraded = true;
                    let why = format!(
                        "exec block needs BPF LSM or bpf_send_signal, both unavailable ({}; {})",
                        caps.bpf_lsm.reason().unwrap_or(""),
                        caps.send_signal.reason().unwrap_or("")
                    );
                    p.warnings.push(why.clone());
                    stop = Handling::Unavailable { why };
                }
                p.exec_deny = names.into_iter().collect();
            }
            ExecNames::Exact(_) | ExecNames::None => {
                if mentions_network(cond) {
                    stop = isolate_posture(p, caps, "block (network)");
                } else if mentions_file(cond) {
                    // Rule conditions are not compiled into an in-kernel file-write deny
                    // (it would need BPF LSM `file_open`, and only a condition that is
                    // exactly "write-open below these prefixes" could become one: a prefix
                    // deny for anything less exact would refuse writes the rule allows).
                    // Say so on every kernel.
                    p.degraded = true;
                    p.kills_after_match = true;
                    p.warnings.push(format!(
                        "file-write block is not compiled into the kernel (it would need BPF LSM file_open{}): the writer is killed after the match instead, the write is not prevented",
                        caps.bpf_lsm
                            .reason()
                            .map(|r| format!(", unavailable here: {r}"))
                            .unwrap_or_default()
                    ));
                    p.mechanisms.push("kill: SIGKILL from user space after the match (the write already happened)".into());
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
    let isolate = if wants(ActionKind::Isolate) {
        isolate_posture(p, caps, "isolate")
    } else {
        Handling::Isolate
    };
    for a in &r.tether.actions {
        let handling = match a {
            ActionKind::Block | ActionKind::Kill => stop.clone(),
            ActionKind::Isolate => isolate.clone(),
            _ => {
                p.mechanisms.push(format!(
                    "{}: carried out by the engine's responders, not in the kernel",
                    a.as_str()
                ));
                Handling::Engine
            }
        };
        p.plan.push(ActionPlan {
            action: a.as_str().to_string(),
            handling,
        });
    }
}

fn isolate_posture(p: &mut RulePosture, caps: &Capabilities, what: &str) -> Handling {
    if caps.cgroup_sock_addr.is_available() {
        p.isolates = true;
        p.mechanisms.push(format!(
            "{what}: the pod's cgroup is cut in the kernel at the first match (cgroup connect4/connect6/sendmsg4/sendmsg6 refuse with EPERM)"
        ));
        Handling::Isolate
    } else {
        p.degraded = true;
        let why = format!(
            "{what} needs cgroup sock_addr programs, unavailable here: {}",
            caps.cgroup_sock_addr.reason().unwrap_or("refused")
        );
        p.warnings.push(why.clone());
        Handling::Unavailable { why }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Probe;

    fn caps(send_signal: bool, sock_addr: bool) -> Capabilities {
        let probe = |ok: bool| {
            if ok {
                Probe::Available
            } else {
                Probe::Unavailable {
                    reason: "refused (EPERM)".into(),
                }
            }
        };
        Capabilities {
            bpf_lsm: probe(false),
            tp_btf: probe(true),
            cgroup_sock_addr: probe(sock_addr),
            send_signal: probe(send_signal),
            syscall_tracepoints: probe(true),
        }
    }

    const RULES: &str = r#"
- rule: Netcat
  desc: d
  condition: evt.type = execve and container.id != host and proc.name = nc
  output: o
  priority: WARNING
  source: syscall
  tether: {mode: MODE, actions: [block, isolate, taint]}
- rule: Touch in det
  desc: d
  condition: evt.type = execve and proc.name = touch and k8s.ns.name = "det"
  output: o
  priority: WARNING
  source: syscall
  tether: {mode: MODE, actions: [kill]}
- rule: Quiet
  desc: d
  condition: evt.type = execve and proc.name = ls
  output: o
  priority: WARNING
  source: syscall
"#;

    fn postures(mode: &str, c: &Capabilities) -> Vec<RulePosture> {
        let text = RULES.replace("MODE", mode);
        let rs =
            RuleSet::from_texts(&[("r.yaml".to_string(), text)]).unwrap_or_else(|e| panic!("{e}"));
        compute(&rs, c)
    }

    fn handlings(p: &RulePosture) -> Vec<(&str, &Handling)> {
        p.plan
            .iter()
            .map(|a| (a.action.as_str(), &a.handling))
            .collect()
    }

    #[test]
    fn file_write_block_is_degraded_with_or_without_lsm() {
        let text = r#"
- rule: Write below etc
  desc: d
  condition: evt.type in (open, openat) and evt.is_open_write = true and fd.name startswith /etc/
  output: o
  priority: ERROR
  source: syscall
  tether: {mode: enforce, actions: [block]}
"#;
        let rs = RuleSet::from_texts(&[("r.yaml".to_string(), text.to_string())])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut with_lsm = caps(true, true);
        with_lsm.bpf_lsm = Probe::Available;
        for (c, says) in [
            (
                with_lsm,
                "not compiled into the kernel (it would need BPF LSM file_open)",
            ),
            (
                caps(true, true),
                "file_open, unavailable here: refused (EPERM)",
            ),
        ] {
            let p = &compute(&rs, &c)[0];
            assert!(p.degraded && p.kills_after_match, "{p:?}");
            assert!(p.warnings.iter().any(|w| w.contains(says)), "{p:?}");
            assert!(
                p.mechanisms.iter().all(|m| !m.contains("refused by lsm")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn enforce_rules_plan_and_apply() {
        let ps = postures("enforce", &caps(true, true));
        assert_eq!(ps[0].exec_deny, ["nc"]);
        assert!(ps[0].isolates && !ps[0].degraded, "{:?}", ps[0]);
        assert_eq!(
            handlings(&ps[0]),
            [
                ("block", &Handling::ExecDeny { lsm: false }),
                ("isolate", &Handling::Isolate),
                ("taint", &Handling::Engine)
            ]
        );
        // the namespace test keeps the verdict from the name alone: killed after the match
        assert!(ps[1].kills_after_match && ps[1].exec_deny.is_empty());
        assert_eq!(handlings(&ps[1]), [("kill", &Handling::KillAfterMatch)]);
        assert!(ps[2].plan.is_empty());
    }

    #[test]
    fn detect_rules_plan_what_enforce_would_do_and_apply_nothing() {
        let ps = postures("detect", &caps(true, true));
        for p in &ps {
            assert!(
                p.exec_deny.is_empty() && !p.isolates && !p.kills_after_match,
                "{p:?}"
            );
            assert!(!p.degraded && p.warnings.is_empty(), "{p:?}");
            assert_eq!(p.mechanisms, ["detect: alerts only"]);
        }
        assert_eq!(
            handlings(&ps[0]),
            [
                ("block", &Handling::ExecDeny { lsm: false }),
                ("isolate", &Handling::Isolate),
                ("taint", &Handling::Engine)
            ]
        );
        assert_eq!(handlings(&ps[1]), [("kill", &Handling::KillAfterMatch)]);
    }

    #[test]
    fn what_cannot_be_had_is_degraded_and_planned_as_unavailable() {
        let ps = postures("enforce", &caps(false, false));
        let p = &ps[0];
        assert!(p.degraded, "{p:?}");
        assert_eq!(p.warnings.len(), 2, "{p:?}");
        assert!(
            matches!(&p.plan[0].handling, Handling::Unavailable { why } if why.contains("bpf_send_signal"))
        );
        assert!(
            matches!(&p.plan[1].handling, Handling::Unavailable { why } if why.contains("sock_addr"))
        );
        // in detect mode the same rule is not degraded: nothing is asked of the kernel
        let ps = postures("detect", &caps(false, false));
        assert!(!ps[0].degraded);
        assert!(matches!(
            &ps[0].plan[1].handling,
            Handling::Unavailable { .. }
        ));
    }
}
