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

use crate::doc::{Doc, KeySet, Ref};

/// Key lookup on a document's values and on an event's top level, for walking paths.
pub(crate) trait Get<'a> {
    fn get_key(self, k: &str) -> Option<Ref<'a>>;
}

impl<'a> Get<'a> for Ref<'a> {
    fn get_key(self, k: &str) -> Option<Ref<'a>> {
        self.get(k)
    }
}

impl<'a> Get<'a> for &'a Body {
    fn get_key(self, k: &str) -> Option<Ref<'a>> {
        self.get(k)
    }
}

/// An event's JSON: its top-level values are read as [`Ref`]s into [`Doc`]s; the whole
/// document as a `serde_json::Value` is built only for a reader that asks for it
/// ([`crate::Event::json`], `jevt.obj`, `json[...]` queries that `jsonpath_rust` answers).
pub(crate) enum Body {
    /// A whole document.
    Whole { doc: Doc, full: OnceLock<Json> },
    /// A document made of named top-level values held in one [`Doc`] (an admission
    /// review's audit-shaped view): found by comparing keys, without building a map.
    Entries {
        doc: Doc,
        entries: Vec<(&'static str, u32)>,
        full: OnceLock<Json>,
        whole: OnceLock<Doc>,
    },
    Lazy {
        text: Box<str>,
        entries: Vec<Entry>,
        full: OnceLock<Json>,
        whole: OnceLock<Doc>,
    },
}

pub(crate) struct Entry {
    key: KeyAt,
    range: Range<usize>,
    val: OnceLock<Doc>,
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

    fn doc(&self, text: &str) -> &Doc {
        self.val.get_or_init(|| parse_range(text, &self.range))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Whole { doc, .. } => f.debug_tuple("Whole").field(doc).finish(),
            Body::Entries { doc, entries, .. } => {
                let mut m = f.debug_map();
                for (k, at) in entries {
                    m.entry(k, &doc.at(*at));
                }
                m.finish()
            }
            Body::Lazy { text, .. } => f.debug_tuple("Lazy").field(text).finish(),
        }
    }
}

impl Body {
    /// The body of a `serde_json::Value`, which is kept as the whole document.
    pub fn from_value(v: Json) -> Body {
        Body::Whole {
            doc: Doc::from_value(&v),
            full: OnceLock::from(v),
        }
    }

    /// The keys of the objects below the top level (and perhaps others), when the body
    /// holds them in one document; `None` for a body read lazily, value by value. The
    /// top-level keys of [`Body::Entries`] are not in the set.
    pub(crate) fn keys(&self) -> Option<&KeySet> {
        match self {
            Body::Whole { doc, .. } | Body::Entries { doc, .. } => Some(doc.keys()),
            Body::Lazy { .. } => None,
        }
    }

    /// The body of named top-level values held in `doc`.
    pub fn entries(doc: Doc, entries: Vec<(&'static str, u32)>) -> Body {
        Body::Entries {
            doc,
            entries,
            full: OnceLock::new(),
            whole: OnceLock::new(),
        }
    }

    /// The top-level value of `key` (the last one when a key repeats, as serde_json does).
    pub fn get(&self, key: &str) -> Option<Ref<'_>> {
        match self {
            Body::Whole { doc, .. } => doc.root().get(key),
            Body::Entries { doc, entries, .. } => entries
                .iter()
                .find(|(k, _)| {
                    k.len() == key.len() && crate::doc::same(k.as_bytes(), key.as_bytes())
                })
                .map(|(_, at)| doc.at(*at)),
            Body::Lazy { text, entries, .. } => {
                let e = entries.iter().rev().find(|e| e.key(text) == key)?;
                Some(e.doc(text).root())
            }
        }
    }

    /// The whole document.
    pub fn full(&self) -> &Json {
        match self {
            Body::Whole { doc, full } => full.get_or_init(|| doc.root().to_value()),
            Body::Entries {
                doc, entries, full, ..
            } => full.get_or_init(|| {
                Json::Object(
                    entries
                        .iter()
                        .map(|(k, at)| ((*k).to_string(), doc.at(*at).to_value()))
                        .collect(),
                )
            }),
            Body::Lazy {
                text,
                entries,
                full,
                ..
            } => full.get_or_init(|| {
                let mut m = Map::new();
                for e in entries {
                    m.insert(e.key(text).to_string(), e.doc(text).root().to_value());
                }
                Json::Object(m)
            }),
        }
    }

    /// The whole document as a [`Ref`] (for queries that read from the root).
    pub fn whole(&self) -> Ref<'_> {
        match self {
            Body::Whole { doc, .. } => doc.root(),
            Body::Entries { whole, .. } | Body::Lazy { whole, .. } => {
                whole.get_or_init(|| Doc::from_value(self.full())).root()
            }
        }
    }

    /// The whole document as a [`Doc`], taken out of the body: a lazily read body's text is
    /// parsed once, straight into it.
    pub fn into_doc(self) -> Doc {
        match self {
            Body::Whole { doc, .. } => doc,
            Body::Lazy { text, .. } => parse_range(&text, &(0..text.len())),
            entries @ Body::Entries { .. } => Doc::from_value(entries.full()),
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
            whole: OnceLock::new(),
        })
    }
}

fn parse_range(text: &str, r: &Range<usize>) -> Doc {
    // The range was validated as JSON when the body was read.
    text.get(r.clone())
        .and_then(|s| Doc::parse_str(s).ok())
        .unwrap_or_else(|| Doc::from_value(&Json::Null))
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
        assert_eq!(b.get("a").map(Ref::to_value), Some(json!({"b": 3})));
        assert_eq!(b.get("k\"q").map(Ref::to_value), Some(json!("x")));
        assert!(b.get("nope").is_none());
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
