//! Where every source hands what it found.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::ExecSession;

/// What an admission review was answered with, and what enforcement would have done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdmissionDecision {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: i64,
    pub request_uid: String,
    pub user: String,
    pub operation: Cow<'static, str>,
    pub resource: String,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The answer that was sent.
    pub outcome: DecisionOutcome,
    /// The answer enforcement would have sent (differs from `outcome` in detect mode).
    pub would_outcome: DecisionOutcome,
    /// Per matching rule: its name, the mode it ran in, the rendered output.
    pub rules: Vec<RuleVerdict>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One rule's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVerdict {
    pub rule: String,
    /// `detect` or `enforce`: the mode it ran in.
    pub mode: Cow<'static, str>,
    pub output: String,
    /// Why it ran in detect mode: the rule's mode, outside its enforcement scope (and why),
    /// or the global detect-only switch. Absent when it enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'static, str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionOutcome {
    Allow,
    Deny,
    /// The review could not be evaluated and was answered per the failure mode.
    Error,
}

/// One response action, carried out or dry-run, with its target objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub time_ns: i64,
    /// `block`, `kill`, `isolate`, `taint`, `deny-identity`, `notify`, ...
    pub kind: String,
    /// The object acted on, e.g. `pod/prod/web-0`, `node/worker-1`, `cgroup/1234`.
    pub target: String,
    pub rule: String,
    pub dry_run: bool,
    /// `done`, `failed`, `skipped`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    /// How it was done, why it was skipped, or what it would have done (dry-run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Everything a sink carries.
#[derive(Debug, Clone)]
pub enum Found {
    Alert(Box<policies::Alert>),
    Session(Box<ExecSession>),
    Decision(Box<AdmissionDecision>),
    Action(Box<ActionRecord>),
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink closed: its receiver was dropped")]
    Closed,
}

/// Where `webhook`, `audit-bridge` and `node-enforcer` hand what they found.
pub trait Sink: Send + Sync {
    fn alert(&self, alert: policies::Alert) -> Result<(), SinkError>;
    fn session(&self, session: ExecSession) -> Result<(), SinkError>;
    fn decision(&self, decision: AdmissionDecision) -> Result<(), SinkError>;
    fn action(&self, action: ActionRecord) -> Result<(), SinkError>;
}

/// The in-process sink: an unbounded channel, so a source never blocks on a slow
/// consumer and nothing accepted is dropped (memory is the bound; the bus replaces this
/// where durability matters).
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<Found>,
}

/// The receiving end of a [`ChannelSink`].
pub type SinkReceiver = mpsc::UnboundedReceiver<Found>;

impl ChannelSink {
    pub fn new() -> (Self, SinkReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    fn send(&self, found: Found) -> Result<(), SinkError> {
        self.tx.send(found).map_err(|_| SinkError::Closed)
    }
}

impl Sink for ChannelSink {
    fn alert(&self, alert: policies::Alert) -> Result<(), SinkError> {
        self.send(Found::Alert(Box::new(alert)))
    }
    fn session(&self, session: ExecSession) -> Result<(), SinkError> {
        self.send(Found::Session(Box::new(session)))
    }
    fn decision(&self, decision: AdmissionDecision) -> Result<(), SinkError> {
        self.send(Found::Decision(Box::new(decision)))
    }
    fn action(&self, action: ActionRecord) -> Result<(), SinkError> {
        self.send(Found::Action(Box::new(action)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionKind;

    #[test]
    fn channel_sink_delivers_in_order_and_reports_closed() {
        let (sink, mut rx) = ChannelSink::new();
        let session = ExecSession {
            id: "s".into(),
            kind: SessionKind::Exec,
            user: "u".into(),
            groups: vec![],
            uid: None,
            namespace: "ns".into(),
            pod: "p".into(),
            container: None,
            command: vec!["sh".into()],
            tty: true,
            source_ips: vec![],
            audit_id: None,
            started_ns: 1,
            observed_by: vec![],
        };
        sink.session(session).unwrap();
        sink.action(ActionRecord {
            time_ns: 2,
            kind: "kill".into(),
            target: "pid/1".into(),
            rule: "r".into(),
            dry_run: true,
            status: "done".into(),
            error: None,
            reason: None,
        })
        .unwrap();
        assert!(matches!(rx.try_recv(), Ok(Found::Session(s)) if s.id == "s"));
        assert!(matches!(rx.try_recv(), Ok(Found::Action(a)) if a.kind == "kill"));
        drop(rx);
        assert!(matches!(
            sink.action(ActionRecord {
                time_ns: 0,
                kind: "x".into(),
                target: "t".into(),
                rule: "r".into(),
                dry_run: false,
                status: "done".into(),
                error: None,
                reason: None,
            }),
            Err(SinkError::Closed)
        ));
    }
}
