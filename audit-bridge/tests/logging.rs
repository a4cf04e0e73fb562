//! The Cloud Logging poller against a small local double of `entries:list` (Cloud
//! Logging has no emulator): filter, pageToken paging, checkpoint and restart, entries
//! indexed late, other services' entries reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use audit_bridge::sources::logging::{LoggingConfig, LoggingSource};
use audit_bridge::{AuditBatch, CancellationToken, CheckpointStore, Source};
use axum::Json;
use common::{collect, drain};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The double: holds entries; answers `entries:list` for `timestamp>="T"` filters,
/// oldest first, `pageSize` per page with an opaque numeric page token. It records every
/// request body.
#[derive(Default)]
struct Double {
    entries: Vec<Value>,
    requests: Vec<Value>,
}

fn since_of(filter: &str) -> Option<String> {
    let i = filter.find("timestamp>=\"")? + "timestamp>=\"".len();
    let rest = &filter[i..];
    Some(rest[..rest.find('"')?].to_string())
}

fn ts_ns(s: &str) -> i128 {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
}

async fn start_double(state: Arc<Mutex<Double>>) -> String {
    let app = axum::Router::new().route(
        "/v2/entries:list",
        axum::routing::post(move |Json(body): Json<Value>| {
            let state = state.clone();
            async move {
                let mut d = state.lock().unwrap();
                d.requests.push(body.clone());
                let filter = body["filter"].as_str().unwrap_or_default();
                let since = since_of(filter).map(|s| ts_ns(&s)).unwrap_or(0);
                let mut matching: Vec<Value> = d
                    .entries
                    .iter()
                    .filter(|e| ts_ns(e["timestamp"].as_str().unwrap()) >= since)
                    .cloned()
                    .collect();
                matching.sort_by_key(|e| ts_ns(e["timestamp"].as_str().unwrap()));
                let size = body["pageSize"].as_u64().unwrap_or(1000) as usize;
                let start: usize = body["pageToken"].as_str().map_or(0, |t| t.parse().unwrap());
                let page: Vec<Value> = matching.iter().skip(start).take(size).cloned().collect();
                let next = (start + size < matching.len()).then(|| (start + size).to_string());
                let mut out = json!({ "entries": page });
                if let Some(n) = next {
                    out["nextPageToken"] = json!(n);
                }
                Json(out)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn entry(id: &str, ts: &str, service: &str) -> Value {
    json!({
        "insertId": id,
        "timestamp": ts,
        "logName": "projects/p1/logs/cloudaudit.googleapis.com%2Factivity",
        "operation": {"id": format!("op-{id}"), "producer": "k8s.io", "first": true, "last": true},
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": service,
            "methodName": "io.k8s.core.v1.configmaps.create",
            "resourceName": "core/v1/namespaces/kube-system/configmaps/c",
            "authenticationInfo": {"principalEmail": "bob@example.com"},
            "requestMetadata": {"callerIp": "198.51.100.4"},
            "status": {}
        }
    })
}

struct Poller {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), audit_bridge::SourceError>>,
    rx: mpsc::Receiver<AuditBatch>,
}

fn start(url: &str, state: &std::path::Path) -> Poller {
    let mut cfg = LoggingConfig::new("p1", "resource.type=\"k8s_cluster\"");
    cfg.endpoint = url.to_string();
    cfg.poll_secs = 1;
    cfg.late_window_secs = 60;
    cfg.page_size = 3;
    let (tx, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(LoggingSource::new(cfg).run(
        tx,
        CheckpointStore::open(state).unwrap(),
        stop.clone(),
    ));
    Poller { stop, task, rx }
}

impl Poller {
    async fn stop(self) {
        self.stop.cancel();
        drop(self.rx);
        self.task.await.unwrap().unwrap();
    }
}

fn ids(r: &[Value]) -> Vec<String> {
    r.iter()
        .map(|v| v["auditID"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_checkpoint_late_entries_and_other_services() {
    let state = Arc::new(Mutex::new(Double::default()));
    {
        let mut d = state.lock().unwrap();
        for i in 0..7 {
            d.entries.push(entry(
                &format!("e{i}"),
                &format!("2026-11-22T10:00:0{i}.000000001Z"),
                "k8s.io",
            ));
        }
        d.entries.push(entry(
            "gce",
            "2026-11-22T10:00:07Z",
            "compute.googleapis.com",
        ));
    }
    let url = start_double(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(&url, dir.path());
    let (r, rej) = collect(&mut p.rx, 7, Duration::from_secs(10)).await;
    assert_eq!(
        ids(&r),
        (0..7).map(|i| format!("op-e{i}")).collect::<Vec<_>>()
    );
    let (_, rej2) = drain(&mut p.rx, Duration::from_millis(300)).await;
    let rej: Vec<_> = rej.into_iter().chain(rej2).collect();
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert_eq!(rej[0].location, "logging:p1:gce");
    assert!(rej[0].reason.contains("compute.googleapis.com"));
    {
        let d = state.lock().unwrap();
        assert!(
            d.requests.iter().any(|b| b["pageToken"] == "3"),
            "paged by token"
        );
        assert!(d.requests.iter().all(|b| b["filter"]
            .as_str()
            .unwrap()
            .starts_with("(resource.type=\"k8s_cluster\") AND timestamp>=")));
        assert_eq!(d.requests[0]["resourceNames"][0], "projects/p1");
    }

    // An entry indexed late, with an older timestamp inside the window.
    state
        .lock()
        .unwrap()
        .entries
        .push(entry("late", "2026-11-22T10:00:03.5Z", "k8s.io"));
    let (r, _) = collect(&mut p.rx, 1, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), vec!["op-late"]);
    let (again, _) = drain(&mut p.rx, Duration::from_millis(1500)).await;
    assert!(again.is_empty(), "repeated: {:?}", ids(&again));
    p.stop().await;

    // Restart: only the new entry.
    state
        .lock()
        .unwrap()
        .entries
        .push(entry("new", "2026-11-22T10:00:09Z", "k8s.io"));
    let mut p = start(&url, dir.path());
    let (r, _) = collect(&mut p.rx, 1, Duration::from_secs(10)).await;
    let (again, _) = drain(&mut p.rx, Duration::from_millis(1500)).await;
    assert_eq!(ids(&r), vec!["op-new"]);
    assert!(again.is_empty(), "re-read after restart: {:?}", ids(&again));
    p.stop().await;
}
