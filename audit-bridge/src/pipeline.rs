//! From batches to alerts and sessions.
//!
//! One consumer processes batches in the order sources sent them: each record becomes a
//! `policies::Event`, the rules run on it, every match becomes a Falco-compatible alert
//! written as one JSON line (and handed to the engine's sink), and exec sessions go to
//! the sink. Alerts are flushed before the batch's `on_processed` hook runs, so a source
//! commits its checkpoint only for records whose alerts are already out.

use std::io::Write;
use std::sync::Arc;

use engine::Sink;
use policies::{Alert, Event, RuleSet};
use tokio::sync::mpsc::Receiver;

use crate::dedupe::SeenIds;
use crate::telemetry;
use crate::{AuditBatch, Rejected};

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
    rules: Arc<RuleSet>,
    sink: Option<Arc<dyn Sink>>,
    alerts: Option<Box<dyn Write + Send>>,
    hostname: String,
    sessions_seen: SeenIds,
    line: Vec<u8>,
    stats: PipelineStats,
    sink_closed_logged: bool,
    recent_rejections: std::collections::VecDeque<Rejected>,
    subresource: Option<policies::fields::FieldRef>,
}

/// How many rejections are kept for [`Pipeline::recent_rejections`].
const REJECTIONS_KEPT: usize = 1000;

/// How many session ids are remembered to emit each session once (its audit events
/// come at two stages).
const SESSIONS_REMEMBERED: usize = 100_000;

/// `ka.target.subresource`, resolved once (`None` only if the registry lacked it, in
/// which case every event's body is checked for a session).
fn subresource_field() -> Option<policies::fields::FieldRef> {
    policies::fields::resolve("ka.target.subresource", None).ok()
}

impl Pipeline {
    pub fn new(
        rules: Arc<RuleSet>,
        sink: Option<Arc<dyn Sink>>,
        alerts: Option<Box<dyn Write + Send>>,
        hostname: impl Into<String>,
    ) -> Self {
        Self {
            rules,
            sink,
            alerts,
            hostname: hostname.into(),
            sessions_seen: SeenIds::new(),
            line: Vec::with_capacity(4096),
            stats: PipelineStats::default(),
            sink_closed_logged: false,
            recent_rejections: std::collections::VecDeque::new(),
            subresource: subresource_field(),
        }
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
    /// thread (`tokio::task::spawn_blocking`), it is CPU-bound.
    pub fn run_blocking(
        mut self,
        mut rx: Receiver<AuditBatch>,
    ) -> Result<PipelineStats, PipelineError> {
        while let Some(batch) = rx.blocking_recv() {
            self.process(batch)?;
        }
        if let Some(w) = self.alerts.as_mut() {
            w.flush().map_err(PipelineError::Alerts)?;
        }
        Ok(self.stats)
    }

    /// Processes one batch and then runs its `on_processed` hook.
    pub fn process(&mut self, mut batch: AuditBatch) -> Result<(), PipelineError> {
        let source = batch.source.clone();
        for r in std::mem::take(&mut batch.rejected) {
            telemetry::AuditEventRejected {
                source: &source,
                location: &r.location,
                reason: &r.reason,
            }
            .emit();
            self.stats.rejected += 1;
            self.keep(r);
        }
        let records = std::mem::take(&mut batch.records);
        let documents = std::mem::take(&mut batch.documents);
        let mut n = records.len();
        let mut alerts = 0usize;
        for (i, value) in records.into_iter().enumerate() {
            match Event::from_audit_value(value) {
                Ok(ev) => alerts += self.event(&ev)?,
                Err(e) => {
                    let location = format!("{} item {}", batch.origin, i + 1);
                    self.reject(&source, location, e.what);
                }
            }
        }
        for doc in documents {
            for parsed in policies::parse_document(&doc.name, &doc.bytes) {
                n += 1;
                match parsed {
                    Ok(ev) => alerts += self.event(&ev)?,
                    Err(e) => {
                        let line = e.line + doc.first_line.saturating_sub(1);
                        self.reject(&source, format!("{}:{line}", doc.name), e.what);
                    }
                }
            }
        }
        telemetry::AuditEventsReceived {
            source: &source,
            count: n,
        }
        .emit();
        if let Some(w) = self.alerts.as_mut() {
            w.flush().map_err(PipelineError::Alerts)?;
        }
        self.stats.alerts += alerts as u64;
        self.stats.batches += 1;
        telemetry::AuditAlertsEmitted { count: alerts }.emit();
        telemetry::AuditBatchProcessed {
            source: &source,
            records: n,
        }
        .emit();
        if let Some(hook) = batch.on_processed.take() {
            hook();
        }
        Ok(())
    }

    fn reject(&mut self, source: &str, location: String, reason: String) {
        telemetry::AuditEventRejected {
            source,
            location: &location,
            reason: &reason,
        }
        .emit();
        self.stats.rejected += 1;
        self.keep(Rejected { location, reason });
    }

    /// Evaluates one event; returns the number of alerts.
    fn event(&mut self, event: &Event) -> Result<usize, PipelineError> {
        self.stats.events += 1;
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
        if maybe_session {
            if let Some(json) = event.json() {
                if crate::session::session_kind(json).is_some() {
                    self.session(json);
                }
            }
        }
        let mut alerts = 0;
        for m in self.rules.evaluate(event) {
            let alert = Alert::from_match(&m, event, &self.hostname);
            if let Some(w) = self.alerts.as_mut() {
                self.line.clear();
                serde_json::to_writer(&mut self.line, &alert).map_err(|error| {
                    PipelineError::Encode {
                        rule: m.rule.name.clone(),
                        error,
                    }
                })?;
                self.line.push(b'\n');
                w.write_all(&self.line).map_err(PipelineError::Alerts)?;
            }
            if let Some(sink) = &self.sink {
                if sink.alert(alert).is_err() {
                    self.sink_closed();
                }
            }
            alerts += 1;
        }
        Ok(alerts)
    }

    fn session(&mut self, value: &serde_json::Value) {
        let Some((session, joined)) = crate::session::session_from_audit(value) else {
            return;
        };
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
