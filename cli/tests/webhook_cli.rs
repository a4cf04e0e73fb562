//! `tether certs`, `tether webhook-config` and `tether webhook` as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TETHER: &str = env!("CARGO_BIN_EXE_tether");
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../webhook/tests/data/exec-and-pods.yaml"
);

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tether-webhook-cli-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tether(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(TETHER).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn serial(summary: &str, which: &str) -> String {
    let line = summary.lines().find(|l| l.starts_with(which)).unwrap();
    line.split("serial ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn certs_generate_and_rotate() {
    let dir = TempDir::new();
    let out = dir.path().join("pki");
    let (code, stdout, stderr) = tether(&[
        "certs",
        "generate",
        "--dns",
        "tether-webhook.tether-system.svc",
        "--ip",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for f in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(
        stdout.contains("names tether-webhook.tether-system.svc,127.0.0.1"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (code, rotated, stderr) = tether(&["certs", "rotate", "--dir", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serial(&stdout, "ca:"),
        serial(&rotated, "ca:"),
        "the CA is far from expiry: kept"
    );
    assert_ne!(serial(&stdout, "serving:"), serial(&rotated, "serving:"));
    // Forcing a CA renewal: the bundle then holds both.
    let (code, renewed, stderr) = tether(&[
        "certs",
        "rotate",
        "--dir",
        out.to_str().unwrap(),
        "--ca-days",
        "2000",
        "--ca-renew-before-days",
        "1999",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        renewed.contains(", new)") && renewed.contains("(2 CAs)"),
        "{renewed}"
    );

    // Errors name what is wrong and exit 1.
    let (code, _, stderr) = tether(&["certs", "generate", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no subject names given"), "{stderr}");
    let (code, _, stderr) = tether(&[
        "certs",
        "rotate",
        "--dir",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("ca.crt"), "{stderr}");
    let (code, _, stderr) = tether(&[
        "certs",
        "generate",
        "--dns",
        "bad name",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("invalid subject name \"bad name\""),
        "{stderr}"
    );
}

#[test]
fn webhook_config_prints_kubernetes_json() {
    let dir = TempDir::new();
    let (code, _, stderr) = tether(&[
        "certs",
        "generate",
        "--dns",
        "x.example",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let bundle = dir.path().join("ca-bundle.crt");
    let (code, stdout, stderr) = tether(&[
        "webhook-config",
        "--ca-bundle",
        bundle.to_str().unwrap(),
        "--namespace",
        "sec",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["kind"], "ValidatingWebhookConfiguration");
    assert_eq!(
        v["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "sec"
    );
    assert_eq!(
        v["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["kube-system", "sec"])
    );
    assert_eq!(
        v["webhooks"][1]["rules"][0]["operations"],
        serde_json::json!(["CONNECT"])
    );
    let (code, _, stderr) = tether(&[
        "webhook-config",
        "--ca-bundle",
        dir.path().join("tls.key").to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("tls.key") && stderr.contains("no PEM CERTIFICATE"),
        "{stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn webhook_starts_loads_rules_and_stops() {
    let dir = TempDir::new();
    let (code, _, stderr) = tether(&[
        "certs",
        "generate",
        "--dns",
        "localhost",
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = dir.path().join("decisions.jsonl");
    let mut child = Command::new(TETHER)
        .args(["webhook", "--listen", &listen])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .args(["--rules", RULES])
        .arg("--decision-log")
        .arg(&log)
        .args(["--detect-only", "--failure-mode", "deny"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut listening, mut loaded) = (false, false);
    let mut seen = Vec::new();
    while !(listening && loaded) && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            listening |= line.contains("webhook listening") && line.contains(&listen);
            loaded |= line.contains("rules loaded") && line.contains("rules=7");
            seen.push(line);
        }
    }
    assert!(listening && loaded, "{seen:#?}");
    assert!(std::net::TcpStream::connect(&listen).is_ok());
    assert!(log.exists());
    child.kill().unwrap();
    child.wait().unwrap();

    // A bad certificate path: exit 1 naming the file.
    let (code, _, stderr) = tether(&[
        "webhook",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/tls.crt",
        "--tls-key",
        "/nonexistent/tls.key",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
    // A port in use: exit 1 naming the address.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let (code, _, stderr) = tether(&[
        "webhook",
        "--listen",
        &addr,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    let _ = Path::new(RULES);
}
