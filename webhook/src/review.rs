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

use policies::doc::{Doc, Ref, View};
use serde::Serialize;

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
    /// The whole review as sent (less the objects' `metadata.managedFields` when the
    /// [`ParseOptions`] leave them out).
    pub body: Doc,
    pub request: Result<ReviewRequest, Invalid>,
}

fn kind_of(v: Ref<'_>) -> &'static str {
    v.kind().described()
}

/// What a parse keeps of the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Keep `request.object.metadata.managedFields` and `request.oldObject.metadata.
    /// managedFields`. When no rule reads them
    /// ([`policies::RuleSet::admission_reads_managed_fields`]) they are only checked as JSON
    /// and left out: they are the largest part of most objects the API server sends.
    pub keep_managed_fields: bool,
}

impl ParseOptions {
    /// The whole review.
    pub const WHOLE: ParseOptions = ParseOptions {
        keep_managed_fields: true,
    };
}

/// Parses a request body, whole.
pub fn parse(bytes: &[u8]) -> Result<ParsedReview, MalformedBody> {
    parse_with(bytes, ParseOptions::WHOLE)
}

/// Parses a request body, keeping what `options` say.
pub fn parse_with(bytes: &[u8], options: ParseOptions) -> Result<ParsedReview, MalformedBody> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedBody("body is empty".into()));
    }
    // Text checked as UTF-8 once is read straight into the document; what that reader
    // leaves (malformed text, floats, deep nesting) goes through serde_json, for the same
    // document or its error. Other bytes go to serde_json's byte parser, whose error names
    // where the bad byte is.
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => match Doc::parse_plain(text, skipped(options)) {
            Some(doc) => Ok(doc),
            None => read_review(serde_json::Deserializer::from_str(text), options),
        },
        Err(_) => read_review(serde_json::Deserializer::from_slice(bytes), options),
    };
    let body: Doc = parsed.map_err(|e| {
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
    let top = body.root();
    if !top.is_object() {
        return Err(MalformedBody(format!(
            "body is {}, expected a JSON object",
            kind_of(top)
        )));
    }
    let version = match top.get("apiVersion") {
        None => return Err(MalformedBody("apiVersion is missing".into())),
        Some(v) => match v.view() {
            View::String("admission.k8s.io/v1") => ReviewVersion::V1,
            View::String("admission.k8s.io/v1beta1") => ReviewVersion::V1beta1,
            View::String(s) => {
                return Err(MalformedBody(format!(
                "apiVersion {s:?} is not supported (admission.k8s.io/v1 or admission.k8s.io/v1beta1)"
            )))
            }
            _ => {
                return Err(MalformedBody(format!(
                    "apiVersion is {}, expected a string",
                    kind_of(v)
                )))
            }
        },
    };
    match top.get("kind") {
        Some(k) => match k.view() {
            View::String("AdmissionReview") => {}
            View::String(k) => {
                return Err(MalformedBody(format!(
                    "kind is {k:?}, expected \"AdmissionReview\""
                )))
            }
            _ => {
                return Err(MalformedBody(format!(
                    "kind is {}, expected the string \"AdmissionReview\"",
                    kind_of(k)
                )))
            }
        },
        None => return Err(MalformedBody("kind is missing".into())),
    }
    let request = match top.get("request") {
        Some(r) if r.is_object() => r,
        Some(r) if r.is_null() => return Err(MalformedBody("request is missing".into())),
        None => return Err(MalformedBody("request is missing".into())),
        Some(other) => {
            return Err(MalformedBody(format!(
                "request is {}, expected an object",
                kind_of(other)
            )))
        }
    };
    let uid = match request.get("uid") {
        Some(u) => match u.view() {
            View::String("") => return Err(MalformedBody("request.uid is empty".into())),
            View::String(u) => u.to_owned(),
            _ => {
                return Err(MalformedBody(format!(
                    "request.uid is {}, expected a string",
                    kind_of(u)
                )))
            }
        },
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

/// Where the objects' managed fields are, which a trimmed parse leaves out.
const MANAGED_FIELDS: &[&[&str]] = &[
    &["request", "object", "metadata", "managedFields"],
    &["request", "oldObject", "metadata", "managedFields"],
];

/// The members a review is read without.
fn skipped(options: ParseOptions) -> &'static [&'static [&'static str]] {
    if options.keep_managed_fields {
        &[]
    } else {
        MANAGED_FIELDS
    }
}

/// The whole body as one JSON document (trailing characters are an error), with
/// `serde_json::from_str`'s checks and errors, less what `options` leave out (still checked
/// as JSON, through the same parser paths, so a malformed body gets the same error).
fn read_review<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    options: ParseOptions,
) -> serde_json::Result<Doc> {
    let doc = Doc::read(&mut de, skipped(options))?;
    de.end()?;
    Ok(doc)
}

fn opt_string(r: Ref<'_>, key: &str, at: &str) -> Result<Option<String>, Invalid> {
    match r.get(key).map(|v| (v, v.view())) {
        None | Some((_, View::Null | View::String(""))) => Ok(None),
        Some((_, View::String(s))) => Ok(Some(s.to_owned())),
        Some((other, _)) => Err(Invalid(format!(
            "{at}.{key} is {}, expected a string",
            kind_of(other)
        ))),
    }
}

fn req_object<'a>(r: Ref<'a>, key: &str, at: &str) -> Result<Ref<'a>, Invalid> {
    match r.get(key) {
        Some(o) if o.is_object() => Ok(o),
        None => Err(Invalid(format!("{at}.{key} is missing"))),
        Some(o) if o.is_null() => Err(Invalid(format!("{at}.{key} is missing"))),
        Some(other) => Err(Invalid(format!(
            "{at}.{key} is {}, expected an object",
            kind_of(other)
        ))),
    }
}

