//! Exec, attach and port-forward sessions recognised in audit events.
//!
//! The API server audits `pods/exec`, `pods/attach` and `pods/portforward` with verb
//! `create` (SPDY) or `get` (WebSocket, kubectl >= 1.30), and `pods/ephemeralcontainers`
//! updates (`kubectl debug`) with `patch`/`update`. The argv is in the request URI, one
//! `command` parameter per element. When the webhook saw the request first, its
//! admission response put `tether.io/session` into the audit annotations: the session is
//! then joined by that id exactly; otherwise the audit ID names a new session.

use engine::{ExecSession, SessionKind};
use serde_json::Value;

/// The audit annotation that carries the webhook's session id. The webhook answers with
/// `auditAnnotations: {"session": id}` and kube-apiserver prefixes each key with the
/// webhook's name, so the audit event carries `exec.tether.io/session` (or
/// `<name>.tether.io/session` for a webhook registered under another name); a bare
/// `tether.io/session` is accepted too.
pub const SESSION_ANNOTATION: &str = "tether.io/session";

/// The session id from an audit event's `annotations`, by [`SESSION_ANNOTATION`] or any
/// `<webhook name>.tether.io/session` key.
fn session_annotation(v: &Value) -> Option<&str> {
    let annotations = v.get("annotations")?.as_object()?;
    annotations
        .iter()
        .find(|(k, _)| {
            k.as_str() == SESSION_ANNOTATION
                || k.strip_suffix(SESSION_ANNOTATION)
                    .is_some_and(|prefix| prefix.ends_with('.'))
        })
        .and_then(|(_, id)| id.as_str())
}

