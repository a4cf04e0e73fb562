//! The syscall rules the node evaluates, on events shaped as the enforcer produces them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::{ContainerInfo, Event, K8sInfo, ProcInfo, RuleSet, SyscallEvent};

fn ev(ns: &str) -> Event {
    Event::from_syscall(SyscallEvent {
        evt_type: "execve".into(),
        time_ns: 1,
        proc: ProcInfo {
            pid: 5,
            name: "cat".into(),
            args: vec!["/etc/shadow".into()],
            pname: "sh".into(),
            ..ProcInfo::default()
        },
        container: ContainerInfo {
            id: "0123456789ab".into(),
            ..ContainerInfo::default()
        },
        k8s: K8sInfo {
            ns_name: ns.into(),
            pod_name: "web-0".into(),
            ..K8sInfo::default()
        },
        ..SyscallEvent::default()
    })
}

#[test]
fn exec_rule_matches_in_its_namespace_only() {
    let text = "- macro: spawned_process\n  condition: (evt.type in (execve, execveat))\n- macro: container\n  condition: (container.id != host)\n- rule: Exec in test pod\n  desc: d\n  condition: spawned_process and container and k8s.ns.name = \"vis\"\n  output: exec %proc.cmdline parent=%proc.pname\n  priority: NOTICE\n  source: syscall\n";
    let rs = RuleSet::from_texts(&[("r.yaml".to_string(), text.to_string())]).unwrap();
    let m = rs.evaluate(&ev("vis"));
    assert_eq!(m.len(), 1, "{:?}", rs.rules());
    assert_eq!(m[0].output, "exec cat /etc/shadow parent=sh");
    assert!(rs.evaluate(&ev("other")).is_empty());
}
