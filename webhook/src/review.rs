//! AdmissionReview parsing and answering (`admission.k8s.io/v1` and `v1beta1`).
//!
//! Three outcomes for a request body:
//! - [`MalformedBody`]: the body cannot be answered at all (not JSON, not an
//!   AdmissionReview, no `request.uid`); the server answers HTTP 400 with the message.
//! - [`ParsedReview`] with an [`Invalid`] reason: the envelope is sound (version and uid
//!   known) but the request is wrong (unknown operation, missing resource, fields of the
//!   wrong type); the answer is an `invalid` AdmissionResponse (`allowed: false`, status
//!   400 `BadRequest`) in the review's version.
//! - [`ParsedReview`] with a [`ReviewRequest`]: evaluated.

use serde::Serialize;
use serde_json::{Map, Value};

/// The AdmissionReview versions Tether answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReviewVersion {
    V1,
    V1beta1,
}

impl ReviewVersion {
    pub const fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "admission.k8s.io/v1",
            Self::V1beta1 => "admission.k8s.io/v1beta1",
        }
    }
}

/// A body that cannot be answered with an AdmissionResponse (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed admission review: {0}")]
pub struct MalformedBody(pub String);

/// Why a review that parsed is not a valid admission request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid admission request: {0}")]
pub struct Invalid(pub String);

/// The admission operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// The parts of an admission request the webhook itself reads (the rules read the whole
/// review through `policies::Event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewRequest {
    pub uid: String,
    pub operation: Operation,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub username: String,
    pub user_uid: Option<String>,
    pub groups: Vec<String>,
    pub dry_run: bool,
}

/// A review whose version and uid are known, so it can be answered.
#[derive(Debug, Clone)]
pub struct ParsedReview {
    pub version: ReviewVersion,
    pub uid: String,
    /// The whole review as sent.
    pub body: Value,
    pub request: Result<ReviewRequest, Invalid>,
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a request body.
pub fn parse(bytes: &[u8]) -> Result<ParsedReview, MalformedBody> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedBody("body is empty".into()));
    }
    // Text checked as UTF-8 once is parsed without checking every string again; other
    // bytes go to the byte parser, whose error names where the bad byte is.
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    };
    let body: Value = parsed.map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "not valid JSON",
            serde_json::error::Category::Eof => "truncated JSON",
        };
        MalformedBody(format!(
            "body is {what}: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let top = body.as_object().ok_or_else(|| {
        MalformedBody(format!(
            "body is {}, expected a JSON object",
            kind_of(&body)
        ))
    })?;
    let version = match top.get("apiVersion") {
        None => return Err(MalformedBody("apiVersion is missing".into())),
        Some(Value::String(s)) if s == "admission.k8s.io/v1" => ReviewVersion::V1,
        Some(Value::String(s)) if s == "admission.k8s.io/v1beta1" => ReviewVersion::V1beta1,
        Some(Value::String(s)) => {
            return Err(MalformedBody(format!(
            "apiVersion {s:?} is not supported (admission.k8s.io/v1 or admission.k8s.io/v1beta1)"
        )))
        }
        Some(other) => {
            return Err(MalformedBody(format!(
                "apiVersion is {}, expected a string",
                kind_of(other)
            )))
        }
    };
    match top.get("kind") {
        Some(Value::String(k)) if k == "AdmissionReview" => {}
        Some(Value::String(k)) => {
            return Err(MalformedBody(format!(
                "kind is {k:?}, expected \"AdmissionReview\""
            )))
        }
        Some(other) => {
            return Err(MalformedBody(format!(
                "kind is {}, expected the string \"AdmissionReview\"",
                kind_of(other)
            )))
        }
        None => return Err(MalformedBody("kind is missing".into())),
    }
    let request = match top.get("request") {
        Some(Value::Object(r)) => r,
        Some(Value::Null) | None => return Err(MalformedBody("request is missing".into())),
        Some(other) => {
            return Err(MalformedBody(format!(
                "request is {}, expected an object",
                kind_of(other)
            )))
        }
    };
    let uid = match request.get("uid") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        Some(Value::String(_)) => return Err(MalformedBody("request.uid is empty".into())),
        Some(other) => {
            return Err(MalformedBody(format!(
                "request.uid is {}, expected a string",
                kind_of(other)
            )))
        }
        None => return Err(MalformedBody("request.uid is missing".into())),
    };
    let checked = if top.get("response").is_some_and(|r| !r.is_null()) {
        Err(Invalid(
            "the review carries a response already; a request must not".into(),
        ))
    } else {
        check_request(request, uid.clone())
    };
    Ok(ParsedReview {
        version,
        uid,
        body,
        request: checked,
    })
}

