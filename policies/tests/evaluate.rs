//! Evaluation semantics, exceptions, append/override, the index, admission opt-in,
//! decisions and the alert wire shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::decision::{decide, DecisionOptions};
use policies::{Alert, Event, FdInfo, Mode, RuleSet, SessionFields, SyscallEvent};
use serde_json::json;

fn set(files: &[&str]) -> RuleSet {
    let files: Vec<(String, String)> = files
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("f{i}.yaml"), t.to_string()))
        .collect();
    match RuleSet::from_texts(&files) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

fn rule(name: &str, source: &str, cond: &str) -> String {
    format!("- rule: {name}\n  desc: d\n  condition: '{}'\n  output: out %{}\n  priority: NOTICE\n  source: {source}\n", cond.replace('\'', "''"), if source == "syscall" { "proc.name" } else { "ka.user.name" })
}

fn hits(rs: &RuleSet, ev: &Event) -> Vec<String> {
    rs.evaluate(ev)
        .into_iter()
        .map(|m| m.rule.name.clone())
        .collect()
}

fn sys(name: &str, args: &[&str], evt: &str) -> Event {
    let mut s = SyscallEvent {
        evt_type: evt.into(),
        time_ns: 1_700_000_000_123_456_789,
        ..Default::default()
    };
    s.proc.name = name.into();
    s.proc.args = args.iter().map(|a| a.to_string()).collect();
    s.proc.ancestors = vec!["runc".into(), "containerd-shim".into()];
    s.proc.pid = 42;
    s.fd = Some(FdInfo {
        name: "/etc/shadow".into(),
        typechar: "f".into(),
        sport: 443,
        sip: "10.0.0.1".into(),
        ..Default::default()
    });
    s.k8s.ns_name = "prod-a".into();
    Event::from_syscall(s)
}

fn audit(extra: serde_json::Value) -> Event {
    let mut v = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "verb": "create",
        "auditID": "a1", "requestURI": "/api/v1/namespaces/default/pods",
        "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
        "objectRef": {"resource": "pods", "namespace": "default", "name": "web"},
        "responseStatus": {"code": 201},
        "requestObject": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "nginx:1"}, {"image": "redis:7", "securityContext": {"privileged": true}}]}},
        "stageTimestamp": "2024-05-06T07:08:09.000000001Z"
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    Event::from_audit_value(v).unwrap()
}

#[test]
fn operators() {
    let cases: &[(&str, bool)] = &[
        ("proc.name = bash", true),
        ("proc.name == bash", true),
        ("proc.name != bash", false),
        ("proc.name in (sh, bash)", true),
        ("proc.name in ()", false),
        ("proc.name contains as", true),
        ("proc.name icontains AS", true),
        ("proc.name startswith ba", true),
        ("proc.name endswith sh", true),
        ("proc.name glob 'b*h'", true),
        ("proc.name iglob 'B*H'", true),
        ("proc.name regex '^b.sh$'", true),
        ("proc.name bcontains 6173", true),
        ("proc.name bstartswith 6261", true),
        ("proc.name bstartswith 6173", false),
        (
            "proc.pid > 41 and proc.pid >= 42 and proc.pid < 43 and proc.pid <= 42",
            true,
        ),
        ("proc.pid in (1, 42)", true),
        ("proc.cmdline = 'bash -c id'", true),
        ("proc.args contains '-c'", true),
        (
            "proc.aname[1] = runc and proc.aname[2] = containerd-shim",
            true,
        ),
        ("proc.aname = containerd-shim", true),
        ("proc.aname in (runc)", true),
        ("proc.aname[3] = x", false),
        ("not proc.aname[3] exists", true),
        ("fd.name pmatch (/etc, /usr)", true),
        ("fd.name pmatch (/et)", false),
        ("fd.directory = /etc and fd.filename = shadow", true),
        ("fd.sport = 443 and fd.sip = 10.0.0.1", true),
        ("fd.name intersects (/etc/shadow, x)", true),
        (
            "tolower(proc.name) = bash and toupper(proc.name) = BASH",
            true,
        ),
        ("len(proc.name) = 4", true),
        ("basename(fd.name) = shadow", true),
        ("proc.name = val(proc.name)", true),
        ("proc.name = val(proc.pname)", false),
        ("evt.arg.flags exists", false),
        ("container.id = host", true),
        ("k8s.ns.name glob 'prod-*'", true),
        ("user.name = root", false),
        ("user.name != root", false),
        ("thread.cap_effective contains x", false),
        ("not thread.cap_effective contains x", true),
        ("session.user exists", false),
    ];
    for (cond, want) in cases {
        let rs = set(&[&rule("R", "syscall", cond)]);
        let got = !rs
            .evaluate(&sys("bash", &["-c", "id"], "execve"))
            .is_empty();
        assert_eq!(got, *want, "{cond}");
    }
}

