//! From batches to alerts and sessions.
//!
//! Batches are evaluated on several worker threads (`Pipeline::with_workers`, by default
//! one per available core): each record becomes a `policies::Event`, the rules run on it,
//! every match becomes a Falco-compatible alert serialised as one JSON line, and exec
//! sessions are picked out. The results are then committed strictly in the order the
//! batches arrived: rejections recorded, alert lines written and flushed, alerts and
//! sessions handed to the engine's sink, and only then the batch's `on_processed` hook
//! run, so a source commits its checkpoint only for records whose alerts are already out,
//! and alerts come out in source order whatever the number of workers.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use engine::{ExecSession, Sink};
use policies::{Alert, Event, RuleSet};
use tokio::sync::mpsc::Receiver;

use crate::dedupe::SeenIds;
use crate::telemetry;
use crate::{AuditBatch, OnProcessed, Rejected};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot write alerts: {0}")]
    Alerts(#[source] std::io::Error),
    #[error("cannot encode an alert for rule {rule:?}: {error}")]
    Encode {
        rule: String,
        #[source]
        error: serde_json::Error,
    },
    #[error("cannot start pipeline worker thread {index}: {error}")]
    Spawn {
        index: usize,
        #[source]
        error: std::io::Error,
    },
    #[error("pipeline worker stopped while evaluating batch {seq} from {source_name}: {reason}")]
    Worker {
        seq: u64,
        source_name: String,
        reason: String,
    },
    #[error("pipeline workers stopped with {missing} batch(es) unevaluated")]
    WorkersGone { missing: u64 },
}

/// Counts of one pipeline run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PipelineStats {
    pub batches: u64,
    pub events: u64,
    pub rejected: u64,
    pub alerts: u64,
    pub sessions: u64,
}

/// The consumer of every source's batches.
pub struct Pipeline {
    eval: Arc<Evaluator>,
    workers: usize,
    sink: Option<Arc<dyn Sink>>,
    alerts: Option<Box<dyn Write + Send>>,
    sessions_seen: SeenIds,
    stats: PipelineStats,
    sink_closed_logged: bool,
    recent_rejections: std::collections::VecDeque<Rejected>,
}

/// How many rejections are kept for [`Pipeline::recent_rejections`].
const REJECTIONS_KEPT: usize = 1000;

/// How many session ids are remembered to emit each session once (its audit events
/// come at two stages).
const SESSIONS_REMEMBERED: usize = 100_000;

/// Batches handed to workers and not yet committed, per worker.
const IN_FLIGHT_PER_WORKER: usize = 2;

/// `ka.target.subresource`, resolved once (`None` only if the registry lacked it, in
/// which case every event's body is checked for a session).
fn subresource_field() -> Option<policies::fields::FieldRef> {
    policies::fields::resolve("ka.target.subresource", None).ok()
}

/// How many batches, at most, the pipeline has taken from its queue and not yet
/// committed with `workers` evaluation workers: those a crash makes the sources repeat,
/// on top of the queue itself.
pub fn batches_taken(workers: usize) -> usize {
    if workers <= 1 {
        1
    } else {
        // Those in flight, plus the one the dispatcher holds while waiting for room.
        workers * IN_FLIGHT_PER_WORKER + 1
    }
}

/// The default number of evaluation workers: the available parallelism.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The part of the pipeline that needs no state across batches, shared by the workers.
struct Evaluator {
    rules: Arc<RuleSet>,
    hostname: String,
    subresource: Option<policies::fields::FieldRef>,
    /// Serialise alerts (an alert writer is configured).
    encode: bool,
    /// Keep alerts for the sink.
    keep_alerts: bool,
}

/// What goes to the sink, in event order.
enum SinkItem {
    Alert(Box<Alert>),
    Session(Box<ExecSession>, bool),
}

/// One batch, evaluated, waiting to be committed.
struct Evaluated {
    source: Arc<str>,
    /// Rejections, in input order.
    rejected: Vec<Rejected>,
    records: usize,
    events: u64,
    alerts: usize,
    /// Alert JSON lines.
    lines: Vec<u8>,
    sink: Vec<SinkItem>,
    on_processed: Option<OnProcessed>,
}