fn opt_string(r: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, Invalid> {
    match r.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(Invalid(format!(
            "{at}.{key} is {}, expected a string",
            kind_of(other)
        ))),
    }
}

fn req_object<'a>(
    r: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, Invalid> {
    match r.get(key) {
        Some(Value::Object(o)) => Ok(o),
        None | Some(Value::Null) => Err(Invalid(format!("{at}.{key} is missing"))),
        Some(other) => Err(Invalid(format!(
            "{at}.{key} is {}, expected an object",
            kind_of(other)
        ))),
    }
}

fn check_request(r: &Map<String, Value>, uid: String) -> Result<ReviewRequest, Invalid> {
    let at = "request";
    let operation = match r.get("operation") {
        Some(Value::String(s)) => match s.as_str() {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            other => {
                return Err(Invalid(format!(
                    "request.operation {other:?} is not one of CREATE, UPDATE, DELETE, CONNECT"
                )))
            }
        },
        None | Some(Value::Null) => return Err(Invalid("request.operation is missing".into())),
        Some(other) => {
            return Err(Invalid(format!(
                "request.operation is {}, expected a string",
                kind_of(other)
            )))
        }
    };
    let kind_obj = req_object(r, "kind", at)?;
    let kind = opt_string(kind_obj, "kind", "request.kind")?
        .ok_or_else(|| Invalid("request.kind.kind is missing".into()))?;
    let _ = opt_string(kind_obj, "version", "request.kind")?;
    let resource_obj = req_object(r, "resource", at)?;
    let resource = opt_string(resource_obj, "resource", "request.resource")?
        .ok_or_else(|| Invalid("request.resource.resource is missing".into()))?;
    let group = opt_string(resource_obj, "group", "request.resource")?.unwrap_or_default();
    let _ = opt_string(resource_obj, "version", "request.resource")?;
    let subresource = opt_string(r, "subResource", at)?;
    let namespace = opt_string(r, "namespace", at)?;
    let name = opt_string(r, "name", at)?;
    let user = req_object(r, "userInfo", at)?;
    let username = opt_string(user, "username", "request.userInfo")?.unwrap_or_default();
    let user_uid = opt_string(user, "uid", "request.userInfo")?;
    let groups = match user.get("groups") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, g)| match g {
                Value::String(s) => Ok(s.clone()),
                other => Err(Invalid(format!(
                    "request.userInfo.groups[{i}] is {}, expected a string",
                    kind_of(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Invalid(format!(
                "request.userInfo.groups is {}, expected an array of strings",
                kind_of(other)
            )))
        }
    };
    if let Some(Value::Object(extra)) = user.get("extra") {
        for (k, v) in extra {
            let ok = match v {
                Value::Array(items) => items.iter().all(Value::is_string),
                Value::Null => true,
                _ => false,
            };
            if !ok {
                return Err(Invalid(format!(
                    "request.userInfo.extra[{k:?}] is {}, expected an array of strings",
                    kind_of(v)
                )));
            }
        }
    } else if let Some(v) = user.get("extra").filter(|v| !v.is_null()) {
        return Err(Invalid(format!(
            "request.userInfo.extra is {}, expected an object",
            kind_of(v)
        )));
    }
    let dry_run = match r.get("dryRun") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Invalid(format!(
                "request.dryRun is {}, expected a boolean",
                kind_of(other)
            )))
        }
    };
    for key in ["object", "oldObject", "options"] {
        match r.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(Invalid(format!(
                    "request.{key} is {}, expected an object or null",
                    kind_of(other)
                )))
            }
        }
    }
    match operation {
        Operation::Create | Operation::Connect => {
            if r.get("object").is_none_or(Value::is_null) {
                return Err(Invalid(format!(
                    "request.object is missing for operation {}",
                    operation.as_str()
                )));
            }
        }
        Operation::Update => {
            if r.get("object").is_none_or(Value::is_null) {
                return Err(Invalid(
                    "request.object is missing for operation UPDATE".into(),
                ));
            }
        }
        Operation::Delete => {}
    }
    for key in ["object", "oldObject"] {
        if let Some(Value::String(object_kind)) = r.get(key).and_then(|o| o.get("kind")) {
            if *object_kind != kind {
                return Err(Invalid(format!(
                    "request.{key}.kind {object_kind:?} does not match request.kind.kind {kind:?}"
                )));
            }
        }
    }
    if operation == Operation::Connect {
        check_connect_object(r)?;
    }
    Ok(ReviewRequest {
        uid,
        operation,
        group,
        resource,
        subresource,
        kind,
        namespace,
        name,
        username,
        user_uid,
        groups,
        dry_run,
    })
}

