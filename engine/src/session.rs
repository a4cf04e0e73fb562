//! Exec sessions: who opened a shell (or attach, port-forward, debug) into which pod.
//!
//! A session is observed by the webhook (CONNECT review, before the exec starts) and by
//! the audit bridge (the API server's audit event for the same request). Both produce an
//! [`ExecSession`]; [`ExecSession::merge`] joins two observations of one session.

use serde::{Deserialize, Serialize};

/// What kind of interactive access a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Exec,
    Attach,
    Portforward,
    Debug,
}

impl SessionKind {
    /// The kind named by a pod subresource (`exec`, `attach`, `portforward`,
    /// `ephemeralcontainers`), if it is one.
    pub fn from_subresource(subresource: &str) -> Option<Self> {
        match subresource {
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::Portforward),
            "ephemeralcontainers" => Some(Self::Debug),
            _ => None,
        }
    }

    /// The name used in `session.kind`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::Portforward => "portforward",
            Self::Debug => "debug",
        }
    }
}

/// How a syscall event was tied to its session (`session.confidence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionConfidence {
    /// Joined by an identifier both sides carry (the `tether.io/session` annotation, a
    /// marker in the command).
    Exact,
    /// Joined by command, pod and time window; ambiguous ties resolved by start order.
    Matched,
    /// No session.
    #[default]
    None,
}

impl SessionConfidence {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Matched => "matched",
            Self::None => "none",
        }
    }
}

/// One interactive session into a pod, merged from webhook and audit observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSession {
    /// The admission request uid when the webhook saw it, else the audit ID.
    pub id: String,
    pub kind: SessionKind,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub uid: Option<String>,
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub container: Option<String>,
    /// The argv, one element per `command` parameter.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub source_ips: Vec<String>,
    /// The API server's audit ID, once the audit bridge has seen the request.
    #[serde(default)]
    pub audit_id: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub started_ns: i64,
    /// Which observers contributed (`webhook`, `audit`).
    #[serde(default)]
    pub observed_by: Vec<String>,
}

impl ExecSession {
    /// The `session.*` fields of events and alerts tied to this session with `confidence`.
    pub fn fields(&self, confidence: SessionConfidence) -> policies::SessionFields {
        policies::SessionFields {
            id: self.id.clone(),
            kind: self.kind.as_str().to_string(),
            user: self.user.clone(),
            groups: self.groups.clone(),
            uid: self.uid.clone().unwrap_or_default(),
            auditid: self.audit_id.clone().unwrap_or_default(),
            command: self.command.clone(),
            sourceips: self.source_ips.clone(),
            started_ns: self.started_ns,
            confidence: confidence.as_str().to_string(),
        }
    }

    /// Joins another observation of the same session into this one: fields this one lacks
    /// are taken from `other`, lists are unioned, the earliest start wins. Identity fields
    /// already set (user, namespace, pod) are kept: the first observer is the webhook,
    /// which saw the request before the API server acted on it.
    pub fn merge(&mut self, other: &ExecSession) {
        if self.user.is_empty() {
            self.user.clone_from(&other.user);
        }
        if self.namespace.is_empty() {
            self.namespace.clone_from(&other.namespace);
        }
        if self.pod.is_empty() {
            self.pod.clone_from(&other.pod);
        }
        if self.uid.is_none() {
            self.uid.clone_from(&other.uid);
        }
        if self.container.is_none() {
            self.container.clone_from(&other.container);
        }
        if self.command.is_empty() {
            self.command.clone_from(&other.command);
        }
        if self.audit_id.is_none() {
            self.audit_id.clone_from(&other.audit_id);
        }
        self.tty |= other.tty;
        union_into(&mut self.groups, &other.groups);
        union_into(&mut self.source_ips, &other.source_ips);
        union_into(&mut self.observed_by, &other.observed_by);
        if other.started_ns != 0 && (self.started_ns == 0 || other.started_ns < self.started_ns) {
            self.started_ns = other.started_ns;
        }
    }
}

fn union_into(into: &mut Vec<String>, from: &[String]) {
    for item in from {
        if !into.contains(item) {
            into.push(item.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(observer: &str) -> ExecSession {
        ExecSession {
            id: "uid-1".into(),
            kind: SessionKind::Exec,
            user: String::new(),
            groups: vec![],
            uid: None,
            namespace: String::new(),
            pod: String::new(),
            container: None,
            command: vec![],
            tty: false,
            source_ips: vec![],
            audit_id: None,
            started_ns: 0,
            observed_by: vec![observer.into()],
        }
    }

    #[test]
    fn merge_fills_gaps_and_unions_lists() {
        let mut hook = session("webhook");
        hook.user = "alice".into();
        hook.groups = vec!["dev".into()];
        hook.namespace = "prod".into();
        hook.pod = "web-0".into();
        hook.command = vec!["sh".into()];
        hook.started_ns = 200;

        let mut audit = session("audit");
        audit.user = "mallory".into();
        audit.groups = vec!["dev".into(), "system:authenticated".into()];
        audit.audit_id = Some("a-1".into());
        audit.source_ips = vec!["10.0.0.1".into()];
        audit.started_ns = 100;
        audit.tty = true;

        hook.merge(&audit);
        assert_eq!(hook.user, "alice");
        assert_eq!(hook.groups, vec!["dev", "system:authenticated"]);
        assert_eq!(hook.audit_id.as_deref(), Some("a-1"));
        assert_eq!(hook.source_ips, vec!["10.0.0.1"]);
        assert_eq!(hook.observed_by, vec!["webhook", "audit"]);
        assert_eq!(hook.started_ns, 100);
        assert!(hook.tty);
    }

    #[test]
    fn kinds_from_subresources() {
        assert_eq!(
            SessionKind::from_subresource("exec"),
            Some(SessionKind::Exec)
        );
        assert_eq!(
            SessionKind::from_subresource("portforward").map(SessionKind::as_str),
            Some("portforward")
        );
        assert_eq!(SessionKind::from_subresource("log"), None);
    }
}