#[test]
fn list_fields_and_json() {
    let cases: &[(&str, bool)] = &[
        ("ka.user.groups in (dev, system:authenticated, x)", true),
        ("ka.user.groups in (dev)", false),
        ("ka.user.groups intersects (dev)", true),
        ("ka.user.groups = dev", true),
        ("ka.req.pod.containers.privileged intersects (true)", true),
        (
            "ka.req.pod.containers.image.repository in (nginx, redis)",
            true,
        ),
        ("ka.req.pod.containers.image.repository in (nginx)", false),
        ("ka.response.code startswith 2", true),
        ("ka.response.code = 201", true),
        ("jevt.value[/objectRef/resource] = pods", true),
        ("jevt.value[/responseStatus/code] = 201", true),
        (
            "json[$.requestObject.spec.containers[*].image] intersects ('redis:7')",
            true,
        ),
        ("json[$.nothing] exists", false),
        ("ka.target.subresource exists", false),
        ("ka.target.subresource != exec", false),
        ("jevt.rawtime > 0", true),
        ("len(ka.user.groups) = 2", true),
    ];
    for (cond, want) in cases {
        let rs = set(&[&rule("R", "k8s_audit", cond)]);
        assert_eq!(!rs.evaluate(&audit(json!({}))).is_empty(), *want, "{cond}");
    }
}

#[test]
fn macros_lists_append_and_override() {
    let base = "- list: shells\n  items: [sh]\n- list: all_shells\n  items: [shells, zsh]\n- macro: spawned\n  condition: evt.type = execve\n- rule: Shell\n  desc: d\n  condition: spawned and proc.name in (all_shells)\n  output: shell %proc.name\n  priority: WARNING\n";
    let ev = sys("bash", &[], "execve");
    assert!(hits(&set(&[base]), &ev).is_empty());
    // A later file appends to the list.
    let rs = set(&[base, "- list: shells\n  items: [bash]\n  append: true\n"]);
    assert_eq!(hits(&rs, &ev), ["Shell"]);
    // Override-replace the list, append to the condition, replace the priority.
    let rs = set(&[base, "- list: shells\n  items: [bash]\n  override:\n    items: replace\n- rule: Shell\n  condition: and proc.pid = 1\n  priority: ERROR\n  override:\n    condition: append\n    priority: replace\n"]);
    assert!(hits(&rs, &ev).is_empty());
    assert_eq!(
        rs.rule("Shell").unwrap().priority,
        policies::Priority::Error
    );
    // Legacy append to a rule's condition.
    let rs = set(&[base, "- list: shells\n  items: [bash]\n  append: true\n- rule: Shell\n  condition: or proc.name = never\n  append: true\n"]);
    assert_eq!(hits(&rs, &ev), ["Shell"]);
    // Disabling by name only.
    let rs = set(&[
        base,
        "- list: shells\n  items: [bash]\n  append: true\n- rule: Shell\n  enabled: false\n",
    ]);
    assert!(hits(&rs, &ev).is_empty());
    assert!(!rs.rule("Shell").unwrap().enabled);
    // A later plain definition replaces the macro.
    let rs = set(&[base, "- list: shells\n  items: [bash]\n  append: true\n- macro: spawned\n  condition: evt.type = open\n"]);
    assert!(hits(&rs, &ev).is_empty());
    assert_eq!(hits(&rs, &sys("bash", &[], "open")), ["Shell"]);
}

