//! Validation and defaulting, following kube-apiserver's rules and messages for the fields the
//! double's kinds carry. Anything not listed here is stored as sent.

use serde_json::{json, Value};

use crate::kinds::{KindSpec, NameRule};
use crate::status::FieldError;

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Check a DNS-1123 name; `None` when valid.
pub fn check_dns(field: &str, value: &str, rule: NameRule) -> Option<FieldError> {
    let (ok, max, msg) = match rule {
        NameRule::Subdomain => (is_subdomain(value), 253, SUBDOMAIN_MSG),
        NameRule::Label => (is_label(value), 63, LABEL_MSG),
    };
    if value.len() > max {
        return Some(FieldError::invalid(
            field,
            &json!(value),
            &format!("must be no more than {max} characters"),
        ));
    }
    (!ok).then(|| FieldError::invalid(field, &json!(value), msg))
}

/// A qualified name (`prefix/name`) as used for label and annotation keys and taint keys.
fn check_qualified_name(field: &str, key: &str) -> Option<FieldError> {
    const NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || !is_subdomain(p) {
            return Some(FieldError::invalid(
                field,
                &json!(key),
                &format!("prefix part {SUBDOMAIN_MSG}"),
            ));
        }
    }
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    (!ok).then(|| FieldError::invalid(field, &json!(key), NAME_MSG))
}

fn check_label_value(field: &str, v: &str) -> Option<FieldError> {
    let b = v.as_bytes();
    let ok = b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric));
    (!ok).then(|| FieldError::invalid(field, &json!(v), "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))
}

fn check_metadata(obj: &Value, errs: &mut Vec<FieldError>) {
    match obj.pointer("/metadata/labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(labels)) => {
            for (k, v) in labels {
                errs.extend(check_qualified_name("metadata.labels", k));
                match v {
                    Value::String(s) => errs.extend(check_label_value("metadata.labels", s)),
                    other => errs.push(FieldError::invalid(
                        format!("metadata.labels[{k}]"),
                        other,
                        "label values must be strings",
                    )),
                }
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            "metadata.labels",
            other,
            "must be a map of strings",
        )),
    }
    match obj.pointer("/metadata/annotations") {
        None | Some(Value::Null) => {}
        Some(Value::Object(ann)) => {
            for (k, v) in ann {
                errs.extend(check_qualified_name("metadata.annotations", k));
                if !v.is_string() {
                    errs.push(FieldError::invalid(
                        format!("metadata.annotations[{k}]"),
                        v,
                        "annotation values must be strings",
                    ));
                }
            }
            let size: usize = ann
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum();
            if size > 256 * 1024 {
                errs.push(FieldError {
                    reason: "FieldValueTooLong",
                    field: "metadata.annotations".into(),
                    message: format!("metadata.annotations: Too long: may not be more than 262144 bytes (got {size})"),
                });
            }
        }
        Some(other) => errs.push(FieldError::invalid(
            "metadata.annotations",
            other,
            "must be a map of strings",
        )),
    }
}

/// Validate an object about to be stored. `obj` has passed name/namespace resolution.
pub fn validate(kind: &KindSpec, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match obj.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        )),
        Some(name) => errs.extend(check_dns("metadata.name", name, kind.name_rule)),
    }
    check_metadata(obj, &mut errs);
    match (kind.group, kind.kind) {
        ("", "Pod") => validate_pod(obj, &mut errs),
        ("", "Node") => validate_node(obj, &mut errs),
        ("coordination.k8s.io", "Lease") => validate_lease(obj, &mut errs),
        ("networking.k8s.io", "NetworkPolicy") => validate_netpol(obj, &mut errs),
        ("events.k8s.io", "Event") => validate_event_v1(obj, &mut errs),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            validate_vwc(obj, &mut errs)
        }
        _ => {}
    }
    errs
}

fn validate_pod(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(containers) = obj.pointer("/spec/containers").and_then(Value::as_array) else {
        errs.push(FieldError::required("spec.containers", ""));
        return;
    };
    if containers.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let f = format!("spec.containers[{i}]");
        match c.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("{f}.name"), "")),
            Some(n) => {
                errs.extend(check_dns(&format!("{f}.name"), n, NameRule::Label));
                if seen.contains(&n) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), &json!(n)));
                }
                seen.push(n);
            }
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required(format!("{f}.image"), ""));
        }
    }
}

