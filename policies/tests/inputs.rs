//! Real captures from a kube-apiserver parse into events whose fields read as expected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::{parse_document, Event, RuleSet, Source};

const CAPTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/apiserver-captures"
);

fn events(file: &str) -> Vec<Event> {
    let path = format!("{CAPTURES}/{file}");
    let bytes = std::fs::read(&path).unwrap();
    parse_document(&path, &bytes)
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Renders fields through a one-rule set whose output names them.
fn render(ev: &Event, source: &str, fields: &str) -> String {
    let yaml = format!("- rule: R\n  desc: d\n  condition: ka.verb exists\n  output: \"{fields}\"\n  priority: INFO\n  source: {source}\n");
    let rs = RuleSet::from_texts(&[("r.yaml".into(), yaml)]).unwrap();
    let m = rs.evaluate(ev);
    assert_eq!(m.len(), 1, "{source}");
    m[0].output.clone()
}

#[test]
fn admission_exec_post_and_websocket_read_like_audit() {
    for f in [
        "admission-pod-exec-connect-post-stdin-sh.json",
        "admission-pod-exec-connect-websocket-get.json",
    ] {
        let ev = &events(f)[0];
        assert_eq!(ev.source(), Source::K8sAdmission);
        let out = render(ev, "k8s_admission", "%ka.verb %ka.stage %ka.user.name %ka.target.resource/%ka.target.subresource %ka.target.namespace/%ka.target.name cmd=%ka.uri.param[command] container=%ka.uri.param[container] code=%ka.response.code");
        assert!(
            out.starts_with("connect Admission kapi-admin pods/exec default/good-pod cmd="),
            "{f}: {out}"
        );
        assert!(out.ends_with("container=c code=<NA>"), "{f}: {out}");
    }
    let ev = &events("admission-pod-exec-connect-post-stdin-sh.json")[0];
    assert_eq!(
        render(
            ev,
            "k8s_admission",
            "%ka.uri.param[command] %ka.user.groups"
        ),
        "sh (system:masters,system:authenticated)"
    );
}

#[test]
fn admission_create_exposes_the_object() {
    let ev = &events("admission-pod-create-good-pod-allowed.json")[0];
    let out = render(
        ev,
        "k8s_admission",
        "%ka.verb %ka.target.name %ka.req.pod.containers.image",
    );
    assert!(out.starts_with("create good-pod ("), "{out}");
    assert!(ev.json().unwrap()["requestObject"]["metadata"]["name"] == "good-pod");
}

#[test]
fn audit_log_and_event_list() {
    let log = events("audit-audit-log-pods-exec-RequestResponse.jsonl");
    assert!(!log.is_empty());
    assert!(log
        .iter()
        .all(|e| e.source() == Source::K8sAudit && e.time_ns() > 0));
    let out = render(
        &log[0],
        "k8s_audit",
        "%ka.verb %ka.target.subresource %ka.uri.param[command] %ka.auditid",
    );
    assert_eq!(out, "create exec sh 25761e25-6f8d-41e8-982c-6b252cfa5818");
    let list = events("audit-webhook-eventlist-with-exec-events.json");
    assert!(!list.is_empty());
    assert_eq!(
        render(&list[0], "k8s_audit", "%ka.auditid %ka.stage"),
        "25761e25-6f8d-41e8-982c-6b252cfa5818 ResponseStarted"
    );
}