/// The query parameters of a request URI, decoded (`+` is a space, as Go encodes it).
pub fn uri_params(uri: &str) -> Vec<(String, String)> {
    match uri.split_once('?') {
        Some((_, q)) => form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        None => Vec::new(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn strings_at(v: &Value, path: &[&str]) -> Vec<String> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(next) => cur = next,
            None => return Vec::new(),
        }
    }
    cur.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The session kind of an audit event, when it is one of the interactive subresources
/// with a verb that opens a session.
pub fn session_kind(v: &Value) -> Option<SessionKind> {
    let obj = v.get("objectRef")?;
    if obj.get("resource")?.as_str()? != "pods" {
        return None;
    }
    let kind = SessionKind::from_subresource(obj.get("subresource")?.as_str()?)?;
    let verb = v.get("verb")?.as_str()?;
    let opens = match kind {
        SessionKind::Debug => matches!(verb, "patch" | "update"),
        _ => matches!(verb, "create" | "get"),
    };
    opens.then_some(kind)
}

/// Parses an RFC 3339 timestamp to nanoseconds since the epoch.
pub fn rfc3339_ns(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// The session an audit event opens, if it opens one and the API server let it
/// through (a denied or failed request, code >= 400, opened nothing). The second value
/// is true when it was joined to a webhook session by the annotation.
pub fn session_from_audit(v: &Value) -> Option<(ExecSession, bool)> {
    let kind = session_kind(v)?;
    if let Some(code) = v.pointer("/responseStatus/code").and_then(Value::as_i64) {
        if code >= 400 {
            return None;
        }
    }
    let audit_id = str_at(v, &["auditID"]).map(str::to_owned);
    let annotated = session_annotation(v).map(str::to_owned);
    let joined = annotated.is_some();
    let id = annotated.or_else(|| audit_id.clone())?;
    let params = str_at(v, &["requestURI"])
        .map(uri_params)
        .unwrap_or_default();
    let mut command = Vec::new();
    let mut container = None;
    let mut tty = false;
    for (k, val) in params {
        match k.as_str() {
            "command" => command.push(val),
            "container" => container = Some(val),
            "tty" => tty = val == "true" || val == "1",
            _ => {}
        }
    }
    let started_ns = str_at(v, &["requestReceivedTimestamp"])
        .or_else(|| str_at(v, &["stageTimestamp"]))
        .and_then(rfc3339_ns)
        .unwrap_or(0);
    Some((
        ExecSession {
            id,
            kind,
            user: str_at(v, &["user", "username"])
                .unwrap_or_default()
                .to_owned(),
            groups: strings_at(v, &["user", "groups"]),
            uid: str_at(v, &["user", "uid"]).map(str::to_owned),
            namespace: str_at(v, &["objectRef", "namespace"])
                .unwrap_or_default()
                .to_owned(),
            pod: str_at(v, &["objectRef", "name"])
                .unwrap_or_default()
                .to_owned(),
            container,
            command,
            tty,
            source_ips: strings_at(v, &["sourceIPs"]),
            audit_id,
            started_ns,
            observed_by: vec!["audit".to_owned()],
        },
        joined,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec_event(verb: &str, code: i64) -> Value {
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a-1",
            "stage": "ResponseStarted", "verb": verb,
            "requestURI": "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=cat+%2Fetc%2Fshadow&container=app&stdin=true&tty=true",
            "user": {"username": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"]},
            "sourceIPs": ["10.1.2.3"],
            "objectRef": {"resource": "pods", "namespace": "prod", "name": "web-0", "subresource": "exec"},
            "responseStatus": {"code": code},
            "requestReceivedTimestamp": "2026-11-22T10:18:57.347954Z"
        })
    }

    #[test]
    fn spdy_create_and_websocket_get_both_open_sessions() {
        for verb in ["create", "get"] {
            let (s, joined) = session_from_audit(&exec_event(verb, 101)).unwrap();
            assert!(!joined);
            assert_eq!(s.id, "a-1");
            assert_eq!(s.kind, SessionKind::Exec);
            assert_eq!(s.command, vec!["sh", "-c", "cat /etc/shadow"]);
            assert_eq!(s.container.as_deref(), Some("app"));
            assert!(s.tty);
            assert_eq!(s.user, "alice");
            assert_eq!(s.groups, vec!["dev", "system:authenticated"]);
            assert_eq!(s.namespace, "prod");
            assert_eq!(s.pod, "web-0");
            assert_eq!(s.source_ips, vec!["10.1.2.3"]);
            assert_eq!(s.audit_id.as_deref(), Some("a-1"));
            assert_eq!(s.started_ns, 1_795_342_737_347_954_000);
        }
    }

    #[test]
    fn annotation_joins_exactly() {
        let mut ev = exec_event("create", 101);
        ev["annotations"] = json!({"tether.io/session": "review-uid-9"});
        let (s, joined) = session_from_audit(&ev).unwrap();
        assert!(joined);
        assert_eq!(s.id, "review-uid-9");
        assert_eq!(s.audit_id.as_deref(), Some("a-1"));
    }

    #[test]
    fn annotation_prefixed_by_the_webhook_name_joins() {
        // kube-apiserver prefixes the webhook's `session` key with the webhook's name.
        let mut ev = exec_event("get", 101);
        ev["annotations"] = json!({
            "admission.tether.io/detect": "x",
            "exec.tether.io/session": "review-uid-7"
        });
        let (s, joined) = session_from_audit(&ev).unwrap();
        assert!(joined);
        assert_eq!(s.id, "review-uid-7");

        // A key that only ends alike is not ours.
        let mut other = exec_event("get", 101);
        other["annotations"] = json!({"nottether.io/session": "x"});
        let (s, joined) = session_from_audit(&other).unwrap();
        assert!(!joined);
        assert_eq!(s.id, "a-1");
    }

    #[test]
    fn denied_or_other_requests_open_nothing() {
        assert!(session_from_audit(&exec_event("create", 403)).is_none());
        assert!(session_from_audit(&exec_event("delete", 200)).is_none());
        let mut logs = exec_event("get", 200);
        logs["objectRef"]["subresource"] = json!("log");
        assert!(session_from_audit(&logs).is_none());
    }
}
