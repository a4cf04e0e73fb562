//! Things worth counting, one struct each: `emit()` logs it (key/value) and bumps its
//! counter together. Counter names end in `_total`; [`snapshot`] reads them all (the
//! command prints them at exit, and a metrics endpoint can serve them).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        mod counter {
            use super::AtomicU64;
            $(pub static $name: AtomicU64 = AtomicU64::new(0);)*
        }
        /// Every counter by name, with its current value.
        pub fn snapshot() -> Vec<(&'static str, u64)> {
            vec![$((stringify!($name), counter::$name.load(Ordering::Relaxed)),)*]
        }
    };
}

counters!(
    audit_events_received_total,
    audit_events_rejected_total,
    audit_alerts_emitted_total,
    audit_sessions_emitted_total,
    audit_batches_processed_total,
    audit_webhook_requests_total,
    audit_webhook_requests_refused_total,
    audit_spool_commits_total,
    audit_duplicates_dropped_total,
    audit_source_errors_total,
);

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Records taken in by a source.
pub struct AuditEventsReceived<'a> {
    pub source: &'a str,
    pub count: usize,
}
impl AuditEventsReceived<'_> {
    pub fn emit(self) {
        tracing::trace!(
            source = self.source,
            count = self.count,
            "audit events received"
        );
        add(&counter::audit_events_received_total, self.count as u64);
    }
}

/// Input that was not an audit event.
pub struct AuditEventRejected<'a> {
    pub source: &'a str,
    pub location: &'a str,
    pub reason: &'a str,
}
impl AuditEventRejected<'_> {
    pub fn emit(self) {
        tracing::warn!(
            source = self.source,
            location = self.location,
            reason = self.reason,
            "audit input rejected"
        );
        add(&counter::audit_events_rejected_total, 1);
    }
}

/// Alerts written.
pub struct AuditAlertsEmitted {
    pub count: usize,
}
impl AuditAlertsEmitted {
    pub fn emit(self) {
        add(&counter::audit_alerts_emitted_total, self.count as u64);
    }
}

/// An exec/attach/port-forward session recognised in the audit trail.
pub struct AuditSessionEmitted<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub user: &'a str,
    pub joined: bool,
}
impl AuditSessionEmitted<'_> {
    pub fn emit(self) {
        tracing::info!(
            session = self.id,
            kind = self.kind,
            user = self.user,
            joined_by_annotation = self.joined,
            "exec session from audit"
        );
        add(&counter::audit_sessions_emitted_total, 1);
    }
}

/// A batch fully processed (its checkpoint may now be committed).
pub struct AuditBatchProcessed<'a> {
    pub source: &'a str,
    pub records: usize,
}
impl AuditBatchProcessed<'_> {
    pub fn emit(self) {
        tracing::trace!(
            source = self.source,
            records = self.records,
            "audit batch processed"
        );
        add(&counter::audit_batches_processed_total, 1);
    }
}

/// One request to the webhook backend, and its status.
pub struct AuditWebhookRequest {
    pub status: u16,
    pub events: usize,
}
impl AuditWebhookRequest {
    pub fn emit(self) {
        add(&counter::audit_webhook_requests_total, 1);
        if self.status != 200 {
            tracing::warn!(
                status = self.status,
                events = self.events,
                "audit webhook request refused"
            );
            add(&counter::audit_webhook_requests_refused_total, 1);
        }
    }
}

/// One group commit of the spool (one fdatasync for many requests).
pub struct SpoolGroupCommit {
    pub requests: usize,
    pub bytes: usize,
}
impl SpoolGroupCommit {
    pub fn emit(self) {
        tracing::trace!(
            requests = self.requests,
            bytes = self.bytes,
            "spool group commit"
        );
        add(&counter::audit_spool_commits_total, 1);
    }
}

/// A record dropped because its id was seen already.
pub struct DuplicateDropped<'a> {
    pub source: &'a str,
    pub id: &'a str,
}
impl DuplicateDropped<'_> {
    pub fn emit(self) {
        tracing::debug!(source = self.source, id = self.id, "duplicate dropped");
        add(&counter::audit_duplicates_dropped_total, 1);
    }
}

/// A source failed an attempt (it retries with backoff).
pub struct SourceAttemptFailed<'a> {
    pub source: &'a str,
    pub error: &'a str,
    pub retry_in_ms: u64,
}
impl SourceAttemptFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            source = self.source,
            error = self.error,
            retry_in_ms = self.retry_in_ms,
            "source attempt failed"
        );
        add(&counter::audit_source_errors_total, 1);
    }
}

/// Counter value by name (0 when unknown).
pub fn get(name: &str) -> u64 {
    snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}
