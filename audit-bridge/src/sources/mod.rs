//! One module per way of reading audit data, each with its own config struct.

pub mod cloudwatch;
pub mod file;
pub(crate) mod gcp_auth;
pub mod logging;
pub mod pubsub;
pub mod webhook;

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Exponential backoff between failed attempts of a poller.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    current_ms: u64,
}

impl Backoff {
    pub(crate) fn new(initial_ms: u64, max_ms: u64) -> Self {
        Self {
            initial_ms,
            max_ms,
            current_ms: initial_ms,
        }
    }

    /// The next delay (doubling up to the maximum).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current_ms;
        self.current_ms = (self.current_ms.saturating_mul(2)).min(self.max_ms);
        Duration::from_millis(d)
    }

    pub(crate) fn reset(&mut self) {
        self.current_ms = self.initial_ms;
    }

    /// After a failed attempt of `source`: reports `error` with the delay before the next
    /// try, then waits that delay unless shutdown comes first; returns false on shutdown.
    pub(crate) async fn fail_and_wait(
        &mut self,
        source: &str,
        error: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        let d = self.next_delay();
        crate::telemetry::SourceAttemptFailed {
            source,
            error,
            retry_in_ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
        }
        .emit();
        sleep_or_shutdown(d, shutdown).await
    }
}

/// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Checks that a JSON value is shaped like an audit `Event` (an object, with `kind`
/// `Event` where a kind is given); the rule engine checks the rest.
pub(crate) fn check_audit_shape(v: &Value) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err(format!(
            "expected an audit event object, found {}",
            json_type(v)
        ));
    };
    match obj.get("kind") {
        None => Ok(()),
        Some(Value::String(k)) if k == "Event" => Ok(()),
        Some(Value::String(k)) => Err(format!("expected kind Event, found kind {k:?}")),
        Some(other) => Err(format!(
            "field kind must be a string, found {}",
            json_type(other)
        )),
    }
}

pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one line or message holding one audit event.
pub(crate) fn parse_audit_json(bytes: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            format!("truncated json: {e}")
        } else {
            format!("malformed json: {e}")
        }
    })?;
    check_audit_shape(&v)?;
    Ok(v)
}
