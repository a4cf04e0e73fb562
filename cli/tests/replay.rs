//! End-to-end contract of `tether replay`: the real binary on the apiserver captures and the
//! Falco traces, including the malformed `fal_01_003.json`, `--strict` and stdin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(FIXTURES).join(rel);
    assert!(p.is_file(), "missing fixture {}", p.display());
    p.display().to_string()
}

fn k8s_rules() -> String {
    fixture("falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml")
}

fn trace(name: &str) -> String {
    fixture(&format!("falco-k8s-audit/trace_files/k8s_audit/{name}"))
}

fn tether(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.args(args)
        .env("RUST_LOG", "error")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tether");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn alerts(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn per_rule(alerts: &[serde_json::Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry(a["rule"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn one_exec_event_gives_one_falco_compatible_alert() {
    let out = tether(
        &["replay", "--rules", &k8s_rules(), &trace("exec_pod.json")],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let alerts = alerts(&out);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a["rule"], "Attach/Exec Pod");
    assert_eq!(a["priority"], "Notice");
    assert_eq!(a["source"], "k8s_audit");
    assert_eq!(a["tags"], serde_json::json!(["k8s"]));
    assert!(a["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    // Falco prints `TIME: Priority OUTPUT`.
    let output = a["output"].as_str().unwrap();
    assert!(
        output.ends_with(": Notice Attach/Exec to pod (user=minikube-user pod=nginx-deployment-7998647bdf-phvq7 resource=pods ns=default action=exec command=bash)"),
        "{output}"
    );
    assert_eq!(a["output_fields"]["ka.user.name"], "minikube-user");
    assert_eq!(a["output_fields"]["ka.uri.param[command]"], "bash");
    let time = a["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.contains('T'), "time {time}");
    let err = stderr(&out);
    assert!(
        err.contains("1 event(s) read from 1 input(s), 1 alert(s), 0 input(s) rejected"),
        "{err}"
    );
    assert!(err.contains("Attach/Exec Pod"), "{err}");
}

#[test]
fn apiserver_captures_every_shape() {
    let inputs = [
        "apiserver-captures/audit-audit-log-pods-exec-RequestResponse.jsonl",
        "apiserver-captures/audit-webhook-eventlist-with-exec-events.json",
        "apiserver-captures/admission-pod-create-good-pod-allowed.json",
        "apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json",
        "apiserver-captures/admission-pod-exec-connect-websocket-get.json",
    ];
    let mut args = vec!["replay".to_string(), "--rules".into(), k8s_rules()];
    args.extend(inputs.iter().map(|i| fixture(i)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tether(&args, None);
    assert!(out.status.success(), "{}", stderr(&out));
    // 10 JSON lines + 7 EventList items + 3 AdmissionReviews. The exec requests are seen at
    // ResponseStarted (5 + 3); kapi-admin is not an allowed user at ResponseComplete (5 + 3).
    let got = per_rule(&alerts(&out));
    let want: BTreeMap<String, usize> = [
        ("Attach/Exec Pod".to_string(), 8),
        ("Disallowed K8s User".to_string(), 8),
    ]
    .into();
    assert_eq!(got, want);
    let err = stderr(&out);
    assert!(
        err.contains("20 event(s) read from 5 input(s), 16 alert(s), 0 input(s) rejected"),
        "{err}"
    );
}

fn all_traces() -> Vec<String> {
    let dir = PathBuf::from(FIXTURES).join("falco-k8s-audit/trace_files/k8s_audit");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn malformed_trace_is_reported_and_the_rest_processed() {
    let traces = all_traces();
    assert_eq!(traces.len(), 47);
    let mut args = vec!["replay", "--rules"];
    let rules = k8s_rules();
    args.push(&rules);
    args.extend(traces.iter().map(String::as_str));
    let out = tether(&args, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let bad = trace("fal_01_003.json");
    let rejected: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("fal_01_003.json"))
        .collect();
    assert_eq!(rejected.len(), 1, "{err}");
    assert!(
        rejected[0].trim_start().starts_with(&format!("{bad}:1: ")),
        "{err}"
    );
    assert!(err.contains("1 input(s) rejected"), "{err}");
    let got = per_rule(&alerts(&out));
    // Alerts from files on both sides of the malformed one.
    assert_eq!(got.get("Attach/Exec Pod"), Some(&2), "{got:?}"); // attach_pod + exec_pod
    assert_eq!(
        got.get("Create/Modify Configmap With Private Credentials"),
        Some(&6),
        "{got:?}"
    );
    assert!(
        got.get("Create Privileged Pod").is_some_and(|n| *n >= 1),
        "{got:?}"
    );
}

#[test]
fn strict_makes_a_malformed_input_fatal() {
    let rules = k8s_rules();
    let (good, bad, after) = (
        trace("exec_pod.json"),
        trace("fal_01_003.json"),
        trace("attach_pod.json"),
    );
    let out = tether(
        &["replay", "--strict", "--rules", &rules, &good, &bad, &after],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The input before the malformed one was evaluated; the one after it was not.
    let first = alerts(&out);
    assert_eq!(first.len(), 1);
    assert!(
        first[0]["output"].as_str().unwrap().contains("action=exec"),
        "{first:?}"
    );
    let err = stderr(&out);
    assert!(err.contains(&format!("{bad}:1: ")), "{err}");
    assert!(err.contains("aborted"), "{err}");

    let ok = tether(
        &["replay", "--strict", "--rules", &rules, &good, &after],
        None,
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_eq!(per_rule(&alerts(&ok)).get("Attach/Exec Pod"), Some(&2));
}

#[test]
fn stdin_dash_reads_events() {
    let bytes = std::fs::read(fixture(
        "apiserver-captures/audit-audit-log-pods-exec-RequestResponse.jsonl",
    ))
    .unwrap();
    let out = tether(&["replay", "--rules", &k8s_rules(), "-"], Some(&bytes));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(per_rule(&alerts(&out)).get("Attach/Exec Pod"), Some(&5));

    // A malformed line on stdin is cited as <stdin> with its line number; the rest still runs.
    let with_line_2 = |bad_line: &str| {
        let mut text = String::from_utf8(bytes.clone()).unwrap();
        let first_newline = text.find('\n').unwrap();
        text.insert_str(first_newline + 1, &format!("{bad_line}\n"));
        tether(
            &["replay", "--rules", &k8s_rules(), "-"],
            Some(text.as_bytes()),
        )
    };
    // A line that is not an audit event: rejected, every other line evaluated.
    let out = with_line_2("{\"kind\": 0}");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("<stdin>:2: "), "{err}");
    assert!(err.contains("10 event(s) read from 1 input(s)"), "{err}");
    assert_eq!(
        per_rule(&alerts(&out)).get("Attach/Exec Pod"),
        Some(&5),
        "{err}"
    );
    // A truncated line: rejected at its line, and reading goes on. JSON values may span
    // lines, so the parser may take the next line(s) as the rest of the truncated value
    // before it resumes: at most the two lines after it are lost.
    let out = with_line_2("{\"kind\":\"Event\",\"auditID\":");
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("<stdin>:2: malformed JSON"), "{err}");
    assert_eq!(err.matches("<stdin>:").count(), 1, "{err}");
    let events: usize = err
        .split(" event(s) read")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {err}"));
    assert!((8..=10).contains(&events), "{err}");
    assert!(
        per_rule(&alerts(&out))
            .get("Attach/Exec Pod")
            .is_some_and(|n| *n >= 4),
        "{err}"
    );
}

#[test]
fn rules_that_do_not_load_fail_with_their_position() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay-bad-rules");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "- rule: Broken\n  desc: d\n  condition: ka.verb = \n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
    )
    .unwrap();
    let out = tether(
        &[
            "replay",
            "--rules",
            bad.to_str().unwrap(),
            &trace("exec_pod.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:3:", bad.display())) && err.contains("rule \"Broken\""),
        "{err}"
    );
}

#[test]
fn missing_input_is_reported_not_fatal() {
    let out = tether(
        &[
            "replay",
            "--rules",
            &k8s_rules(),
            "/nonexistent/audit.json",
            &trace("exec_pod.json"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(alerts(&out).len(), 1);
    assert!(stderr(&out).contains("/nonexistent/audit.json: cannot read"));
}

#[test]
fn bundled_library_is_the_default() {
    let out = tether(&["replay", &trace("exec_pod.json")], None);
    assert!(out.status.success(), "{}", stderr(&out));
    for a in alerts(&out) {
        assert!(a["rule"].is_string() && a["output"].is_string());
    }
    assert!(stderr(&out).contains("1 event(s) read"));
}
