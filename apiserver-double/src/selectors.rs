//! Label and field selectors, as accepted by kube-apiserver's list and watch.
//!
//! Label selector grammar (comma-separated requirements):
//!
//! ```text
//! requirement := key | "!" key | key ("=" | "==" | "!=") value
//!              | key ("in" | "notin") "(" value ("," value)* ")"
//! ```
//!
//! Field selector grammar: `field ("=" | "==" | "!=") value`, comma-separated.

use serde_json::Value;

use crate::kinds::KindSpec;
use crate::status::ApiError;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelReq>);

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unexpected ')' at offset {i}"));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed '(' in set".into());
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str, req: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '(' values ')' in \"{req}\""))?;
    let mut values = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        if !valid_value(v) {
            return Err(format!("invalid label value: \"{v}\" in \"{req}\""));
        }
        values.push(v.to_string());
    }
    Ok(values)
}

impl LabelSelector {
    /// Parse a `labelSelector` query value.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let err = |m: String| ApiError::bad_request(format!("unable to parse requirement: {m}"));
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for raw in split_top(s).map_err(err)? {
            let req = raw.trim();
            if req.is_empty() {
                return Err(err(format!("empty requirement in \"{s}\"")));
            }
            let parsed = if let Some(k) = req.strip_prefix('!') {
                LabelReq::NotExists(k.trim().to_string())
            } else {
                let split = req
                    .find(|c: char| matches!(c, '=' | '!' | '(' | ')') || c.is_whitespace())
                    .unwrap_or(req.len());
                let (key, rest) = req.split_at(split);
                let key = key.to_string();
                let rest = rest.trim_start();
                if rest.is_empty() {
                    LabelReq::Exists(key)
                } else if let Some(v) = rest.strip_prefix("!=") {
                    LabelReq::NotEq(key, v.trim().to_string())
                } else if let Some(v) = rest.strip_prefix("==") {
                    LabelReq::Eq(key, v.trim().to_string())
                } else if let Some(v) = rest.strip_prefix('=') {
                    LabelReq::Eq(key, v.trim().to_string())
                } else if let Some(set) = rest.strip_prefix("notin") {
                    LabelReq::NotIn(key, parse_set(set, req).map_err(err)?)
                } else if let Some(set) = rest.strip_prefix("in") {
                    LabelReq::In(key, parse_set(set, req).map_err(err)?)
                } else {
                    return Err(err(format!(
                        "cannot parse \"{req}\": expected one of =, ==, !=, in, notin after \"{key}\""
                    )));
                }
            };
            let (key, values): (&str, Vec<&str>) = match &parsed {
                LabelReq::Exists(k) | LabelReq::NotExists(k) => (k, vec![]),
                LabelReq::Eq(k, v) | LabelReq::NotEq(k, v) => (k, vec![v.as_str()]),
                LabelReq::In(k, vs) | LabelReq::NotIn(k, vs) => {
                    (k, vs.iter().map(String::as_str).collect())
                }
            };
            if !valid_key(key) {
                return Err(err(format!("invalid label key \"{key}\" in \"{req}\"")));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(err(format!("invalid label value \"{v}\" in \"{req}\"")));
            }
            reqs.push(parsed);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse a `fieldSelector` query value, rejecting fields the kind does not index.
    pub fn parse(s: &str, kind: &KindSpec) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for raw in s.split(',') {
            let req = raw.trim();
            let (field, eq, value) = if let Some((f, v)) = req.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = req.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = req.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{req}'"
                )));
            };
            let field = field.trim();
            let supported = field == "metadata.name"
                || (field == "metadata.namespace" && kind.namespaced)
                || kind.field_labels.contains(&field);
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object's fields satisfy every requirement (a missing field reads as `""`).
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            // core events index `source` as `source.component`
            let path = if field == "source" {
                "source.component"
            } else {
                field.as_str()
            };
            let pointer = format!("/{}", path.replace('.', "/"));
            let got = match obj.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{by_name, KINDS};
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "a", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_operators() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("app in (web, api)"));
        assert!(!m("app notin (web,api)"));
        assert!(m("env notin (prod)"));
        assert!(m("tier"));
        assert!(m("!env"));
        assert!(!m("!tier"));
        assert!(m("app=web,tier in (front),!env"));
        assert!(m("app in(web)"));
        assert!(m("app notin(x , y)"));
        assert!(m("app = web"));
        assert!(!m("app=web,env"));
    }

    #[test]
    fn malformed_label_selectors_are_400() {
        for bad in [
            "app in (web",
            "app in web",
            "a b",
            "app=we b",
            ",",
            "app=(x)",
        ] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
            assert!(
                e.message.starts_with("unable to parse requirement"),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[test]
    fn field_selectors() {
        let k = &KINDS[by_name("pods").unwrap()];
        let p = pod(json!({}));
        let m = |s: &str| FieldSelector::parse(s, k).unwrap().matches(&p);
        assert!(m("metadata.name=p"));
        assert!(m("metadata.namespace==a,spec.nodeName=n1"));
        assert!(!m("status.phase!=Running"));
        assert!(m("status.podIP="));
        let e = FieldSelector::parse("spec.foo=bar", k).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.foo");
        let nodes = &KINDS[by_name("nodes").unwrap()];
        assert!(FieldSelector::parse("metadata.namespace=x", nodes).is_err());
        assert!(FieldSelector::parse("garbage", k).is_err());
    }
}