#[test]
fn exceptions() {
    let r = "- rule: R\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: INFO\n  exceptions:\n    - name: known\n      fields: [proc.name, k8s.ns.name]\n      comps: [=, in]\n      values:\n        - [bash, [prod-a, prod-b]]\n    - name: by_name\n      fields: proc.name\n      values: [zsh, fish]\n";
    let rs = set(&[r]);
    assert!(hits(&rs, &sys("bash", &[], "execve")).is_empty());
    assert!(hits(&rs, &sys("zsh", &[], "execve")).is_empty());
    assert_eq!(hits(&rs, &sys("sh", &[], "execve")), ["R"]);
    // Appending exception values in a later file.
    let rs = set(&[r, "- rule: R\n  exceptions:\n    - name: by_name\n      values: [sh]\n  override:\n    exceptions: append\n"]);
    assert!(hits(&rs, &sys("sh", &[], "execve")).is_empty());
}

#[test]
fn index_runs_only_possible_rules_and_keeps_order() {
    let rs = set(&[&format!(
        "{}{}{}{}",
        rule(
            "Exec",
            "syscall",
            "evt.type in (execve, execveat) and proc.name = bash"
        ),
        rule("Open", "syscall", "evt.type = openat"),
        rule("Any", "syscall", "proc.name = bash"),
        rule(
            "NotOpen",
            "syscall",
            "not evt.type = openat and proc.name = bash"
        ),
    )]);
    assert_eq!(
        hits(&rs, &sys("bash", &[], "execve")),
        ["Exec", "Any", "NotOpen"]
    );
    assert_eq!(hits(&rs, &sys("bash", &[], "openat")), ["Open", "Any"]);
    let rs = set(&[&format!(
        "{}{}{}",
        rule(
            "Pods",
            "k8s_audit",
            "ka.target.resource = pods and ka.verb = create"
        ),
        rule("Secrets", "k8s_audit", "ka.target.resource = secrets"),
        rule("Creates", "k8s_audit", "ka.verb in (create, update)"),
    )]);
    assert_eq!(hits(&rs, &audit(json!({}))), ["Pods", "Creates"]);
    assert_eq!(
        hits(&rs, &audit(json!({"objectRef": {"resource": "secrets"}}))),
        ["Secrets", "Creates"]
    );
    assert!(
        hits(
            &rs,
            &audit(json!({"objectRef": {"resource": "secrets"}, "verb": "get"}))
        )
        .len()
            == 1
    );
}

fn review(
    op: &str,
    ns: &str,
    object: serde_json::Value,
    options: serde_json::Value,
    sub: &str,
) -> Event {
    Event::from_admission_review(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5", "operation": op,
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": sub, "namespace": ns, "name": "web-0",
            "userInfo": {"username": "bob", "groups": ["dev"]},
            "object": object, "options": options
        }
    }))
    .unwrap()
}

