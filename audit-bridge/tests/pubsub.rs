//! The Pub/Sub puller against Google's emulator on loopback (`gcloud beta emulators
//! pubsub start`, Debian package `google-cloud-cli-pubsub-emulator`; or
//! `TETHER_TEST_PUBSUB_URL`), with GKE audit LogEntries published into it:
//! conversion, acknowledgement only after processing, redelivery after a crash, and
//! de-duplication by insertId.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use audit_bridge::sources::pubsub::{PubSubConfig, PubSubSource};
use audit_bridge::{AuditBatch, CancellationToken, CheckpointStore, Source};
use base64::Engine;
use common::{collect, drain};
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn gke_entry(insert_id: &str, op: &str, method: &str, resource: &str) -> Value {
    json!({
        "insertId": insert_id,
        "logName": "projects/proj-1/logs/cloudaudit.googleapis.com%2Factivity",
        "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "c1", "location": "europe-west1", "project_id": "proj-1"}},
        "timestamp": "2026-11-22T10:18:57.347954Z",
        "operation": {"id": op, "producer": "k8s.io", "first": true, "last": true},
        "labels": {"authorization.k8s.io/decision": "allow"},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "authenticationInfo": {"principalEmail": "alice@example.com"},
            "methodName": method,
            "requestMetadata": {"callerIp": "203.0.113.7", "callerSuppliedUserAgent": "kubectl/v1.30.0"},
            "resourceName": resource,
            "serviceName": "k8s.io",
            "request": {"@type": "core.k8s.io/v1.PodExecOptions", "command": ["sh", "-c", "id"], "container": "app", "tty": true},
            "status": {}
        }
    })
}

async fn admin(http: &reqwest::Client, url: &str) {
    let r = http
        .put(format!("{url}/v1/projects/proj-1/topics/gke-audit"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .put(format!("{url}/v1/projects/proj-1/subscriptions/bridge"))
        .json(&json!({"topic": "projects/proj-1/topics/gke-audit", "ackDeadlineSeconds": 10}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn publish(http: &reqwest::Client, url: &str, payloads: &[Vec<u8>]) {
    let messages: Vec<Value> = payloads
        .iter()
        .map(|p| json!({"data": base64::engine::general_purpose::STANDARD.encode(p)}))
        .collect();
    let r = http
        .post(format!("{url}/v1/projects/proj-1/topics/gke-audit:publish"))
        .json(&json!({ "messages": messages }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

struct Puller {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), audit_bridge::SourceError>>,
    rx: mpsc::Receiver<AuditBatch>,
}

fn start(url: &str, state: &std::path::Path) -> Puller {
    let mut cfg = PubSubConfig::new("projects/proj-1/subscriptions/bridge");
    cfg.endpoint = url.to_string();
    cfg.idle_millis = 100;
    let (tx, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(PubSubSource::new(cfg).run(
        tx,
        CheckpointStore::open(state).unwrap(),
        stop.clone(),
    ));
    Puller { stop, task, rx }
}

impl Puller {
    async fn stop(self) {
        self.stop.cancel();
        drop(self.rx);
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_processing_redelivery_after_a_crash_and_dedupe() {
    let emulator = common::pubsub_emulator();
    let http = reqwest::Client::new();
    admin(&http, &emulator.url).await;
    let exec = gke_entry(
        "ins-1",
        "op-1",
        "io.k8s.core.v1.pods.exec.create",
        "core/v1/namespaces/prod/pods/web-0/exec",
    );
    let get = gke_entry(
        "ins-2",
        "op-2",
        "io.k8s.core.v1.pods.exec.get",
        "core/v1/namespaces/prod/pods/web-1/exec",
    );
    let mut other = gke_entry(
        "ins-3",
        "op-3",
        "google.container.v1.ClusterManager.GetCluster",
        "projects/proj-1/zones/z/clusters/c1",
    );
    other["protoPayload"]["serviceName"] = json!("container.googleapis.com");
    publish(
        &http,
        &emulator.url,
        &[
            serde_json::to_vec(&exec).unwrap(),
            serde_json::to_vec(&get).unwrap(),
            serde_json::to_vec(&other).unwrap(),
            b"{\"insertId\": \"broken\", ".to_vec(),
            // The same entry delivered twice by the sink (same insertId).
            serde_json::to_vec(&exec).unwrap(),
        ],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    // First run: receive, then "crash" before processing (no hook run, no ack).
    let mut p = start(&emulator.url, dir.path());
    let b = tokio::time::timeout(Duration::from_secs(20), p.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!b.records.is_empty());
    drop(b);
    p.stop().await;

    // Second run: Pub/Sub redelivers once the ack deadline (10 s) has passed.
    let mut p = start(&emulator.url, dir.path());
    let (records, rejected) = collect(&mut p.rx, 2, Duration::from_secs(40)).await;
    let (more, more_rej) = drain(&mut p.rx, Duration::from_secs(2)).await;
    let rejected: Vec<_> = rejected.into_iter().chain(more_rej).collect();
    assert!(
        more.is_empty(),
        "duplicate insertId delivered twice: {more:?}"
    );
    assert_eq!(records.len(), 2, "{records:#?}");
    let verbs: Vec<&str> = records
        .iter()
        .map(|r| r["verb"].as_str().unwrap())
        .collect();
    assert!(verbs.contains(&"create") && verbs.contains(&"get"));
    for r in &records {
        assert_eq!(r["objectRef"]["subresource"], "exec");
        assert!(r["requestURI"]
            .as_str()
            .unwrap()
            .contains("command=sh&command=-c&command=id"));
        assert_eq!(r["user"]["username"], "alice@example.com");
        assert_eq!(r["sourceIPs"][0], "203.0.113.7");
    }
    let reasons: Vec<String> = rejected.iter().map(|r| r.reason.clone()).collect();
    assert_eq!(rejected.len(), 2, "{reasons:?}");
    assert!(reasons
        .iter()
        .any(|r| r.contains("not a kubernetes audit entry")));
    assert!(reasons.iter().any(|r| r.contains("truncated json")));
    // Everything processed and acknowledged: nothing comes back after the deadline.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (again, again_rej) = drain(&mut p.rx, Duration::from_secs(2)).await;
    assert!(
        again.is_empty() && again_rej.is_empty(),
        "acknowledged messages came back"
    );
    p.stop().await;
}
