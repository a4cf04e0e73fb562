//! `tether webhook`: arguments, start-up and the serving loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use engine::Sink;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterArgs, ClusterError};
use crate::decide::FailureMode;
use crate::decision_log::{DecisionLog, DecisionLogError};
use crate::metrics::{ErrorKind, Metrics};
use crate::rules::{RulesHandle, RulesLoader};
use crate::serve::serve_tls;
use crate::server::{router, HandlerOptions, WebhookState};
use crate::session::PodLabelCache;

/// Serve the validating admission webhook over HTTPS.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM); reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: PathBuf,
    /// Serving certificate's private key (PEM); reloaded when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_key: PathBuf,
    /// Rules files, loaded in order (Falco's format with Tether's `tether:` key);
    /// reloaded when they change. Without any, the bundled library is loaded.
    #[arg(long = "rules", value_name = "FILE", num_args = 1..)]
    pub rules: Vec<PathBuf>,
    /// Append one JSON line per decision to this file.
    #[arg(long, value_name = "FILE")]
    pub decision_log: Option<PathBuf>,
    /// Never deny: every rule detects, whatever its mode (the decision log still says what
    /// enforcement would have answered).
    #[arg(long)]
    pub detect_only: bool,
    /// Answer for reviews that could not be evaluated (internal error, budget overrun,
    /// rules not loaded).
    #[arg(long, value_enum, default_value_t = FailureMode::Allow)]
    pub failure_mode: FailureMode,
    /// Wall-clock budget of one evaluation, in milliseconds (0: no budget).
    #[arg(long, default_value_t = 100)]
    pub eval_budget_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Reviews in flight before further ones are shed with 503.
    #[arg(long, default_value_t = 1024)]
    pub max_in_flight: usize,
    /// How long a client may take to send a request body, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// How often the rules and certificate files are checked for change, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub reload_interval_ms: u64,
    /// The Kubernetes API (`--kube`, `--kubeconfig`, `--pod-lookup-timeout-ms`).
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("serving certificate: {0}")]
    Cert(#[from] certs::CertError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DecisionLog(#[from] DecisionLogError),
    #[error("cannot start the evaluation threads: {0}")]
    EvalPool(#[source] std::io::Error),
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A started webhook.
#[derive(Debug)]
pub struct RunningWebhook {
    pub addr: SocketAddr,
    pub state: Arc<WebhookState>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningWebhook {
    /// Stops accepting, drains open connections, stops the watchers.
    pub async fn stop(self) -> Result<(), WebhookError> {
        self.shutdown.cancel();
        match self.server.await {
            Ok(r) => r.map_err(WebhookError::Serve),
            Err(e) => Err(WebhookError::Serve(std::io::Error::other(e))),
        }
    }

    /// Waits until the server ends (after `shutdown` is cancelled).
    pub async fn wait(self) -> Result<(), WebhookError> {
        match self.server.await {
            Ok(r) => r.map_err(WebhookError::Serve),
            Err(e) => Err(WebhookError::Serve(std::io::Error::other(e))),
        }
    }
}

impl WebhookArgs {
    pub fn handler_options(&self) -> HandlerOptions {
        HandlerOptions {
            detect_only: self.detect_only,
            failure_mode: self.failure_mode,
            eval_budget: Duration::from_millis(self.eval_budget_ms),
            max_body_bytes: self.max_body_bytes,
            max_in_flight: self.max_in_flight,
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            ..HandlerOptions::default()
        }
    }
}

/// Starts the webhook: loads the certificate (fatal when it does not load), connects to the
/// Kubernetes API per `--kube` (fatal when `on` cannot), binds, serves, and loads the rules
/// and watches namespaces in the background (`/readyz` says not ready until the rules load
/// and, with the API, the namespace list syncs).
pub async fn start(
    args: &WebhookArgs,
    loader: Arc<dyn RulesLoader>,
    sink: Option<Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> Result<RunningWebhook, WebhookError> {
    let metrics = Arc::new(Metrics::new());
    let resolver = certs::ReloadingCertResolver::load(&args.tls_cert, &args.tls_key)?;
    metrics.cert_generation.set(1);
    let tls = resolver.server_config(&[b"h2", b"http/1.1"])?;
    let decision_log = match &args.decision_log {
        Some(path) => Some(DecisionLog::open(path, metrics.clone())?),
        None => None,
    };
    let cluster = crate::cluster::connect(&args.cluster, metrics.clone()).await?;
    let rules = RulesHandle::new(loader, metrics.clone());
    let options = args.handler_options();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let eval_pool =
        Arc::new(crate::eval_pool::EvalPool::new(threads).map_err(WebhookError::EvalPool)?);
    let state = Arc::new(WebhookState {
        rules: rules.clone(),
        eval_pool,
        certs: Some(resolver.clone()),
        metrics: metrics.clone(),
        sink,
        decision_log,
        labels: PodLabelCache::new(options.pod_label_cache),
        cluster,
        options,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: args.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: args.listen,
        source,
    })?;
    let interval = Duration::from_millis(args.reload_interval_ms.max(10));
    rules.spawn_watcher(interval, shutdown.clone());
    if let Some(cluster) = &state.cluster.cluster {
        cluster.spawn_namespace_watch(shutdown.clone());
    }
    let cert_metrics = metrics.clone();
    resolver.spawn_watcher(interval, shutdown.clone(), move |outcome| match outcome {
        Ok(_) => {
            cert_metrics.cert_generation.inc();
        }
        Err(_) => cert_metrics.error(ErrorKind::CertReload),
    });
    tracing::info!(%addr, detect_only = args.detect_only, failure_mode = args.failure_mode.as_str(), "webhook listening");
    let app = router(state.clone());
    let server = tokio::spawn(serve_tls(listener, tls, app, shutdown.clone()));
    Ok(RunningWebhook {
        addr,
        state,
        shutdown,
        server,
    })
}

/// The sink `tether webhook` hands sessions and decisions to: logged at once, on the
/// serving thread (the engine's bus replaces the logging). Records that wait for a
/// consumer thread or a batch cost more under load than making them (see
/// `engine::InlineSink`).
pub fn logging_sink() -> Arc<dyn Sink> {
    Arc::new(engine::InlineSink::new(Arc::new(
        |found: engine::Found| match found {
            engine::Found::Session(s) => {
                tracing::debug!(session = %s.id, "session handed on");
            }
            engine::Found::Decision(d) => {
                tracing::debug!(uid = %d.request_uid, outcome = ?d.outcome, "decision handed on");
            }
            engine::Found::Alert(_) | engine::Found::Action(_) => {}
        },
    )))
}

/// Runs `tether webhook` until SIGINT/SIGTERM. Sessions and decisions go to the
/// [`logging_sink`] (the engine's bus replaces it).
pub async fn run(args: &WebhookArgs) -> Result<(), WebhookError> {
    let shutdown = CancellationToken::new();
    let sink = logging_sink();
    let loader: Arc<dyn RulesLoader> =
        Arc::new(crate::policy::PolicyLoader::new(args.rules.clone()));
    let running = start(args, loader, Some(sink), shutdown.clone()).await?;
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        engine::shutdown_signal().await;
        tracing::info!("shutting down");
        signal_token.cancel();
    });
    running.wait().await
}