#[test]
fn admission_runs_opted_in_audit_rules_and_decides() {
    let rules = "- rule: Exec\n  desc: d\n  condition: ka.target.subresource = exec and ka.uri.param[command] intersects (sh, bash)\n  output: exec %ka.uri.param[command] by %ka.user.name in %ka.target.namespace\n  priority: WARNING\n  source: k8s_audit\n  tether:\n    mode: enforce\n    admission: true\n    scope: { namespaces: [\"prod-*\"], exclude_namespaces: [prod-safe] }\n- rule: AuditOnly\n  desc: d\n  condition: ka.verb = connect\n  output: o\n  priority: INFO\n  source: k8s_audit\n- rule: Priv\n  desc: d\n  condition: ka.req.pod.containers.privileged intersects (true)\n  output: privileged pod %ka.target.name\n  priority: ERROR\n  source: k8s_admission\n";
    let rs = set(&[rules]);
    let exec = |ns: &str| {
        review(
            "CONNECT",
            ns,
            serde_json::Value::Null,
            json!({"kind": "PodExecOptions", "command": ["sh", "-c", "id"], "tty": true}),
            "exec",
        )
    };
    let ev = exec("prod-a");
    let m = rs.evaluate(&ev);
    assert_eq!(
        m.iter().map(|m| m.rule.name.as_str()).collect::<Vec<_>>(),
        ["Exec"]
    );
    assert_eq!(m[0].output, "exec (sh,-c,id) by bob in prod-a");
    let v = decide(&ev, &m, &DecisionOptions::default());
    assert!(!v.allowed && !v.would_allow);
    assert_eq!(
        v.message.as_deref(),
        Some("denied by rule \"Exec\": exec (sh,-c,id) by bob in prod-a")
    );
    // The global switch: allowed with a warning, and the record says it would have denied.
    let v = decide(
        &ev,
        &m,
        &DecisionOptions {
            detect_only: true,
            ..Default::default()
        },
    );
    assert!(v.allowed && !v.would_allow);
    assert_eq!(
        v.warnings[0].reason.as_deref(),
        Some("the global detect-only switch is on")
    );
    // Outside the scope: detect only.
    for ns in ["dev", "prod-safe"] {
        let ev = exec(ns);
        let m = rs.evaluate(&ev);
        let v = decide(&ev, &m, &DecisionOptions::default());
        assert!(v.allowed && v.would_allow, "{ns}");
        assert_eq!(v.warnings.len(), 1);
        assert_eq!(v.warnings[0].effective_mode, Mode::Detect);
        assert!(v.warnings[0]
            .reason
            .as_ref()
            .unwrap()
            .starts_with("outside the rule's enforcement scope"));
    }
    // k8s_admission rules see the object; a detect rule warns.
    let ev = review(
        "CREATE",
        "dev",
        json!({"metadata": {"name": "web-0"}, "spec": {"containers": [{"image": "x", "securityContext": {"privileged": true}}]}}),
        serde_json::Value::Null,
        "",
    );
    let m = rs.evaluate(&ev);
    let v = decide(&ev, &m, &DecisionOptions::default());
    assert!(v.allowed && !v.would_allow);
    assert_eq!(v.warnings[0].output, "privileged pod web-0");
}

