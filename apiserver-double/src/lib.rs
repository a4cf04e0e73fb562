//! A stateful test double of kube-apiserver — not an API server.
//!
//! It serves the real Kubernetes REST/JSON over HTTP or HTTPS on `127.0.0.1` (a random free
//! port) for the kinds Tether touches, so tests can drive Tether's components — and the real
//! kube-rs client they use — without a cluster:
//!
//! | resource | group/version | scope |
//! |---|---|---|
//! | namespaces, nodes | v1 | cluster |
//! | pods, configmaps, events | v1 | namespaced |
//! | networkpolicies | networking.k8s.io/v1 | namespaced |
//! | leases | coordination.k8s.io/v1 | namespaced |
//! | events | events.k8s.io/v1 | namespaced |
//! | validatingwebhookconfigurations | admissionregistration.k8s.io/v1 | cluster |
//!
//! Adding a kind is one entry in [`kinds::KINDS`].
//!
//! What it does, as kube-apiserver does:
//! - discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>`, `/apis/<group>/<version>`) and
//!   `/version`, `/healthz`, `/livez`, `/readyz`;
//! - GET, LIST (label selectors `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`; field selectors
//!   `metadata.name`, `metadata.namespace` and the per-kind fields such as `spec.nodeName`,
//!   `status.phase`; `limit` and `continue`), WATCH (`?watch=true`: JSON lines of `ADDED`,
//!   `MODIFIED`, `DELETED`, `BOOKMARK`, from a resourceVersion; a resourceVersion older than the
//!   retained history gets an `ERROR` event with a 410 `Expired` Status; `sendInitialEvents`
//!   streaming lists; `timeoutSeconds`; an object entering or leaving a selector's selection is
//!   seen as `ADDED` / `DELETED`);
//! - POST (`generateName` too), PUT (a stale `metadata.resourceVersion` is 409 Conflict; leases
//!   and events may be created by PUT), PATCH (`application/merge-patch+json`,
//!   `application/strategic-merge-patch+json` with the upstream merge keys for containers,
//!   env, volumes, ports, conditions, webhooks, ownerReferences, finalizers and the `$patch`
//!   directives, `application/json-patch+json`, and `application/apply-patch+yaml`), DELETE
//!   (the object for pods and namespaces, a `Status` otherwise; preconditions; finalizers
//!   delay removal; deleting a namespace deletes its contents), DELETE on a collection,
//!   `dryRun=All`, the `status` subresource (the main resource cannot change `status`);
//! - one global resourceVersion counter, `uid`, `creationTimestamp`, `generation` (bumped when
//!   anything outside `metadata` and `status` changes; a no-op write changes nothing);
//! - errors as `Status` objects with kube-apiserver's reasons and messages: 404 NotFound,
//!   409 AlreadyExists / Conflict, 422 Invalid with field causes (names, labels, pods,
//!   taints, leases, events.k8s.io events, and ValidatingWebhookConfiguration rules), 400 for
//!   malformed bodies, selectors and parameters, 405, 413, 415;
//! - namespaced objects can only be created in an existing namespace (`default`,
//!   `kube-system`, `kube-public` and `kube-node-lease` exist from the start).
//!
//! What it does not do: authentication and authorization (any credentials are accepted),
//! admission webhooks (a stored ValidatingWebhookConfiguration is not called), controllers
//! (no scheduler, kubelet or garbage collector: pods stay as written, deleting a pod removes
//! it at once), per-kind immutability rules beyond names, protobuf, and field ownership —
//! server-side apply is applied as a strategic merge and `managedFields` are not tracked.
//! Core `v1` events and `events.k8s.io/v1` events are stored separately. Objects created via
//! POST keep the `status` they are sent with (kube-apiserver resets some, e.g. a pod's phase).
//!
//! Helpers for tests on [`Running`]: [`Running::client`] / [`Running::config`] (a kube client
//! that trusts the double's CA), [`Running::kubeconfig_yaml`] / [`Running::write_kubeconfig`]
//! (for a spawned process via `KUBECONFIG`), [`Running::insert`] (seed any served object
//! without validation), [`Running::get`], [`Running::list`], [`Running::remove`],
//! [`Running::wait_for`] (until a predicate holds for an object), [`Running::requests`] (every
//! request: method, path, query, content type, status and body), [`Running::compact`] (make
//! older resourceVersions answer 410) and [`Running::shutdown`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), apiserver_double::Error> {
//! let api = apiserver_double::ApiServerDouble::start_tls().await?;
//! let client = api.client()?; // a kube::Client that trusts the double's CA
//! let kubeconfig = api.kubeconfig_yaml(); // for a spawned process, via KUBECONFIG
//! api.shutdown().await;
//! # let _ = (client, kubeconfig); Ok(()) }
//! ```

pub mod kinds;
pub mod patch;
pub mod selectors;
mod server;
pub mod status;
mod store;
mod validate;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use server::{RequestRecord, MAX_BODY_BYTES, REPORTED_VERSION};
pub use status::{ApiError, FieldError};

