//! The audit webhook backend against a real TLS client: client certificates, bearer
//! tokens, bad credentials, malformed batches, the size limit, backpressure, and the
//! spool surviving a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use audit_bridge::sources::webhook::{WebhookConfig, WebhookSource};
use audit_bridge::{CancellationToken, CheckpointStore, Source};
use common::{collect, drain, fixtures, Pki};
use tokio::sync::mpsc;

struct Running {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), audit_bridge::SourceError>>,
}

fn start(
    cfg: WebhookConfig,
    state: &std::path::Path,
) -> (Running, mpsc::Receiver<audit_bridge::AuditBatch>) {
    let src = WebhookSource::bind(cfg, state.join("spool")).unwrap();
    let addr = src.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let cp = CheckpointStore::open(state.join("checkpoints")).unwrap();
    let task = tokio::spawn(src.run(tx, cp, stop.clone()));
    (
        Running {
            url: format!("https://127.0.0.1:{}/audit", addr.port()),
            stop,
            task,
        },
        rx,
    )
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn config(pki: &Pki, dir: &std::path::Path, token: bool, ca: bool) -> WebhookConfig {
    let mut c = WebhookConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_cert.clone(),
        pki.server_key.clone(),
    );
    if ca {
        c.client_ca = Some(pki.ca.clone());
    }
    if token {
        let p = dir.join("token");
        std::fs::write(&p, "s3cret-token\n").unwrap();
        c.token_file = Some(p);
    }
    c
}

