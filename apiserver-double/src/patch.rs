//! PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch for the fields Tether uses,
//! JSON patch (RFC 6902), and server-side apply (approximated as a strategic merge).

use serde_json::{Map, Value};

use crate::status::ApiError;

/// The patch formats kube-apiserver accepts, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml`
    Apply,
}

/// The accepted PATCH media types, for 415 answers.
pub const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

impl PatchKind {
    /// The patch kind for a `Content-Type` value (parameters ignored).
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchKind::Apply)
            }
            _ => None,
        }
    }
}

/// Parse a patch body into JSON (apply bodies are YAML, which includes JSON).
pub fn parse_body(kind: PatchKind, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = match kind {
        PatchKind::Apply => serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML apply patch: {e}")))?,
        _ => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding patch body as JSON: {e}"))
        })?,
    };
    match (kind, &v) {
        (PatchKind::Json, Value::Array(_)) => Ok(v),
        (PatchKind::Json, _) => Err(ApiError::bad_request(
            "json patch must be a JSON array of operations",
        )),
        (_, Value::Object(_)) => Ok(v),
        _ => Err(ApiError::bad_request(
            "merge, strategic merge and apply patches must be a JSON object",
        )),
    }
}

/// Apply a parsed patch to a copy of `target`.
pub fn apply(kind: PatchKind, target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let mut out = target.clone();
    match kind {
        PatchKind::Merge => json_patch::merge(&mut out, patch),
        PatchKind::Strategic | PatchKind::Apply => strategic_merge(&mut out, patch, "")?,
        PatchKind::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid json patch operation: {e}")))?;
            json_patch::patch(&mut out, &ops).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the json patch could not be applied: {e}"),
                details: None,
            })?;
        }
    }
    Ok(out)
}

/// How a list field merges in a strategic merge patch (the Kubernetes `patchStrategy` tags for
/// the fields the double's kinds carry; any other list is replaced, as for `taints` and
/// `tolerations`, which have no strategy upstream).
enum ListStrategy {
    ByKey(&'static str),
    PrimitiveSet,
    Replace,
}

fn list_strategy(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "webhooks"
        | "resourceClaims" => ListStrategy::ByKey("name"),
        "volumeMounts" => ListStrategy::ByKey("mountPath"),
        "volumeDevices" => ListStrategy::ByKey("devicePath"),
        "ports" => ListStrategy::ByKey("containerPort"),
        "conditions" | "addresses" => ListStrategy::ByKey("type"),
        "ownerReferences" => ListStrategy::ByKey("uid"),
        "hostAliases" => ListStrategy::ByKey("ip"),
        "finalizers" => ListStrategy::PrimitiveSet,
        _ => ListStrategy::Replace,
    }
}

