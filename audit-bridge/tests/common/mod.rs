//! Helpers shared by the audit-bridge integration tests: test PKI, peers on loopback,
//! and a stand-in for the pipeline that acknowledges batches.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_bridge::AuditBatch;
use tokio::sync::mpsc;

pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures"
    ))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Turns a batch's raw documents into records and rejections, as the pipeline's
/// parser sees them.
pub fn open_documents(b: &mut AuditBatch) {
    for doc in std::mem::take(&mut b.documents) {
        for parsed in policies::parse_document(&doc.name, &doc.bytes) {
            match parsed {
                Ok(ev) => b.records.push(ev.json().cloned().unwrap()),
                Err(e) => b.rejected.push(audit_bridge::Rejected {
                    location: format!("{}:{}", doc.name, e.line + doc.first_line - 1),
                    reason: e.what,
                }),
            }
        }
    }
}

/// Receives batches until `want` records (plus rejections) arrived, running each
/// batch's `on_processed` hook as the pipeline would. Returns the records and the
/// rejections.
pub async fn collect(
    rx: &mut mpsc::Receiver<AuditBatch>,
    want_records: usize,
    timeout: Duration,
) -> (Vec<serde_json::Value>, Vec<audit_bridge::Rejected>) {
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    let deadline = Instant::now() + timeout;
    while records.len() < want_records {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(mut b)) => {
                open_documents(&mut b);
                records.append(&mut b.records);
                rejected.append(&mut b.rejected);
                if let Some(h) = b.on_processed.take() {
                    h();
                }
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
    (records, rejected)
}

/// Drains whatever arrives until no batch with records or rejections has come for
/// `quiet`, processing every batch (empty ones too: they carry checkpoints).
pub async fn drain(
    rx: &mut mpsc::Receiver<AuditBatch>,
    quiet: Duration,
) -> (Vec<serde_json::Value>, Vec<audit_bridge::Rejected>) {
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    let mut until = Instant::now() + quiet;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(mut b)) => {
                open_documents(&mut b);
                if !b.records.is_empty() || !b.rejected.is_empty() {
                    until = Instant::now() + quiet;
                }
                records.append(&mut b.records);
                rejected.append(&mut b.rejected);
                if let Some(h) = b.on_processed.take() {
                    h();
                }
            }
            _ => break,
        }
    }
    (records, rejected)
}

/// A CA, a server certificate for 127.0.0.1, a client certificate from the CA, and a
/// client certificate from another CA, written as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_pem: Vec<u8>,
    pub rogue_client_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

fn ca(name: &str) -> (rcgen::CertificateParams, rcgen::KeyPair, rcgen::Certificate) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let k = rcgen::KeyPair::generate().unwrap();
    let c = p.self_signed(&k).unwrap();
    (p, k, c)
}

fn leaf(
    sans: &[&str],
    cn: &str,
    client: bool,
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
) -> (String, String) {
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    p.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let k = rcgen::KeyPair::generate().unwrap();
    let c = p.signed_by(&k, issuer).unwrap();
    (c.pem(), k.serialize_pem())
}

impl Pki {
    pub fn new(dir: &Path) -> Self {
        let (ca_params, ca_key, ca_cert) = ca("tether test ca");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let (server_pem, server_key) =
            leaf(&["127.0.0.1", "localhost"], "audit-bridge", false, &issuer);
        let (client_pem, client_key) = leaf(&[], "kube-apiserver", true, &issuer);
        let (rogue_params, rogue_key, _) = ca("rogue ca");
        let rogue_issuer = rcgen::Issuer::from_params(&rogue_params, &rogue_key);
        let (rogue_pem, rogue_client_key) = leaf(&[], "kube-apiserver", true, &rogue_issuer);
        let w = |name: &str, data: &str| {
            let p = dir.join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        Pki {
            ca: w("ca.pem", &ca_cert.pem()),
            server_cert: w("server.pem", &server_pem),
            server_key: w("server-key.pem", &server_key),
            client_pem: format!("{client_pem}{client_key}").into_bytes(),
            rogue_client_pem: format!("{rogue_pem}{rogue_client_key}").into_bytes(),
            ca_pem: ca_cert.pem().into_bytes(),
        }
    }

    pub fn client(&self, identity: Option<&[u8]>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .timeout(Duration::from_secs(20));
        if let Some(id) = identity {
            b = b.identity(reqwest::Identity::from_pem(id).unwrap());
        }
        b.build().unwrap()
    }
}

/// A peer process started by a test, killed when dropped.
pub struct Peer {
    pub url: String,
    child: Option<Child>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill_group();
    }
}

fn wait_http(url: &str, path: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = url.trim_start_matches("http://").to_string();
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut buf = [0u8; 12];
                if s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// moto's server (`pip install 'moto[server]'`), from `TETHER_TEST_MOTO_URL` or started
/// here on a free loopback port.
pub fn moto() -> Peer {
    if let Ok(url) = std::env::var("TETHER_TEST_MOTO_URL") {
        return Peer { url, child: None };
    }
    let port = free_port();
    let mut cmd = Command::new("moto_server");
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto_server ({e}): install it with `pip install 'moto[server]'` or set TETHER_TEST_MOTO_URL")
        });
    let url = format!("http://127.0.0.1:{port}");
    let peer = Peer {
        url: url.clone(),
        child: Some(child),
    };
    assert!(
        wait_http(&url, "/moto-api/", Duration::from_secs(30)),
        "moto_server did not come up on {url}"
    );
    peer
}

/// Google's Pub/Sub emulator, from `TETHER_TEST_PUBSUB_URL` or started here
/// (`gcloud beta emulators pubsub start`; Debian package
/// `google-cloud-cli-pubsub-emulator`, needs a Java runtime).
pub fn pubsub_emulator() -> Peer {
    if let Ok(url) = std::env::var("TETHER_TEST_PUBSUB_URL") {
        return Peer { url, child: None };
    }
    let port = free_port();
    let mut cmd = Command::new("gcloud");
    cmd.args([
        "beta",
        "emulators",
        "pubsub",
        "start",
        &format!("--host-port=127.0.0.1:{port}"),
        "--quiet",
    ]);
    // gcloud starts the emulator as a child: give it its own process group to stop both.
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start the pub/sub emulator via gcloud ({e}): install the Debian package google-cloud-cli-pubsub-emulator (and a java runtime) or set TETHER_TEST_PUBSUB_URL")
        });
    let url = format!("http://127.0.0.1:{port}");
    let peer = Peer {
        url: url.clone(),
        child: Some(child),
    };
    assert!(
        wait_http(&url, "/", Duration::from_secs(60)),
        "the pub/sub emulator did not come up on {url} (is google-cloud-cli-pubsub-emulator installed?)"
    );
    peer
}

impl Peer {
    /// Kills the peer's whole process group (each peer is started in its own group,
    /// since `gcloud` runs the emulator as a child).
    pub fn kill_group(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let pid = c.id() as i32;
            // SAFETY: kill(2) on a process group we created; no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        self.child = None;
    }
}
