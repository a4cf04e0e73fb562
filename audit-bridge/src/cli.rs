//! `tether audit-bridge`: the command line, and the wiring of sources, pipeline and
//! sink.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use engine::{ChannelSink, Found, Sink};
use policies::RuleSet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::lease::{LeaderElector, LeaseConfig};
use crate::pipeline::{Pipeline, PipelineStats};
use crate::sources::cloudwatch::{CloudWatchConfig, CloudWatchSource};
use crate::sources::file::{FileConfig, FileSource};
use crate::sources::logging::{LoggingConfig, LoggingSource};
use crate::sources::pubsub::{PubSubConfig, PubSubSource};
use crate::sources::webhook::{WebhookConfig, WebhookSource};
use crate::{AuditBatch, CheckpointStore, Source, SourceError};

/// Reads the cluster's audit trail (webhook backend, files, EKS, GKE), evaluates the
/// k8s_audit rules and writes Falco-compatible alerts as JSON lines.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Rules files, in load order (default: the bundled library, which includes Falco's
    /// k8s_audit rules).
    #[arg(long = "rules", value_name = "FILE", num_args = 1..)]
    pub rules: Vec<PathBuf>,
    /// Where checkpoints and the webhook spool are kept.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/tether/audit-bridge"
    )]
    pub state_dir: PathBuf,
    /// Where alerts go, one JSON object per line (`-` is stdout).
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub alerts: String,
    /// Where exec sessions go, one JSON object per line (default: logged only).
    #[arg(long, value_name = "FILE")]
    pub sessions: Option<PathBuf>,
    /// The `hostname` put in alerts (default: this machine's name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Threads evaluating batches (default: the available parallelism). Alerts and
    /// checkpoints are committed in batch order whatever the count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,

    /// Serve Prometheus metrics (`/metrics`) and `/healthz` over plain HTTP on this
    /// address.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Audit webhook backend: address to listen on.
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub listen: Option<SocketAddr>,
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle that API server client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// File holding the bearer token the API server presents.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Largest webhook request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = WebhookConfig::default_max_body_bytes())]
    pub max_body_bytes: usize,
    /// Spooled bytes not yet processed beyond which the webhook answers 429.
    #[arg(long, value_name = "BYTES", default_value_t = WebhookConfig::default_max_pending_bytes())]
    pub max_pending_bytes: u64,

    /// Audit log file to tail (repeatable).
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,

    /// EKS: the CloudWatch log group (`/aws/eks/CLUSTER/cluster`).
    #[arg(long, value_name = "NAME")]
    pub cloudwatch_log_group: Option<String>,
    #[arg(long, value_name = "URL")]
    pub cloudwatch_endpoint: Option<String>,
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Seconds between CloudWatch polls.
    #[arg(long, value_name = "SECS", default_value_t = CloudWatchConfig::default_poll_secs())]
    pub cloudwatch_poll_secs: u64,

    /// GKE: Pub/Sub subscription of the audit Log Router sink.
    #[arg(long, value_name = "projects/P/subscriptions/S")]
    pub pubsub_subscription: Option<String>,
    #[arg(long, value_name = "URL")]
    pub pubsub_endpoint: Option<String>,

    /// GKE: Cloud Logging filter selecting the cluster's audit entries.
    #[arg(long, value_name = "FILTER", requires = "logging_project")]
    pub logging_filter: Option<String>,
    #[arg(long, value_name = "P", requires = "logging_filter")]
    pub logging_project: Option<String>,
    #[arg(long, value_name = "URL")]
    pub logging_endpoint: Option<String>,
    /// Seconds between Cloud Logging polls.
    #[arg(long, value_name = "SECS", default_value_t = LoggingConfig::default_poll_secs())]
    pub logging_poll_secs: u64,

    /// Seconds re-read before the cursor by the CloudWatch and Cloud Logging pollers.
    #[arg(long, value_name = "SECS", default_value_t = CloudWatchConfig::default_late_window_secs())]
    pub late_window_secs: u64,

    /// Run pollers only while holding a Lease in this namespace (several replicas).
    #[arg(long, value_name = "NS")]
    pub lease_namespace: Option<String>,
    #[arg(long, value_name = "NAME", default_value = "tether-audit-bridge")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the hostname).
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    pub lease_identity: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no audit source configured: give --listen, --file, --cloudwatch-log-group, --pubsub-subscription or --logging-filter")]
    NoSource,
    #[error("rules do not load:\n{0}")]
    Rules(String),
    #[error("alerts output {path}: {error}")]
    Alerts {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error("sessions output {path}: {error}")]
    Sessions {
        path: String,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Checkpoint(#[from] crate::CheckpointError),
    #[error(transparent)]
    Pipeline(#[from] crate::pipeline::PipelineError),
    #[error("kubernetes client for the lease: {0}")]
    Kube(String),
    #[error("metrics endpoint {addr}: {error}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("internal task failed: {0}")]
    Task(String),
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSummary {
    pub pipeline: PipelineStats,
}

fn default_hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Opens the alerts file for appending. A file that ends in a partial line (the
/// process was killed while writing) gets the line terminated, so the next alert starts
/// on a line of its own; the batch it belonged to was not checkpointed and is
/// evaluated again.
fn open_alerts_file(path: &str) -> std::io::Result<std::fs::File> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > 0 {
        f.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            tracing::warn!(
                alerts = path,
                "alerts file ended in a partial line: terminating it"
            );
            f.write_all(b"\n")?;
        }
    }
    Ok(f)
}

fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, RunError> {
    if paths.is_empty() {
        return Ok(RuleSet::bundled_library());
    }
    RuleSet::load(paths).map_err(|e| RunError::Rules(e.to_string()))
}

/// Runs until SIGINT/SIGTERM, with an in-process sink whose sessions go to
/// `--sessions`.
pub async fn run(args: Args) -> Result<RunSummary, RunError> {
    let (sink, mut rx) = ChannelSink::new();
    let mut sessions_out: Option<Box<dyn Write + Send>> = match &args.sessions {
        Some(p) => Some(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|error| RunError::Sessions {
                    path: p.display().to_string(),
                    error,
                })?,
        )),
        None => None,
    };
    let drain = tokio::spawn(async move {
        while let Some(found) = rx.recv().await {
            if let (Found::Session(s), Some(w)) = (&found, sessions_out.as_mut()) {
                let mut line = serde_json::to_vec(s).unwrap_or_default();
                line.push(b'\n');
                if let Err(error) = w.write_all(&line).and_then(|()| w.flush()) {
                    tracing::error!(%error, "cannot write a session");
                }
            }
        }
    });
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        engine::shutdown_signal().await;
        tracing::info!("shutting down");
        signals.cancel();
    });
    let result = run_with(args, Some(Arc::new(sink)), shutdown).await;
    let _ = drain.await;
    result
}