fn check_connect_object(r: &Map<String, Value>) -> Result<(), Invalid> {
    let Some(Value::Object(obj)) = r.get("object") else {
        return Ok(());
    };
    if let Some(cmd) = obj.get("command") {
        match cmd {
            Value::Null => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        return Err(Invalid(format!(
                            "request.object.command[{i}] is {}, expected a string",
                            kind_of(item)
                        )));
                    }
                }
            }
            other => {
                return Err(Invalid(format!(
                    "request.object.command is {}, expected an array of strings",
                    kind_of(other)
                )))
            }
        }
    }
    for key in ["stdin", "stdout", "stderr", "tty"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null() && !v.is_boolean()) {
            return Err(Invalid(format!(
                "request.object.{key} is {}, expected a boolean",
                kind_of(v)
            )));
        }
    }
    if let Some(v) = obj
        .get("container")
        .filter(|v| !v.is_null() && !v.is_string())
    {
        return Err(Invalid(format!(
            "request.object.container is {}, expected a string",
            kind_of(v)
        )));
    }
    Ok(())
}

/// `status` of an AdmissionResponse (a `meta/v1` Status subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResponseStatus {
    pub code: u16,
    pub message: String,
    pub reason: String,
    pub status: &'static str,
}

/// An AdmissionResponse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub audit_annotations: std::collections::BTreeMap<String, String>,
}

