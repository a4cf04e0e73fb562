//! The audit webhook backend: `POST /audit` over HTTPS, as kube-apiserver's
//! `--audit-webhook-config-file` sends it (an `audit.k8s.io` `EventList` per request).
//!
//! - The caller is authenticated by a client certificate verified against `client_ca`,
//!   and/or a bearer token equal to the one in `token_file`; when both are configured
//!   either suffices. A request with neither is answered 401.
//! - A body over `max_body_bytes` is answered 413; a body that is not an `EventList`
//!   (bad JSON, another kind, `items` not a list of objects) 400 with the reason.
//! - A valid batch is answered 200 only after it is durable in the [`crate::spool`]
//!   (group commit: one fdatasync for every request waiting at that moment).
//! - Under backpressure (too many bytes not yet processed) 429 with `Retry-After`; when
//!   the writer queue is full 503. The API server retries both.
//!
//! A consumer reads the spool in order, parses each batch and hands its events to the
//! pipeline; the spool position is checkpointed once the pipeline has processed them,
//! so after a crash the bridge resumes right after the last processed batch.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::spool::{AppendError, Spool, SpoolConfig, SpoolPos, SpoolReader};
use crate::{telemetry, AuditBatch, CheckpointStore, Rejected, Sender, Source, SourceError};
use tokio_util::sync::CancellationToken;

/// Configuration of the audit webhook backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on (`0.0.0.0:8443`).
    pub listen: SocketAddr,
    /// PEM certificate chain served to the API server.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// PEM CA bundle that client certificates must chain to.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// File holding the bearer token callers must present.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted.
    #[serde(default = "WebhookConfig::default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Bytes spooled but not yet processed beyond which requests get 429.
    #[serde(default = "WebhookConfig::default_max_pending_bytes")]
    pub max_pending_bytes: u64,
    /// Size at which the spool starts a new segment.
    #[serde(default = "WebhookConfig::default_segment_max_bytes")]
    pub segment_max_bytes: u64,
    /// Requests waiting for the spool writer beyond which requests get 503.
    #[serde(default = "WebhookConfig::default_max_queued_requests")]
    pub max_queued_requests: usize,
    /// Seconds a TLS handshake may take.
    #[serde(default = "WebhookConfig::default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
}

impl WebhookConfig {
    pub const fn default_max_body_bytes() -> usize {
        32 << 20
    }
    pub const fn default_max_pending_bytes() -> u64 {
        1 << 30
    }
    pub const fn default_segment_max_bytes() -> u64 {
        64 << 20
    }
    pub const fn default_max_queued_requests() -> usize {
        4096
    }
    pub const fn default_handshake_timeout_secs() -> u64 {
        10
    }

