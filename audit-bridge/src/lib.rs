//! `audit-bridge`: every way a cluster exposes its audit trail, turned into one stream of
//! `k8s_audit` events.
//!
//! Each way of reading audit data is one [`Source`] (one module under [`sources`], each
//! with its own serde config struct):
//!
//! | source | module | position kept in the [`CheckpointStore`] |
//! |---|---|---|
//! | audit webhook backend (`POST /audit`, HTTPS) | [`sources::webhook`] | the write-ahead [`spool`] read position |
//! | audit log files (JSON lines), rotation and truncation | [`sources::file`] | device, inode and byte offset |
//! | EKS via CloudWatch Logs `FilterLogEvents` | [`sources::cloudwatch`] | (timestamp, eventId) cursor and the ids seen in the late window |
//! | GKE via Pub/Sub pull | [`sources::pubsub`] | the `insertId`s seen recently (messages are acknowledged after processing) |
//! | GKE via Cloud Logging `entries:list` | [`sources::logging`] | (timestamp, insertId) cursor and the ids seen in the late window |
//!
//! Sources hand [`AuditBatch`]es to the [`pipeline`], which turns each record into a
//! `policies::Event` and evaluates the rules on several worker threads, then, strictly in
//! the order the batches were queued, writes alerts, records exec sessions ([`session`])
//! on the engine's `Sink`, and only then runs the batch's `on_processed` hook, which is where a source commits its checkpoint or acknowledges
//! its messages. A crash therefore never loses an accepted event; it can only repeat
//! the batches that were in flight, and sources that can de-duplicate do.
//!
//! GKE `LogEntry` records are converted to audit events by [`gke`]. Pollers run only
//! while they hold a Kubernetes Lease ([`lease`]), so two replicas never poll the same
//! source at once.

pub mod checkpoint;
pub mod cli;
pub mod dedupe;
pub mod gke;
pub mod lease;
pub mod metrics;
pub mod pipeline;
pub mod session;
pub mod sources;
pub mod spool;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

pub use checkpoint::{CheckpointError, CheckpointStore};
pub use cli::{run, Args};
pub use tokio::sync::mpsc::Sender;
pub use tokio_util::sync::CancellationToken;

/// A hook run by the pipeline once every record of a batch has been evaluated and its
/// alerts written. Sources commit checkpoints or acknowledge messages here.
pub type OnProcessed = Box<dyn FnOnce() + Send + 'static>;

/// One unit of work from a source to the pipeline.
pub struct AuditBatch {
    /// Which source produced it (`webhook`, `file:/var/log/audit.log`, ...).
    pub source: Arc<str>,
    /// Where in the source it came from, for error reports (`/var/log/audit.log:120`).
    pub origin: String,
    /// Audit events (`audit.k8s.io` `Event` objects), in source order.
    pub records: Vec<serde_json::Value>,
    /// Raw documents (an `EventList`, JSON lines), parsed by the pipeline with
    /// `policies::input::parse_document`, which reads only the parts rules look at.
    pub documents: Vec<Document>,
    /// Input the source could not turn into an audit event, already located.
    pub rejected: Vec<Rejected>,
    /// Run after the batch has been processed.
    pub on_processed: Option<OnProcessed>,
}

impl AuditBatch {
    pub fn new(source: Arc<str>, origin: String) -> Self {
        Self {
            source,
            origin,
            records: Vec::new(),
            documents: Vec::new(),
            rejected: Vec::new(),
            on_processed: None,
        }
    }
}

impl std::fmt::Debug for AuditBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBatch")
            .field("source", &self.source)
            .field("origin", &self.origin)
            .field("records", &self.records.len())
            .field("documents", &self.documents.len())
            .field("rejected", &self.rejected)
            .field("on_processed", &self.on_processed.is_some())
            .finish()
    }
}

/// A raw document of audit events.
#[derive(Debug, Clone)]
pub struct Document {
    /// Its name in error reports (`webhook spool 0:1234`, a file path).
    pub name: String,
    /// The line of the source at which the document starts (1 for a whole document).
    pub first_line: usize,
    pub bytes: bytes::Bytes,
}

/// A piece of input that was not an audit event, with where it was and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// `FILE:LINE`, `cloudwatch:/aws/eks/c/cluster:eventId`, `pubsub:insertId`, ...
    pub location: String,
    /// What was wrong, lower-case.
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.reason)
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: invalid configuration: {reason}")]
    Config { source_name: String, reason: String },
    #[error("{source_name}: {context}: {error}")]
    Io {
        source_name: String,
        context: String,
        #[source]
        error: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error("{source_name}: {reason}")]
    Failed { source_name: String, reason: String },
}

/// One way of reading audit data.
///
/// `run` reads until `shutdown` is cancelled (or, for a finite input, until the input
/// ends), hands every batch to `out`, and persists its position through `checkpoints`
/// only after the pipeline has processed the batch (via [`AuditBatch::on_processed`]).
pub trait Source: Send + 'static {
    /// A short stable name, also the checkpoint key prefix.
    fn name(&self) -> String;

    fn run(
        self,
        out: Sender<AuditBatch>,
        checkpoints: CheckpointStore,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}