fn check_request(r: Ref<'_>, uid: String) -> Result<ReviewRequest, Invalid> {
    let at = "request";
    let operation = match r.get("operation").map(|v| (v, v.view())) {
        Some((_, View::String(s))) => match s {
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
        None | Some((_, View::Null)) => return Err(Invalid("request.operation is missing".into())),
        Some((other, _)) => {
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
    let groups = match user.get("groups").map(|v| (v, v.view())) {
        None | Some((_, View::Null)) => Vec::new(),
        Some((items, View::Array(_))) => items
            .children()
            .enumerate()
            .map(|(i, g)| match g.view() {
                View::String(s) => Ok(s.to_owned()),
                _ => Err(Invalid(format!(
                    "request.userInfo.groups[{i}] is {}, expected a string",
                    kind_of(g)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some((other, _)) => {
            return Err(Invalid(format!(
                "request.userInfo.groups is {}, expected an array of strings",
                kind_of(other)
            )))
        }
    };
    match user.get("extra") {
        Some(extra) if extra.is_object() => {
            for (k, v) in extra.as_object().into_iter().flatten() {
                let ok = match v.view() {
                    View::Array(items) => items.children().all(|x| x.as_str().is_some()),
                    View::Null => true,
                    _ => false,
                };
                if !ok {
                    return Err(Invalid(format!(
                        "request.userInfo.extra[{k:?}] is {}, expected an array of strings",
                        kind_of(v)
                    )));
                }
            }
        }
        Some(v) if !v.is_null() => {
            return Err(Invalid(format!(
                "request.userInfo.extra is {}, expected an object",
                kind_of(v)
            )));
        }
        _ => {}
    }
    let dry_run = match r.get("dryRun").map(|v| (v, v.view())) {
        None | Some((_, View::Null)) => false,
        Some((_, View::Bool(b))) => b,
        Some((other, _)) => {
            return Err(Invalid(format!(
                "request.dryRun is {}, expected a boolean",
                kind_of(other)
            )))
        }
    };
    for key in ["object", "oldObject", "options"] {
        match r.get(key) {
            Some(v) if !v.is_null() && !v.is_object() => {
                return Err(Invalid(format!(
                    "request.{key} is {}, expected an object or null",
                    kind_of(v)
                )))
            }
            _ => {}
        }
    }
    let missing = |key: &str| r.get(key).is_none_or(Ref::is_null);
    match operation {
        Operation::Create | Operation::Connect => {
            if missing("object") {
                return Err(Invalid(format!(
                    "request.object is missing for operation {}",
                    operation.as_str()
                )));
            }
        }
        Operation::Update => {
            if missing("object") {
                return Err(Invalid(
                    "request.object is missing for operation UPDATE".into(),
                ));
            }
        }
        Operation::Delete => {}
    }
    for key in ["object", "oldObject"] {
        if let Some(object_kind) = r.get(key).and_then(|o| o.get("kind")).and_then(Ref::as_str) {
            if object_kind != kind {
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

fn check_connect_object(r: Ref<'_>) -> Result<(), Invalid> {
    let Some(obj) = r.get("object").filter(|o| o.is_object()) else {
        return Ok(());
    };
    if let Some(cmd) = obj.get("command") {
        match cmd.view() {
            View::Null => {}
            View::Array(items) => {
                for (i, item) in items.children().enumerate() {
                    if item.as_str().is_none() {
                        return Err(Invalid(format!(
                            "request.object.command[{i}] is {}, expected a string",
                            kind_of(item)
                        )));
                    }
                }
            }
            _ => {
                return Err(Invalid(format!(
                    "request.object.command is {}, expected an array of strings",
                    kind_of(cmd)
                )))
            }
        }
    }
    for key in ["stdin", "stdout", "stderr", "tty"] {
        if let Some(v) = obj
            .get(key)
            .filter(|v| !v.is_null() && v.as_bool().is_none())
        {
            return Err(Invalid(format!(
                "request.object.{key} is {}, expected a boolean",
                kind_of(v)
            )));
        }
    }
    if let Some(v) = obj
        .get("container")
        .filter(|v| !v.is_null() && v.as_str().is_none())
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

/// The response body: an AdmissionReview of the request's version, byte for byte what
/// `serde_json` writes for it (the members in declaration order, empty ones left out),
/// written straight into one buffer: most strings need no escape and are copied whole.
pub fn encode(version: ReviewVersion, response: &AdmissionResponse) -> Vec<u8> {
    let text: usize = response.warnings.iter().map(String::len).sum::<usize>()
        + response
            .audit_annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>()
        + response
            .status
            .as_ref()
            .map_or(0, |s| s.message.len() + s.reason.len() + 64);
    let mut out = Vec::with_capacity(128 + response.uid.len() + text + 4 * response.warnings.len());
    out.extend_from_slice(b"{\"apiVersion\":");
    string(&mut out, version.api_version());
    out.extend_from_slice(b",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":");
    string(&mut out, &response.uid);
    out.extend_from_slice(if response.allowed {
        b",\"allowed\":true"
    } else {
        b",\"allowed\":false"
    });
    if let Some(st) = &response.status {
        out.extend_from_slice(b",\"status\":{\"code\":");
        out.extend_from_slice(st.code.to_string().as_bytes());
        out.extend_from_slice(b",\"message\":");
        string(&mut out, &st.message);
        out.extend_from_slice(b",\"reason\":");
        string(&mut out, &st.reason);
        out.extend_from_slice(b",\"status\":");
        string(&mut out, st.status);
        out.push(b'}');
    }
    if !response.warnings.is_empty() {
        out.extend_from_slice(b",\"warnings\":[");
        for (i, w) in response.warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, w);
        }
        out.push(b']');
    }
    if !response.audit_annotations.is_empty() {
        out.extend_from_slice(b",\"auditAnnotations\":{");
        for (i, (k, v)) in response.audit_annotations.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(&mut out, k);
            out.push(b':');
            string(&mut out, v);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}}");
    out
}

/// A JSON string, escaped as `serde_json` escapes it: runs that need no escape are copied
/// whole, found eight bytes at a time.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut run = 0; // start of the bytes not yet copied
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            if !policies::doc::json_special_in(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[run..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        i += 1;
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use serde_json::Value;

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

    /// The hand-written encoding is what `serde_json` writes for the same answer.
    #[test]
    fn encode_writes_what_serde_json_writes() {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct ReviewOut<'a> {
            api_version: &'static str,
            kind: &'static str,
            response: &'a AdmissionResponse,
        }
        let texts = [
            "",
            "plain text",
            "quote \" backslash \\ slash /",
            "tab\tnewline\ncr\rbell\u{7}nul\u{0}esc\u{1b}del\u{7f}",
            "caf\u{e9} \u{2028} \u{1F600} zero\u{200B}width",
            "<script>&amp;</script>",
        ];
        let mut responses = vec![AdmissionResponse::allow("u-1")];
        for (i, t) in texts.iter().enumerate() {
            let mut r = AdmissionResponse::deny(t, 403 + i as u16, t, format!("denied: {t}"));
            r.warnings = texts.iter().map(|w| format!("{w}{i}")).collect();
            r.audit_annotations
                .insert((*t).to_string(), format!("v{t}"));
            r.audit_annotations
                .insert(format!("k{i}"), (*t).to_string());
            responses.push(r);
            let mut a = AdmissionResponse::allow(t);
            a.warnings.push((*t).to_string());
            responses.push(a);
        }
        responses.push(AdmissionResponse::invalid(
            "u-2",
            &Invalid("bad \"x\"".into()),
        ));
        for r in &responses {
            for v in [ReviewVersion::V1, ReviewVersion::V1beta1] {
                let want = serde_json::to_vec(&ReviewOut {
                    api_version: v.api_version(),
                    kind: "AdmissionReview",
                    response: r,
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(encode(v, r)).unwrap(),
                    String::from_utf8(want).unwrap()
                );
            }
        }
    }

    /// Every string, escaped eight bytes at a time, is what `serde_json` writes: every byte
    /// that needs an escape at every offset of a word, and generated strings.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let check = |s: &str| {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        };
        let specials: Vec<char> = (0u8..0x20)
            .map(char::from)
            .chain(['"', '\\', '\u{7f}', '/', 'é', '\u{2028}', '😀'])
            .collect();
        for c in &specials {
            for pad in 0..20 {
                check(&format!("{}{c}{}", "a".repeat(pad), "b".repeat(19 - pad)));
            }
        }
        // Generated: runs of plain text, specials and multibyte characters (xorshift).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            let mut s = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(x % 40) {
                let r = (x >> (k % 50)) as usize;
                match r % 4 {
                    0 => s.push(specials[r % specials.len()]),
                    _ => s.push_str(&"plain text run"[..r % 14]),
                }
            }
            check(&s);
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
            same_when_trimmed(&body);
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

    const TRIMMED: ParseOptions = ParseOptions {
        keep_managed_fields: false,
    };

    /// The whole review less `request.{object,oldObject}.metadata.managedFields`.
    fn without_managed_fields(mut v: Value) -> Value {
        for o in ["object", "oldObject"] {
            if let Some(Value::Object(m)) = v.pointer_mut(&format!("/request/{o}/metadata")) {
                m.shift_remove("managedFields");
            }
        }
        v
    }

    /// A trimmed parse answers as a whole one: the same error, or the same review and
    /// request less the objects' managedFields.
    fn same_when_trimmed(body: &[u8]) {
        match (parse(body), parse_with(body, TRIMMED)) {
            (Err(a), Err(b)) => assert_eq!(a.0, b.0),
            (Ok(a), Ok(b)) => {
                assert_eq!((a.version, &a.uid), (b.version, &b.uid));
                assert_eq!(a.request, b.request);
                assert_eq!(
                    without_managed_fields(a.body.root().to_value()),
                    b.body.root().to_value()
                );
            }
            (a, b) => panic!("whole: {a:?}\ntrimmed: {b:?}"),
        }
        // The document holds what `serde_json` reads, and a body it refuses is refused
        // with its words.
        match (parse(body), serde_json::from_slice::<Value>(body)) {
            (Ok(p), Ok(v)) => assert_eq!(p.body.root().to_value(), v),
            (Err(e), Err(r)) => {
                let r = r.to_string();
                let words = r.split(" at line").next().unwrap_or(&r);
                assert!(e.0.contains(words) || e.0 == "body is empty", "{e} / {r}");
            }
            (Err(_), Ok(_)) => {}
            (Ok(p), Err(r)) => panic!("parsed {p:?} where serde_json says {r}"),
        }
    }

    #[test]
    fn trimmed_parse_leaves_out_only_the_objects_managed_fields() {
        let capture = fixture("apiserver-captures/admission-pod-create-good-pod-allowed.json");
        let whole = parse(&capture).unwrap().body.root().to_value();
        assert!(whole
            .pointer("/request/object/metadata/managedFields")
            .is_some());
        let trimmed = parse_with(&capture, TRIMMED)
            .unwrap()
            .body
            .root()
            .to_value();
        assert!(trimmed
            .pointer("/request/object/metadata/managedFields")
            .is_none());
        assert_eq!(
            trimmed.pointer("/request/object/spec"),
            whole.pointer("/request/object/spec")
        );
        same_when_trimmed(&capture);

        let mf = r#"[{"manager":"kubectl","fieldsV1":{"f:metadata":{"f:labels":{".":{}}}}}]"#;
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"resource":{{"group":"","version":"v1","resource":"pods"}},"operation":"UPDATE","userInfo":{{"username":"a"}},"managedFields":{mf},"object":{{"metadata":{{"name":"p","managedFields":{mf},"labels":{{"managedFields":"kept"}}}},"spec":{{"managedFields":{mf}}}}},"oldObject":{{"metadata":{{"managedFields":{mf},"name":"p"}}}}}},"managedFields":{mf}}}"#
        );
        let trimmed = parse_with(body.as_bytes(), TRIMMED)
            .unwrap()
            .body
            .root()
            .to_value();
        assert!(trimmed
            .pointer("/request/object/metadata/managedFields")
            .is_none());
        assert!(trimmed
            .pointer("/request/oldObject/metadata/managedFields")
            .is_none());
        // Elsewhere it is kept.
        for at in [
            "/managedFields",
            "/request/managedFields",
            "/request/object/spec/managedFields",
            "/request/object/metadata/labels/managedFields",
        ] {
            assert!(trimmed.pointer(at).is_some(), "{at}");
        }
        same_when_trimmed(body.as_bytes());

        // What is left out is still checked as JSON.
        let broken = body.replacen(r#""manager":"kubectl""#, r#""manager":kubectl"#, 2);
        let err = parse_with(broken.as_bytes(), TRIMMED).unwrap_err();
        assert!(err.0.contains("not valid JSON"), "{err}");
        same_when_trimmed(broken.as_bytes());
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