#[test]
fn alert_wire_shape() {
    let rs = set(&["- rule: Shell\n  desc: d\n  condition: proc.name = bash\n  output: shell %proc.cmdline pid=%proc.pid user=%session.user ns=%k8s.pod.name\n  priority: WARNING\n  tags: [shell, mitre]\n  tether: { mode: enforce, actions: [kill, notify] }\n"]);
    let mut ev = sys("bash", &["-i"], "execve");
    ev.set_session(SessionFields {
        id: "s1".into(),
        user: "alice".into(),
        ..Default::default()
    });
    let m = rs.evaluate(&ev);
    let a = Alert::from_match(&m[0], &ev, "node-1");
    let j = serde_json::to_value(&a).unwrap();
    assert_eq!(j["time"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(j["rule"], "Shell");
    assert_eq!(j["priority"], "Warning");
    assert_eq!(
        j["output"],
        "22:13:20.123456789: Warning shell bash -i pid=42 user=alice ns=<NA>"
    );
    assert_eq!(
        j["output_fields"],
        json!({"proc.cmdline": "bash -i", "proc.pid": 42, "session.user": "alice", "k8s.pod.name": null})
    );
    assert_eq!(j["source"], "syscall");
    assert_eq!(j["tags"], json!(["shell", "mitre"]));
    assert_eq!(j["hostname"], "node-1");
    assert_eq!(j["mode"], "enforce");
    assert_eq!(j["session"]["user"], "alice");
    assert_eq!(j["actions"], json!([]));
    assert_eq!(j["correlation"], serde_json::Value::Null);
    assert!(uuid::Uuid::parse_str(j["uuid"].as_str().unwrap()).is_ok());
    let back: Alert = serde_json::from_value(j).unwrap();
    assert_eq!(back, a);
}

/// `evaluate_outputs` gives the same matches, in the same order, with the same rendered
/// outputs as `evaluate`, on the bundled library and pods that trip many of its rules.
#[test]
fn evaluate_outputs_agrees_with_evaluate_on_the_library() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/apiserver-captures"
    );
    let capture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{dir}/admission-pod-create-good-pod-allowed.json")).unwrap(),
    )
    .unwrap();
    let exec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{dir}/admission-pod-exec-connect-post-stdin-sh.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut reviews = vec![capture.clone(), exec];
    let tweaks: &[(&str, serde_json::Value)] = &[
        (
            "/spec/containers/0/securityContext",
            json!({"privileged": true, "runAsUser": 0}),
        ),
        ("/spec/hostNetwork", json!(true)),
        ("/spec/hostPID", json!(true)),
        (
            "/spec/containers/0/securityContext",
            json!({"capabilities": {"add": ["SYS_ADMIN", "NET_RAW"]}, "allowPrivilegeEscalation": true}),
        ),
        (
            "/spec/volumes/0",
            json!({"name": "h", "hostPath": {"path": "/etc"}}),
        ),
        ("/metadata/namespace", json!("kube-system")),
    ];
    for (ptr, v) in tweaks {
        let mut r = capture.clone();
        let obj = r.pointer_mut("/request/object").unwrap();
        let (parent, key) = ptr.rsplit_once('/').unwrap();
        let parent = obj.pointer_mut(parent).unwrap();
        match key.parse::<usize>() {
            Ok(i) => parent[i] = v.clone(),
            Err(_) => parent[key] = v.clone(),
        }
        reviews.push(r);
    }
    let rs = RuleSet::try_bundled_library().unwrap();
    let mut total = 0;
    let mut interrupted = 0;
    for r in reviews {
        let ev = Event::from_admission_review(r).unwrap();
        let full: Vec<(String, String)> = rs
            .evaluate(&ev)
            .into_iter()
            .map(|m| (m.rule.name.clone(), m.output))
            .collect();
        let outputs: Vec<(String, String)> = rs
            .evaluate_outputs(&ev)
            .into_iter()
            .map(|m| (m.rule.name.clone(), m.output))
            .collect();
        assert_eq!(full, outputs);
        total += full.len();
        // Interrupted at once (a deadline already past) and resumed, or with time to spare:
        // the same matches.
        let names = |m: Vec<policies::OutputMatch>| -> Vec<(String, String)> {
            m.into_iter()
                .map(|m| (m.rule.name.clone(), m.output))
                .collect()
        };
        match rs.evaluate_outputs_until(&ev, std::time::Instant::now()) {
            policies::Evaluation::Interrupted(p) => {
                interrupted += 1;
                assert_eq!(names(rs.resume_outputs(&ev, p)), full);
            }
            policies::Evaluation::Done(m) => assert_eq!(names(m), full),
        }
        let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
        match rs.evaluate_outputs_until(&ev, later) {
            policies::Evaluation::Done(m) => assert_eq!(names(m), full),
            policies::Evaluation::Interrupted(_) => panic!("interrupted before its deadline"),
        }
    }
    // The pods above do trip rules, so the comparison covers rendered outputs.
    assert!(total >= 8, "only {total} matches");
    // The library has enough candidate rules per pod review to be interrupted.
    assert!(interrupted > 0);
}
