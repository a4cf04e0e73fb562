//! End-to-end throughput of the audit bridge, in process, on loopback:
//!
//! 1. raw: `serde_json` parse of the corpus into values (the floor any reader pays);
//! 2. webhook: HTTPS POSTs of 400-event `EventList`s (as kube-apiserver's webhook
//!    backend batches them) -> authentication -> validation -> spool (group-committed
//!    fdatasync) -> parse -> every rule of the bundled library (Falco's k8s_audit
//!    rules included) -> alerts serialised; timed until the last batch is evaluated;
//! 3. file: the same events as JSON lines in a file, tailed and evaluated.
//!
//! Run: `cargo bench -p audit-bridge --bench throughput` (env `BENCH_EVENTS`,
//! `BENCH_CONCURRENCY`, `BENCH_CORPUS=falco|quiet`, `BENCH_WORKERS`: evaluation threads,
//! default the available parallelism). Figures go to bench/RESULTS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_bridge::pipeline::Pipeline;
use audit_bridge::sources::file::{FileConfig, FileSource};
use audit_bridge::sources::webhook::{WebhookConfig, WebhookSource};
use audit_bridge::{telemetry, CancellationToken, CheckpointStore, Source};
use policies::RuleSet;

fn corpus() -> Vec<serde_json::Value> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/falco-k8s-audit/trace_files/k8s_audit"
    );
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if v.get("auditID").is_some() && v.get("verb").is_some() {
                    out.push(v);
                }
            }
        }
    }
    let cap = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/apiserver-captures/audit-audit-log-pods-exec-RequestResponse.jsonl"
    );
    for line in std::fs::read_to_string(cap).unwrap().lines() {
        out.push(serde_json::from_str(line).unwrap());
    }
    out
}

/// A Metadata-level stream like a busy cluster's bulk: controllers and kubelets
/// reading and updating objects, rarely matching a rule.
fn quiet_corpus() -> Vec<serde_json::Value> {
    let verbs = ["get", "list", "watch", "update", "patch"];
    let resources = [
        "configmaps",
        "pods",
        "leases",
        "endpoints",
        "nodes",
        "events",
    ];
    (0..30)
        .map(|i| {
            let verb = verbs[i % verbs.len()];
            let resource = resources[i % resources.len()];
            serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
                "auditID": "x", "stage": "ResponseComplete",
                "requestURI": format!("/api/v1/namespaces/ns-{i}/{resource}"),
                "verb": verb,
                "user": {"username": format!("system:serviceaccount:kube-system:controller-{i}"), "groups": ["system:serviceaccounts", "system:authenticated"]},
                "sourceIPs": ["10.0.0.7"], "userAgent": "kube-controller-manager/v1.30.0",
                "objectRef": {"resource": resource, "namespace": format!("ns-{i}"), "name": format!("obj-{i}"), "apiVersion": "v1"},
                "responseStatus": {"metadata": {}, "code": 200},
                "requestReceivedTimestamp": "2026-11-22T10:18:57.347954Z",
                "stageTimestamp": "2026-11-22T10:18:57.349954Z",
                "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed"}
            })
        })
        .collect()
}

/// `n` events cycling through the corpus (`BENCH_CORPUS=falco`, the default: the Falco
/// k8s-audit traces and the apiserver captures; `quiet`: [`quiet_corpus`]), each with
/// its own audit ID.
fn events(n: usize) -> Vec<String> {
    let c = match std::env::var("BENCH_CORPUS").as_deref() {
        Ok("quiet") => quiet_corpus(),
        _ => corpus(),
    };
    (0..n)
        .map(|i| {
            let mut v = c[i % c.len()].clone();
            v["auditID"] = serde_json::json!(format!("bench-{i}"));
            serde_json::to_string(&v).unwrap()
        })
        .collect()
}

fn pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let k = rcgen::KeyPair::generate().unwrap();
    let p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let c = p.self_signed(&k).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, c.pem()).unwrap();
    std::fs::write(&key, k.serialize_pem()).unwrap();
    (cert, key, c.pem().into_bytes())
}

