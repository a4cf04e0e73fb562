//! Kubernetes input documents: every shape Tether accepts.
//!
//! A document may hold one audit `Event`, an `EventList`, JSON lines (one value per line),
//! a JSON array, or any mix of concatenated JSON values; each value may be an audit event
//! (`audit.k8s.io` v1 or v1beta1, or lacking `apiVersion`/`kind` as several Falco traces do)
//! or an `AdmissionReview` (v1 or v1beta1). A malformed value yields one [`InputError`] naming
//! the document and line; parsing resumes at the next line that starts a JSON value, so one
//! bad line does not lose the rest.

use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value as Json;

use crate::body::Body;
use crate::event::{json_kind, Event};

/// What was wrong with one input value, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// The document's name (a file path, `-`, or a request id).
    pub name: String,
    /// 1-based line where the bad value starts (0 when not read from a document).
    pub line: usize,
    pub what: String,
}

impl InputError {
    pub fn new(name: impl Into<String>, line: usize, what: impl Into<String>) -> Self {
        InputError {
            name: name.into(),
            line,
            what: what.into(),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.name, self.line, self.what)
    }
}

/// Parses every event in a document. The result keeps document order; bad values are
/// `Err` entries and do not stop the rest.
pub fn parse_document(name: &str, bytes: &[u8]) -> Vec<Result<Event, InputError>> {
    let mut out = Vec::new();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = Lines::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let base_line = lines.line_at(bytes, offset);
        let rest = &bytes[offset..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
        let mut resume: Option<usize> = None;
        loop {
            let before = stream.byte_offset();
            let start = offset + before + skip_ws(&rest[before..]);
            match stream.next() {
                None => break,
                Some(Ok(v)) => {
                    let line = lines.line_at(bytes, start);
                    classify(name, line, v.get(), &mut out);
                }
                Some(Err(e)) => {
                    let line = lines.line_at(bytes, start);
                    let what = if e.is_eof() {
                        format!("truncated JSON value starting here: {e}")
                    } else {
                        format!("malformed JSON: {e}")
                    };
                    out.push(Err(InputError::new(name, line.max(1), what)));
                    // Resume at the first line after the error that starts a JSON value.
                    let err_line = base_line + e.line().max(1) - 1;
                    resume = Some(lines.next_value_line(bytes, err_line));
                    break;
                }
            }
        }
        match resume {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    out
}

fn skip_ws(b: &[u8]) -> usize {
    b.iter().take_while(|c| c.is_ascii_whitespace()).count()
}

/// Line numbers of byte offsets, counted forward only, so a document is scanned once.
struct Lines {
    pos: usize,
    line: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines { pos: 0, line: 1 }
    }
}

impl Lines {
    /// 1-based line of `pos`.
    fn line_at(&mut self, b: &[u8], pos: usize) -> usize {
        let pos = pos.min(b.len());
        if pos < self.pos {
            *self = Lines::default();
        }
        self.line += b[self.pos..pos].iter().filter(|&&c| c == b'\n').count();
        self.pos = pos;
        self.line
    }

    /// Byte offset of the first line after `line` (1-based) that starts with `{` or `[`, or
    /// the end of the input.
    fn next_value_line(&mut self, b: &[u8], line: usize) -> usize {
        let mut i = self.pos;
        let mut cur = self.line;
        while i < b.len() {
            if b[i] == b'\n' {
                cur += 1;
                if cur > line && matches!(b.get(i + 1), Some(b'{') | Some(b'[')) {
                    self.pos = i + 1;
                    self.line = cur;
                    return i + 1;
                }
            }
            i += 1;
        }
        b.len()
    }
}

#[derive(serde::Deserialize)]
struct RawList<'a> {
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
}

