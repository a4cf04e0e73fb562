//! Things worth counting, one struct each: `emit()` logs it (key/value) and bumps its
//! counter together. Counter names end in `_total`; [`snapshot`] reads them all (the
//! command prints them at exit) and [`render_prometheus`] writes them, with a `source`
//! label where the count belongs to one source, and the registered gauges, in Prometheus'
//! text format (served by [`crate::metrics`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

macro_rules! counters {
    ($($name:ident: $help:literal),* $(,)?) => {
        #[allow(non_upper_case_globals)]
        mod counter {
            use super::AtomicU64;
            $(pub static $name: AtomicU64 = AtomicU64::new(0);)*
        }
        /// Every counter by name, with its current value.
        pub fn snapshot() -> Vec<(&'static str, u64)> {
            vec![$((stringify!($name), counter::$name.load(Ordering::Relaxed)),)*]
        }
        /// Every counter by name, with its help text.
        fn help() -> Vec<(&'static str, &'static str)> {
            vec![$((stringify!($name), $help),)*]
        }
    };
}

counters!(
    audit_events_received_total: "Audit records taken in by the sources.",
    audit_events_rejected_total: "Input that was not an audit event (malformed JSON, wrong kind, ...).",
    audit_alerts_emitted_total: "Alerts written.",
    audit_sessions_emitted_total: "Exec, attach and port-forward sessions recognised in the audit trail.",
    audit_batches_processed_total: "Batches fully processed (their checkpoints may be committed).",
    audit_webhook_requests_total: "Requests to the audit webhook backend.",
    audit_webhook_requests_refused_total: "Requests to the audit webhook backend answered other than 200.",
    audit_spool_commits_total: "Group commits (fdatasync) of the webhook spool.",
    audit_duplicates_dropped_total: "Records dropped because their id was seen already.",
    audit_source_errors_total: "Failed attempts of a source (each is retried with backoff).",
);

/// The counters that are also kept per source, in this order.
const BY_SOURCE: [&str; 5] = [
    "audit_events_received_total",
    "audit_events_rejected_total",
    "audit_batches_processed_total",
    "audit_duplicates_dropped_total",
    "audit_source_errors_total",
];
const RECEIVED: usize = 0;
const REJECTED: usize = 1;
const BATCHES: usize = 2;
const DUPLICATES: usize = 3;
const SOURCE_ERRORS: usize = 4;

static PER_SOURCE: Mutex<BTreeMap<String, [u64; BY_SOURCE.len()]>> = Mutex::new(BTreeMap::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn add_for(source: &str, which: usize, n: u64) {
    let mut map = lock(&PER_SOURCE);
    if let Some(row) = map.get_mut(source) {
        row[which] += n;
    } else {
        let mut row = [0; BY_SOURCE.len()];
        row[which] = n;
        map.insert(source.to_string(), row);
    }
}

/// A value read when the metrics are rendered (e.g. the spool's pending bytes).
pub type GaugeFn = Arc<dyn Fn() -> u64 + Send + Sync>;

struct Gauge {
    name: &'static str,
    help: &'static str,
    read: GaugeFn,
}

static GAUGES: Mutex<Vec<Gauge>> = Mutex::new(Vec::new());

/// Registers a gauge, replacing one of the same name.
pub fn register_gauge(name: &'static str, help: &'static str, read: GaugeFn) {
    let mut gauges = lock(&GAUGES);
    gauges.retain(|g| g.name != name);
    gauges.push(Gauge { name, help, read });
}

/// 0: no lease configured, 1: lease not held, 2: lease held.
static LEASE: AtomicU8 = AtomicU8::new(0);

/// This replica took or lost the pollers' Lease.
pub struct LeaseHeld {
    pub held: bool,
}
impl LeaseHeld {
    pub fn emit(self) {
        LEASE.store(if self.held { 2 } else { 1 }, Ordering::Relaxed);
    }
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Every counter and gauge in Prometheus' text exposition format (version 0.0.4).
pub fn render_prometheus() -> String {
    let mut out = String::new();
    let values = snapshot();
    let per_source = lock(&PER_SOURCE).clone();
    for (name, help) in help() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        if let Some(which) = BY_SOURCE.iter().position(|n| *n == name) {
            for (source, row) in &per_source {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{}\"}} {}",
                    escape_label(source),
                    row[which]
                );
            }
        } else {
            let value = values
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v);
            let _ = writeln!(out, "{name} {value}");
        }
    }
    for g in lock(&GAUGES).iter() {
        let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
        let _ = writeln!(out, "# TYPE {} gauge", g.name);
        let _ = writeln!(out, "{} {}", g.name, (g.read)());
    }
    match LEASE.load(Ordering::Relaxed) {
        0 => {}
        state => {
            let _ = writeln!(
                out,
                "# HELP audit_lease_held 1 while this replica holds the pollers' Lease."
            );
            let _ = writeln!(out, "# TYPE audit_lease_held gauge");
            let _ = writeln!(out, "audit_lease_held {}", u8::from(state == 2));
        }
    }
    out
}

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
        add_for(self.source, RECEIVED, self.count as u64);
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
        add_for(self.source, REJECTED, 1);
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
        add_for(self.source, BATCHES, 1);
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
        add_for(self.source, DUPLICATES, 1);
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
        add_for(self.source, SOURCE_ERRORS, 1);
    }
}

/// Counter value by name (0 when unknown).
pub fn get(name: &str) -> u64 {
    snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}
