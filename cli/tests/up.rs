//! `tether up` end to end: the real binary starts the webhook and the audit bridge, both
//! answer over HTTPS with the generated CA, an audit batch becomes an alert on stdout, and
//! SIGTERM stops every role cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const EXEC_EVENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/falco-k8s-audit/trace_files/k8s_audit/exec_pod.json"
);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, deadline: Instant) {
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops `tether up` and its roles when the test ends, also when an assertion fails
/// half-way: SIGTERM to `up` (which stops its roles), then SIGKILL if it is still there.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                // SAFETY: kill(2) on our own child.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn client(ca: &Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[test]
fn up_runs_webhook_and_audit_bridge_and_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let (hook_port, audit_port, metrics_port) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["up", "--no-node", "--state-dir"])
        .arg(state.path())
        .args(["--webhook-listen", &format!("127.0.0.1:{hook_port}")])
        .args(["--audit-listen", &format!("127.0.0.1:{audit_port}")])
        .args([
            "--audit-metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = StopOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    wait_listening(hook_port, deadline);
    wait_listening(audit_port, deadline);
    let http = client(&state.path().join("certs/ca.crt"));

    // The admission webhook answers a CONNECT exec review with the session annotation (the
    // API server prefixes the key with the webhook's name: `exec.tether.io/session`).
    let review = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json"
    ))
    .unwrap();
    let answer: serde_json::Value = http
        .post(format!("https://127.0.0.1:{hook_port}/validate"))
        .header("content-type", "application/json")
        .body(review)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["kind"], "AdmissionReview");
    let uid = answer["response"]["uid"].as_str().unwrap();
    assert_eq!(answer["response"]["auditAnnotations"]["session"], uid);

    // The audit webhook backend takes a batch with the generated token; the bundled
    // library's Falco rules alert on the exec.
    let token = std::fs::read_to_string(state.path().join("audit-token")).unwrap();
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(EXEC_EVENT).unwrap()).unwrap();
    let batch = serde_json::json!({
        "kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event]
    });
    let status = http
        .post(format!("https://127.0.0.1:{audit_port}/audit"))
        .bearer_auth(token.trim())
        .json(&batch)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let unauthorized = http
        .post(format!("https://127.0.0.1:{audit_port}/audit"))
        .bearer_auth("wrong")
        .json(&batch)
        .send()
        .unwrap()
        .status();
    assert_eq!(unauthorized, 401);

    let alert = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no alert on stdout");
        let alert: serde_json::Value = serde_json::from_str(&line).unwrap();
        if alert["rule"] == "Attach/Exec Pod" {
            break alert;
        }
    };
    assert_eq!(alert["source"], "k8s_audit");
    assert!(alert["time"].as_str().unwrap().ends_with('Z'));

    // The audit bridge counts the batch per source on its Prometheus endpoint.
    let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("audit_events_received_total{source=\"webhook\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("audit_spool_pending_bytes "), "{metrics}");

    // SIGTERM stops every role and `up` itself, cleanly.
    let pid = i32::try_from(child.0.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "tether up exited with {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "tether up did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", hook_port)).is_err(),
        "the webhook still listens after `up` stopped"
    );
}
