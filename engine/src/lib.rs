//! The meeting point of Tether's three sources.
//!
//! `webhook`, `audit-bridge` and `node-enforcer` never import each other: each hands
//! what it found to a [`Sink`]. This crate holds the seam types ([`ExecSession`],
//! [`AdmissionDecision`], [`ActionRecord`]) and the first sink implementations: an
//! in-process channel ([`ChannelSink`]), and a function called with each record on the
//! thread that gives it ([`InlineSink`]). The bus (NATS) and the store implement the same
//! trait.

mod inline;
mod session;
mod signal;
mod sink;

pub use inline::{InlineSink, RecordHandler};
pub use session::{ExecSession, SessionConfidence, SessionKind};
pub use signal::shutdown_signal;
pub use sink::{
    ActionRecord, AdmissionDecision, ChannelSink, DecisionOutcome, Found, RuleVerdict, Sink,
    SinkError, SinkReceiver,
};