/// Every Falco k8s-audit trace that is a valid audit event, as one EventList.
fn falco_event_list() -> (Vec<u8>, usize) {
    let dir = fixtures().join("falco-k8s-audit/trace_files/k8s_audit");
    let mut items = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v.get("auditID").is_some() {
                items.push(v);
            }
        }
    }
    let n = items.len();
    let list = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items});
    (serde_json::to_vec(&list).unwrap(), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_and_token_are_accepted_bad_credentials_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (hook, mut rx) = start(config(&pki, dir.path(), true, true), dir.path());

    let capture = std::fs::read(
        fixtures().join("apiserver-captures/audit-webhook-eventlist-with-exec-events.json"),
    )
    .unwrap();
    let capture_items = serde_json::from_slice::<serde_json::Value>(&capture).unwrap()["items"]
        .as_array()
        .unwrap()
        .len();

    // Client certificate from the configured CA.
    let r = pki
        .client(Some(&pki.client_pem))
        .post(&hook.url)
        .header("content-type", "application/json")
        .body(capture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (records, rejected) = collect(&mut rx, capture_items, Duration::from_secs(10)).await;
    assert_eq!(records.len(), capture_items);
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(records[0]["objectRef"]["subresource"], "exec");

    // Bearer token, no certificate; the Falco traces as one batch.
    let (falco, n) = falco_event_list();
    let r = pki
        .client(None)
        .post(&hook.url)
        .bearer_auth("s3cret-token")
        .body(falco)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (records, _) = collect(&mut rx, n, Duration::from_secs(10)).await;
    assert_eq!(records.len(), n);
    assert!(n >= 40, "{n} falco trace events");

    // No credentials, a wrong token, a certificate from another CA.
    let r = pki
        .client(None)
        .post(&hook.url)
        .body(capture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.text().await.unwrap(),
        "client certificate or bearer token required"
    );
    let r = pki
        .client(None)
        .post(&hook.url)
        .bearer_auth("guess")
        .body(capture.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "bearer token is not valid");
    let rogue = pki
        .client(Some(&pki.rogue_client_pem))
        .post(&hook.url)
        .body(capture.clone())
        .send()
        .await;
    match rogue {
        Err(_) => {}
        Ok(r) => panic!("a certificate from another CA was answered {}", r.status()),
    }
    let (records, _) = drain(&mut rx, Duration::from_millis(300)).await;
    assert!(records.is_empty(), "refused requests reached the pipeline");
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_only_mode_requires_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (hook, _rx) = start(config(&pki, dir.path(), false, true), dir.path());
    // Without a token configured the handshake itself demands a client certificate.
    assert!(pki
        .client(None)
        .post(&hook.url)
        .body("{}")
        .send()
        .await
        .is_err());
    let r = pki
        .client(Some(&pki.client_pem))
        .post(&hook.url)
        .body(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_get_400_with_the_reason_and_oversize_413() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = config(&pki, dir.path(), true, false);
    cfg.max_body_bytes = 64 * 1024;
    let (hook, mut rx) = start(cfg, dir.path());
    let client = pki.client(None);
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "empty body"),
        (
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{\"a\":"
                .to_vec(),
            400,
            "truncated json",
        ),
        (b"not json".to_vec(), 400, "malformed json"),
        (
            b"{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}".to_vec(),
            400,
            "expected kind EventList, found kind \"Pod\"",
        ),
        (
            b"{\"kind\":\"EventList\",\"apiVersion\":\"v1\",\"items\":[]}".to_vec(),
            400,
            "expected apiVersion audit.k8s.io/v1",
        ),
        (
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[\"x\"]}"
                .to_vec(),
            400,
            "items[0] is not an object",
        ),
        (
            b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":7}".to_vec(),
            400,
            "not an EventList",
        ),
        (
            vec![b' '; 65 * 1024],
            413,
            "request body exceeds 65536 bytes",
        ),
    ];
    for (body, status, reason) in cases {
        let r = client
            .post(&hook.url)
            .bearer_auth("s3cret-token")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "case {reason}");
        let text = r.text().await.unwrap();
        assert!(text.contains(reason), "want {reason:?}, got {text:?}");
    }
    // After all that, a good batch still goes through.
    let r = client
        .post(&hook.url)
        .bearer_auth("s3cret-token")
        .body(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Event","auditID":"ok-1","verb":"get","stage":"ResponseComplete"},{"kind":"Pod"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (records, rejected) = collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(records[0]["auditID"], "ok-1");
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0]
            .reason
            .contains("expected kind \"Event\", found \"Pod\""),
        "{}",
        rejected[0]
    );
    hook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_answers_429_and_the_spool_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = config(&pki, dir.path(), true, false);
    cfg.max_pending_bytes = 300;
    let (hook, mut rx) = start(cfg.clone(), dir.path());
    let client = pki.client(None);
    let batch = |id: &str| {
        format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{{"kind":"Event","auditID":"{id}","verb":"get","stage":"ResponseComplete","padding":"{}"}}]}}"#,
            "x".repeat(150)
        )
    };
    let post = |body: String| {
        client
            .post(&hook.url)
            .bearer_auth("s3cret-token")
            .body(body)
            .send()
    };
    assert_eq!(post(batch("b-1")).await.unwrap().status(), 200);
    // Nothing has been processed yet: the next batch would pass the limit.
    let r = post(batch("b-2")).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("spool full"));

    // Stop without processing: b-1 is on disk and comes back after a restart.
    let mut first = rx.recv().await.unwrap();
    common::open_documents(&mut first);
    assert_eq!(first.records[0]["auditID"], "b-1");
    drop(first); // not processed: no checkpoint
    hook.stop().await;
    drop(rx);
    let (hook, mut rx) = start(cfg.clone(), dir.path());
    let (records, _) = collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(
        records[0]["auditID"], "b-1",
        "the unprocessed batch is replayed"
    );
    // Processed now: room again, and a second restart replays nothing.
    let client2 = pki.client(None);
    let r = client2
        .post(&hook.url)
        .bearer_auth("s3cret-token")
        .body(batch("b-2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (records, _) = collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(records[0]["auditID"], "b-2");
    hook.stop().await;
    drop(rx);
    let (hook, mut rx) = start(cfg, dir.path());
    let (records, _) = drain(&mut rx, Duration::from_millis(500)).await;
    assert!(
        records.is_empty(),
        "processed batches came back: {records:?}"
    );
    hook.stop().await;
}