fn validate_node(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(taints) = obj.pointer("/spec/taints").and_then(Value::as_array) else {
        return;
    };
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let f = format!("spec.taints[{i}]");
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        if key.is_empty() {
            errs.push(FieldError::required(format!("{f}.key"), ""));
        } else {
            errs.extend(check_qualified_name(&format!("{f}.key"), key));
        }
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        const EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
        if effect.is_empty() {
            errs.push(FieldError::required(format!("{f}.effect"), ""));
        } else if !EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                format!("{f}.effect"),
                &json!(effect),
                EFFECTS,
            ));
        }
        if let Some(v) = t.get("value").and_then(Value::as_str) {
            errs.extend(check_label_value(&format!("{f}.value"), v));
        }
        let id = (key.to_string(), effect.to_string());
        if seen.contains(&id) {
            errs.push(FieldError::duplicate(f, &json!(format!("{key}:{effect}"))));
        }
        seen.push(id);
    }
}

fn validate_lease(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(d) = obj.pointer("/spec/leaseDurationSeconds") {
        if d.as_i64().is_none_or(|d| d <= 0) {
            errs.push(FieldError::invalid(
                "spec.leaseDurationSeconds",
                d,
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = obj.pointer("/spec/leaseTransitions") {
        if t.as_i64().is_none_or(|t| t < 0) {
            errs.push(FieldError::invalid(
                "spec.leaseTransitions",
                t,
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_netpol(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(types) = obj.pointer("/spec/policyTypes").and_then(Value::as_array) {
        const TYPES: &[&str] = &["Ingress", "Egress"];
        for (i, t) in types.iter().enumerate() {
            if !t.as_str().is_some_and(|s| TYPES.contains(&s)) {
                errs.push(FieldError::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    t,
                    TYPES,
                ));
            }
        }
    }
}

fn validate_event_v1(obj: &Value, errs: &mut Vec<FieldError>) {
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if obj
            .get(field)
            .is_none_or(|v| v.is_null() || v.as_str() == Some(""))
        {
            errs.push(FieldError::required(field, ""));
        }
    }
    const TYPES: &[&str] = &["Normal", "Warning"];
    match obj.get("type") {
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => {}
        Some(other) => errs.push(FieldError::not_supported("type", other, TYPES)),
        None => errs.push(FieldError::required("type", "")),
    }
}

fn validate_vwc(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(webhooks) = obj.get("webhooks") else {
        return;
    };
    let Some(webhooks) = webhooks.as_array() else {
        errs.push(FieldError::invalid("webhooks", webhooks, "must be a list"));
        return;
    };
    let mut names: Vec<&str> = Vec::new();
    for (i, w) in webhooks.iter().enumerate() {
        let f = format!("webhooks[{i}]");
        match w.get("name").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required(format!("{f}.name"), "")),
            Some(n) => {
                if n.split('.').count() < 3 {
                    errs.push(FieldError::invalid(
                        format!("{f}.name"),
                        &json!(n),
                        "should be a domain with at least three segments separated by dots",
                    ));
                } else {
                    errs.extend(check_dns(&format!("{f}.name"), n, NameRule::Subdomain));
                }
                if names.contains(&n) {
                    errs.push(FieldError::duplicate(format!("{f}.name"), &json!(n)));
                }
                names.push(n);
            }
        }
        const VERSIONS: &[&str] = &["v1", "v1beta1"];
        match w.get("admissionReviewVersions").and_then(Value::as_array) {
            None => errs.push(FieldError::required(
                format!("{f}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            )),
            Some(vs) if vs.is_empty() => errs.push(FieldError::required(
                format!("{f}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            )),
            Some(vs) => {
                for (j, v) in vs.iter().enumerate() {
                    if !v.as_str().is_some_and(|s| VERSIONS.contains(&s)) {
                        errs.push(FieldError::not_supported(
                            format!("{f}.admissionReviewVersions[{j}]"),
                            v,
                            VERSIONS,
                        ));
                    }
                }
            }
        }
        const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
        match w.get("sideEffects") {
            None | Some(Value::Null) => errs.push(FieldError::not_supported(
                format!("{f}.sideEffects"),
                &json!(""),
                SIDE_EFFECTS,
            )),
            Some(v) if v.as_str().is_some_and(|s| SIDE_EFFECTS.contains(&s)) => {}
            Some(v) => errs.push(FieldError::not_supported(
                format!("{f}.sideEffects"),
                v,
                SIDE_EFFECTS,
            )),
        }
        validate_client_config(w.get("clientConfig"), &format!("{f}.clientConfig"), errs);
        const POLICIES: &[&str] = &["Fail", "Ignore"];
        if let Some(p) = w.get("failurePolicy") {
            if !p.as_str().is_some_and(|s| POLICIES.contains(&s)) {
                errs.push(FieldError::not_supported(
                    format!("{f}.failurePolicy"),
                    p,
                    POLICIES,
                ));
            }
        }
        const MATCH: &[&str] = &["Equivalent", "Exact"];
        if let Some(p) = w.get("matchPolicy") {
            if !p.as_str().is_some_and(|s| MATCH.contains(&s)) {
                errs.push(FieldError::not_supported(
                    format!("{f}.matchPolicy"),
                    p,
                    MATCH,
                ));
            }
        }
        if let Some(t) = w.get("timeoutSeconds") {
            if !t.as_i64().is_some_and(|t| (1..=30).contains(&t)) {
                errs.push(FieldError::invalid(
                    format!("{f}.timeoutSeconds"),
                    t,
                    "the timeout value must be between 1 and 30 seconds",
                ));
            }
        }
        if let Some(rules) = w.get("rules").and_then(Value::as_array) {
            for (j, r) in rules.iter().enumerate() {
                validate_rule(r, &format!("{f}.rules[{j}]"), errs);
            }
        }
    }
}

fn validate_client_config(cc: Option<&Value>, f: &str, errs: &mut Vec<FieldError>) {
    let Some(cc) = cc.filter(|c| c.is_object()) else {
        errs.push(FieldError::required(
            f,
            "exactly one of url or service is required",
        ));
        return;
    };
    let url = cc.get("url").filter(|v| !v.is_null());
    let service = cc.get("service").filter(|v| !v.is_null());
    match (url, service) {
        (Some(_), Some(_)) => errs.push(FieldError::required(
            f,
            "exactly one of url or service is required",
        )),
        (None, None) => errs.push(FieldError::required(
            f,
            "exactly one of url or service is required",
        )),
        (Some(u), None) => {
            let s = u.as_str().unwrap_or("");
            if !s.starts_with("https://") {
                errs.push(FieldError::invalid(
                    format!("{f}.url"),
                    u,
                    "'https' is the only allowed URL scheme",
                ));
            } else if s.len() <= "https://".len() {
                errs.push(FieldError::invalid(
                    format!("{f}.url"),
                    u,
                    "host must be specified",
                ));
            }
            if s.contains('#') {
                errs.push(FieldError::invalid(
                    format!("{f}.url"),
                    u,
                    "fragments are not permitted",
                ));
            }
        }
        (None, Some(svc)) => {
            for part in ["namespace", "name"] {
                if svc
                    .get(part)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errs.push(FieldError::required(
                        format!("{f}.service.{part}"),
                        "service {part} is required",
                    ));
                }
            }
            if let Some(p) = svc.get("path").and_then(Value::as_str) {
                if !p.starts_with('/') {
                    errs.push(FieldError::invalid(
                        format!("{f}.service.path"),
                        &json!(p),
                        "must start with a '/'",
                    ));
                }
            }
            if let Some(port) = svc.get("port") {
                if !port.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
                    errs.push(FieldError::invalid(
                        format!("{f}.service.port"),
                        port,
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

fn validate_rule(r: &Value, f: &str, errs: &mut Vec<FieldError>) {
    const OPS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
    match r.get("operations").and_then(Value::as_array) {
        None => errs.push(FieldError::required(format!("{f}.operations"), "")),
        Some(ops) if ops.is_empty() => {
            errs.push(FieldError::required(format!("{f}.operations"), ""))
        }
        Some(ops) => {
            for (k, op) in ops.iter().enumerate() {
                if !op.as_str().is_some_and(|s| OPS.contains(&s)) {
                    errs.push(FieldError::not_supported(
                        format!("{f}.operations[{k}]"),
                        op,
                        OPS,
                    ));
                }
            }
            if ops.len() > 1 && ops.iter().any(|o| o.as_str() == Some("*")) {
                errs.push(FieldError::invalid(
                    format!("{f}.operations"),
                    &Value::Array(ops.clone()),
                    "if '*' is present, must not specify other operations",
                ));
            }
        }
    }
    for list in ["apiGroups", "apiVersions", "resources"] {
        match r.get(list).and_then(Value::as_array) {
            None => errs.push(FieldError::required(format!("{f}.{list}"), "")),
            Some(v) if v.is_empty() => errs.push(FieldError::required(format!("{f}.{list}"), "")),
            Some(_) => {}
        }
    }
    const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
    if let Some(s) = r.get("scope") {
        if !s.as_str().is_some_and(|x| SCOPES.contains(&x)) {
            errs.push(FieldError::not_supported(format!("{f}.scope"), s, SCOPES));
        }
    }
}

/// Set `obj.outer.inner` when it is absent.
fn set_default(obj: &mut Value, outer: &str, inner: &str, v: Value) {
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    let slot = m
        .entry(outer.to_string())
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(serde_json::Map::new());
    }
    if let Some(o) = slot.as_object_mut() {
        o.entry(inner.to_string()).or_insert(v);
    }
}

/// Apply the defaults kube-apiserver fills in on create and update.
pub fn default_object(kind: &KindSpec, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (kind.group, kind.kind) {
        ("", "Namespace") => {
            set_default(obj, "status", "phase", json!("Active"));
            set_default(obj, "spec", "finalizers", json!(["kubernetes"]));
        }
        ("", "Pod") => set_default(obj, "status", "phase", json!("Pending")),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            if let Some(ws) = obj.get_mut("webhooks").and_then(Value::as_array_mut) {
                for w in ws.iter_mut().filter(|w| w.is_object()) {
                    let defaults = [
                        ("failurePolicy", json!("Fail")),
                        ("matchPolicy", json!("Equivalent")),
                        ("namespaceSelector", json!({})),
                        ("objectSelector", json!({})),
                        ("timeoutSeconds", json!(10)),
                    ];
                    for (k, v) in defaults {
                        if w.get(k).is_none_or(Value::is_null) {
                            w[k] = v;
                        }
                    }
                    if let Some(svc) = w.pointer_mut("/clientConfig/service") {
                        if svc.is_object() && svc.get("port").is_none() {
                            svc["port"] = json!(443);
                        }
                    }
                    if let Some(rules) = w.get_mut("rules").and_then(Value::as_array_mut) {
                        for r in rules.iter_mut().filter(|r| r.is_object()) {
                            if r.get("scope").is_none() {
                                r["scope"] = json!("*");
                            }
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{by_name, KINDS};

    fn k(name: &str) -> &'static KindSpec {
        &KINDS[by_name(name).unwrap()]
    }

    fn messages(kind: &str, obj: Value) -> Vec<String> {
        validate(k(kind), &obj)
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn names() {
        assert!(check_dns("n", "a.b-c", NameRule::Subdomain).is_none());
        assert!(check_dns("n", "A", NameRule::Subdomain).is_some());
        assert!(check_dns("n", "a.b", NameRule::Label).is_some());
        assert!(check_dns("n", "-a", NameRule::Label).is_some());
        let long = "a".repeat(254);
        let e = check_dns("metadata.name", &long, NameRule::Subdomain).unwrap();
        assert!(e.message.ends_with("must be no more than 253 characters"));
        let m = messages("configmaps", json!({"metadata": {"name": "Bad_Name"}}));
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with(
                "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
            ),
            "{m:?}"
        );
        let m = messages("configmaps", json!({"metadata": {}}));
        assert_eq!(
            m,
            vec!["metadata.name: Required value: name or generateName is required"]
        );
    }

    #[test]
    fn labels() {
        let m = messages(
            "configmaps",
            json!({"metadata": {"name": "a", "labels": {"ok/x": "v", "bad key": "v", "k": "bad value", "n": 1}}}),
        );
        assert_eq!(m.len(), 3, "{m:?}");
    }

    #[test]
    fn pods_need_containers_with_images() {
        let m = messages("pods", json!({"metadata": {"name": "p"}, "spec": {}}));
        assert_eq!(m, vec!["spec.containers: Required value"]);
        let m = messages(
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a"}]}}),
        );
        assert_eq!(
            m,
            vec![
                "spec.containers[1].name: Duplicate value: \"a\"",
                "spec.containers[1].image: Required value"
            ]
        );
    }

    #[test]
    fn taints() {
        let m = messages(
            "nodes",
            json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Sometimes"}, {"effect": "NoExecute"}]}}),
        );
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[0].contains("Duplicate value: \"a:NoSchedule\""));
        assert!(m[1].starts_with("spec.taints[2].effect: Unsupported value: \"Sometimes\""));
        assert_eq!(m[2], "spec.taints[3].key: Required value");
    }

    fn good_webhook() -> Value {
        json!({"name": "pods.tether.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"namespace": "tether", "name": "tether-webhook", "path": "/validate"}},
               "rules": [{"operations": ["CREATE", "CONNECT"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/exec"]}],
               "failurePolicy": "Ignore", "timeoutSeconds": 5})
    }

    #[test]
    fn vwc_valid_and_defaults() {
        let mut obj = json!({"metadata": {"name": "tether"}, "webhooks": [good_webhook()]});
        assert!(messages("validatingwebhookconfigurations", obj.clone()).is_empty());
        default_object(k("validatingwebhookconfigurations"), &mut obj);
        assert_eq!(obj["webhooks"][0]["matchPolicy"], "Equivalent");
        assert_eq!(obj["webhooks"][0]["clientConfig"]["service"]["port"], 443);
        assert_eq!(obj["webhooks"][0]["rules"][0]["scope"], "*");
        assert_eq!(obj["webhooks"][0]["failurePolicy"], "Ignore");
    }

    #[test]
    fn vwc_each_rule() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"name": "two.parts"}), "webhooks[0].name: Invalid value: \"two.parts\": should be a domain with at least three segments separated by dots"),
            (json!({"admissionReviewVersions": []}), "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1"),
            (json!({"admissionReviewVersions": ["v2"]}), "webhooks[0].admissionReviewVersions[0]: Unsupported value: \"v2\": supported values: \"v1\", \"v1beta1\""),
            (json!({"sideEffects": "Some"}), "webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""),
            (json!({"sideEffects": null}), "webhooks[0].sideEffects: Unsupported value: \"\": supported values: \"None\", \"NoneOnDryRun\""),
            (json!({"clientConfig": {"url": "https://x", "service": {"namespace": "a", "name": "b"}}}), "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
            (json!({"clientConfig": {"service": null}}), "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
            (json!({"clientConfig": {"url": "http://x/", "service": null}}), "webhooks[0].clientConfig.url: Invalid value: \"http://x/\": 'https' is the only allowed URL scheme"),
            (json!({"failurePolicy": "Maybe"}), "webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\""),
            (json!({"timeoutSeconds": 31}), "webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds"),
            (json!({"timeoutSeconds": 0}), "webhooks[0].timeoutSeconds: Invalid value: 0: the timeout value must be between 1 and 30 seconds"),
            (json!({"rules": [{"operations": ["CREATE", "PATCH"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
             "webhooks[0].rules[0].operations[1]: Unsupported value: \"PATCH\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\""),
            (json!({"rules": [{"operations": ["*", "CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
             "webhooks[0].rules[0].operations: Invalid value: [\"*\",\"CREATE\"]: if '*' is present, must not specify other operations"),
        ];
        for (overlay, want) in cases {
            let mut w = good_webhook();
            json_patch::merge(&mut w, &overlay);
            if overlay.get("sideEffects").is_some_and(Value::is_null) {
                w.as_object_mut().unwrap().remove("sideEffects");
            }
            let m = messages(
                "validatingwebhookconfigurations",
                json!({"metadata": {"name": "t"}, "webhooks": [w]}),
            );
            assert_eq!(m, vec![want.to_string()], "overlay {overlay}");
        }
    }

    #[test]
    fn events_v1_required_fields() {
        let m = messages(
            "events.events.k8s.io",
            json!({"metadata": {"name": "e"}, "type": "Odd"}),
        );
        assert_eq!(m.len(), 6, "{m:?}");
        assert!(m.contains(&"reportingController: Required value".to_string()));
    }
}