/// Remove `$patch`, `$retainKeys`, `$setElementOrder/...` and `$deleteFromPrimitiveList/...`
/// directives from a value that is being inserted rather than merged.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic_merge(target: &mut Value, patch: &Value, path: &str) -> Result<(), ApiError> {
    let Value::Object(pm) = patch else {
        *target = strip_directives(patch);
        return Ok(());
    };
    match pm.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *target = strip_directives(patch);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch directive \"$patch: {other}\" at {}",
                if path.is_empty() { "." } else { path }
            )))
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else {
        return Ok(());
    };
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (tm.get_mut(field), v) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let child_path = format!("{path}.{k}");
        match v {
            Value::Null => {
                tm.remove(k);
            }
            Value::Object(_) => {
                let slot = tm.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(slot, v, &child_path)?;
            }
            Value::Array(items) => {
                let slot = tm.entry(k.clone()).or_insert(Value::Array(vec![]));
                merge_list(slot, items, k, &child_path)?;
            }
            other => {
                tm.insert(k.clone(), other.clone());
            }
        }
    }
    if let Some(Value::Array(retain)) = pm.get("$retainKeys") {
        tm.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

fn merge_list(slot: &mut Value, items: &[Value], field: &str, path: &str) -> Result<(), ApiError> {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *slot = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return Ok(());
    }
    if !slot.is_array() {
        *slot = Value::Array(vec![]);
    }
    let Value::Array(list) = slot else {
        return Ok(());
    };
    match list_strategy(field) {
        ListStrategy::Replace => *list = items.iter().map(strip_directives).collect(),
        ListStrategy::PrimitiveSet => {
            for i in items {
                if !list.contains(i) {
                    list.push(i.clone());
                }
            }
        }
        ListStrategy::ByKey(key) => {
            for (idx, item) in items.iter().enumerate() {
                let Some(kv) = item.get(key) else {
                    return Err(ApiError::bad_request(format!(
                        "{path}[{idx}]: map does not contain the merge key \"{key}\""
                    )));
                };
                let pos = list.iter().position(|e| e.get(key) == Some(kv));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(p), true) => {
                        list.remove(p);
                    }
                    (None, true) => {}
                    (Some(p), false) => {
                        if let Some(existing) = list.get_mut(p) {
                            strategic_merge(existing, item, &format!("{path}[{idx}]"))?;
                        }
                    }
                    (None, false) => list.push(strip_directives(item)),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(PatchKind::from_content_type("application/json"), None);
    }

    #[test]
    fn strategic_merges_containers_by_name_and_labels() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}},
            "spec": {"containers": [{"name": "side", "image": "s:2"}, {"name": "new", "image": "n:1"}]}});
        let out = apply(PatchKind::Strategic, &pod, &patch).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}, {"name": "side", "image": "s:2"}, {"name": "new", "image": "n:1"}])
        );
        // merge patch replaces lists whole
        let out = apply(PatchKind::Merge, &pod, &patch).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][0]["name"], "side");
    }

    #[test]
    fn strategic_directives() {
        let pod = json!({"spec": {"containers": [{"name": "app"}, {"name": "side"}]},
            "metadata": {"finalizers": ["a"]}});
        let patch = json!({"spec": {"containers": [{"name": "side", "$patch": "delete"}]},
            "metadata": {"finalizers": ["b"]}});
        let out = apply(PatchKind::Strategic, &pod, &patch).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "app"}]));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = apply(PatchKind::Strategic, &pod, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let patch = json!({"spec": {"containers": [{"name": "only"}, {"$patch": "replace"}]}});
        let out = apply(PatchKind::Strategic, &pod, &patch).unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "only"}]));
        let bad = json!({"spec": {"containers": [{"image": "x"}]}});
        let e = apply(PatchKind::Strategic, &pod, &bad).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("merge key \"name\""), "{}", e.message);
    }

    #[test]
    fn taints_are_replaced_whole() {
        let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let patch = json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}});
        let out = apply(PatchKind::Strategic, &node, &patch).unwrap();
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}])
        );
    }

    #[test]
    fn json_patch_and_errors() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}});
        let p = parse_body(
            PatchKind::Json,
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .unwrap();
        let out = apply(PatchKind::Json, &obj, &p).unwrap();
        assert_eq!(out["metadata"]["labels"]["b"], "2");
        let p = parse_body(PatchKind::Json, br#"[{"op":"remove","path":"/spec/x"}]"#).unwrap();
        assert_eq!(apply(PatchKind::Json, &obj, &p).unwrap_err().code, 422);
        let p = parse_body(PatchKind::Json, br#"[{"op":"frobnicate","path":"/a"}]"#).unwrap();
        assert_eq!(apply(PatchKind::Json, &obj, &p).unwrap_err().code, 400);
        assert_eq!(parse_body(PatchKind::Json, b"{}").unwrap_err().code, 400);
        assert_eq!(parse_body(PatchKind::Merge, b"[1]").unwrap_err().code, 400);
        assert_eq!(
            parse_body(PatchKind::Merge, b"{nope").unwrap_err().code,
            400
        );
        let y = parse_body(PatchKind::Apply, b"metadata:\n  labels:\n    x: y\n").unwrap();
        assert_eq!(y["metadata"]["labels"]["x"], "y");
    }
}
