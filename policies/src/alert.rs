//! Falco-compatible alerts, with Tether's additions.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::event::{Event, SessionFields};
use crate::rules::{Match, Mode, Priority};

/// One alert, serialized exactly in Falco's JSON shape (`time`, `rule`, `priority`, `output`,
/// `output_fields`, `source`, `tags`, `hostname`) plus Tether's `uuid`, `mode`, `session`,
/// `actions` and `correlation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub uuid: uuid::Uuid,
    /// Falco's form: `HH:MM:SS.nnnnnnnnn: Priority rendered-output`.
    pub output: String,
    pub priority: Priority,
    pub rule: String,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub output_fields: Map<String, Json>,
    pub source: String,
    pub tags: Vec<String>,
    pub hostname: String,
    pub mode: Mode,
    pub session: Option<SessionFields>,
    pub actions: Vec<AlertAction>,
    pub correlation: Option<Correlation>,
}

/// A response taken (or dry-run) for an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertAction {
    pub kind: String,
    pub target: String,
    pub dry_run: bool,
    /// `done`, `failed`, `skipped`.
    pub status: String,
    /// What went wrong, when `failed`.
    pub error: Option<String>,
    /// How it was done, why it was skipped, or what it would have done (dry-run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Set on alerts raised by a sequence: which sequence, the join key, and the alerts (by
/// uuid) that made up its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    pub sequence: String,
    pub by: Map<String, Json>,
    pub alerts: Vec<uuid::Uuid>,
}

impl Alert {
    /// Builds the alert for a match. The time is the event's (now when it has none).
    pub fn from_match(m: &Match, ev: &Event, hostname: &str) -> Alert {
        let ns = if ev.time_ns() > 0 {
            ev.time_ns()
        } else {
            crate::event::now_ns()
        };
        let (time, clock) = format_time(ns);
        Alert {
            uuid: uuid::Uuid::new_v4(),
            output: format!("{clock}: {} {}", m.rule.priority.as_str(), m.output),
            priority: m.rule.priority,
            rule: m.rule.name.clone(),
            time,
            output_fields: m.output_fields.clone(),
            source: ev.source().as_str().to_string(),
            tags: m.rule.tags.clone(),
            hostname: hostname.to_string(),
            mode: m.rule.tether.mode,
            session: ev.session().cloned(),
            actions: Vec::new(),
            correlation: None,
        }
    }
}

/// (`2024-01-02T03:04:05.123456789Z`, `03:04:05.123456789`)
pub(crate) fn format_time(ns: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day());
    let clock = format!(
        "{:02}:{:02}:{:02}.{:09}",
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    );
    (format!("{date}T{clock}Z"), clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_has_nanoseconds() {
        let (t, c) = format_time(1_704_164_645_000_000_007);
        assert_eq!(t, "2024-01-02T03:04:05.000000007Z");
        assert_eq!(c, "03:04:05.000000007");
    }
}