impl Evaluator {
    fn evaluate(&self, mut batch: AuditBatch) -> Result<Evaluated, PipelineError> {
        let mut out = Evaluated {
            source: batch.source.clone(),
            rejected: std::mem::take(&mut batch.rejected),
            records: batch.records.len(),
            events: 0,
            alerts: 0,
            lines: Vec::new(),
            sink: Vec::new(),
            on_processed: batch.on_processed.take(),
        };
        for (i, value) in std::mem::take(&mut batch.records).into_iter().enumerate() {
            match Event::from_audit_value(value) {
                Ok(ev) => self.event(&ev, &mut out)?,
                Err(e) => out.rejected.push(Rejected {
                    location: format!("{} item {}", batch.origin, i + 1),
                    reason: e.what,
                }),
            }
        }
        for doc in std::mem::take(&mut batch.documents) {
            for parsed in policies::parse_document(&doc.name, &doc.bytes) {
                out.records += 1;
                match parsed {
                    Ok(ev) => self.event(&ev, &mut out)?,
                    Err(e) => {
                        let line = e.line + doc.first_line.saturating_sub(1);
                        out.rejected.push(Rejected {
                            location: format!("{}:{line}", doc.name),
                            reason: e.what,
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Evaluates one event into `out`.
    fn event(&self, event: &Event, out: &mut Evaluated) -> Result<(), PipelineError> {
        out.events += 1;
        // Only exec/attach/port-forward events need the whole body (for the session).
        let maybe_session = match &self.subresource {
            Some(f) => matches!(
                event.field(f),
                policies::Value::Str(sub) if matches!(
                    sub.as_ref(),
                    "exec" | "attach" | "portforward" | "ephemeralcontainers"
                )
            ),
            None => true,
        };
        // The session this event opens: its alerts name it (they are about the session's own
        // request, so the tie is exact).
        let mut session_fields = None;
        if maybe_session {
            if let Some(json) = event.json() {
                if crate::session::session_kind(json).is_some() {
                    if let Some((session, joined)) = crate::session::session_from_audit(json) {
                        session_fields = Some(session.fields(engine::SessionConfidence::Exact));
                        out.sink.push(SinkItem::Session(Box::new(session), joined));
                    }
                }
            }
        }
        for m in self.rules.evaluate(event) {
            let mut alert = Alert::from_match(&m, event, &self.hostname);
            if alert.session.is_none() {
                alert.session.clone_from(&session_fields);
            }
            if self.encode {
                serde_json::to_writer(&mut out.lines, &alert).map_err(|error| {
                    PipelineError::Encode {
                        rule: m.rule.name.clone(),
                        error,
                    }
                })?;
                out.lines.push(b'\n');
            }
            if self.keep_alerts {
                out.sink.push(SinkItem::Alert(Box::new(alert)));
            }
            out.alerts += 1;
        }
        Ok(())
    }
}

/// The text of a panic payload.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

impl Pipeline {
    pub fn new(
        rules: Arc<RuleSet>,
        sink: Option<Arc<dyn Sink>>,
        alerts: Option<Box<dyn Write + Send>>,
        hostname: impl Into<String>,
    ) -> Self {
        let eval = Evaluator {
            rules,
            hostname: hostname.into(),
            subresource: subresource_field(),
            encode: alerts.is_some(),
            keep_alerts: sink.is_some(),
        };
        Self {
            eval: Arc::new(eval),
            workers: default_workers(),
            sink,
            alerts,
            sessions_seen: SeenIds::new(),
            stats: PipelineStats::default(),
            sink_closed_logged: false,
            recent_rejections: std::collections::VecDeque::new(),
        }
    }

    /// Evaluates batches on `n` threads in [`Pipeline::run_blocking`] (at least 1; with 1
    /// everything runs on the calling thread). Commits stay in batch order either way.
    pub fn with_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The number of evaluation workers.
    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// The latest rejections (at most 1000), oldest first.
    pub fn recent_rejections(&self) -> impl Iterator<Item = &Rejected> {
        self.recent_rejections.iter()
    }

    fn keep(&mut self, r: Rejected) {
        if self.recent_rejections.len() == REJECTIONS_KEPT {
            self.recent_rejections.pop_front();
        }
        self.recent_rejections.push_back(r);
    }

    /// Processes batches until every sender is gone. Blocking: run it on its own
    /// thread (`tokio::task::spawn_blocking`), it is CPU-bound. Evaluation runs on the
    /// configured number of worker threads; commits (alerts, sink, `on_processed`) run on
    /// the calling thread in the order the batches were received.
    pub fn run_blocking(
        mut self,
        rx: Receiver<AuditBatch>,
    ) -> Result<PipelineStats, PipelineError> {
        if self.workers <= 1 {
            let mut rx = rx;
            while let Some(batch) = rx.blocking_recv() {
                self.process(batch)?;
            }
        } else {
            self.run_parallel(rx)?;
        }
        if let Some(w) = self.alerts.as_mut() {
            w.flush().map_err(PipelineError::Alerts)?;
        }
        Ok(self.stats)
    }

    fn run_parallel(&mut self, mut rx: Receiver<AuditBatch>) -> Result<(), PipelineError> {
        let workers = self.workers;
        let max_in_flight = workers * IN_FLIGHT_PER_WORKER;
        type Job = (u64, AuditBatch);
        type Done = (u64, Result<Evaluated, PipelineError>);
        let (job_tx, job_rx) = std_mpsc::sync_channel::<Job>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = std_mpsc::channel::<Done>();
        // One token per batch that may be in flight; the committer returns it.
        let (token_tx, token_rx) = std_mpsc::sync_channel::<()>(max_in_flight);
        for _ in 0..max_in_flight {
            let _ = token_tx.try_send(());
        }
        let dispatched = Arc::new(AtomicU64::new(0));

        for index in 0..workers {
            let (job_rx, done_tx, eval) = (job_rx.clone(), done_tx.clone(), self.eval.clone());
            std::thread::Builder::new()
                .name(format!("audit-eval-{index}"))
                .spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((seq, batch)) = job else { return };
                    let source = batch.source.clone();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        eval.evaluate(batch)
                    }))
                    .unwrap_or_else(|p| {
                        Err(PipelineError::Worker {
                            seq,
                            source_name: source.to_string(),
                            reason: panic_text(p.as_ref()),
                        })
                    });
                    if done_tx.send((seq, result)).is_err() {
                        return;
                    }
                })
                .map_err(|error| PipelineError::Spawn { index, error })?;
        }
        drop(done_tx);
        drop(job_rx);

        let counter = dispatched.clone();
        std::thread::Builder::new()
            .name("audit-dispatch".into())
            .spawn(move || {
                let mut seq = 0u64;
                while let Some(batch) = rx.blocking_recv() {
                    if token_rx.recv().is_err() {
                        return;
                    }
                    counter.store(seq + 1, Ordering::Release);
                    if job_tx.send((seq, batch)).is_err() {
                        return;
                    }
                    seq += 1;
                }
            })
            .map_err(|error| PipelineError::Spawn {
                index: workers,
                error,
            })?;

        let mut next = 0u64;
        let mut pending: BTreeMap<u64, Result<Evaluated, PipelineError>> = BTreeMap::new();
        for (seq, result) in done_rx.iter() {
            pending.insert(seq, result);
            while let Some(result) = pending.remove(&next) {
                next += 1;
                self.commit(result?)?;
                let _ = token_tx.try_send(());
            }
        }
        let missing = dispatched.load(Ordering::Acquire).saturating_sub(next);
        if missing > 0 {
            return Err(PipelineError::WorkersGone { missing });
        }
        Ok(())
    }

    /// Processes one batch on the calling thread and then runs its `on_processed` hook.
    pub fn process(&mut self, batch: AuditBatch) -> Result<(), PipelineError> {
        let evaluated = self.eval.evaluate(batch)?;
        self.commit(evaluated)
    }

    /// Records an evaluated batch: rejections, alerts, sessions, counts, then the hook.
    fn commit(&mut self, mut ev: Evaluated) -> Result<(), PipelineError> {
        let source = ev.source.clone();
        for r in std::mem::take(&mut ev.rejected) {
            telemetry::AuditEventRejected {
                source: &source,
                location: &r.location,
                reason: &r.reason,
            }
            .emit();
            self.stats.rejected += 1;
            self.keep(r);
        }
        self.stats.events += ev.events;
        telemetry::AuditEventsReceived {
            source: &source,
            count: ev.records,
        }
        .emit();
        if let Some(w) = self.alerts.as_mut() {
            w.write_all(&ev.lines).map_err(PipelineError::Alerts)?;
            w.flush().map_err(PipelineError::Alerts)?;
        }
        for item in std::mem::take(&mut ev.sink) {
            match item {
                SinkItem::Alert(alert) => {
                    if let Some(sink) = &self.sink {
                        if sink.alert(*alert).is_err() {
                            self.sink_closed();
                        }
                    }
                }
                SinkItem::Session(session, joined) => self.session(*session, joined),
            }
        }
        self.stats.alerts += ev.alerts as u64;
        self.stats.batches += 1;
        telemetry::AuditAlertsEmitted { count: ev.alerts }.emit();
        telemetry::AuditBatchProcessed {
            source: &source,
            records: ev.records,
        }
        .emit();
        if let Some(hook) = ev.on_processed.take() {
            hook();
        }
        Ok(())
    }

    fn session(&mut self, session: ExecSession, joined: bool) {
        let t_ms = session.started_ns / 1_000_000;
        if !self.sessions_seen.insert(&session.id, t_ms) {
            return;
        }
        if self.sessions_seen.len() > SESSIONS_REMEMBERED {
            self.sessions_seen.prune(i64::MIN, SESSIONS_REMEMBERED / 2);
        }
        telemetry::AuditSessionEmitted {
            id: &session.id,
            kind: session.kind.as_str(),
            user: &session.user,
            joined,
        }
        .emit();
        self.stats.sessions += 1;
        if let Some(sink) = &self.sink {
            if sink.session(session).is_err() {
                self.sink_closed();
            }
        }
    }

    fn sink_closed(&mut self) {
        if !self.sink_closed_logged {
            tracing::error!("engine sink closed: sessions and alerts no longer reach it");
            self.sink_closed_logged = true;
        }
    }
}
