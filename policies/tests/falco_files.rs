//! The real Falco rules files load clean, in Falco's load order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::{RuleSet, Source};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn load(files: &[&str]) -> RuleSet {
    let paths: Vec<String> = files.iter().map(|f| format!("{FIXTURES}/{f}")).collect();
    match RuleSet::load(&paths) {
        Ok(r) => r,
        Err(e) => panic!("{} load errors:\n{e}", e.len()),
    }
}

#[test]
fn syscall_rules_load_in_falco_order() {
    let rs = load(&[
        "falco-rules/falco_rules.yaml",
        "falco-rules/falco-incubating_rules.yaml",
        "falco-rules/falco-sandbox_rules.yaml",
    ]);
    assert!(rs.rules().len() > 80, "{}", rs.rules().len());
    assert!(rs.rules().iter().all(|r| r.source == Source::Syscall));
    assert!(rs.rule("Terminal shell in container").is_some());
    // required_plugin_versions is ignored with a warning, not an error.
    assert!(rs
        .warnings()
        .iter()
        .any(|w| w.message.contains("required_plugin_versions")));
}

#[test]
fn k8s_audit_rules_load() {
    let rs = load(&["falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml"]);
    assert!(rs.rules().len() > 30, "{}", rs.rules().len());
    assert!(rs.rules().iter().all(|r| r.source == Source::K8sAudit));
    assert!(rs.rule("Attach/Exec Pod").is_some());
}

#[test]
fn falco_test_rules_load_with_falco_rules() {
    let base = "falco-k8s-audit/rules/k8s_audit";
    load(&[
        "falco-rules/falco_rules.yaml",
        &format!("{base}/engine_v4_k8s_audit_rules.yaml"),
        &format!("{base}/engine_v4/allow_only_apache_container.yaml"),
    ]);
    load(&[
        "falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml",
        &format!("{base}/allow_namespace_foo.yaml"),
        &format!("{base}/allow_user_some-user.yaml"),
        &format!("{base}/disallow_kactivity.yaml"),
    ]);
    // trust_nginx_container.yaml appends to lists that only Falco 0.34.1's copy of
    // k8s_audit_rules.yaml defines (the shared copy is newer and renamed them): Falco refuses
    // an append to an undefined list, and so does Tether, naming each list.
    let paths = [
        format!("{FIXTURES}/falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml"),
        format!("{FIXTURES}/{base}/trust_nginx_container.yaml"),
    ];
    let errs = RuleSet::load(&paths).unwrap_err();
    let text = errs.to_string();
    assert_eq!(errs.len(), 3, "{text}");
    assert!(text.contains("trust_nginx_container.yaml:1:3: list \"falco_sensitive_mount_images\": appends to or overrides a list that is not defined earlier"), "{text}");
    load(&[&format!("{base}/single_rule_with_json_pointer.yaml")]);
}

/// A `kubectl exec -it ... sh` as the node enforcer reports it fires Falco's own rule, and
/// the alert output reads as Falco's would.
#[test]
fn terminal_shell_in_container_fires_on_a_syscall_event() {
    use policies::{Alert, ContainerInfo, Event, K8sInfo, SyscallEvent};
    let rs = load(&["falco-rules/falco_rules.yaml"]);
    let mut s = SyscallEvent {
        evt_type: "execve".into(),
        time_ns: 1_700_000_000_000_000_001,
        container: ContainerInfo {
            id: "0123456789ab".into(),
            name: "web".into(),
            image_repository: "nginx".into(),
            image_tag: "1.25".into(),
            privileged: Some(false),
        },
        k8s: K8sInfo {
            ns_name: "prod".into(),
            pod_name: "web-0".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    s.proc.name = "sh".into();
    s.proc.exepath = "/bin/sh".into();
    s.proc.pname = "runc".into();
    s.proc.tty = 34816;
    s.user.name = "root".into();
    s.user.loginuid = -1;
    s.args.insert("flags".into(), "EXE_WRITABLE".into());
    let ev = Event::from_syscall(s.clone());
    let hits: Vec<String> = rs
        .evaluate(&ev)
        .iter()
        .map(|m| m.rule.name.clone())
        .collect();
    assert!(
        hits.contains(&"Terminal shell in container".to_string()),
        "{hits:?}"
    );
    let m = rs
        .evaluate(&ev)
        .into_iter()
        .find(|m| m.rule.name == "Terminal shell in container")
        .unwrap();
    assert_eq!(
        m.output,
        "A shell was spawned in a container with an attached terminal | evt_type=execve user=root user_uid=0 user_loginuid=-1 process=sh proc_exepath=/bin/sh parent=runc command=sh terminal=34816 exe_flags=EXE_WRITABLE"
    );
    let a = serde_json::to_value(Alert::from_match(&m, &ev, "node-1")).unwrap();
    assert_eq!(a["priority"], "Notice");
    assert_eq!(a["output_fields"]["proc.tty"], 34816);
    // No terminal: no alert; on the host: no alert.
    let mut no_tty = s.clone();
    no_tty.proc.tty = 0;
    assert!(!rs
        .evaluate(&Event::from_syscall(no_tty))
        .iter()
        .any(|m| m.rule.name == "Terminal shell in container"));
    let mut host = s;
    host.container.id = String::new();
    assert!(!rs
        .evaluate(&Event::from_syscall(host))
        .iter()
        .any(|m| m.rule.name == "Terminal shell in container"));
}
