//! The JSON body of an audit or admission event.
//!
//! Events read from documents keep their text and only the byte ranges of their top-level
//! values; a top-level value (`objectRef`, `requestObject`, ...) is parsed the first time a
//! field reads it and cached. Most rules read a few small values, so a large
//! `requestObject`/`responseObject` is parsed only for the rules that need it. The whole
//! document is built on demand for [`crate::Event::json`], `jevt.obj` and `json[...]`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::OnceLock;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};

/// Key lookup on a JSON object, for both eager and lazy bodies.
pub(crate) trait Get {
    fn get_key(&self, k: &str) -> Option<&Json>;
}

impl Get for Json {
    fn get_key(&self, k: &str) -> Option<&Json> {
        member(self, k)
    }
}

/// Objects up to this size are searched key by key: comparing a few short keys is cheaper
/// than hashing the key (Kubernetes objects are mostly small maps).
const SCAN_MAX: usize = 16;

/// The value of `k` in an object (`None` for other values), as `serde_json::Value::get`.
pub(crate) fn member<'a>(v: &'a Json, k: &str) -> Option<&'a Json> {
    match v {
        Json::Object(m) => object_get(m, k),
        _ => None,
    }
}

/// The value of `k` in a JSON object, as `serde_json::Map::get` answers, without hashing
/// `k` when the object is small (what most Kubernetes objects are).
pub fn object_get<'a>(m: &'a Map<String, Json>, k: &str) -> Option<&'a Json> {
    if m.len() > SCAN_MAX {
        return m.get(k);
    }
    let kb = k.as_bytes();
    m.iter()
        .find(|(key, _)| {
            let b = key.as_bytes();
            // Length and first byte rule out most keys before comparing the rest.
            b.len() == kb.len() && b.first() == kb.first() && b == kb
        })
        .map(|(_, v)| v)
}

pub(crate) enum Body {
    Parsed(Json),
    /// A document made of named top-level values (an admission review's audit-shaped view):
    /// found by comparing keys, without building and hashing a map.
    Entries {
        entries: Vec<(&'static str, Json)>,
        full: OnceLock<Json>,
    },
    Lazy {
        text: Box<str>,
        entries: Vec<Entry>,
        full: OnceLock<Json>,
    },
}

pub(crate) struct Entry {
    key: KeyAt,
    range: Range<usize>,
    val: OnceLock<Json>,
}

/// Where a key's text is: in the document (no escapes) or unescaped on its own.
enum KeyAt {
    Text(Range<usize>),
    Owned(Box<str>),
}

impl Entry {
    fn key<'a>(&'a self, text: &'a str) -> &'a str {
        match &self.key {
            KeyAt::Text(r) => text.get(r.clone()).unwrap_or(""),
            KeyAt::Owned(k) => k,
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Parsed(j) => f.debug_tuple("Parsed").field(j).finish(),
            Body::Entries { entries, .. } => f.debug_tuple("Entries").field(entries).finish(),
            Body::Lazy { text, .. } => f.debug_tuple("Lazy").field(text).finish(),
        }
    }
}

impl Get for Body {
    fn get_key(&self, k: &str) -> Option<&Json> {
        self.get(k)
    }
}

impl Body {
    /// The top-level value of `key` (the last one when a key repeats, as serde_json does).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Body::Parsed(j) => member(j, key),
            Body::Entries { entries, .. } => entries.iter().find(|(k, _)| *k == key).map(|e| &e.1),
            Body::Lazy { text, entries, .. } => {
                let e = entries.iter().rev().find(|e| e.key(text) == key)?;
                Some(e.val.get_or_init(|| parse_range(text, &e.range)))
            }
        }
    }

    /// The whole document.
    pub fn full(&self) -> &Json {
        match self {
            Body::Parsed(j) => j,
            Body::Entries { entries, full } => full.get_or_init(|| {
                Json::Object(
                    entries
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), v.clone()))
                        .collect(),
                )
            }),
            Body::Lazy {
                text,
                entries,
                full,
            } => full.get_or_init(|| {
                let mut m = Map::new();
                for e in entries {
                    let v = e
                        .val
                        .get()
                        .cloned()
                        .unwrap_or_else(|| parse_range(text, &e.range));
                    m.insert(e.key(text).to_string(), v);
                }
                Json::Object(m)
            }),
        }
    }

    /// The whole document, taken out of the body (no copy when it was built already).
    pub fn into_full(self) -> Json {
        match self {
            Body::Parsed(j) => j,
            Body::Entries { entries, full } => full.into_inner().unwrap_or_else(|| {
                Json::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
            Body::Lazy {
                text,
                entries,
                full,
            } => match full.into_inner() {
                Some(j) => j,
                None => {
                    let mut m = Map::new();
                    for e in entries {
                        let key = e.key(&text).to_string();
                        let v = e
                            .val
                            .into_inner()
                            .unwrap_or_else(|| parse_range(&text, &e.range));
                        m.insert(key, v);
                    }
                    Json::Object(m)
                }
            },
        }
    }

    /// Reads the top level of a JSON object without parsing its values. `Err` carries what is
    /// wrong (malformed JSON, or not an object).
    pub fn lazy(text: &str) -> Result<Body, String> {
        let base = text.as_ptr() as usize;
        let mut de = serde_json::Deserializer::from_str(text);
        let top = (&mut de)
            .deserialize_map(TopVisitor)
            .map_err(|e| format!("malformed JSON: {e}"))?;
        de.end().map_err(|e| format!("malformed JSON: {e}"))?;
        let entries = top
            .into_iter()
            .map(|(k, raw)| {
                let start = (raw.get().as_ptr() as usize).saturating_sub(base);
                let key = match k {
                    Cow::Borrowed(b) => {
                        let at = (b.as_ptr() as usize).saturating_sub(base);
                        KeyAt::Text(at..at + b.len())
                    }
                    Cow::Owned(o) => KeyAt::Owned(o.into_boxed_str()),
                };
                Entry {
                    key,
                    range: start..start + raw.get().len(),
                    val: OnceLock::new(),
                }
            })
            .collect();
        Ok(Body::Lazy {
            text: text.into(),
            entries,
            full: OnceLock::new(),
        })
    }
}

fn parse_range(text: &str, r: &Range<usize>) -> Json {
    // The range was validated as JSON when the body was read.
    text.get(r.clone())
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Json::Null)
}

struct TopVisitor;

/// A key that borrows from the text unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(16);
        while let Some(k) = map.next_key::<Key<'de>>()? {
            let v: &'de RawValue = map.next_value()?;
            out.push((k.0, v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lazy_reads_like_parsed() {
        let text = r#"{"a": {"b": [1, 2]}, "k\"q": "x", "a": {"b": 3}, "s": "t"}"#;
        let b = Body::lazy(text).unwrap();
        assert_eq!(b.get("a"), Some(&json!({"b": 3})));
        assert_eq!(b.get("k\"q"), Some(&json!("x")));
        assert_eq!(b.get("nope"), None);
        let full: Json = serde_json::from_str(text).unwrap();
        assert_eq!(b.full(), &full);
    }

    #[test]
    fn lazy_rejects_bad_json() {
        assert!(Body::lazy("[1]").unwrap_err().contains("invalid type"));
        assert!(Body::lazy("{\"a\": [1,}")
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert!(Body::lazy("{\"a\": 1} x").is_err());
    }
}