fn wait_batches(target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while telemetry::get("audit_batches_processed_total") < target {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(audit_bridge::pipeline::default_workers);
    let per = 400;
    let n = n / per * per;
    let lines = events(n);
    let rules = Arc::new(RuleSet::bundled_library());
    println!(
        "corpus {}: {n} events, mean {} bytes, {} rules loaded, {workers} evaluation workers",
        std::env::var("BENCH_CORPUS").unwrap_or_else(|_| "falco".into()),
        lines.iter().map(String::len).sum::<usize>() / lines.len().max(1),
        rules.rules().len()
    );

    // 1. Raw parse.
    let t = Instant::now();
    let mut bytes = 0usize;
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        bytes += l.len();
        std::hint::black_box(v);
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "raw serde_json parse: {raw:.0} events/s ({:.0} MB/s)",
        bytes as f64 / t.elapsed().as_secs_f64() / 1e6
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 2. Webhook backend.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = pki(dir.path());
    std::fs::write(dir.path().join("token"), "bench").unwrap();
    let mut cfg = WebhookConfig::new("127.0.0.1:0".parse().unwrap(), cert, key);
    cfg.token_file = Some(dir.path().join("token"));
    let bodies: Vec<bytes::Bytes> = lines
        .chunks(per)
        .map(|c| bytes::Bytes::from(format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#, c.join(","))))
        .collect();
    let batches = bodies.len() as u64;
    let webhook_rate = rt.block_on(async {
        let src = WebhookSource::bind(cfg, dir.path().join("spool")).unwrap();
        let url = format!("https://127.0.0.1:{}/audit", src.local_addr().unwrap().port());
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let stop = CancellationToken::new();
        let pipeline = Pipeline::new(rules.clone(), None, Some(Box::new(std::io::sink())), "bench").with_workers(workers);
        let p = tokio::task::spawn_blocking(move || pipeline.run_blocking(rx));
        let cp = CheckpointStore::open(dir.path().join("cp")).unwrap();
        let s = tokio::spawn(src.run(tx, cp, stop.clone()));
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let base = telemetry::get("audit_batches_processed_total");
        let t = Instant::now();
        let bodies = Arc::new(bodies);
        let mut senders = Vec::new();
        for w in 0..concurrency {
            let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
            senders.push(tokio::spawn(async move {
                let mut i = w;
                let mut refused = 0u64;
                while i < bodies.len() {
                    let r = client.post(&url).bearer_auth("bench").body(bodies[i].clone()).send().await.unwrap();
                    if r.status() == 200 {
                        i += concurrency;
                    } else {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                refused
            }));
        }
        let mut refused = 0;
        for s in senders {
            refused += s.await.unwrap();
        }
        let accepted = t.elapsed();
        tokio::task::spawn_blocking(move || wait_batches(base + batches, Duration::from_secs(600))).await.unwrap();
        let done = t.elapsed();
        stop.cancel();
        s.await.unwrap().unwrap();
        let stats = p.await.unwrap().unwrap();
        println!(
            "webhook: {n} events in {} POSTs of {per}, {concurrency} connections: accepted (durable) in {:.2}s = {:.0} events/s; evaluated in {:.2}s = {:.0} events/s; {} alerts; {refused} requests refused (429/503) and retried; {} spool group commits",
            batches, accepted.as_secs_f64(), n as f64 / accepted.as_secs_f64(), done.as_secs_f64(), n as f64 / done.as_secs_f64(), stats.alerts,
            telemetry::get("audit_spool_commits_total")
        );
        n as f64 / done.as_secs_f64()
    });

    // 3. File.
    let fdir = tempfile::tempdir().unwrap();
    let path = fdir.path().join("audit.log");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let file_rate = rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let stop = CancellationToken::new();
        let pipeline = Pipeline::new(
            rules.clone(),
            None,
            Some(Box::new(std::io::sink())),
            "bench",
        )
        .with_workers(workers);
        let base = telemetry::get("audit_events_received_total");
        let t = Instant::now();
        let p = tokio::task::spawn_blocking(move || pipeline.run_blocking(rx));
        let cp = CheckpointStore::open(fdir.path().join("cp")).unwrap();
        let s = tokio::spawn(FileSource::new(FileConfig::new(&path)).run(tx, cp, stop.clone()));
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            while telemetry::get("audit_events_received_total") < base + n as u64 {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .await
        .unwrap();
        stop.cancel();
        s.await.unwrap().unwrap();
        let stats = p.await.unwrap().unwrap();
        let e = t.elapsed();
        println!(
            "file: {n} events in {:.2}s = {:.0} events/s; {} alerts",
            e.as_secs_f64(),
            n as f64 / e.as_secs_f64(),
            stats.alerts
        );
        n as f64 / e.as_secs_f64()
    });
    println!("summary: raw {raw:.0}/s, webhook end-to-end {webhook_rate:.0}/s, file end-to-end {file_rate:.0}/s");
}