/// Errors starting or using the double.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the loopback listener failed.
    #[error("binding 127.0.0.1:0 failed: {0}")]
    Bind(#[source] std::io::Error),
    /// Generating the self-signed CA or serving certificate failed.
    #[error("generating the double's certificates failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Building the TLS server configuration failed.
    #[error("building the double's TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The URL of the double could not be used as a kube cluster URL.
    #[error("the double's url {url} is not a valid uri: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why it was rejected.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// kube could not build a client for the double.
    #[error("building a kube client for the double failed: {0}")]
    Client(#[from] kube::Error),
    /// A seeding helper named a kind the double does not serve.
    #[error("the double does not serve a kind named \"{0}\"")]
    UnknownKind(String),
    /// A seeded object was rejected.
    #[error("seeding rejected: {0}")]
    Seed(#[source] ApiError),
    /// [`Running::wait_for`] gave up.
    #[error("waited {waited_ms} ms for {what}; last state: {last}")]
    WaitTimeout {
        /// The object waited for.
        what: String,
        /// How long.
        waited_ms: u128,
        /// The object's last state (`absent` when it does not exist).
        last: String,
    },
    /// Writing the kubeconfig failed.
    #[error("writing kubeconfig to {path} failed: {source}")]
    WriteKubeconfig {
        /// Where.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Settings of a double; [`ApiServerDouble::start`] and [`ApiServerDouble::start_tls`] use
/// the defaults.
#[derive(Debug, Clone)]
pub struct ApiServerDouble {
    tls: bool,
    history_limit: usize,
    bookmark_interval: Duration,
    require_namespaces: bool,
}

impl Default for ApiServerDouble {
    fn default() -> Self {
        ApiServerDouble {
            tls: false,
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(5),
            require_namespaces: true,
        }
    }
}

impl ApiServerDouble {
    /// Default settings: plain HTTP, 10 000 changes of watch history, bookmarks every 5 s,
    /// namespaced objects need their namespace.
    pub fn builder() -> Self {
        Self::default()
    }

    /// Serve HTTPS with a fresh self-signed CA.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// How many changes the watch history keeps; a watch from before them gets 410 Expired.
    pub fn history_limit(mut self, changes: usize) -> Self {
        self.history_limit = changes.max(1);
        self
    }

    /// How often watches that allow bookmarks get a BOOKMARK.
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Whether creating a namespaced object needs its namespace to exist (as kube-apiserver's
    /// NamespaceLifecycle admission does). On by default.
    pub fn require_namespaces(mut self, require: bool) -> Self {
        self.require_namespaces = require;
        self
    }

    /// Start a double over plain HTTP with default settings.
    pub async fn start() -> Result<Running, Error> {
        Self::default().spawn().await
    }

    /// Start a double over HTTPS with a fresh self-signed CA.
    pub async fn start_tls() -> Result<Running, Error> {
        Self::default().tls(true).spawn().await
    }

    /// Start a double with these settings.
    pub async fn spawn(self) -> Result<Running, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let tls = if self.tls {
            Some(Tls::generate()?)
        } else {
            None
        };
        let cancel = CancellationToken::new();
        let shared = Arc::new(server::Shared {
            store: Mutex::new(store::Store::new(
                self.history_limit,
                self.require_namespaces,
            )),
            log: Mutex::new(Vec::new()),
            cancel: cancel.clone(),
            bookmark_interval: self.bookmark_interval,
            server_address: addr.to_string(),
        });
        let acceptor = match &tls {
            Some(t) => Some(t.acceptor()?),
            None => None,
        };
        let task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            acceptor,
            cancel.clone(),
        ));
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, "kube-apiserver test double listening");
        Ok(Running {
            addr,
            url: format!("{scheme}://{addr}"),
            tls,
            shared,
            cancel,
            task,
        })
    }
}

struct Tls {
    ca_pem: String,
    ca_der: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Tls {
    fn generate() -> Result<Self, Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "apiserver-double test CA");
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "apiserver-double");
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, Error> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<server::Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc_shared = shared.clone();
            let service = hyper::service::service_fn(move |req| {
                let shared = svc_shared.clone();
                async move { Ok::<_, std::convert::Infallible>(server::handle(shared, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => {
                        tokio::select! {
                            r = builder.serve_connection_with_upgrades(TokioIo::new(s), service) => r,
                            _ = cancel.cancelled() => Ok(()),
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                },
                None => {
                    tokio::select! {
                        r = builder.serve_connection_with_upgrades(TokioIo::new(stream), service) => r,
                        _ = cancel.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A running double. Dropping it stops the server, like [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    url: String,
    tls: Option<Tls>,
    shared: Arc<server::Shared>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Running {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the self-signed CA (HTTPS doubles only).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// A kube config pointed at the double (trusting its CA over HTTPS).
    pub fn config(&self) -> Result<kube::Config, Error> {
        let uri: http::Uri = self.url.parse().map_err(|source| Error::Url {
            url: self.url.clone(),
            source,
        })?;
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        if let Some(t) = &self.tls {
            cfg.root_cert = Some(vec![t.ca_der.clone()]);
        }
        Ok(cfg)
    }

    /// A kube client for the double.
    ///
    /// kube-rs builds its TLS config from rustls' process-wide crypto provider. When a build
    /// enables more than one provider (a workspace build unifies `ring` with the AWS SDK's
    /// `aws-lc-rs`), rustls cannot pick one by itself, so `ring` is installed here unless the
    /// process already chose one.
    pub fn client(&self) -> Result<kube::Client, Error> {
        install_crypto_provider();
        Ok(kube::Client::try_from(self.config()?)?)
    }

    /// A kubeconfig for a spawned process (write it to a file and point `KUBECONFIG` at it).
    pub fn kubeconfig_yaml(&self) -> String {
        let ca = self
            .tls
            .as_ref()
            .map(|t| {
                format!(
                    "    certificate-authority-data: {}\n",
                    base64::engine::general_purpose::STANDARD.encode(&t.ca_pem)
                )
            })
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: apiserver-double\n  cluster:\n    server: {url}\n{ca}contexts:\n- name: apiserver-double\n  context:\n    cluster: apiserver-double\n    user: apiserver-double\n    namespace: default\ncurrent-context: apiserver-double\nusers:\n- name: apiserver-double\n  user:\n    token: apiserver-double\n",
            url = self.url
        )
    }

    /// Write [`Running::kubeconfig_yaml`] to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<std::path::Path>) -> Result<(), Error> {
        let path = path.as_ref();
        std::fs::write(path, self.kubeconfig_yaml()).map_err(|source| Error::WriteKubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Seed an object (JSON with `apiVersion`, `kind`, `metadata.name`; namespaced kinds default
    /// to `default`): created or overwritten without validation, watchers see it. Returns the
    /// stored object.
    pub fn insert(&self, obj: Value) -> Result<Value, Error> {
        self.shared.store().seed(obj).map_err(Error::Seed)
    }

    fn kind(kind: &str) -> Result<kinds::KindId, Error> {
        kinds::by_name(kind).ok_or_else(|| Error::UnknownKind(kind.to_string()))
    }

    /// One stored object. `kind` is a plural or kind name (`pods`, `Lease`,
    /// `events.events.k8s.io`); `ns` is ignored for cluster-scoped kinds.
    pub fn get(&self, kind: &str, ns: Option<&str>, name: &str) -> Result<Option<Value>, Error> {
        let kid = Self::kind(kind)?;
        let ns = if kinds::KINDS[kid].namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        };
        Ok(self.shared.store().get(kid, ns, name).ok())
    }

    /// Every stored object of a kind, in one namespace or all.
    pub fn list(&self, kind: &str, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        let kid = Self::kind(kind)?;
        Ok(self.shared.store().list(kid, ns))
    }

    /// Remove an object as a DELETE would (watchers see DELETED). `Ok(false)` when absent.
    pub fn remove(&self, kind: &str, ns: Option<&str>, name: &str) -> Result<bool, Error> {
        let kid = Self::kind(kind)?;
        let ns = if kinds::KINDS[kid].namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        };
        match self.shared.store().delete(kid, ns, name, None, false) {
            Ok(_) => Ok(true),
            Err(e) if e.code == 404 => Ok(false),
            Err(e) => Err(Error::Seed(e)),
        }
    }

    /// Wait until `pred` holds for an object (`None` when it does not exist), checking now and
    /// after every change to it. Returns the object's state that satisfied `pred`.
    pub async fn wait_for(
        &self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        timeout: Duration,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> Result<Option<Value>, Error> {
        let kid = Self::kind(kind)?;
        let spec = &kinds::KINDS[kid];
        let ns = if spec.namespaced {
            ns.unwrap_or("default")
        } else {
            ""
        };
        let what = if ns.is_empty() {
            format!("{} {name}", spec.qualified_resource())
        } else {
            format!("{} {ns}/{name}", spec.qualified_resource())
        };
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let (mut current, mut rx) = {
            let store = self.shared.store();
            (store.get(kid, ns, name).ok(), store.subscribe())
        };
        loop {
            if pred(current.as_ref()) {
                return Ok(current);
            }
            let relevant = |c: &store::Change| {
                c.kind == kid
                    && c.object.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                    && c.object
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        == ns
            };
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    return Err(Error::WaitTimeout {
                        what: what.clone(),
                        waited_ms: started.elapsed().as_millis(),
                        last: current.map_or_else(|| "absent".to_string(), |v| v.to_string()),
                    })
                }
                Ok(Ok(c)) if !relevant(&c) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(Error::WaitTimeout {
                        what: what.clone(),
                        waited_ms: started.elapsed().as_millis(),
                        last: "the double stopped".to_string(),
                    })
                }
                Ok(_) => current = self.shared.store().get(kid, ns, name).ok(),
            }
        }
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forget the watch history: watches from any earlier resourceVersion get 410 Expired.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log().clone()
    }

    /// Forget the request log.
    pub fn clear_requests(&self) {
        self.shared.log().clear();
    }

    /// Stop accepting, end open connections and watches, and wait for the listener to close.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "accept loop ended abnormally");
        }
    }
}

/// Installs rustls' `ring` provider as the process default unless one is installed already.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