    /// A config with every default, for `listen` and the TLS files.
    pub fn new(listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> Self {
        Self {
            listen,
            tls_cert,
            tls_key,
            client_ca: None,
            token_file: None,
            max_body_bytes: Self::default_max_body_bytes(),
            max_pending_bytes: Self::default_max_pending_bytes(),
            segment_max_bytes: Self::default_segment_max_bytes(),
            max_queued_requests: Self::default_max_queued_requests(),
            handshake_timeout_secs: Self::default_handshake_timeout_secs(),
        }
    }
}

const NAME: &str = "webhook";
const CHECKPOINT_KEY: &str = "webhook:spool";

fn cfg_err(reason: impl Into<String>) -> SourceError {
    SourceError::Config {
        source_name: NAME.into(),
        reason: reason.into(),
    }
}

/// The webhook backend, bound to its port.
pub struct WebhookSource {
    config: WebhookConfig,
    spool_dir: PathBuf,
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    token: Option<Arc<str>>,
    client_ca: bool,
}

impl WebhookSource {
    /// Loads the TLS material and binds the port (so the bound address is known before
    /// `run`). The spool lives in `spool_dir`.
    pub fn bind(config: WebhookConfig, spool_dir: impl Into<PathBuf>) -> Result<Self, SourceError> {
        let token = match &config.token_file {
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .map_err(|e| cfg_err(format!("token file {}: {e}", p.display())))?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(cfg_err(format!("token file {} is empty", p.display())));
                }
                Some(Arc::<str>::from(t))
            }
            None => None,
        };
        if token.is_none() && config.client_ca.is_none() {
            return Err(cfg_err(
                "the audit webhook backend needs a client CA (--client-ca) or a bearer token (--token-file) to authenticate the API server",
            ));
        }
        let tls = server_tls_config(&config, token.is_some())?;
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| cfg_err(format!("cannot listen on {}: {e}", config.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| cfg_err(format!("cannot listen on {}: {e}", config.listen)))?;
        Ok(Self {
            client_ca: config.client_ca.is_some(),
            config,
            spool_dir: spool_dir.into(),
            listener,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            token,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, SourceError> {
        self.listener.local_addr().map_err(|error| SourceError::Io {
            source_name: NAME.into(),
            context: "local address".into(),
            error,
        })
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|e| cfg_err(format!("{what} {}: {e}", path.display())))
}

fn server_tls_config(
    config: &WebhookConfig,
    token_configured: bool,
) -> Result<rustls::ServerConfig, SourceError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_pem = read_pem(&config.tls_cert, "tls certificate")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            cfg_err(format!(
                "tls certificate {}: {e}",
                config.tls_cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(cfg_err(format!(
            "tls certificate {} holds no PEM certificate",
            config.tls_cert.display()
        )));
    }
    let key_pem = read_pem(&config.tls_key, "tls key")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| cfg_err(format!("tls key {}: {e}", config.tls_key.display())))?
        .ok_or_else(|| {
            cfg_err(format!(
                "tls key {} holds no PEM private key",
                config.tls_key.display()
            ))
        })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg_err(format!("tls: {e}")))?;
    let builder = match &config.client_ca {
        Some(ca_path) => {
            let ca_pem = read_pem(ca_path, "client ca")?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
                let c = c.map_err(|e| cfg_err(format!("client ca {}: {e}", ca_path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| cfg_err(format!("client ca {}: {e}", ca_path.display())))?;
            }
            if roots.is_empty() {
                return Err(cfg_err(format!(
                    "client ca {} holds no PEM certificate",
                    ca_path.display()
                )));
            }
            let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            if token_configured {
                // A caller may authenticate with the token instead.
                v = v.allow_unauthenticated();
            }
            let v = v
                .build()
                .map_err(|e| cfg_err(format!("client ca {}: {e}", ca_path.display())))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder
        .with_single_cert(certs, key)
        .map_err(|e| cfg_err(format!("tls certificate and key: {e}")))?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// What the TLS layer established about one connection.
#[derive(Debug, Clone, Copy)]
struct ConnAuth {
    client_cert: bool,
    peer: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    spool: Spool,
    token: Option<Arc<str>>,
    client_ca: bool,
    max_body_bytes: usize,
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, msg.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who the caller is, or why not.
fn authenticate(state: &AppState, conn: &ConnAuth, headers: &HeaderMap) -> Result<(), String> {
    if conn.client_cert {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&state.token, presented) {
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.trim().as_bytes()) => {
            Ok(())
        }
        (Some(_), Some(_)) => Err("bearer token is not valid".into()),
        (Some(_), None) if state.client_ca => {
            Err("client certificate or bearer token required".into())
        }
        (Some(_), None) => Err("bearer token required".into()),
        (None, _) => Err("client certificate required".into()),
    }
}

#[derive(Deserialize)]
struct EventListShape<'a> {
    #[serde(default)]
    kind: Option<&'a str>,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<&'a str>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// Checks that `body` is an `audit.k8s.io` `EventList` whose items are objects, and
/// returns the number of items.
pub fn validate_event_list(body: &[u8]) -> Result<usize, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body: expected an audit.k8s.io EventList".into());
    }
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => "not an EventList: the body is not a json object",
                Err(e) => return Err(format!("malformed json: {e}")),
            }
            .into(),
        );
    }
    let shape: EventListShape<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            format!(
                "truncated json at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        } else if e.is_data() {
            format!("not an EventList: {e}")
        } else {
            format!("malformed json: {e}")
        }
    })?;
    match shape.kind {
        Some("EventList") => {}
        Some(k) => return Err(format!("expected kind EventList, found kind {k:?}")),
        None => return Err("missing kind: expected kind EventList".into()),
    }
    match shape.api_version {
        Some("audit.k8s.io/v1" | "audit.k8s.io/v1beta1") => {}
        Some(v) => {
            return Err(format!(
                "expected apiVersion audit.k8s.io/v1, found apiVersion {v:?}"
            ))
        }
        None => return Err("missing apiVersion: expected audit.k8s.io/v1".into()),
    }
    let items = shape
        .items
        .ok_or_else(|| "EventList has no items list".to_string())?;
    for (i, item) in items.iter().enumerate() {
        if !item.get().starts_with('{') {
            return Err(format!("items[{i}] is not an object"));
        }
    }
    Ok(items.len())
}