fn classify(name: &str, line: usize, raw: &str, out: &mut Vec<Result<Event, InputError>>) {
    let err = |what: String| InputError::new(name, line, what);
    match raw.trim_start().as_bytes().first() {
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(raw) {
            Ok(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    out.push(one(item.get()).map_err(|w| err(format!("array item {i}: {w}"))));
                }
            }
            Err(e) => out.push(Err(err(format!("malformed JSON: {e}")))),
        },
        Some(b'{') => {
            let body = match Body::lazy(raw) {
                Ok(b) => b,
                Err(e) => return out.push(Err(err(e))),
            };
            if body.get("kind").and_then(crate::doc::Ref::as_str) == Some("EventList") {
                match serde_json::from_str::<RawList<'_>>(raw) {
                    Ok(RawList { items: Some(items) }) => {
                        for (i, item) in items.into_iter().enumerate() {
                            out.push(
                                Event::from_audit_text(item.get())
                                    .map_err(|w| err(format!("EventList item {i}: {w}"))),
                            );
                        }
                    }
                    Ok(RawList { items: None }) => {}
                    Err(_) => out.push(Err(err(format!(
                        "EventList \"items\" must be an array, found {}",
                        body.get("items")
                            .map_or("nothing", |v| v.kind().described())
                    )))),
                }
                return;
            }
            out.push(one_body(body).map_err(err));
        }
        _ => out.push(one(raw).map_err(err)),
    }
}

fn one(raw: &str) -> Result<Event, String> {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => one_body(Body::lazy(raw)?),
        _ => {
            let v: Json = serde_json::from_str(raw).map_err(|e| format!("malformed JSON: {e}"))?;
            Err(format!(
                "data not recognized as a k8s audit event: expected an audit event object, found {}",
                json_kind(&v)
            ))
        }
    }
}

fn one_body(body: Body) -> Result<Event, String> {
    match body.get("kind").and_then(crate::doc::Ref::as_str) {
        Some("AdmissionReview") => Event::from_admission_doc(body.into_doc()).map_err(|e| e.what),
        Some("Event") | None => Event::from_audit_body(body),
        Some(other) => Err(format!(
            "unsupported kind \"{other}\": expected Event, EventList or AdmissionReview"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Source;

    const EV: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"get","auditID":"a"}"#;

    #[test]
    fn json_lines_with_a_bad_line_in_the_middle() {
        let doc = format!("{EV}\n{{\"kind\": \"Event\", oops}}\n{EV}\n\n{EV}\n");
        let r = parse_document("log.jsonl", doc.as_bytes());
        assert_eq!(r.len(), 4);
        assert!(r[0].is_ok() && r[2].is_ok() && r[3].is_ok());
        let e = r[1].as_ref().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(
            e.to_string().starts_with("log.jsonl:2: malformed JSON"),
            "{e}"
        );
    }

    #[test]
    fn event_list_array_and_admission() {
        let list =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{EV},{EV}]}}"#);
        assert_eq!(parse_document("l", list.as_bytes()).len(), 2);
        let arr = format!("[{EV},\n {EV}, 5]");
        let r = parse_document("a", arr.as_bytes());
        assert_eq!(r.len(), 3);
        let e = r[2].as_ref().unwrap_err();
        assert!(
            e.to_string()
                .contains("array item 2: data not recognized as a k8s audit event: expected an audit event object, found a number"),
            "{e}"
        );
        let adm = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","operation":"CREATE","resource":{"group":"","version":"v1","resource":"pods"},"namespace":"d","object":{"metadata":{"name":"p"}}}}"#;
        let r = parse_document("adm", adm.as_bytes());
        assert_eq!(r[0].as_ref().unwrap().source(), Source::K8sAdmission);
    }

    #[test]
    fn truncated_pretty_document_is_one_error() {
        let doc = "{\n  \"kind\": \"Event\",\n  \"verb\": \"get\",\n";
        let r = parse_document("t.json", doc.as_bytes());
        assert_eq!(r.len(), 1);
        assert!(r[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .starts_with("t.json:1: truncated JSON"));
    }

    #[test]
    fn many_bad_lines_in_a_large_document() {
        let mut doc = String::new();
        for i in 0..20_000 {
            if i % 1000 == 7 {
                doc.push_str("{\"kind\": \"Event\", broken}\n");
            } else {
                doc.push_str(EV);
                doc.push('\n');
            }
        }
        let r = parse_document("big", doc.as_bytes());
        assert_eq!(r.len(), 20_000);
        let bad: Vec<usize> = r
            .iter()
            .filter_map(|x| x.as_ref().err())
            .map(|e| e.line)
            .collect();
        assert_eq!(bad.len(), 20);
        assert_eq!(bad[0], 8);
        assert_eq!(bad[19], 19_008);
    }

    #[test]
    fn unknown_kind_named() {
        let r = parse_document("k", br#"{"kind":"Pod","apiVersion":"v1"}"#);
        assert!(r[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("unsupported kind \"Pod\""));
    }
}
