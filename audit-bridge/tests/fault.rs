//! Fault tests: `kill -9` the bridge in the middle of a stream — through the webhook
//! backend, a tailed file and CloudWatch (moto) — restart it, and count. No event may
//! be lost; duplicates may appear only inside the declared window: the batches that
//! were accepted or read but not yet checkpointed when the process died (at most the
//! pipeline queue of 64 batches, plus the batches handed to the evaluation workers and
//! not yet committed, plus the requests in flight). The numbers are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RULES: &str = r#"
- rule: Every audit event
  desc: one alert per audit event, to count them
  condition: ka.auditid exists
  output: event %ka.auditid
  priority: INFORMATIONAL
  source: k8s_audit
"#;

/// The pipeline queue (64) plus the batches taken from it and not yet committed (the
/// bridge runs with its default number of evaluation workers).
fn batches_in_flight() -> usize {
    64 + audit_bridge::pipeline::batches_taken(audit_bridge::pipeline::default_workers())
}

struct Bridge {
    child: Child,
}

fn spawn(args: &[String], dir: &Path, env: &[(&str, &str)]) -> Bridge {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("bridge.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether-audit-bridge"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Bridge {
        child: cmd.spawn().unwrap(),
    }
}

impl Bridge {
    /// SIGKILL: no shutdown path runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
    fn stop(mut self) {
        // SAFETY: kill(2) with SIGTERM on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Every `ka.auditid` in the alerts file, counted (lines torn by the kill included).
fn alert_counts(path: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = HashMap::new();
    let key = "\"ka.auditid\":\"";
    for line in text.lines() {
        let mut rest = line;
        while let Some(i) = rest.find(key) {
            rest = &rest[i + key.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            *counts.entry(rest[..end].to_string()).or_insert(0) += 1;
            rest = &rest[end..];
        }
    }
    counts
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(f(), "timed out waiting for {what}");
}

/// Checks and prints: nothing lost, duplicates within the window.
fn verdict(name: &str, expected: &[String], alerts: &Path, window: usize) {
    let counts = alert_counts(alerts);
    let lost: Vec<&String> = expected
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    let total: usize = counts.values().sum();
    let dupes = total - counts.len();
    println!(
        "fault[{name}]: sent {} events, alerts for {} distinct, lost {}, duplicates {} (declared window {window})",
        expected.len(),
        counts.len(),
        lost.len(),
        dupes
    );
    assert!(
        lost.is_empty(),
        "{name}: lost {} events, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        dupes <= window,
        "{name}: {dupes} duplicates beyond the window {window}"
    );
}

fn event(id: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/configmaps","verb":"list","user":{{"username":"system:serviceaccount:kube-system:replicaset-controller","groups":["system:serviceaccounts"]}},"sourceIPs":["10.0.0.1"],"userAgent":"kube-controller-manager/v1.30.0","objectRef":{{"resource":"configmaps","namespace":"default","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-22T10:18:57.347954Z","stageTimestamp":"2026-11-22T10:18:57.348954Z"}}"#
    )
}

fn common_args(dir: &Path) -> Vec<String> {
    let rules = dir.join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    vec![
        "--rules".into(),
        rules.display().to_string(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
        "--alerts".into(),
        dir.join("alerts.jsonl").display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_backend_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::new(dir.path());
    std::fs::write(dir.path().join("token"), "t0ken").unwrap();
    let port = common::free_port();
    let mut args = common_args(dir.path());
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--tls-cert".into(),
        pki.server_cert.display().to_string(),
        "--tls-key".into(),
        pki.server_key.display().to_string(),
        "--token-file".into(),
        dir.path().join("token").display().to_string(),
    ]);
    let url = format!("https://127.0.0.1:{port}/audit");
    const BATCHES: usize = 50;
    const PER: usize = 400;
    let bodies: Vec<String> = (0..BATCHES)
        .map(|b| {
            let items: Vec<String> = (0..PER).map(|i| event(&format!("w-{b}-{i}"))).collect();
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#, items.join(","))
        })
        .collect();
    let expected: Vec<String> = (0..BATCHES)
        .flat_map(|b| (0..PER).map(move |i| format!("w-{b}-{i}")))
        .collect();

    let bridge = spawn(&args, dir.path(), &[]);
    let client = pki.client(None);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (c, u, a) = (client.clone(), url.clone(), acked.clone());
    // The API server's side: each batch retried until it is answered 200.
    let sender = tokio::spawn(async move {
        for body in bodies {
            loop {
                match c
                    .post(&u)
                    .bearer_auth("t0ken")
                    .body(body.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => break,
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let alerts = dir.path().join("alerts.jsonl");
    wait_for("20 batches acknowledged", Duration::from_secs(120), || {
        acked.load(std::sync::atomic::Ordering::SeqCst) >= 20
    });
    bridge.kill9();
    let before = alert_counts(&alerts).values().sum::<usize>();
    std::thread::sleep(Duration::from_millis(300));
    let bridge = spawn(&args, dir.path(), &[]);
    sender.await.unwrap();
    wait_for("every event alerted", Duration::from_secs(180), || {
        alert_counts(&alerts).len() >= expected.len()
    });
    bridge.stop();
    println!("fault[webhook]: killed with {before} alerts written and 20+ batches acknowledged");
    verdict(
        "webhook",
        &expected,
        &alerts,
        (batches_in_flight() + 1) * PER,
    );
}

#[test]
fn file_source_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, "").unwrap();
    let mut args = common_args(dir.path());
    args.extend(["--file".into(), log.display().to_string()]);
    const N: usize = 40_000;
    let expected: Vec<String> = (0..N).map(|i| format!("f-{i}")).collect();
    let bridge = spawn(&args, dir.path(), &[]);
    let writer_log = log.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&writer_log)
            .unwrap();
        for chunk in (0..N).collect::<Vec<_>>().chunks(500) {
            let mut buf = String::new();
            for i in chunk {
                buf.push_str(&event(&format!("f-{i}")));
                buf.push('\n');
            }
            f.write_all(buf.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let alerts = dir.path().join("alerts.jsonl");
    wait_for("alerts to start", Duration::from_secs(60), || {
        alert_counts(&alerts).len() >= 5_000
    });
    bridge.kill9();
    let before = alert_counts(&alerts).values().sum::<usize>();
    let bridge = spawn(&args, dir.path(), &[]);
    writer.join().unwrap();
    wait_for("every line alerted", Duration::from_secs(180), || {
        alert_counts(&alerts).len() >= N
    });
    bridge.stop();
    println!("fault[file]: killed with {before} alerts written");
    verdict("file", &expected, &alerts, batches_in_flight() * 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_source_survives_kill_9() {
    let moto = common::moto();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ];
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.url)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let cw = aws_sdk_cloudwatchlogs::Client::new(&cfg);
    let group = "/aws/eks/fault/cluster";
    let stream = "kube-apiserver-audit-fault";
    cw.create_log_group()
        .log_group_name(group)
        .send()
        .await
        .unwrap();
    cw.create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = common_args(dir.path());
    args.extend([
        "--cloudwatch-log-group".into(),
        group.into(),
        "--cloudwatch-endpoint".into(),
        moto.url.clone(),
        "--region".into(),
        "us-east-1".into(),
        "--cloudwatch-poll-secs".into(),
        "1".into(),
    ]);
    const ROUNDS: usize = 12;
    const PER: usize = 500;
    let expected: Vec<String> = (0..ROUNDS * PER).map(|i| format!("c-{i}")).collect();
    let now = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let put = |round: usize| {
        let cw = cw.clone();
        async move {
            let mut req = cw
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream);
            let t = now();
            for i in round * PER..(round + 1) * PER {
                req = req.log_events(
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(t)
                        .message(event(&format!("c-{i}")))
                        .build()
                        .unwrap(),
                );
            }
            req.send().await.unwrap();
        }
    };
    let bridge = spawn(&args, dir.path(), &env);
    let alerts = dir.path().join("alerts.jsonl");
    for r in 0..ROUNDS / 2 {
        put(r).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for("alerts to start", Duration::from_secs(60), || {
        !alert_counts(&alerts).is_empty()
    });
    bridge.kill9();
    let before = alert_counts(&alerts).values().sum::<usize>();
    for r in ROUNDS / 2..ROUNDS {
        put(r).await;
    }
    let bridge = spawn(&args, dir.path(), &env);
    wait_for("every event alerted", Duration::from_secs(120), || {
        alert_counts(&alerts).len() >= expected.len()
    });
    // Let a few more polls re-read the late window: they must add nothing.
    std::thread::sleep(Duration::from_secs(3));
    bridge.stop();
    println!("fault[cloudwatch]: killed with {before} alerts written");
    verdict(
        "cloudwatch",
        &expected,
        &alerts,
        batches_in_flight() * 10_000,
    );
}
