//! Helpers of the webhook's component tests: a PKI in a temp dir, a webhook on a loopback
//! port, HTTPS clients that trust only the generated CA, scripted rules.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use webhook::cli::{start, RunningWebhook, WebhookArgs};
use webhook::review::ReviewRequest;
use webhook::rules::{EvalError, RuleHit, RuleMode, Rules, RulesLoader, StaticLoader};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

pub fn fixture(rel: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/{rel}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        certs::generate(
            &certs::ServingNames {
                dns: vec!["localhost".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
            },
            &certs::Lifetimes::default(),
            dir.path(),
        )
        .unwrap();
        Self { dir }
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("ca-bundle.crt")).unwrap()
    }
}

pub fn args(pki: &Pki) -> WebhookArgs {
    WebhookArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: pki.path("tls.crt"),
        tls_key: pki.path("tls.key"),
        rules: vec![],
        decision_log: None,
        detect_only: false,
        failure_mode: webhook::FailureMode::Allow,
        eval_budget_ms: 2000,
        max_body_bytes: 3 * 1024 * 1024,
        max_in_flight: 1024,
        body_timeout_ms: 10_000,
        reload_interval_ms: 50,
        cluster: webhook::cluster::ClusterArgs::off(),
    }
}

pub struct Hook {
    pub running: RunningWebhook,
    pub sink_rx: engine::SinkReceiver,
    pub url: String,
}

pub async fn start_with(args: &WebhookArgs, loader: Arc<dyn RulesLoader>) -> Hook {
    let (sink, sink_rx) = engine::ChannelSink::new();
    let running = start(args, loader, Some(Arc::new(sink)), CancellationToken::new())
        .await
        .unwrap();
    let url = format!("https://127.0.0.1:{}", running.addr.port());
    Hook {
        running,
        sink_rx,
        url,
    }
}

/// Rules scripted by the review: labels `test.tether.io/hit: enforce|detect` (with
/// optional `test.tether.io/scope: out`), `test.tether.io/sleep-ms: N`,
/// `test.tether.io/error: "..."`; CONNECT commands starting with `deny-me` hit an
/// enforcing rule.
#[derive(Debug, Default)]
pub struct ScriptedRules;

impl Rules for ScriptedRules {
    fn evaluate(
        &self,
        review: policies::Doc,
        request: &ReviewRequest,
        pod_labels: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<RuleHit>, EvalError> {
        let labels = match review
            .root()
            .pointer("/request/object/metadata/labels")
            .map(policies::Ref::to_value)
        {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        }
        .or_else(|| pod_labels.cloned())
        .unwrap_or_default();
        let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_string);
        if let Some(ms) = label("test.tether.io/sleep-ms") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
        }
        if label("test.tether.io/panic").is_some() {
            panic!("scripted rule engine panic");
        }
        if let Some(e) = label("test.tether.io/error") {
            return Err(EvalError(e));
        }
        let mut hits = Vec::new();
        if let Some(mode) = label("test.tether.io/hit") {
            hits.push(RuleHit {
                rule: format!("Scripted {mode}"),
                priority: policies::Priority::Warning,
                mode: if mode == "enforce" {
                    RuleMode::Enforce
                } else {
                    RuleMode::Detect
                },
                out_of_scope: (label("test.tether.io/scope").as_deref() == Some("out"))
                    .then(|| "scripted: out of scope".to_string()),
                output: format!(
                    "scripted hit on {}/{} by {}",
                    request.namespace.clone().unwrap_or_default(),
                    request.name.clone().unwrap_or_default(),
                    request.username
                ),
            });
        }
        let cmd0 = review
            .root()
            .pointer("/request/object/command/0")
            .and_then(policies::Ref::as_str)
            .unwrap_or("");
        if cmd0.starts_with("deny-me") {
            hits.push(RuleHit {
                rule: "Scripted exec deny".into(),
                priority: policies::Priority::Critical,
                mode: RuleMode::Enforce,
                out_of_scope: None,
                output: format!("exec {cmd0} by {}", request.username),
            });
        }
        Ok(hits)
    }
    fn rule_count(&self) -> usize {
        2
    }
}

pub fn scripted() -> Arc<dyn RulesLoader> {
    Arc::new(StaticLoader(Arc::new(ScriptedRules), "scripted".into()))
}

/// A TLS client configuration that trusts only the given PEM CAs.
pub fn tls_client_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs::parse_certs(Path::new("ca"), ca_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(certs::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A reqwest client trusting only `ca_pem`.
pub fn client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls_client_config(ca_pem)).clone())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Waits until `/readyz` says ready.
pub async fn ready(url: &str, c: &reqwest::Client) {
    for _ in 0..800 {
        if let Ok(r) = c.get(format!("{url}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("webhook at {url} never became ready");
}

/// `/readyz`: its status and body.
pub async fn readyz(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(format!("{url}/readyz")).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Waits (20 s at most) until `/readyz` reports rules generation `generation`.
pub async fn rules_generation(c: &reqwest::Client, url: &str, generation: u64) -> bool {
    for _ in 0..800 {
        if readyz(c, url).await.1["rules"]["generation"] == generation {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub async fn post(c: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = c
        .post(format!("{url}/validate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// One HTTP/1.1 keep-alive connection over TLS, held open by the test.
pub struct KeepAlive {
    pub sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    pub peer_serial: String,
}

pub async fn keep_alive(addr: std::net::SocketAddr, ca_pem: &[u8]) -> KeepAlive {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca_pem));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let info = certs::CertInfo::from_der(Path::new("peer"), &peer).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    KeepAlive {
        sender,
        peer_serial: info.serial,
    }
}

impl KeepAlive {
    pub async fn review(&mut self, body: Vec<u8>) -> (u16, Value) {
        self.sender.ready().await.unwrap();
        let req = hyper::Request::post("/validate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

/// A pod CREATE review.
pub fn pod_review(uid: &str, ns: &str, name: &str, labels: Value) -> Value {
    let mut v: Value = serde_json::from_slice(&fixture(
        "apiserver-captures/admission-pod-create-good-pod-allowed.json",
    ))
    .unwrap();
    v["request"]["uid"] = json!(uid);
    v["request"]["namespace"] = json!(ns);
    v["request"]["name"] = json!(name);
    v["request"]["object"]["metadata"]["namespace"] = json!(ns);
    v["request"]["object"]["metadata"]["name"] = json!(name);
    v["request"]["object"]["metadata"]["labels"] = labels;
    v
}

/// A CONNECT pods/exec review.
pub fn exec_review(uid: &str, ns: &str, pod: &str, user: &str, command: &[&str]) -> Value {
    let mut v: Value = serde_json::from_slice(&fixture(
        "apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json",
    ))
    .unwrap();
    v["request"]["uid"] = json!(uid);
    v["request"]["namespace"] = json!(ns);
    v["request"]["name"] = json!(pod);
    v["request"]["userInfo"]["username"] = json!(user);
    v["request"]["object"]["command"] = json!(command);
    v
}

/// Reads a metric sample's value from the exposition text.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
