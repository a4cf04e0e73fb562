//! The pipeline with the bundled rule library: Falco's exec rule fires for SPDY
//! (`create`) and WebSocket (`get`) execs, the argv is kept per element, sessions reach
//! the engine sink (joined by the `tether.io/session` annotation when present),
//! hooks run only after alerts are written, and a catalogue of malformed inputs from
//! every source is reported one by one without stopping the stream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use audit_bridge::pipeline::Pipeline;
use audit_bridge::sources::webhook::{events_of, validate_event_list};
use audit_bridge::{gke, AuditBatch, Rejected};
use engine::{ChannelSink, Found};
use policies::RuleSet;
use serde_json::{json, Value};

trait UnwrapErr {
    fn unwrap_err_or_panic(self, what: &str) -> String;
}
impl UnwrapErr for Result<String, String> {
    fn unwrap_err_or_panic(self, what: &str) -> String {
        match self {
            Ok(v) => panic!("{what}: {v}"),
            Err(e) => e,
        }
    }
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn exec_event() -> Value {
    let text = std::fs::read_to_string(
        common::fixtures().join("falco-k8s-audit/trace_files/k8s_audit/exec_pod.json"),
    )
    .unwrap();
    serde_json::from_str(text.trim()).unwrap()
}

fn alerts_of(out: &Shared) -> Vec<Value> {
    String::from_utf8(out.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn exec_via_spdy_and_websocket_alerts_and_opens_sessions() {
    let out = Shared::default();
    let (sink, mut rx) = ChannelSink::new();
    let mut p = Pipeline::new(
        Arc::new(RuleSet::bundled_library()),
        Some(Arc::new(sink)),
        Some(Box::new(out.clone())),
        "bridge-0",
    );
    let spdy = exec_event();
    let mut ws = exec_event();
    ws["verb"] = json!("get");
    ws["auditID"] = json!("ws-1");
    ws["requestURI"] = json!("/api/v1/namespaces/default/pods/web-0/exec?command=sh&command=-c&command=cat+%2Fetc%2Fshadow&container=app&stdin=true&tty=true");
    ws["annotations"]["tether.io/session"] = json!("review-uid-7");
    let mut completed = spdy.clone();
    completed["stage"] = json!("ResponseComplete");

    let hook_ran_after = Arc::new(AtomicUsize::new(usize::MAX));
    let (h, o) = (hook_ran_after.clone(), out.clone());
    let mut batch = AuditBatch::new(Arc::from("test"), "test".into());
    batch.records = vec![spdy, ws, completed];
    batch.on_processed = Some(Box::new(move || {
        h.store(o.0.lock().unwrap().len(), Ordering::SeqCst);
    }));
    p.process(batch).unwrap();

    let alerts = alerts_of(&out);
    let exec: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "Attach/Exec Pod")
        .collect();
    assert_eq!(exec.len(), 2, "{alerts:#?}");
    assert!(exec[0]["output"].as_str().unwrap().contains("command=bash"));
    // Every argv element is kept.
    assert_eq!(
        exec[1]["output_fields"]["ka.uri.param[command]"],
        "(sh,-c,cat /etc/shadow)"
    );
    assert_eq!(exec[0]["source"], "k8s_audit");
    assert_eq!(exec[0]["hostname"], "bridge-0");
    // The alerts name the session their request opened (by the annotation when present).
    assert_eq!(
        exec[0]["session"]["id"],
        "ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6"
    );
    assert_eq!(exec[0]["session"]["kind"], "exec");
    assert_eq!(exec[0]["session"]["user"], "minikube-user");
    assert_eq!(exec[0]["session"]["confidence"], "exact");
    assert_eq!(exec[1]["session"]["id"], "review-uid-7");
    assert_eq!(exec[1]["session"]["auditid"], "ws-1");
    assert_eq!(
        exec[1]["session"]["command"],
        json!(["sh", "-c", "cat /etc/shadow"])
    );
    assert_eq!(
        hook_ran_after.load(Ordering::SeqCst),
        out.0.lock().unwrap().len(),
        "the hook ran after every alert was written"
    );

    let mut sessions = Vec::new();
    while let Ok(f) = rx.try_recv() {
        if let Found::Session(s) = f {
            sessions.push(*s);
        }
    }
    assert_eq!(
        sessions.len(),
        2,
        "one per exec, not one per stage: {sessions:#?}"
    );
    assert_eq!(sessions[0].id, "ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6");
    assert_eq!(sessions[0].command, vec!["bash"]);
    assert_eq!(sessions[0].user, "minikube-user");
    assert_eq!(sessions[1].id, "review-uid-7", "joined by the annotation");
    assert_eq!(sessions[1].audit_id.as_deref(), Some("ws-1"));
    assert_eq!(sessions[1].command, vec!["sh", "-c", "cat /etc/shadow"]);
    assert_eq!(p.stats().events, 3);
}

#[test]
fn gke_exec_entry_fires_the_same_rule() {
    let entry = json!({
        "insertId": "i-1", "timestamp": "2026-11-22T10:18:57.347954Z",
        "operation": {"id": "op-1", "producer": "k8s.io", "first": true, "last": true},
        "protoPayload": {
            "serviceName": "k8s.io", "methodName": "io.k8s.core.v1.pods.exec.create",
            "resourceName": "core/v1/namespaces/prod/pods/web-0/exec",
            "authenticationInfo": {"principalEmail": "alice@example.com"},
            "requestMetadata": {"callerIp": "203.0.113.7"},
            "request": {"command": ["sh", "-c", "id"], "container": "app"},
            "status": {}
        }
    });
    let ev = gke::log_entry_to_audit(&entry).unwrap();
    let out = Shared::default();
    let mut p = Pipeline::new(
        Arc::new(RuleSet::bundled_library()),
        None,
        Some(Box::new(out.clone())),
        "h",
    );
    let mut b = AuditBatch::new(Arc::from("pubsub"), "t".into());
    b.records.push(ev);
    p.process(b).unwrap();
    let alerts = alerts_of(&out);
    let a = alerts
        .iter()
        .find(|a| a["rule"] == "Attach/Exec Pod")
        .expect("exec alert");
    assert!(a["output"]
        .as_str()
        .unwrap()
        .contains("user=alice@example.com"));
    assert_eq!(a["output_fields"]["ka.uri.param[command]"], "(sh,-c,id)");
}

/// Malformed input of every source, each reported with where and what, none stopping
/// the stream: the good event after them is still evaluated.
#[test]
fn catalogue_of_malformed_inputs() {
    let mut reports: Vec<(String, String)> = Vec::new();
    // Webhook bodies (answered 400 before spooling).
    let bodies: &[(&str, &[u8])] = &[
        ("empty webhook body", b""),
        ("bad json", b"{nope"),
        (
            "truncated batch",
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{\"a\":1}",
        ),
        (
            "wrong kind of list",
            b"{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"items\":[]}",
        ),
        (
            "wrong apiVersion",
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v9\",\"items\":[]}",
        ),
        (
            "items not a list",
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":\"x\"}",
        ),
        (
            "item not an object",
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[null]}",
        ),
        ("json array instead of a list", b"[{\"kind\":\"Event\"}]"),
    ];
    for (what, body) in bodies {
        let err = validate_event_list(body)
            .map(|n| format!("accepted {n}"))
            .unwrap_err_or_panic(what);
        reports.push((what.to_string(), err));
    }
    // Items inside an accepted list.
    let (_, bad) = events_of(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Pod"},{"kind":5}]}"#, "spool 0:0");
    for r in bad {
        reports.push(("item of another kind".into(), r.to_string()));
    }
    // GKE entries.
    let gke_cases = vec![
        (
            "gke entry of another service",
            json!({"timestamp": "2026-01-01T00:00:00Z", "protoPayload": {"serviceName": "compute.googleapis.com", "methodName": "v1.compute.instances.insert"}}),
        ),
        (
            "gke entry without protoPayload",
            json!({"timestamp": "2026-01-01T00:00:00Z", "textPayload": "hello"}),
        ),
        (
            "gke entry with a bad methodName",
            json!({"timestamp": "2026-01-01T00:00:00Z", "protoPayload": {"serviceName": "k8s.io", "methodName": "pods"}}),
        ),
        (
            "gke entry with a bad timestamp",
            json!({"timestamp": "noon", "protoPayload": {"serviceName": "k8s.io", "methodName": "io.k8s.core.v1.pods.get"}}),
        ),
        ("gke entry that is not an object", json!("entry")),
        (
            "gke entry without methodName",
            json!({"timestamp": "2026-01-01T00:00:00Z", "protoPayload": {"serviceName": "k8s.io"}}),
        ),
    ];
    for (what, e) in gke_cases {
        reports.push((
            what.into(),
            gke::log_entry_to_audit(&e).unwrap_err().to_string(),
        ));
    }
    // Pub/Sub messages.
    for (what, data) in [
        ("pubsub message without data", None),
        ("pubsub data not base64", Some("***")),
        ("pubsub data truncated json", Some("eyJpbnNlcnRJZCI6")),
    ] {
        reports.push((
            what.into(),
            audit_bridge::sources::pubsub::message_to_audit(data).unwrap_err(),
        ));
    }
    // Events the rule engine refuses, then one good event: all go through one pipeline.
    let out = Shared::default();
    let mut p = Pipeline::new(
        Arc::new(RuleSet::bundled_library()),
        None,
        Some(Box::new(out.clone())),
        "h",
    );
    let mut b = AuditBatch::new(
        Arc::from("file:/var/log/audit.log"),
        "/var/log/audit.log:1-5".into(),
    );
    b.records = vec![
        json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "x"}),
        json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": 7, "stage": "ResponseComplete"}),
        json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": "get", "stage": "ResponseComplete", "objectRef": "pods"}),
        exec_event(),
    ];
    b.rejected.push(Rejected {
        location: "/var/log/audit.log:9".into(),
        reason: "truncated json: EOF".into(),
    });
    p.process(b).unwrap();
    assert_eq!(
        p.stats().events,
        1,
        "the good event after the bad ones was evaluated"
    );
    assert_eq!(p.stats().rejected, 4);
    assert!(alerts_of(&out)
        .iter()
        .any(|a| a["rule"] == "Attach/Exec Pod"));
    let rej: Vec<String> = p.recent_rejections().map(|r| r.to_string()).collect();
    assert_eq!(rej[0], "/var/log/audit.log:9: truncated json: EOF");
    assert!(
        rej[1].starts_with("/var/log/audit.log:1-5 item 1: "),
        "{}",
        rej[1]
    );
    for (what, r) in [
        "audit event without verb",
        "verb not a string",
        "objectRef not an object",
    ]
    .iter()
    .zip(&rej[1..])
    {
        reports.push((what.to_string(), r.clone()));
    }

    println!("malformed input kinds: {}", reports.len());
    for (what, msg) in &reports {
        println!("  {what:36} -> {msg}");
        assert!(!msg.is_empty());
        assert_eq!(
            msg.to_lowercase().chars().next(),
            msg.chars().next(),
            "lower-case: {msg}"
        );
    }
    // File lines (malformed_lines test in tests/file.rs), the spool's torn tail
    // (src/spool.rs), oversize bodies and CloudWatch's truncated messages are covered
    // where those sources are tested.
    assert!(reports.len() >= 20, "{}", reports.len());
}

/// Batches evaluated on several workers, some slow (many alerting events) and some
/// fast (one bad line): hooks run, alerts come out and sessions reach the sink strictly
/// in batch order, every batch once, and nothing is lost.
#[test]
fn parallel_workers_commit_in_batch_order() {
    let exec = serde_json::to_string(&exec_event()).unwrap();
    let out = Shared::default();
    let (sink, mut sink_rx) = ChannelSink::new();
    let pipeline = Pipeline::new(
        Arc::new(RuleSet::bundled_library()),
        Some(Arc::new(sink)),
        Some(Box::new(out.clone())),
        "h",
    )
    .with_workers(4);
    assert_eq!(pipeline.workers(), 4);
    let (tx, rx) = tokio::sync::mpsc::channel::<AuditBatch>(4);
    let order = Arc::new(Mutex::new(Vec::new()));
    const BATCHES: usize = 120;
    let feeder = {
        let order = order.clone();
        std::thread::spawn(move || {
            for i in 0..BATCHES {
                let mut b = AuditBatch::new(Arc::from("file:/a.log"), format!("/a.log:{i}"));
                // Uneven work: batch i holds (i % 7) * 5 exec events, each with a distinct
                // auditID, plus a malformed line.
                let mut doc = String::new();
                for j in 0..(i % 7) * 5 {
                    let mut v: Value = serde_json::from_str(&exec).unwrap();
                    v["auditID"] = json!(format!("b{i}-e{j}"));
                    v["objectRef"]["name"] = json!(format!("pod-{i}-{j}"));
                    doc.push_str(&serde_json::to_string(&v).unwrap());
                    doc.push('\n');
                }
                doc.push_str("{\"kind\":\"Event\", oops}\n");
                b.documents.push(audit_bridge::Document {
                    name: format!("/a.log#{i}"),
                    first_line: 1,
                    bytes: bytes::Bytes::from(doc),
                });
                let order = order.clone();
                b.on_processed = Some(Box::new(move || order.lock().unwrap().push(i)));
                tx.blocking_send(b).unwrap();
            }
        })
    };
    let stats = pipeline.run_blocking(rx).unwrap();
    feeder.join().unwrap();
    assert_eq!(*order.lock().unwrap(), (0..BATCHES).collect::<Vec<_>>());
    let exec_events: usize = (0..BATCHES).map(|i| (i % 7) * 5).sum();
    assert_eq!(stats.batches, BATCHES as u64);
    assert_eq!(stats.events, exec_events as u64);
    assert_eq!(stats.rejected, BATCHES as u64);
    // Alerts in batch order: the pod names of "Attach/Exec Pod" alerts never go back.
    let seen: Vec<(usize, usize)> = alerts_of(&out)
        .iter()
        .filter(|a| a["rule"] == "Attach/Exec Pod")
        .map(|a| {
            let name = a["output_fields"]["ka.target.name"].as_str().unwrap();
            let mut it = name.trim_start_matches("pod-").split('-');
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen.len(), exec_events, "one exec alert per exec event");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "alerts out of order");
    // The sink got the same alerts in the same order.
    let mut sink_alerts = 0;
    while let Ok(found) = sink_rx.try_recv() {
        if let Found::Alert(a) = found {
            if a.rule == "Attach/Exec Pod" {
                sink_alerts += 1;
            }
        }
    }
    assert_eq!(sink_alerts, exec_events);
}
