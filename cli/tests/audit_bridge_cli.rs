//! `tether audit-bridge` end to end: a tailed audit log in, Falco JSON alert lines out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A scratch directory, removed when the test ends.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tether-audit-bridge-{name}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn without_a_source_it_says_what_to_give() {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["audit-bridge", "--state-dir"])
        .arg(scratch("nosource").path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no audit source configured"), "{err}");
}

#[test]
fn tails_a_file_and_writes_falco_alerts() {
    let scratch_dir = scratch("file");
    let dir = scratch_dir.path();
    let log = dir.join("audit.log");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/apiserver-captures/audit-audit-log-pods-exec-RequestResponse.jsonl"),
        &log,
    )
    .unwrap();
    let alerts = dir.join("alerts.jsonl");
    let child = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("audit-bridge")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--alerts")
        .arg(&alerts)
        .arg("--file")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&alerts).unwrap_or_default();
        if text.contains("Attach/Exec Pod") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alert: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|a| a["rule"] == "Attach/Exec Pod")
        .expect("an exec alert");
    assert_eq!(alert["source"], "k8s_audit");
    assert!(alert["output"]
        .as_str()
        .unwrap()
        .contains("user=kapi-admin"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tether audit-bridge:") && err.contains("alerts"),
        "{err}"
    );
}
