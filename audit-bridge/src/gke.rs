//! GKE audit `LogEntry` (Cloud Logging, or a Log Router sink to Pub/Sub) to an
//! `audit.k8s.io/v1` `Event`.
//!
//! A GKE audit entry carries a `protoPayload` of type `google.cloud.audit.AuditLog` with
//! `serviceName: k8s.io`. The conversion keeps what Falco's GKE plugin loses:
//!
//! - `methodName` (`io.k8s.core.v1.pods.exec.create`) -> `verb` (the last part),
//!   `objectRef.resource` / `subresource`;
//! - `resourceName` (`core/v1/namespaces/NS/pods/NAME/exec`) -> `objectRef.apiGroup`,
//!   `apiVersion`, `namespace`, `name` (preferred over `methodName` where both say);
//! - the exec command: `request.command` of a `PodExecOptions` request becomes one
//!   `command` parameter per argv element in `requestURI`, with `container`, `stdin`,
//!   `stdout`, `stderr`, `tty`;
//! - the real status: `status.code` (a google.rpc code) -> HTTP code in
//!   `responseStatus`, so a denial (`PERMISSION_DENIED`) is a 403 `Failure`, and
//!   `authorization.k8s.io/decision` becomes `forbid`; a `Status` object in `response`
//!   wins where present;
//! - `authenticationInfo.principalEmail` -> `user.username`,
//!   `requestMetadata.callerIp` -> `sourceIPs`, `callerSuppliedUserAgent` -> `userAgent`;
//! - `timestamp` -> `requestReceivedTimestamp` and `stageTimestamp`; `operation.first`
//!   / `last` -> `stage`; `labels` -> `annotations` (where GKE puts the authorization
//!   decision and reason, and any `tether.io/session`).

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GkeError {
    #[error("log entry is not a json object")]
    NotAnObject,
    #[error("log entry has no protoPayload (it is not an audit log entry)")]
    NoProtoPayload,
    #[error("log entry is from service {0:?}, not a kubernetes audit entry (serviceName k8s.io)")]
    OtherService(String),
    #[error("log entry has no {0}")]
    Missing(&'static str),
    #[error("log entry field {field} is malformed: {reason}")]
    Malformed { field: &'static str, reason: String },
}

/// The parts of a GKE `resourceName`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResourceName {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses `GROUP/VERSION[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]`
/// (`core` is the core group). `namespaces/NS` alone is the namespace object itself.
pub fn parse_resource_name(s: &str) -> Option<ResourceName> {
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() < 3 {
        return None;
    }
    let mut r = ResourceName {
        group: if parts[0] == "core" {
            String::new()
        } else {
            parts[0].to_owned()
        },
        version: parts[1].to_owned(),
        ..ResourceName::default()
    };
    let rest = &parts[2..];
    let rest = if rest.len() >= 3 && rest[0] == "namespaces" {
        r.namespace = Some(rest[1].to_owned());
        &rest[2..]
    } else {
        rest
    };
    r.resource = rest.first()?.to_string();
    r.name = rest.get(1).map(|s| s.to_string());
    r.subresource = rest.get(2).map(|s| s.to_string());
    if r.resource == "namespaces" {
        // `namespaces/NAME` is the namespace object: its namespace is itself.
        r.namespace = r.name.clone();
    }
    Some(r)
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let tail = &rest[digits..];
    tail.is_empty()
        || ["alpha", "beta"].iter().any(|p| {
            tail.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        })
}

/// `(verb, resource, subresource)` from `io.k8s.GROUP.VERSION.RESOURCE[.SUB].VERB`.
pub fn parse_method_name(m: &str) -> Option<(String, String, Option<String>)> {
    let rest = m.strip_prefix("io.k8s.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let vi = parts.iter().rposition(|p| is_version(p))?;
    let tail = &parts[vi + 1..];
    match tail {
        [resource, verb] => Some(((*verb).to_owned(), (*resource).to_owned(), None)),
        [resource, sub, verb] => Some((
            (*verb).to_owned(),
            (*resource).to_owned(),
            Some((*sub).to_owned()),
        )),
        _ => None,
    }
}

/// HTTP status for a google.rpc code.
pub const fn http_code(rpc: i64) -> i64 {
    match rpc {
        0 => 200,
        1 => 499,
        3 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        9 => 412,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

fn reason_for(code: i64) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "AlreadyExists",
        412 => "Conflict",
        429 => "TooManyRequests",
        501 => "NotImplemented",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn bool_param(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s == "true"),
        _ => None,
    }
}

/// Converts one GKE audit `LogEntry` to an audit `Event`.
pub fn log_entry_to_audit(entry: &Value) -> Result<Value, GkeError> {
    let e = entry.as_object().ok_or(GkeError::NotAnObject)?;
    let p = e.get("protoPayload").ok_or(GkeError::NoProtoPayload)?;
    if !p.is_object() {
        return Err(GkeError::Malformed {
            field: "protoPayload",
            reason: "not an object".into(),
        });
    }
    let service = s(p, "serviceName").unwrap_or_default();
    if service != "k8s.io" {
        return Err(GkeError::OtherService(service.to_owned()));
    }
    let method = s(p, "methodName").ok_or(GkeError::Missing("protoPayload.methodName"))?;
    let (verb, m_resource, m_sub) =
        parse_method_name(method).ok_or_else(|| GkeError::Malformed {
            field: "protoPayload.methodName",
            reason: format!("{method:?} is not io.k8s.GROUP.VERSION.RESOURCE[.SUBRESOURCE].VERB"),
        })?;
    let rn = s(p, "resourceName").and_then(parse_resource_name);
    let timestamp = e
        .get("timestamp")
        .and_then(Value::as_str)
        .ok_or(GkeError::Missing("timestamp"))?;
    if crate::session::rfc3339_ns(timestamp).is_none() {
        return Err(GkeError::Malformed {
            field: "timestamp",
            reason: format!("{timestamp:?} is not an rfc 3339 time"),
        });
    }

    let (group, version, namespace, resource, name, sub) = match rn {
        Some(r) => (
            r.group,
            r.version,
            r.namespace,
            r.resource,
            r.name,
            r.subresource.or(m_sub),
        ),
        None => (String::new(), String::new(), None, m_resource, None, m_sub),
    };
    let api_version = match (group.as_str(), version.as_str()) {
        (_, "") => String::new(),
        ("", v) => v.to_owned(),
        (g, v) => format!("{g}/{v}"),
    };

    // The request URI: the API path, plus the exec options as query parameters.
    let mut uri = String::new();
    if !version.is_empty() {
        uri.push_str(if group.is_empty() { "/api/" } else { "/apis/" });
        uri.push_str(&api_version);
    }
    if let Some(ns) = namespace.as_deref().filter(|_| resource != "namespaces") {
        uri.push_str("/namespaces/");
        uri.push_str(ns);
    }
    uri.push('/');
    uri.push_str(&resource);
    if let Some(n) = &name {
        uri.push('/');
        uri.push_str(n);
    }
    if let Some(sb) = &sub {
        uri.push('/');
        uri.push_str(sb);
    }
    let request = p.get("request");
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut has_query = false;
    if let Some(req) = request {
        match req.get("command") {
            Some(Value::Array(argv)) => {
                for a in argv {
                    if let Some(a) = a.as_str() {
                        query.append_pair("command", a);
                        has_query = true;
                    }
                }
            }
            Some(Value::String(one)) => {
                query.append_pair("command", one);
                has_query = true;
            }
            _ => {}
        }
        if let Some(c) = s(req, "container") {
            query.append_pair("container", c);
            has_query = true;
        }
        for key in ["stdin", "stdout", "stderr", "tty"] {
            if let Some(b) = bool_param(req, key) {
                query.append_pair(key, if b { "true" } else { "false" });
                has_query = true;
            }
        }
    }
    if has_query {
        uri.push('?');
        uri.push_str(&query.finish());
    }

    // Status: a Status object in the response wins; else the rpc code.
    let rpc = p
        .pointer("/status/code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status_msg = p
        .pointer("/status/message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let response = p.get("response");
    let resp_is_status = response.and_then(|r| s(r, "kind")) == Some("Status")
        || response
            .and_then(|r| s(r, "@type"))
            .is_some_and(|t| t.ends_with(".Status"));
    let code = match response {
        Some(r) if resp_is_status => r.get("code").and_then(Value::as_i64),
        _ => None,
    }
    .unwrap_or_else(|| http_code(rpc));
    let mut response_status = Map::new();
    response_status.insert("metadata".into(), json!({}));
    response_status.insert("code".into(), json!(code));
    if code >= 400 {
        response_status.insert("status".into(), json!("Failure"));
        response_status.insert("reason".into(), json!(reason_for(code)));
        if !status_msg.is_empty() {
            response_status.insert("message".into(), json!(status_msg));
        }
    }

    // Annotations: GKE's labels, with the authorization decision made consistent
    // with the status (a 403 is a denial).
    let mut annotations = Map::new();
    if let Some(Value::Object(labels)) = e.get("labels") {
        for (k, v) in labels {
            annotations.insert(k.clone(), v.clone());
        }
    }
    let denied_by_authz = p
        .get("authorizationInfo")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|x| x.get("granted").and_then(Value::as_bool) == Some(false))
        });
    if code == 403 || denied_by_authz {
        annotations.insert("authorization.k8s.io/decision".into(), json!("forbid"));
    } else if !annotations.contains_key("authorization.k8s.io/decision") && code < 400 {
        annotations.insert("authorization.k8s.io/decision".into(), json!("allow"));
    }
    if let Some(Value::Array(infos)) = p.get("authorizationInfo") {
        if !annotations.contains_key("authorization.k8s.io/reason") {
            if let Some(perm) = infos.first().and_then(|i| s(i, "permission")) {
                annotations.insert("authorization.k8s.io/reason".into(), json!(perm));
            }
        }
    }

    let principal = p
        .pointer("/authenticationInfo/principalEmail")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut user = Map::new();
    user.insert("username".into(), json!(principal));
    // GKE does not log groups; every authenticated caller is in this one.
    if !principal.is_empty() && principal != "system:anonymous" {
        user.insert("groups".into(), json!(["system:authenticated"]));
    }
    let mut source_ips = Vec::new();
    if let Some(ip) = p
        .pointer("/requestMetadata/callerIp")
        .and_then(Value::as_str)
    {
        source_ips.push(json!(ip));
    }
    let op_flag = |k: &str| {
        e.get("operation")
            .and_then(|o| o.get(k))
            .and_then(Value::as_bool)
    };
    // A long-running request (exec, watch) is logged first when it starts and again
    // when it ends; a first-but-not-last entry is the start. GKE logs an exec, attach or
    // port-forward once, as it starts streaming: that is the API server's
    // `ResponseStarted`, the stage Falco's exec rules look for.
    let connect = matches!(sub.as_deref(), Some("exec" | "attach" | "portforward"));
    let started = op_flag("first") == Some(true) && op_flag("last") == Some(false);
    let stage = if started || (connect && op_flag("first") != Some(false)) {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    let audit_id = e
        .get("operation")
        .and_then(|o| s(o, "id"))
        .or_else(|| s(entry, "insertId"))
        .unwrap_or_default();

    let mut object_ref = Map::new();
    object_ref.insert("resource".into(), json!(resource));
    if let Some(ns) = &namespace {
        object_ref.insert("namespace".into(), json!(ns));
    }
    if let Some(n) = &name {
        object_ref.insert("name".into(), json!(n));
    }
    if let Some(sb) = &sub {
        object_ref.insert("subresource".into(), json!(sb));
    }
    if !group.is_empty() {
        object_ref.insert("apiGroup".into(), json!(group));
    }
    if !version.is_empty() {
        object_ref.insert("apiVersion".into(), json!(version));
    }

    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
    out.insert(
        "level".into(),
        json!(if request.is_some() {
            "Request"
        } else {
            "Metadata"
        }),
    );
    out.insert("auditID".into(), json!(audit_id));
    out.insert("stage".into(), json!(stage));
    out.insert("requestURI".into(), json!(uri));
    out.insert("verb".into(), json!(verb));
    out.insert("user".into(), Value::Object(user));
    out.insert("sourceIPs".into(), Value::Array(source_ips));
    if let Some(ua) = p
        .pointer("/requestMetadata/callerSuppliedUserAgent")
        .and_then(Value::as_str)
    {
        out.insert("userAgent".into(), json!(ua));
    }
    out.insert("objectRef".into(), Value::Object(object_ref));
    out.insert("responseStatus".into(), Value::Object(response_status));
    if let Some(req) = request {
        out.insert("requestObject".into(), strip_type(req));
    }
    if let Some(resp) = response {
        out.insert("responseObject".into(), strip_type(resp));
    }
    out.insert("requestReceivedTimestamp".into(), json!(timestamp));
    out.insert("stageTimestamp".into(), json!(timestamp));
    out.insert("annotations".into(), Value::Object(annotations));
    Ok(Value::Object(out))
}

/// GKE marks typed payloads with `@type`; the audit object has none.
fn strip_type(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.contains_key("@type") => {
            let mut m = m.clone();
            m.remove("@type");
            Value::Object(m)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn gke_exec_entry() -> Value {
        json!({
            "insertId": "ins-1",
            "logName": "projects/p1/logs/cloudaudit.googleapis.com%2Factivity",
            "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "c1", "location": "europe-west1", "project_id": "p1"}},
            "timestamp": "2026-11-22T10:18:57.347954Z",
            "operation": {"id": "audit-7", "producer": "k8s.io", "first": true, "last": true},
            "labels": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "access granted by IAM permissions."},
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "authenticationInfo": {"principalEmail": "alice@example.com"},
                "authorizationInfo": [{"granted": true, "permission": "io.k8s.core.v1.pods.exec.create", "resource": "core/v1/namespaces/prod/pods/web-0/exec"}],
                "methodName": "io.k8s.core.v1.pods.exec.create",
                "requestMetadata": {"callerIp": "203.0.113.7", "callerSuppliedUserAgent": "kubectl/v1.30.0 (linux/amd64)"},
                "resourceName": "core/v1/namespaces/prod/pods/web-0/exec",
                "serviceName": "k8s.io",
                "request": {"@type": "core.k8s.io/v1.PodExecOptions", "command": ["sh", "-c", "id"], "container": "app", "stdin": true, "tty": true},
                "status": {}
            }
        })
    }

    #[test]
    fn exec_entry_keeps_command_identity_and_status() {
        let ev = log_entry_to_audit(&gke_exec_entry()).unwrap();
        assert_eq!(ev["verb"], "create");
        assert_eq!(ev["auditID"], "audit-7");
        assert_eq!(ev["objectRef"]["resource"], "pods");
        assert_eq!(ev["objectRef"]["subresource"], "exec");
        assert_eq!(ev["objectRef"]["namespace"], "prod");
        assert_eq!(ev["objectRef"]["name"], "web-0");
        assert_eq!(
            ev["requestURI"],
            "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true&tty=true"
        );
        assert_eq!(ev["user"]["username"], "alice@example.com");
        assert_eq!(ev["sourceIPs"][0], "203.0.113.7");
        assert_eq!(ev["userAgent"], "kubectl/v1.30.0 (linux/amd64)");
        assert_eq!(ev["responseStatus"]["code"], 200);
        assert_eq!(
            ev["requestReceivedTimestamp"],
            "2026-11-22T10:18:57.347954Z"
        );
        assert_eq!(ev["stage"], "ResponseStarted");
        let (session, _) = crate::session::session_from_audit(&ev).unwrap();
        assert_eq!(session.command, vec!["sh", "-c", "id"]);
        assert_eq!(session.user, "alice@example.com");
    }

    #[test]
    fn denial_is_a_403_forbid() {
        let mut e = gke_exec_entry();
        e["protoPayload"]["status"] =
            json!({"code": 7, "message": "forbidden: user cannot create pods/exec"});
        e["protoPayload"]["authorizationInfo"][0]["granted"] = json!(false);
        e["labels"]["authorization.k8s.io/decision"] = json!("allow");
        let ev = log_entry_to_audit(&e).unwrap();
        assert_eq!(ev["responseStatus"]["code"], 403);
        assert_eq!(ev["responseStatus"]["status"], "Failure");
        assert_eq!(ev["responseStatus"]["reason"], "Forbidden");
        assert_eq!(ev["annotations"]["authorization.k8s.io/decision"], "forbid");
        assert!(crate::session::session_from_audit(&ev).is_none());
    }

    #[test]
    fn method_and_resource_names() {
        assert_eq!(
            parse_method_name("io.k8s.authorization.rbac.v1.clusterrolebindings.create"),
            Some(("create".into(), "clusterrolebindings".into(), None))
        );
        assert_eq!(
            parse_method_name("io.k8s.core.v1.pods.exec.get"),
            Some(("get".into(), "pods".into(), Some("exec".into())))
        );
        assert_eq!(
            parse_method_name("io.k8s.networking.v1beta1.ingresses.list"),
            Some(("list".into(), "ingresses".into(), None))
        );
        assert_eq!(
            parse_method_name("google.container.v1.ClusterManager.GetCluster"),
            None
        );
        let r =
            parse_resource_name("rbac.authorization.k8s.io/v1/clusterrolebindings/admin").unwrap();
        assert_eq!(r.group, "rbac.authorization.k8s.io");
        assert_eq!(r.namespace, None);
        assert_eq!(r.name.as_deref(), Some("admin"));
        let r = parse_resource_name("core/v1/namespaces/foo").unwrap();
        assert_eq!(r.resource, "namespaces");
        assert_eq!(r.namespace.as_deref(), Some("foo"));
        let r = parse_resource_name("apps/v1/namespaces/prod/deployments").unwrap();
        assert_eq!(r.resource, "deployments");
        assert_eq!(r.name, None);
    }

    #[test]
    fn other_services_and_broken_entries_are_named() {
        let mut e = gke_exec_entry();
        e["protoPayload"]["serviceName"] = json!("container.googleapis.com");
        assert_eq!(
            log_entry_to_audit(&e).unwrap_err().to_string(),
            "log entry is from service \"container.googleapis.com\", not a kubernetes audit entry (serviceName k8s.io)"
        );
        let mut e = gke_exec_entry();
        e["protoPayload"]["methodName"] = json!("io.k8s.pods");
        assert!(log_entry_to_audit(&e)
            .unwrap_err()
            .to_string()
            .contains("methodName"));
        let mut e = gke_exec_entry();
        e["timestamp"] = json!("yesterday");
        assert!(log_entry_to_audit(&e)
            .unwrap_err()
            .to_string()
            .contains("timestamp"));
        assert_eq!(
            log_entry_to_audit(&json!([1])).unwrap_err(),
            GkeError::NotAnObject
        );
        assert_eq!(
            log_entry_to_audit(&json!({"textPayload": "x"})).unwrap_err(),
            GkeError::NoProtoPayload
        );
    }
}
