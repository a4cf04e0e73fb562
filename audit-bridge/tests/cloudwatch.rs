//! The CloudWatch Logs poller against moto's server on loopback (`pip install
//! 'moto[server]'`, or `TETHER_TEST_MOTO_URL`): pagination, client-side stream
//! filtering, late events inside and outside the window, truncated messages, restart
//! from the checkpoint without loss or repeats, and throttling with backoff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audit_bridge::sources::cloudwatch::{CloudWatchConfig, CloudWatchSource};
use audit_bridge::{AuditBatch, CancellationToken, CheckpointStore, Source};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use common::{collect, drain};
use tokio::sync::mpsc;

const STREAM: &str = "kube-apiserver-audit-0123456789";

fn aws_env() {
    // moto accepts any credentials; the standard chain reads these.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    std::env::set_var("AWS_REGION", "us-east-1");
}

async fn client(endpoint: &str) -> aws_sdk_cloudwatchlogs::Client {
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    aws_sdk_cloudwatchlogs::Client::new(&cfg)
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn audit(id: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/pods"}}"#
    )
}

async fn put(
    c: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    events: &[(i64, String)],
) {
    let mut req = c
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream);
    for (ts, msg) in events {
        req = req.log_events(
            InputLogEvent::builder()
                .timestamp(*ts)
                .message(msg)
                .build()
                .unwrap(),
        );
    }
    req.send().await.unwrap();
}

async fn setup(c: &aws_sdk_cloudwatchlogs::Client, group: &str) {
    c.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    for s in [STREAM, "authenticator-0123456789"] {
        c.create_log_stream()
            .log_group_name(group)
            .log_stream_name(s)
            .send()
            .await
            .unwrap();
    }
}

struct Poller {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), audit_bridge::SourceError>>,
    rx: mpsc::Receiver<AuditBatch>,
}