/// Runs the configured sources into the pipeline until `shutdown`, handing alerts and
/// sessions to `sink` (as `tether up` does with its own sink).
pub async fn run_with(
    args: Args,
    sink: Option<Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> Result<RunSummary, RunError> {
    // Both ring and aws-lc-rs are compiled in (the AWS SDK brings the latter); clients
    // that use the process default (kube) need one chosen. Already chosen is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let any_source = args.listen.is_some()
        || !args.files.is_empty()
        || args.cloudwatch_log_group.is_some()
        || args.pubsub_subscription.is_some()
        || args.logging_filter.is_some();
    if !any_source {
        return Err(RunError::NoSource);
    }
    if let Some(addr) = args.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|error| RunError::Metrics { addr, error })?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %bound, "metrics endpoint listening");
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = crate::metrics::serve(listener, stop).await {
                tracing::error!(%error, "metrics endpoint stopped");
            }
        });
    }
    let rules = Arc::new(load_rules(&args.rules)?);
    let checkpoints = CheckpointStore::open(args.state_dir.join("checkpoints"))?;
    let alerts: Box<dyn Write + Send> = if args.alerts == "-" {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            std::io::stdout(),
        ))
    } else {
        Box::new(std::io::BufWriter::with_capacity(
            1 << 16,
            open_alerts_file(&args.alerts).map_err(|error| RunError::Alerts {
                path: args.alerts.clone(),
                error,
            })?,
        ))
    };
    let hostname = args.hostname.clone().unwrap_or_else(default_hostname);
    let (tx, rx) = mpsc::channel::<AuditBatch>(64);
    let mut pipeline = Pipeline::new(rules, sink, Some(alerts), hostname.clone());
    if let Some(n) = args.workers {
        pipeline = pipeline.with_workers(usize::from(n));
    }
    tracing::info!(workers = pipeline.workers(), "audit pipeline starting");
    let pipeline_task = tokio::task::spawn_blocking(move || pipeline.run_blocking(rx));

    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), SourceError>>> = Vec::new();

    if let Some(listen) = args.listen {
        let (Some(cert), Some(key)) = (args.tls_cert.clone(), args.tls_key.clone()) else {
            return Err(RunError::Source(SourceError::Config {
                source_name: "webhook".into(),
                reason: "--listen needs --tls-cert and --tls-key".into(),
            }));
        };
        let mut cfg = WebhookConfig::new(listen, cert, key);
        cfg.client_ca = args.client_ca.clone();
        cfg.token_file = args.token_file.clone();
        cfg.max_body_bytes = args.max_body_bytes;
        cfg.max_pending_bytes = args.max_pending_bytes;
        let src = WebhookSource::bind(cfg, args.state_dir.join("spool"))?;
        tracing::info!(listen = %src.local_addr()?, "audit webhook backend listening");
        let (tx, cp, sd) = (tx.clone(), checkpoints.clone(), shutdown.clone());
        tasks.push(tokio::spawn(src.run(tx, cp, sd)));
    }
    for path in &args.files {
        let src = FileSource::new(FileConfig::new(path.clone()));
        let (tx, cp, sd) = (tx.clone(), checkpoints.clone(), shutdown.clone());
        tasks.push(tokio::spawn(src.run(tx, cp, sd)));
    }

    // Pollers: under a lease when several replicas run.
    let elector_client = match &args.lease_namespace {
        Some(_) => Some(
            kube::Client::try_default()
                .await
                .map_err(|e| RunError::Kube(e.to_string()))?,
        ),
        None => None,
    };
    let identity = args
        .lease_identity
        .clone()
        .unwrap_or_else(|| hostname.clone());
    let mut pollers: Vec<(String, PollerFactory)> = Vec::new();
    if let Some(group) = &args.cloudwatch_log_group {
        let mut cfg = CloudWatchConfig::new(group.clone());
        cfg.endpoint = args.cloudwatch_endpoint.clone();
        cfg.region = args.region.clone();
        cfg.poll_secs = args.cloudwatch_poll_secs;
        cfg.late_window_secs = args.late_window_secs;
        let src = CloudWatchSource::new(cfg);
        pollers.push((
            "cloudwatch".into(),
            Box::new(move |tx, cp, sd| Box::pin(src.clone().run(tx, cp, sd))),
        ));
    }
    if let Some(sub) = &args.pubsub_subscription {
        let mut cfg = PubSubConfig::new(sub.clone());
        if let Some(e) = &args.pubsub_endpoint {
            cfg.endpoint.clone_from(e);
        }
        let src = PubSubSource::new(cfg);
        pollers.push((
            "pubsub".into(),
            Box::new(move |tx, cp, sd| Box::pin(src.clone().run(tx, cp, sd))),
        ));
    }
    if let (Some(filter), Some(project)) = (&args.logging_filter, &args.logging_project) {
        let mut cfg = LoggingConfig::new(project.clone(), filter.clone());
        if let Some(e) = &args.logging_endpoint {
            cfg.endpoint.clone_from(e);
        }
        cfg.poll_secs = args.logging_poll_secs;
        cfg.late_window_secs = args.late_window_secs;
        let src = LoggingSource::new(cfg);
        pollers.push((
            "logging".into(),
            Box::new(move |tx, cp, sd| Box::pin(src.clone().run(tx, cp, sd))),
        ));
    }
    for (kind, factory) in pollers {
        let (tx, cp, sd) = (tx.clone(), checkpoints.clone(), shutdown.clone());
        match (&elector_client, &args.lease_namespace) {
            (Some(client), Some(ns)) => {
                let cfg = LeaseConfig::new(
                    format!("{}-{kind}", args.lease_name),
                    ns.clone(),
                    identity.clone(),
                );
                let elector = LeaderElector::new(client.clone(), cfg);
                let factory = Arc::new(factory);
                tasks.push(tokio::spawn(async move {
                    elector
                        .run_while_leader(sd, move |token| {
                            let fut = factory(tx.clone(), cp.clone(), token);
                            async move {
                                if let Err(e) = fut.await {
                                    tracing::error!(error = %e, "poller stopped");
                                }
                            }
                        })
                        .await;
                    Ok(())
                }));
            }
            _ => {
                tasks.push(tokio::spawn(factory(tx, cp, sd)));
            }
        }
    }
    drop(tx);

    let mut first_err: Option<RunError> = None;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "source stopped");
                shutdown.cancel();
                first_err.get_or_insert(RunError::Source(e));
            }
            Err(e) => {
                shutdown.cancel();
                first_err.get_or_insert(RunError::Task(e.to_string()));
            }
        }
    }
    let stats = pipeline_task
        .await
        .map_err(|e| RunError::Task(e.to_string()))??;
    tracing::info!(
        events = stats.events,
        rejected = stats.rejected,
        alerts = stats.alerts,
        sessions = stats.sessions,
        batches = stats.batches,
        "audit bridge stopped"
    );
    match first_err {
        Some(e) => Err(e),
        None => Ok(RunSummary { pipeline: stats }),
    }
}

type PollerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SourceError>> + Send>>;
type PollerFactory = Box<
    dyn Fn(mpsc::Sender<AuditBatch>, CheckpointStore, CancellationToken) -> PollerFuture
        + Send
        + Sync,
>;