async fn post_audit(
    State(state): State<AppState>,
    Extension(conn): Extension<ConnAuth>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(reason) = authenticate(&state, &conn, &headers) {
        telemetry::AuditWebhookRequest {
            status: 401,
            events: 0,
        }
        .emit();
        tracing::warn!(peer = %conn.peer, reason, "audit webhook: unauthenticated request");
        return text(StatusCode::UNAUTHORIZED, reason);
    }
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            let (status, msg) = if too_big {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body exceeds {} bytes", state.max_body_bytes),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                )
            };
            telemetry::AuditWebhookRequest {
                status: status.as_u16(),
                events: 0,
            }
            .emit();
            return text(status, msg);
        }
    };
    let events = match validate_event_list(&bytes) {
        Ok(n) => n,
        Err(reason) => {
            telemetry::AuditWebhookRequest {
                status: 400,
                events: 0,
            }
            .emit();
            tracing::warn!(peer = %conn.peer, reason, "audit webhook: malformed batch");
            return text(StatusCode::BAD_REQUEST, reason);
        }
    };
    if events == 0 {
        telemetry::AuditWebhookRequest {
            status: 200,
            events,
        }
        .emit();
        return text(StatusCode::OK, "");
    }
    match state.spool.append(bytes).await {
        Ok(_) => {
            telemetry::AuditWebhookRequest {
                status: 200,
                events,
            }
            .emit();
            text(StatusCode::OK, "")
        }
        Err(e @ AppendError::Full { .. }) => {
            telemetry::AuditWebhookRequest {
                status: 429,
                events,
            }
            .emit();
            let mut r = text(StatusCode::TOO_MANY_REQUESTS, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(e) => {
            telemetry::AuditWebhookRequest {
                status: 503,
                events,
            }
            .emit();
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
    }
}

/// Splits a spooled `EventList` into its events.
pub fn events_of(payload: &[u8], origin: &str) -> (Vec<Value>, Vec<Rejected>) {
    #[derive(Deserialize)]
    struct List {
        items: Vec<Value>,
    }
    match serde_json::from_slice::<List>(payload) {
        Ok(l) => {
            let mut ok = Vec::with_capacity(l.items.len());
            let mut bad = Vec::new();
            for (i, v) in l.items.into_iter().enumerate() {
                match super::check_audit_shape(&v) {
                    Ok(()) => ok.push(v),
                    Err(reason) => bad.push(Rejected {
                        location: format!("{origin} items[{i}]"),
                        reason,
                    }),
                }
            }
            (ok, bad)
        }
        Err(e) => (
            Vec::new(),
            vec![Rejected {
                location: origin.to_owned(),
                reason: format!("spooled batch is not an EventList: {e}"),
            }],
        ),
    }
}

impl WebhookSource {
    async fn consume(
        mut reader: SpoolReader,
        out: Sender<AuditBatch>,
        checkpoints: CheckpointStore,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let releaser = reader.releaser();
        let source: Arc<str> = Arc::from(NAME);
        loop {
            let at = reader.position();
            let rec = match reader.next(&shutdown).await {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::error!(error = %e, "spool: skipping the rest of a corrupt segment");
                    reader.skip_segment();
                    continue;
                }
            };
            let origin = format!("webhook spool {}:{}", at.segment, at.offset);
            let document = crate::Document {
                name: origin.clone(),
                first_line: 1,
                bytes: rec.payload.clone(),
            };
            let cp = checkpoints.clone();
            let rel = releaser.clone();
            let (end, size) = (rec.end, rec.size);
            let batch = AuditBatch {
                source: source.clone(),
                origin,
                records: Vec::new(),
                documents: vec![document],
                rejected: Vec::new(),
                on_processed: Some(Box::new(move || {
                    cp.save_logged(CHECKPOINT_KEY, &end);
                    rel.release(end, size);
                })),
            };
            if out.send(batch).await.is_err() {
                return Ok(());
            }
        }
    }
}

impl Source for WebhookSource {
    fn name(&self) -> String {
        NAME.into()
    }

    async fn run(
        self,
        out: Sender<AuditBatch>,
        checkpoints: CheckpointStore,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let start: SpoolPos = checkpoints.load(CHECKPOINT_KEY)?.unwrap_or_default();
        let (spool, reader) = Spool::open(
            &SpoolConfig {
                dir: self.spool_dir.clone(),
                segment_max_bytes: self.config.segment_max_bytes,
                max_pending_bytes: self.config.max_pending_bytes,
                max_queued_requests: self.config.max_queued_requests,
            },
            start,
        )?;
        let gauge_spool = spool.clone();
        crate::telemetry::register_gauge(
            "audit_spool_pending_bytes",
            "Bytes accepted into the webhook spool and not yet processed.",
            Arc::new(move || gauge_spool.pending_bytes()),
        );
        tracing::info!(
            listen = %self.config.listen,
            pending_bytes = spool.pending_bytes(),
            resume_segment = start.segment,
            resume_offset = start.offset,
            "audit webhook backend started"
        );
        let consumer = tokio::spawn(Self::consume(reader, out, checkpoints, shutdown.clone()));
        let state = AppState {
            spool,
            token: self.token.clone(),
            client_ca: self.client_ca,
            max_body_bytes: self.config.max_body_bytes,
        };
        let app = Router::new()
            .route("/audit", post(post_audit))
            .route("/healthz", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::disable())
            .with_state(state);
        let listener = TcpListener::from_std(self.listener).map_err(|error| SourceError::Io {
            source_name: NAME.into(),
            context: "listener".into(),
            error,
        })?;
        let handshake = Duration::from_secs(self.config.handshake_timeout_secs);
        loop {
            let (tcp, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "audit webhook: accept failed");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            let conn_shutdown = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "audit webhook: tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "audit webhook: tls handshake timed out");
                        return;
                    }
                };
                let auth = ConnAuth {
                    client_cert: tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty()),
                    peer,
                };
                let svc = app
                    .layer(Extension(auth))
                    .map_request(|r: http::Request<hyper::body::Incoming>| r.map(Body::new));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn =
                    builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
                tokio::select! {
                    r = conn => {
                        if let Err(error) = r {
                            tracing::debug!(%peer, %error, "audit webhook: connection ended with an error");
                        }
                    }
                    () = conn_shutdown.cancelled() => {}
                }
            });
        }
        match consumer.await {
            Ok(r) => r,
            Err(e) => Err(SourceError::Failed {
                source_name: NAME.into(),
                reason: format!("spool consumer stopped: {e}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_list_validation_names_the_problem() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty body"),
            (b"{\"kind\":\"EventList\"", "truncated json"),
            (b"{kind:EventList}", "malformed json"),
            (b"[1,2]", "not an EventList"),
            (
                b"{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[]}",
                "expected kind EventList, found kind \"Event\"",
            ),
            (
                b"{\"kind\":\"EventList\",\"apiVersion\":\"v1\",\"items\":[]}",
                "expected apiVersion audit.k8s.io/v1",
            ),
            (
                b"{\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[]}",
                "missing kind",
            ),
            (
                b"{\"kind\":\"EventList\",\"items\":[]}",
                "missing apiVersion",
            ),
            (
                b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\"}",
                "no items list",
            ),
            (
                b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":{}}",
                "not an EventList",
            ),
            (
                b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{},3]}",
                "items[1] is not an object",
            ),
        ];
        for (body, want) in cases {
            let err = validate_event_list(body).unwrap_err();
            assert!(
                err.contains(want),
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            validate_event_list(
                b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{},{}]}"
            )
            .unwrap(),
            2
        );
    }

    #[test]
    fn spooled_items_of_the_wrong_kind_are_rejected_individually() {
        let (ok, bad) = events_of(
            br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{"kind":"Event","auditID":"a"},{"kind":"Pod"}]}"#,
            "spool 0:0",
        );
        assert_eq!(ok.len(), 1);
        assert_eq!(bad[0].location, "spool 0:0 items[1]");
        assert!(bad[0]
            .reason
            .contains("expected kind Event, found kind \"Pod\""));
    }
}