fn start(endpoint: &str, group: &str, state: &std::path::Path) -> Poller {
    let mut cfg = CloudWatchConfig::new(group);
    cfg.endpoint = Some(endpoint.to_string());
    cfg.region = Some("us-east-1".into());
    cfg.poll_secs = 1;
    cfg.late_window_secs = 120;
    cfg.page_limit = 5;
    cfg.initial_backoff_millis = 50;
    cfg.max_backoff_millis = 400;
    let (tx, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let task = tokio::spawn(CloudWatchSource::new(cfg).run(
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

fn ids(r: &[serde_json::Value]) -> Vec<String> {
    r.iter()
        .map(|v| v["auditID"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_late_events_truncation_and_restart() {
    aws_env();
    let moto = common::moto();
    let c = client(&moto.url).await;
    let group = "/aws/eks/c1/cluster";
    setup(&c, group).await;
    let dir = tempfile::tempdir().unwrap();
    let t0 = now_ms() - 60_000;
    // 12 audit events on the same millisecond pairs (boundary cases) and 3 from another stream.
    let first: Vec<(i64, String)> = (0..12)
        .map(|i| (t0 + (i / 2) as i64, audit(&format!("a{i}"))))
        .collect();
    put(&c, group, STREAM, &first).await;
    put(
        &c,
        group,
        "authenticator-0123456789",
        &(0..3)
            .map(|i| (t0 + i, format!("time=\"x\" msg=\"authenticator line {i}\"")))
            .collect::<Vec<_>>(),
    )
    .await;

    let mut seen_total: Vec<String> = Vec::new();
    let mut p = start(&moto.url, group, dir.path());
    let (r, rej) = collect(&mut p.rx, 12, Duration::from_secs(20)).await;
    assert_eq!(r.len(), 12, "pagination (5 per page) delivered all 12");
    assert!(
        rej.is_empty(),
        "other streams are filtered client-side: {rej:?}"
    );
    seen_total.extend(ids(&r));

    // A late event inside the window (older than what was read), one outside it,
    // and a message CloudWatch truncated.
    put(&c, group, STREAM, &[(t0 - 30_000, audit("late-in"))]).await;
    put(
        &c,
        group,
        STREAM,
        &[(now_ms() - 600_000, audit("late-out"))],
    )
    .await;
    let truncated = format!("{}[Truncated...]", &audit("cut")[..60]);
    put(&c, group, STREAM, &[(now_ms(), truncated)]).await;
    let (r, rej) = collect(&mut p.rx, 1, Duration::from_secs(20)).await;
    assert_eq!(ids(&r), vec!["late-in"]);
    let (r2, rej2) = drain(&mut p.rx, Duration::from_millis(2500)).await;
    assert!(
        r2.is_empty(),
        "repeated or out-of-window events: {:?}",
        ids(&r2)
    );
    let rej: Vec<_> = rej.into_iter().chain(rej2).collect();
    assert_eq!(rej.len(), 1, "{rej:?}");
    assert!(
        rej[0].reason.contains("truncated by cloudwatch logs"),
        "{}",
        rej[0]
    );
    assert!(rej[0]
        .location
        .starts_with(&format!("cloudwatch:{group}:{STREAM}:")));
    seen_total.extend(ids(&r));
    p.stop().await;

    // Restart from the checkpoint: only what is new.
    put(
        &c,
        group,
        STREAM,
        &(0..3)
            .map(|i| (now_ms(), audit(&format!("n{i}"))))
            .collect::<Vec<_>>(),
    )
    .await;
    let mut p = start(&moto.url, group, dir.path());
    let (r, _) = collect(&mut p.rx, 3, Duration::from_secs(20)).await;
    let (more, _) = drain(&mut p.rx, Duration::from_millis(2500)).await;
    assert!(more.is_empty(), "re-read after restart: {:?}", ids(&more));
    let mut got = ids(&r);
    got.sort();
    assert_eq!(got, vec!["n0", "n1", "n2"]);
    seen_total.extend(got);
    p.stop().await;

    let unique: HashSet<_> = seen_total.iter().collect();
    assert_eq!(
        unique.len(),
        seen_total.len(),
        "no duplicates: {seen_total:?}"
    );
    assert!(!seen_total.contains(&"late-out".to_string()));
    println!(
        "cloudwatch: {} events delivered once each; late event outside the 120 s window not re-read (declared)",
        seen_total.len()
    );
}

/// A stand-in for CloudWatch's throttling in front of moto: the first N
/// FilterLogEvents calls are answered with ThrottlingException, the rest forwarded.
async fn throttling_proxy(upstream: String, throttle: usize) -> (String, Arc<AtomicUsize>) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let http = http.clone();
        let upstream = upstream.clone();
        let seen = seen.clone();
        async move {
            let target = headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            if target.ends_with("FilterLogEvents") && seen.fetch_add(1, Ordering::SeqCst) < throttle
            {
                return (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "application/x-amz-json-1.1")],
                    Bytes::from_static(
                        br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                    ),
                );
            }
            let mut req = http.post(format!("{upstream}/")).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            let resp = req.send().await.unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let body = resp.bytes().await.unwrap();
            (
                status,
                [("content-type", "application/x-amz-json-1.1")],
                body,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_with_backoff() {
    aws_env();
    let moto = common::moto();
    let c = client(&moto.url).await;
    let group = "/aws/eks/throttled/cluster";
    setup(&c, group).await;
    put(
        &c,
        group,
        STREAM,
        &(0..4)
            .map(|i| (now_ms(), audit(&format!("t{i}"))))
            .collect::<Vec<_>>(),
    )
    .await;
    let (proxy, calls) = throttling_proxy(moto.url.clone(), 5).await;
    let errors_before = audit_bridge::telemetry::get("audit_source_errors_total");
    let dir = tempfile::tempdir().unwrap();
    let mut p = start(&proxy, group, dir.path());
    let (r, _) = collect(&mut p.rx, 4, Duration::from_secs(30)).await;
    assert_eq!(r.len(), 4, "events arrive once throttling stops");
    assert!(
        calls.load(Ordering::SeqCst) > 5,
        "the throttled calls were retried"
    );
    assert!(
        audit_bridge::telemetry::get("audit_source_errors_total") > errors_before,
        "throttling was reported"
    );
    p.stop().await;
}