impl AdmissionResponse {
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            warnings: Vec::new(),
            audit_annotations: Default::default(),
        }
    }

    pub fn deny(uid: &str, code: u16, reason: &str, message: String) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: false,
            status: Some(ResponseStatus {
                code,
                message,
                reason: reason.to_string(),
                status: "Failure",
            }),
            warnings: Vec::new(),
            audit_annotations: Default::default(),
        }
    }

    /// The answer to a review that parsed but is wrong.
    pub fn invalid(uid: &str, why: &Invalid) -> Self {
        Self::deny(uid, 400, "BadRequest", why.to_string())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

/// The response body: an AdmissionReview of the request's version.
pub fn encode(version: ReviewVersion, response: &AdmissionResponse) -> Vec<u8> {
    serde_json::to_vec(&ReviewOut {
        api_version: version.api_version(),
        kind: "AdmissionReview",
        response,
    })
    .unwrap_or_else(|e| {
        // Serializing plain strings, bools and maps of strings cannot fail; answer
        // something valid anyway.
        format!(
            "{{\"apiVersion\":\"{}\",\"kind\":\"AdmissionReview\",\"response\":{{\"uid\":{},\"allowed\":false,\"status\":{{\"code\":500,\"message\":{}}}}}}}",
            version.api_version(),
            serde_json::Value::String(response.uid.clone()),
            serde_json::Value::String(format!("response encoding failed: {e}")),
        )
        .into_bytes()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn captured_pod_create_parses() {
        let r = parse(&fixture(
            "apiserver-captures/admission-pod-create-good-pod-allowed.json",
        ))
        .unwrap();
        assert_eq!(r.version, ReviewVersion::V1);
        let req = r.request.unwrap();
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.resource, "pods");
        assert_eq!(req.namespace.as_deref(), Some("default"));
        assert_eq!(req.username, "kapi-admin");
        assert_eq!(req.groups, vec!["system:masters", "system:authenticated"]);
    }

    #[test]
    fn testdata_review_is_invalid_but_answerable() {
        for (f, v) in [
            (
                "admission.k8s.io.v1.AdmissionReview.json",
                ReviewVersion::V1,
            ),
            (
                "admission.k8s.io.v1beta1.AdmissionReview.json",
                ReviewVersion::V1beta1,
            ),
        ] {
            let r = parse(&fixture(&format!("kubernetes-api/testdata/HEAD/{f}"))).unwrap();
            assert_eq!(r.version, v);
            assert_eq!(r.uid, "uidValue");
            assert!(r.request.is_err());
        }
    }

    #[test]
    fn malformed_bodies_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "body is empty"),
            ("{", "truncated JSON"),
            ("[1]", "an array"),
            ("{}", "apiVersion is missing"),
            (r#"{"apiVersion":1}"#, "apiVersion is a number"),
            (
                r#"{"apiVersion":"v1","kind":"AdmissionReview"}"#,
                "\"v1\" is not supported",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#,
                "kind is \"Pod\"",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "request is missing",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
                "request.uid is missing",
            ),
        ];
        for (body, want) in cases {
            let err = parse(body.as_bytes()).unwrap_err();
            assert!(err.0.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn encode_answers_in_the_version_asked() {
        let out = encode(ReviewVersion::V1beta1, &AdmissionResponse::allow("u1"));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], true);
    }

    /// Mutated captures (byte flips, truncations, splices) never panic the parser, and
    /// whatever parses keeps its uid.
    #[test]
    fn mutated_reviews_never_panic() {
        let seeds = [
            fixture("apiserver-captures/admission-pod-create-good-pod-allowed.json"),
            fixture("apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json"),
            fixture("kubernetes-api/testdata/HEAD/admission.k8s.io.v1beta1.AdmissionReview.json"),
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let specials = [
            b'{', b'}', b'[', b']', b'"', b':', b',', b'\\', 0u8, 0xff, b'n', b'1',
        ];
        let mut outcomes = [0usize; 3];
        for round in 0..3000 {
            let seed = &seeds[round % seeds.len()];
            let mut body = seed.clone();
            for _ in 0..(1 + next() % 4) {
                if body.is_empty() {
                    break;
                }
                let at = (next() as usize) % body.len();
                match next() % 4 {
                    0 => body[at] = specials[(next() as usize) % specials.len()],
                    1 => body.truncate(at),
                    2 => {
                        body.remove(at);
                    }
                    _ => {
                        let from = (next() as usize) % seed.len();
                        let len = ((next() as usize) % 64).min(seed.len() - from);
                        let piece = seed[from..from + len].to_vec();
                        body.splice(at..at, piece);
                    }
                }
            }
            match parse(&body) {
                Err(_) => outcomes[0] += 1,
                Ok(p) => {
                    assert!(!p.uid.is_empty());
                    match p.request {
                        Ok(r) => {
                            assert_eq!(r.uid, p.uid);
                            outcomes[1] += 1;
                        }
                        Err(_) => outcomes[2] += 1,
                    }
                }
            }
        }
        // All three outcomes occur, so the mutations reach every layer.
        assert!(outcomes.iter().all(|n| *n > 0), "{outcomes:?}");
    }

    /// Parsing checked text gives the byte parser's values and errors.
    #[test]
    fn text_and_bytes_parse_alike() {
        for t in [
            r#"{"a":1,"b":{"c":[1,-2,3.5,1e400,null,true,"x\u00e9\n"]},"a":{"z":[]}}"#,
            "{\"a\":1,}",
            "[1,2",
            "{\"a\" 1}",
            "{\"a\":1} x",
            "\"\\ud800\"",
            "\"caf\u{e9}\"",
        ] {
            let text = serde_json::from_str::<Value>(t).map_err(|e| e.to_string());
            let bytes = serde_json::from_slice::<Value>(t.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(text, bytes, "{t}");
        }
        let err = parse(b"{\"apiVersion\":\"\xff\"}").unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_crash() {
        let mut obj = String::from("1");
        for _ in 0..200 {
            obj = format!("[{obj}]");
        }
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","object":{obj}}}}}"#
        );
        // serde_json refuses nesting beyond 128 levels: a malformed body.
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(err.0.contains("recursion limit"), "{err}");
    }
}
