//! `Status` answers, shaped like kube-apiserver's.

use serde_json::{json, Map, Value};

use crate::kinds::KindSpec;

/// One field-level cause of a 422 Invalid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, `FieldValueDuplicate`,
    /// `FieldValueForbidden`.
    pub reason: &'static str,
    /// Path of the field, e.g. `webhooks[0].sideEffects`.
    pub field: String,
    /// The full message, e.g. `webhooks[0].sideEffects: Required value`.
    pub message: String,
}

impl FieldError {
    /// `field: Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        let message = if detail.is_empty() {
            format!("{field}: Required value")
        } else {
            format!("{field}: Required value: {detail}")
        };
        FieldError {
            reason: "FieldValueRequired",
            field,
            message,
        }
    }

    /// `field: Invalid value: VALUE: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let field = field.into();
        FieldError {
            reason: "FieldValueInvalid",
            message: format!("{field}: Invalid value: {}: {detail}", render(value)),
            field,
        }
    }

    /// `field: Unsupported value: VALUE: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Self {
        let field = field.into();
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            reason: "FieldValueNotSupported",
            message: format!(
                "{field}: Unsupported value: {}: supported values: {list}",
                render(value)
            ),
            field,
        }
    }

    /// `field: Duplicate value: VALUE`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        let field = field.into();
        FieldError {
            reason: "FieldValueDuplicate",
            message: format!("{field}: Duplicate value: {}", render(value)),
            field,
        }
    }

    /// `field: Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        let field = field.into();
        FieldError {
            reason: "FieldValueForbidden",
            message: format!("{field}: Forbidden: {detail}"),
            field,
        }
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// An error answer: HTTP code, reason and message, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(kind: &KindSpec, name: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !kind.group.is_empty() {
        d.insert("group".into(), json!(kind.group));
    }
    d.insert("kind".into(), json!(kind.plural));
    Value::Object(d)
}

impl ApiError {
    /// 404 for a named object.
    pub fn not_found(kind: &KindSpec, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", kind.qualified_resource()),
            details: Some(details(kind, name)),
        }
    }

    /// 404 for a path the double does not serve.
    pub fn no_route() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: None,
        }
    }

    /// 409 on create of an existing name.
    pub fn already_exists(kind: &KindSpec, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", kind.qualified_resource()),
            details: Some(details(kind, name)),
        }
    }

    /// 409 on a stale resourceVersion or a failed precondition.
    pub fn conflict(kind: &KindSpec, name: &str, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.qualified_resource()
            ),
            details: Some(details(kind, name)),
        }
    }

    /// 422 with field causes.
    pub fn invalid(kind: &KindSpec, name: &str, errors: &[FieldError]) -> Self {
        let joined = if errors.len() == 1 {
            errors.iter().map(|e| e.message.clone()).collect::<String>()
        } else {
            format!(
                "[{}]",
                errors
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut d = details(kind, name);
        d["kind"] = json!(kind.kind);
        d["causes"] = Value::Array(
            errors
                .iter()
                .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
                .collect(),
        );
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {joined}", kind.qualified_kind()),
            details: Some(d),
        }
    }

    /// 400 for a request the double cannot interpret.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 405 for a verb the resource does not support.
    pub fn method_not_allowed() -> Self {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: None,
        }
    }

    /// 415 for a body in a format the double does not accept.
    pub fn unsupported_media_type(got: &str, accepted: &str) -> Self {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format ({got}) - accepted media types include: {accepted}"
            ),
            details: None,
        }
    }

    /// 413 for a body over the size limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("the request body is larger than the limit of {limit} bytes"),
            details: None,
        }
    }

    /// 410 for a watch from a resourceVersion older than the retained history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v["code"] = json!(self.code);
        v
    }
}

/// A `Status` of success, as answered by DELETE for most kinds.
pub fn success(kind: &KindSpec, name: &str, uid: &str) -> Value {
    let mut d = details(kind, name);
    d["uid"] = json!(uid);
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{by_name, KINDS};

    #[test]
    fn invalid_joins_causes_like_kube_apiserver() {
        let k = &KINDS[by_name("validatingwebhookconfigurations").unwrap()];
        let e = ApiError::invalid(
            k,
            "x",
            &[
                FieldError::required("webhooks[0].sideEffects", ""),
                FieldError::not_supported(
                    "webhooks[0].failurePolicy",
                    &json!("Maybe"),
                    &["Fail", "Ignore"],
                ),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ValidatingWebhookConfiguration.admissionregistration.k8s.io \"x\" is invalid: [webhooks[0].sideEffects: Required value, webhooks[0].failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\"]"
        );
        let s = e.to_status();
        assert_eq!(
            s["details"]["causes"][1]["field"],
            "webhooks[0].failurePolicy"
        );
        assert_eq!(s["code"], 422);
    }

    #[test]
    fn not_found_names_the_resource() {
        let k = &KINDS[by_name("leases").unwrap()];
        let s = ApiError::not_found(k, "l").to_status();
        assert_eq!(s["message"], "leases.coordination.k8s.io \"l\" not found");
        assert_eq!(s["details"]["group"], "coordination.k8s.io");
        assert_eq!(s["reason"], "NotFound");
    }
}
