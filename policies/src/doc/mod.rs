//! JSON documents as the rules read them: every value in one list of nodes, the members of
//! each object and the elements of each array side by side in two more lists, and every
//! string in one buffer.
//!
//! Parsing into a [`Doc`] fills four growing buffers per document instead of allocating a
//! `String` per key and string and a hashed map per object, which is most of what building a
//! `serde_json::Value` costs. An object's members are adjacent (key position, key length,
//! value node), so a lookup compares keys as a scan of a small `IndexMap` does, without
//! hashing and without stepping over the members' subtrees.
//!
//! A `Doc` answers what a `serde_json::Value` built from the same text answers (with
//! `preserve_order`): the same numbers, members in document order, and for a key that repeats
//! in an object the last value at the first key's place. [`Ref::to_value`] builds that
//! `Value` for readers that need one.

use std::fmt;

mod parse;
pub use parse::json_special_in;
#[cfg(test)]
mod testgen;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Number, Value as Json};

/// A parsed JSON document. Node 0 is the root; values appended with [`Doc::push_value`]
/// follow it.
#[derive(Clone, Default)]
pub struct Doc {
    nodes: Vec<Node>,
    members: Vec<Member>,
    elems: Vec<u32>,
    strs: String,
    /// Every key an object of the document has (or had: a key left out or repeated stays).
    keys: KeySet,
}

impl PartialEq for Doc {
    fn eq(&self, other: &Doc) -> bool {
        // The same values, however they were built.
        self.nodes == other.nodes
            && self.members == other.members
            && self.elems == other.elems
            && self.strs == other.strs
    }
}

/// A set of object keys that may answer "yes" for a key it does not hold but never "no"
/// for one it holds (a Bloom filter of 256 bits and one hash): what a rule needs
/// ([`crate::rules`]) is tested against what a document has in four word operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeySet([u64; 4]);

impl KeySet {
    #[inline]
    pub(crate) fn insert(&mut self, key: &str) {
        let bit = key_bit(key.as_bytes());
        if let Some(w) = self.0.get_mut(bit / 64) {
            *w |= 1 << (bit % 64);
        }
    }

    pub(crate) fn of<'k>(keys: impl IntoIterator<Item = &'k str>) -> KeySet {
        let mut set = KeySet::default();
        for k in keys {
            set.insert(k);
        }
        set
    }

    /// The keys needed by all of several conditions that must all hold.
    pub(crate) fn all_of(sets: impl IntoIterator<Item = KeySet>) -> KeySet {
        let mut out = KeySet::default();
        for set in sets {
            for (a, b) in out.0.iter_mut().zip(set.0) {
                *a |= b;
            }
        }
        out
    }

    /// The keys needed by each of several conditions one of which must hold (none when
    /// there are no conditions).
    pub(crate) fn common_to(sets: impl IntoIterator<Item = KeySet>) -> KeySet {
        let mut sets = sets.into_iter();
        let mut out = sets.next().unwrap_or_default();
        for set in sets {
            for (a, b) in out.0.iter_mut().zip(set.0) {
                *a &= b;
            }
        }
        out
    }

    /// Whether every key of `needed` may be in this set (false: one surely is not).
    #[inline]
    pub(crate) fn may_hold_all(&self, needed: &KeySet) -> bool {
        self.0
            .iter()
            .zip(&needed.0)
            .all(|(has, need)| need & !has == 0)
    }
}

/// The bit of a key: a hash of its length and its first and last eight bytes, cheap enough
/// to take for every key of every review.
#[inline]
fn key_bit(k: &[u8]) -> usize {
    let (head, tail) = match (k.first_chunk::<8>(), k.last_chunk::<8>()) {
        (Some(h), Some(t)) => (u64::from_le_bytes(*h), u64::from_le_bytes(*t)),
        // Shorter than eight bytes: gathered byte by byte (a copy of a few bytes would call
        // `memcpy`, which costs more than the hash).
        _ => (
            k.iter().rev().fold(0u64, |v, b| (v << 8) | u64::from(*b)),
            0,
        ),
    };
    let h = (head ^ tail.rotate_left(29) ^ k.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 56) as usize
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    /// `strs[at..at + len]`.
    Str {
        at: u32,
        len: u32,
    },
    /// `elems[start..start + len]`.
    Arr {
        start: u32,
        len: u32,
    },
    /// `members[start..start + len]`.
    Obj {
        start: u32,
        len: u32,
    },
}

/// An object member: its key's text (`strs[key_at..key_at + key_len]`) and value node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Member {
    key_at: u32,
    key_len: u32,
    val: u32,
}

/// The kinds of JSON values, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The kind of a `serde_json::Value`.
    pub fn of(v: &Json) -> Kind {
        match v {
            Json::Null => Kind::Null,
            Json::Bool(_) => Kind::Bool,
            Json::Number(_) => Kind::Number,
            Json::String(_) => Kind::String,
            Json::Array(_) => Kind::Array,
            Json::Object(_) => Kind::Object,
        }
    }

    /// "null", "a boolean", "a number", "a string", "an array", "an object".
    pub const fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

const TOO_LARGE: &str = "JSON document too large (more than 2^32 values, members or string bytes)";

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Doc {
    /// Parses one JSON value (trailing characters are an error), with `serde_json`'s checks
    /// and error messages.
    pub fn parse_str(text: &str) -> serde_json::Result<Doc> {
        if let Some(doc) = Doc::parse_plain(text, &[]) {
            return Ok(doc);
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let doc = Doc::read(&mut de, &[])?;
        de.end()?;
        Ok(doc)
    }

    /// Reads one value from a deserializer, leaving out the members at `skip` (paths of
    /// object keys from the root, up to 32 of them). What is left out is still read through
    /// the same code paths, so it is checked as JSON and a malformed body gets the same error.
    pub fn read<'de, D: Deserializer<'de>>(d: D, skip: &[&[&str]]) -> Result<Doc, D::Error> {
        let mut b = Builder::new();
        Build {
            b: &mut b,
            skip,
            depth: 0,
            mask: skip_mask(skip),
        }
        .deserialize(d)?;
        Ok(b.finish())
    }

    /// The document of a `serde_json::Value`.
    pub fn from_value(v: &Json) -> Doc {
        let mut doc = Spare::take().doc;
        doc.push_value(v);
        doc
    }

    /// Appends a value after what the document holds and answers its node, for
    /// [`Doc::at`]. Values appended this way are not part of the root.
    pub fn push_value(&mut self, v: &Json) -> u32 {
        let at = count(self.nodes.len());
        match v {
            Json::Null => self.nodes.push(Node::Null),
            Json::Bool(b) => self.nodes.push(Node::Bool(*b)),
            Json::Number(n) => self.nodes.push(number(n)),
            Json::String(s) => {
                let (at, len) = self.push_text(s);
                self.nodes.push(Node::Str { at, len });
            }
            Json::Array(a) => {
                self.nodes.push(Node::Null);
                let vals: Vec<u32> = a.iter().map(|x| self.push_value(x)).collect();
                let start = count(self.elems.len());
                self.elems.extend(vals);
                self.nodes[at as usize] = Node::Arr {
                    start,
                    len: count(a.len()),
                };
            }
            Json::Object(m) => {
                self.nodes.push(Node::Null);
                let members: Vec<Member> = m
                    .iter()
                    .map(|(k, x)| {
                        self.keys.insert(k);
                        let (key_at, key_len) = self.push_text(k);
                        let val = self.push_value(x);
                        Member {
                            key_at,
                            key_len,
                            val,
                        }
                    })
                    .collect();
                let start = count(self.members.len());
                self.members.extend(members);
                self.nodes[at as usize] = Node::Obj {
                    start,
                    len: count(m.len()),
                };
            }
        }
        at
    }

    /// Appends an object of values already in the document (each a node [`Doc::push_value`],
    /// [`Doc::push_string`] or [`Ref::node`] answered) and answers its node. Keys must not
    /// repeat.
    pub fn push_object(&mut self, members: &[(&str, u32)]) -> u32 {
        let node = count(self.nodes.len());
        let start = count(self.members.len());
        for (k, val) in members {
            self.keys.insert(k);
            let (key_at, key_len) = self.push_text(k);
            self.members.push(Member {
                key_at,
                key_len,
                val: *val,
            });
        }
        self.nodes.push(Node::Obj {
            start,
            len: count(members.len()),
        });
        node
    }

    /// Appends a string value and answers its node.
    pub fn push_string(&mut self, s: &str) -> u32 {
        let node = count(self.nodes.len());
        let (at, len) = self.push_text(s);
        self.nodes.push(Node::Str { at, len });
        node
    }

    /// The root value.
    #[inline]
    pub fn root(&self) -> Ref<'_> {
        self.r(0)
    }

    /// The value at a node [`Doc::push_value`] answered (or [`Ref::node`]).
    #[inline]
    pub fn at(&self, node: u32) -> Ref<'_> {
        self.r(node)
    }

    #[inline]
    fn r(&self, i: u32) -> Ref<'_> {
        Ref {
            doc: self,
            n: self.nodes.get(i as usize).unwrap_or(&NULL_NODE),
        }
    }

    #[inline]
    fn push_text(&mut self, s: &str) -> (u32, u32) {
        let at = count(self.strs.len());
        self.strs.push_str(s);
        (at, count(s.len()))
    }

    /// The keys of the document's objects (and perhaps others).
    #[inline]
    pub(crate) fn keys(&self) -> &KeySet {
        &self.keys
    }

    #[inline]
    fn text(&self, at: u32, len: u32) -> &str {
        self.strs
            .get(at as usize..at as usize + len as usize)
            .unwrap_or("")
    }

    #[inline]
    fn members_of(&self, start: u32, len: u32) -> &[Member] {
        self.members
            .get(start as usize..start as usize + len as usize)
            .unwrap_or_default()
    }

    #[inline]
    fn elems_of(&self, start: u32, len: u32) -> &[u32] {
        self.elems
            .get(start as usize..start as usize + len as usize)
            .unwrap_or_default()
    }

    fn too_large(&self) -> bool {
        [
            self.nodes.len(),
            self.members.len(),
            self.elems.len(),
            self.strs.len(),
        ]
        .iter()
        .any(|n| *n >= u32::MAX as usize)
    }
}

fn number(n: &Number) -> Node {
    if let Some(u) = n.as_u64() {
        Node::U64(u)
    } else if let Some(i) = n.as_i64() {
        Node::I64(i)
    } else {
        Node::F64(n.as_f64().unwrap_or(0.0))
    }
}

impl fmt::Debug for Doc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Doc({})", self.root())
    }
}

/// Equal bytes of equal-length keys, compared in line: the first and last bytes rule out
/// most keys before the rest is read (a call to `memcmp` costs more than a short key).
#[inline]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Two overlapping words cover keys of 4 to 16 bytes.
    if let (Some(a0), Some(b0), Some(a1), Some(b1)) = (
        a.first_chunk::<8>(),
        b.first_chunk::<8>(),
        a.last_chunk::<8>(),
        b.last_chunk::<8>(),
    ) {
        return a0 == b0 && a1 == b1 && (a.len() <= 16 || a == b);
    }
    if let (Some(a0), Some(b0), Some(a1), Some(b1)) = (
        a.first_chunk::<4>(),
        b.first_chunk::<4>(),
        a.last_chunk::<4>(),
        b.last_chunk::<4>(),
    ) {
        return a0 == b0 && a1 == b1;
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// A value in a [`Doc`], for `match`: the shape of `serde_json::Value`.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    Null,
    Bool(bool),
    Number(Ref<'a>),
    String(&'a str),
    Array(Ref<'a>),
    Object(Ref<'a>),
}

/// What a node past the end of a document reads as.
static NULL_NODE: Node = Node::Null;

/// A value in a [`Doc`].
#[derive(Clone, Copy)]
pub struct Ref<'a> {
    doc: &'a Doc,
    n: &'a Node,
}

impl<'a> Ref<'a> {
    #[inline]
    fn n(self) -> Node {
        *self.n
    }

    #[inline]
    fn with(self, at: u32) -> Ref<'a> {
        self.doc.r(at)
    }

    /// This value's node in its document.
    #[inline]
    pub fn node(self) -> u32 {
        let base = self.doc.nodes.as_ptr() as usize;
        let at = (self.n as *const Node as usize).wrapping_sub(base) / std::mem::size_of::<Node>();
        u32::try_from(at).unwrap_or(u32::MAX)
    }

    #[inline]
    pub fn kind(self) -> Kind {
        match self.n() {
            Node::Null => Kind::Null,
            Node::Bool(_) => Kind::Bool,
            Node::I64(_) | Node::U64(_) | Node::F64(_) => Kind::Number,
            Node::Str { .. } => Kind::String,
            Node::Arr { .. } => Kind::Array,
            Node::Obj { .. } => Kind::Object,
        }
    }

    /// This value, for `match`.
    #[inline]
    pub fn view(self) -> View<'a> {
        match self.n() {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(b),
            Node::I64(_) | Node::U64(_) | Node::F64(_) => View::Number(self),
            Node::Str { at, len } => View::String(self.doc.text(at, len)),
            Node::Arr { .. } => View::Array(self),
            Node::Obj { .. } => View::Object(self),
        }
    }

    /// The value at a JSON pointer (RFC 6901), as `serde_json::Value::pointer` answers.
    pub fn pointer(self, pointer: &str) -> Option<Ref<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        let mut cur = self;
        for token in rest.split('/') {
            // Most tokens escape nothing: unescaped only when they do.
            let token: std::borrow::Cow<'_, str> = if token.contains('~') {
                token.replace("~1", "/").replace("~0", "~").into()
            } else {
                token.into()
            };
            cur = match cur.n() {
                Node::Obj { .. } => cur.get(&token)?,
                Node::Arr { .. } => {
                    // As serde_json: decimal digits without a leading zero.
                    if token.is_empty()
                        || !token.bytes().all(|b| b.is_ascii_digit())
                        || (token.len() > 1 && token.starts_with('0'))
                    {
                        return None;
                    }
                    cur.index(token.parse().ok()?)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }

    #[inline]
    pub fn is_null(self) -> bool {
        matches!(self.n(), Node::Null)
    }

    #[inline]
    pub fn is_object(self) -> bool {
        matches!(self.n(), Node::Obj { .. })
    }

    #[inline]
    pub fn as_str(self) -> Option<&'a str> {
        match self.n() {
            Node::Str { at, len } => Some(self.doc.text(at, len)),
            _ => None,
        }
    }

    #[inline]
    pub fn as_bool(self) -> Option<bool> {
        match self.n() {
            Node::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_i64`: integers that fit.
    #[inline]
    pub fn as_i64(self) -> Option<i64> {
        match self.n() {
            Node::I64(i) => Some(i),
            Node::U64(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_u64`.
    #[inline]
    pub fn as_u64(self) -> Option<u64> {
        match self.n() {
            Node::U64(u) => Some(u),
            Node::I64(i) => u64::try_from(i).ok(),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_f64`: any number.
    #[allow(clippy::cast_precision_loss)]
    #[inline]
    pub fn as_f64(self) -> Option<f64> {
        match self.n() {
            Node::I64(i) => Some(i as f64),
            Node::U64(u) => Some(u as f64),
            Node::F64(f) => Some(f),
            _ => None,
        }
    }

    /// The member `k` of an object (`None` for other values).
    #[inline]
    pub fn get(self, k: &str) -> Option<Ref<'a>> {
        let Node::Obj { start, len } = self.n() else {
            return None;
        };
        let (kb, strs) = (k.as_bytes(), self.doc.strs.as_bytes());
        self.doc
            .members_of(start, len)
            .iter()
            .find(|m| {
                m.key_len as usize == kb.len()
                    && strs
                        .get(m.key_at as usize..m.key_at as usize + kb.len())
                        .is_some_and(|b| same(b, kb))
            })
            .map(|m| self.with(m.val))
    }

    /// Element `i` of an array (`None` for other values).
    #[inline]
    pub fn index(self, i: usize) -> Option<Ref<'a>> {
        let Node::Arr { start, len } = self.n() else {
            return None;
        };
        self.doc
            .elems_of(start, len)
            .get(i)
            .map(|at| self.with(*at))
    }

    /// The number of elements or members (0 for scalars).
    #[inline]
    pub fn len(self) -> usize {
        match self.n() {
            Node::Arr { len, .. } | Node::Obj { len, .. } => len as usize,
            _ => 0,
        }
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The elements of an array.
    #[inline]
    pub fn as_array(self) -> Option<Elements<'a>> {
        match self.n() {
            Node::Arr { start, len } => Some(Elements {
                doc: self.doc,
                at: self.doc.elems_of(start, len).iter(),
            }),
            _ => None,
        }
    }

    /// The members of an object, in document order.
    #[inline]
    pub fn as_object(self) -> Option<Members<'a>> {
        match self.n() {
            Node::Obj { start, len } => Some(Members {
                doc: self.doc,
                at: self.doc.members_of(start, len).iter(),
            }),
            _ => None,
        }
    }

    /// The elements of an array or the values of an object (nothing for scalars).
    #[inline]
    pub fn children(self) -> Children<'a> {
        // (One match on the node: going through `as_array` and `as_object` reads it twice
        // and measured slower on the JSONPath filters that call this for every item.)
        match self.n() {
            Node::Arr { start, len } => Children::Elements(Elements {
                doc: self.doc,
                at: self.doc.elems_of(start, len).iter(),
            }),
            Node::Obj { start, len } => Children::Values(Members {
                doc: self.doc,
                at: self.doc.members_of(start, len).iter(),
            }),
            _ => Children::None,
        }
    }

    /// The `serde_json::Value` of this value.
    pub fn to_value(self) -> Json {
        match self.n() {
            Node::Null => Json::Null,
            Node::Bool(b) => Json::Bool(b),
            Node::I64(i) => Json::from(i),
            Node::U64(u) => Json::from(u),
            Node::F64(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
            Node::Str { at, len } => Json::String(self.doc.text(at, len).to_owned()),
            Node::Arr { .. } => Json::Array(self.children().map(Ref::to_value).collect()),
            Node::Obj { len, .. } => {
                let mut m = Map::with_capacity(len as usize);
                for (k, v) in self.as_object().into_iter().flatten() {
                    m.insert(k.to_owned(), v.to_value());
                }
                Json::Object(m)
            }
        }
    }
}

/// Equality as `serde_json::Value`'s: numbers of the same kind and value, objects with the
/// same members in any order.
impl PartialEq for Ref<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.n(), other.n()) {
            (Node::Null, Node::Null) => true,
            (Node::Bool(a), Node::Bool(b)) => a == b,
            (Node::I64(a), Node::I64(b)) => a == b,
            (Node::U64(a), Node::U64(b)) => a == b,
            (Node::F64(a), Node::F64(b)) => a == b,
            (Node::Str { .. }, Node::Str { .. }) => self.as_str() == other.as_str(),
            (Node::Arr { len: a, .. }, Node::Arr { len: b, .. }) => {
                a == b && self.children().zip(other.children()).all(|(x, y)| x == y)
            }
            (Node::Obj { len: a, .. }, Node::Obj { len: b, .. }) => {
                a == b
                    && self
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| other.get(k) == Some(v))
            }
            _ => false,
        }
    }
}

impl PartialEq<Json> for Ref<'_> {
    fn eq(&self, other: &Json) -> bool {
        match (self.n(), other) {
            (Node::Null, Json::Null) => true,
            (Node::Bool(a), Json::Bool(b)) => a == *b,
            (Node::I64(_) | Node::U64(_) | Node::F64(_), Json::Number(n)) => number(n) == self.n(),
            (Node::Str { .. }, Json::String(s)) => self.as_str() == Some(s.as_str()),
            (Node::Arr { len, .. }, Json::Array(a)) => {
                len as usize == a.len() && self.children().zip(a).all(|(x, y)| x == *y)
            }
            (Node::Obj { len, .. }, Json::Object(m)) => {
                len as usize == m.len()
                    && self
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| m.get(k).is_some_and(|w| v == *w))
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Ref<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Compact JSON text, as `serde_json::Value`'s `Display`.
impl fmt::Display for Ref<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Ref<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.n() {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(b),
            Node::I64(i) => s.serialize_i64(i),
            Node::U64(u) => s.serialize_u64(u),
            Node::F64(f) => s.serialize_f64(f),
            Node::Str { at, len } => s.serialize_str(self.doc.text(at, len)),
            Node::Arr { len, .. } => {
                let mut seq = s.serialize_seq(Some(len as usize))?;
                for x in self.children() {
                    seq.serialize_element(&x)?;
                }
                seq.end()
            }
            Node::Obj { len, .. } => {
                let mut map = s.serialize_map(Some(len as usize))?;
                for (k, v) in self.as_object().into_iter().flatten() {
                    map.serialize_entry(k, &v)?;
                }
                map.end()
            }
        }
    }
}

/// The elements of an array.
#[derive(Clone)]
pub struct Elements<'a> {
    doc: &'a Doc,
    at: std::slice::Iter<'a, u32>,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Ref<'a>;

    #[inline]
    fn next(&mut self) -> Option<Ref<'a>> {
        self.at.next().map(|at| self.doc.r(*at))
    }

    fn nth(&mut self, n: usize) -> Option<Ref<'a>> {
        self.at.nth(n).map(|at| self.doc.r(*at))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.at.size_hint()
    }
}

impl ExactSizeIterator for Elements<'_> {}

/// The members of an object.
#[derive(Clone)]
pub struct Members<'a> {
    doc: &'a Doc,
    at: std::slice::Iter<'a, Member>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, Ref<'a>);

    #[inline]
    fn next(&mut self) -> Option<(&'a str, Ref<'a>)> {
        self.at
            .next()
            .map(|m| (self.doc.text(m.key_at, m.key_len), self.doc.r(m.val)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.at.size_hint()
    }
}

impl ExactSizeIterator for Members<'_> {}

/// The elements of an array or the values of an object.
#[derive(Clone)]
pub enum Children<'a> {
    Elements(Elements<'a>),
    Values(Members<'a>),
    None,
}

impl<'a> Iterator for Children<'a> {
    type Item = Ref<'a>;

    #[inline]
    fn next(&mut self) -> Option<Ref<'a>> {
        match self {
            Children::Elements(e) => e.next(),
            Children::Values(m) => m.next().map(|(_, v)| v),
            Children::None => None,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Children::Elements(e) => e.size_hint(),
            Children::Values(m) => m.size_hint(),
            Children::None => (0, Some(0)),
        }
    }
}

impl ExactSizeIterator for Children<'_> {}

impl Drop for Doc {
    fn drop(&mut self) {
        Spare::keep_doc(self);
    }
}

/// The buffers of a dropped document, kept by its thread for the next document it builds:
/// a server reads one review after another, and reusing their capacity spares growing (and
/// copying) every buffer anew for each.
#[derive(Default)]
struct Spare {
    doc: Doc,
    members: Vec<Member>,
    elems: Vec<u32>,
}

/// Buffers larger than this, all together, are freed rather than kept.
const SPARE_MAX_BYTES: usize = 1 << 20;

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = std::cell::RefCell::default();
}

impl Spare {
    /// This thread's spare buffers (empty ones when there are none).
    fn take() -> Spare {
        SPARE
            .try_with(|s| s.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)).ok())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps a document's buffers, emptied, unless this thread keeps some already or they
    /// are large.
    fn keep_doc(doc: &mut Doc) {
        let bytes = doc.nodes.capacity() * std::mem::size_of::<Node>()
            + doc.members.capacity() * std::mem::size_of::<Member>()
            + doc.elems.capacity() * 4
            + doc.strs.capacity();
        if bytes == 0 || bytes > SPARE_MAX_BYTES {
            return;
        }
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.doc.nodes.capacity() == 0 {
                    let spare = &mut s.doc;
                    std::mem::swap(&mut spare.nodes, &mut doc.nodes);
                    std::mem::swap(&mut spare.members, &mut doc.members);
                    std::mem::swap(&mut spare.elems, &mut doc.elems);
                    std::mem::swap(&mut spare.strs, &mut doc.strs);
                    spare.nodes.clear();
                    spare.members.clear();
                    spare.elems.clear();
                    spare.strs.clear();
                }
            }
        });
    }

    /// Keeps a builder's stacks of open members and elements (empty once it is done).
    fn keep_stacks(members: Vec<Member>, elems: Vec<u32>) {
        let _ = SPARE.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                if s.members.capacity() < members.capacity() {
                    s.members = members;
                    s.members.clear();
                }
                if s.elems.capacity() < elems.capacity() {
                    s.elems = elems;
                    s.elems.clear();
                }
            }
        });
    }
}

/// A document being read: the members and elements of the containers still open wait here
/// until their container closes, then move to the document side by side.
struct Builder {
    doc: Doc,
    members: Vec<Member>,
    elems: Vec<u32>,
}

impl Builder {
    /// A builder on this thread's spare buffers.
    fn new() -> Builder {
        let Spare {
            doc,
            members,
            elems,
        } = Spare::take();
        Builder {
            doc,
            members,
            elems,
        }
    }

    /// The document built; the stacks go back to this thread's spare buffers.
    fn finish(self) -> Doc {
        let Builder {
            doc,
            members,
            elems,
        } = self;
        Spare::keep_stacks(members, elems);
        doc
    }

    /// Closes the object whose members start at `base` of the open ones: each key once, at
    /// its first place with its last value (as a map built by inserting them in order).
    fn close_object(&mut self, node: u32, base: usize) {
        let open = self.members.get(base..).unwrap_or_default();
        if repeats(&self.doc.strs, open) {
            let mut kept: Vec<Member> = Vec::with_capacity(open.len());
            for m in open {
                let key = self.doc.text(m.key_at, m.key_len);
                match kept
                    .iter_mut()
                    .find(|k| self.doc.text(k.key_at, k.key_len) == key)
                {
                    Some(k) => k.val = m.val,
                    None => kept.push(*m),
                }
            }
            self.members.truncate(base);
            self.members.extend(kept);
        }
        let start = count(self.doc.members.len());
        let len = count(self.members.len() - base);
        self.doc.members.extend(self.members.drain(base..));
        self.doc.nodes[node as usize] = Node::Obj { start, len };
    }

    fn close_array(&mut self, node: u32, base: usize) {
        let start = count(self.doc.elems.len());
        let len = count(self.elems.len() - base);
        self.doc.elems.extend(self.elems.drain(base..));
        self.doc.nodes[node as usize] = Node::Arr { start, len };
    }
}

/// Whether a key repeats among `members`: without allocating for the small objects most
/// documents are made of.
fn repeats(strs: &str, members: &[Member]) -> bool {
    let key = |m: &Member| {
        strs.as_bytes()
            .get(m.key_at as usize..m.key_at as usize + m.key_len as usize)
            .unwrap_or_default()
    };
    if members.len() <= 16 {
        return members.iter().enumerate().any(|(n, a)| {
            members[..n]
                .iter()
                .any(|b| a.key_len == b.key_len && same(key(a), key(b)))
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(members.len());
    !members.iter().all(|m| seen.insert(key(m)))
}

/// The skip paths (up to 32) as a mask: those that match the keys from the root to here.
fn skip_mask(skip: &[&[&str]]) -> u32 {
    if skip.is_empty() {
        0
    } else {
        u32::MAX >> (32 - skip.len().min(32))
    }
}

/// The mask below member `key` of an object at `depth` whose skip paths are `mask`;
/// `None` when a path ends at `key`: the member is left out.
fn skip_below(skip: &[&[&str]], mask: u32, depth: usize, key: &str) -> Option<u32> {
    let mut below = 0u32;
    if mask != 0 {
        for (p, path) in skip.iter().enumerate().take(32) {
            if mask & (1 << p) != 0 && path.get(depth) == Some(&key) {
                if path.len() == depth + 1 {
                    return None;
                }
                below |= 1 << p;
            }
        }
    }
    Some(below)
}

/// Builds one value into the document. `mask`: the skip paths that match the keys from the
/// root to here (`depth` of them).
struct Build<'b, 's> {
    b: &'b mut Builder,
    skip: &'s [&'s [&'s str]],
    depth: usize,
    mask: u32,
}

impl<'de> DeserializeSeed<'de> for Build<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// An object key: its text goes to the document's strings; answers where.
struct KeySeed<'d>(&'d mut Doc);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (u32, u32);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, s: &str) -> Result<(u32, u32), E> {
        self.0.keys.insert(s);
        Ok(self.0.push_text(s))
    }
}

fn checked<E: serde::de::Error>(doc: &Doc) -> Result<(), E> {
    if doc.too_large() {
        return Err(E::custom(TOO_LARGE));
    }
    Ok(())
}

impl<'de> Visitor<'de> for Build<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.b.doc.nodes.push(Node::Bool(b));
        Ok(())
    }

    fn visit_i64<E>(self, i: i64) -> Result<(), E> {
        self.b.doc.nodes.push(Node::I64(i));
        Ok(())
    }

    fn visit_u64<E>(self, u: u64) -> Result<(), E> {
        self.b.doc.nodes.push(Node::U64(u));
        Ok(())
    }

    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        // As serde_json's `Value`: a float that is not finite is null.
        self.b.doc.nodes.push(if f.is_finite() {
            Node::F64(f)
        } else {
            Node::Null
        });
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        let (at, len) = self.b.doc.push_text(s);
        self.b.doc.nodes.push(Node::Str { at, len });
        checked(&self.b.doc)
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.b.doc.nodes.push(Node::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.b.doc.nodes.push(Node::Null);
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let node = count(self.b.doc.nodes.len());
        self.b.doc.nodes.push(Node::Null);
        let base = self.b.elems.len();
        loop {
            let val = count(self.b.doc.nodes.len());
            let more = seq.next_element_seed(Build {
                b: &mut *self.b,
                skip: self.skip,
                depth: self.depth + 1,
                mask: 0,
            })?;
            if more.is_none() {
                break;
            }
            self.b.elems.push(val);
        }
        checked(&self.b.doc)?;
        self.b.close_array(node, base);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let node = count(self.b.doc.nodes.len());
        self.b.doc.nodes.push(Node::Null);
        let base = self.b.members.len();
        while let Some((key_at, key_len)) = map.next_key_seed(KeySeed(&mut self.b.doc))? {
            let key = self.b.doc.text(key_at, key_len);
            let Some(mask) = skip_below(self.skip, self.mask, self.depth, key) else {
                map.next_value::<Discard>()?;
                continue;
            };
            let val = count(self.b.doc.nodes.len());
            map.next_value_seed(Build {
                b: &mut *self.b,
                skip: self.skip,
                depth: self.depth + 1,
                mask,
            })?;
            self.b.members.push(Member {
                key_at,
                key_len,
                val,
            });
        }
        checked(&self.b.doc)?;
        self.b.close_object(node, base);
        Ok(())
    }
}

/// A value read through the same `deserialize_any` paths as a kept one (so a malformed
/// skipped part fails with the same error) and then dropped.
pub struct Discard;

impl<'de> serde::Deserialize<'de> for Discard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Discard)
    }
}

impl<'de> Visitor<'de> for Discard {
    type Value = Discard;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_str<E>(self, _: &str) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_unit<E>(self) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Discard, A::Error> {
        while seq.next_element::<Discard>()?.is_some() {}
        Ok(Discard)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Discard, A::Error> {
        while map.next_key::<Discard>()?.is_some() {
            map.next_value::<Discard>()?;
        }
        Ok(Discard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn both(text: &str) -> (Doc, Json) {
        (
            Doc::parse_str(text).unwrap(),
            serde_json::from_str(text).unwrap(),
        )
    }

    #[test]
    fn a_document_holds_the_keys_of_all_its_objects_however_built() {
        let text = r#"{"spec": {"containers": [{"securityContext": {"windowsOptions": {"hostProcess": true}}}]}, "k\u00e9y": 1, "a": {"a": 2}}"#;
        let keys = KeySet::of([
            "spec",
            "containers",
            "securityContext",
            "windowsOptions",
            "hostProcess",
            "k\u{e9}y",
            "a",
        ]);
        let (parsed, value) = both(text);
        assert_eq!(*parsed.keys(), keys);
        assert_eq!(*Doc::from_value(&value).keys(), keys);
        // Appended objects add theirs; what is left out stays (the set may say yes to a
        // key that is not there, never no to one that is).
        let mut doc = Doc::parse_str(r#"{"x": 1}"#).unwrap();
        let one = doc.push_string("v");
        doc.push_object(&[("added", one)]);
        assert_eq!(*doc.keys(), KeySet::of(["x", "added"]));
        let mut de = serde_json::Deserializer::from_str(
            r#"{"metadata": {"managedFields": [{"manager": "m"}]}}"#,
        );
        let skipped = Doc::read(&mut de, &[&["metadata", "managedFields"]]).unwrap();
        assert!(skipped
            .keys()
            .may_hold_all(&KeySet::of(["metadata", "managedFields"])));
        assert!(!KeySet::of(["spec"]).may_hold_all(&keys));
    }

    #[test]
    fn reads_as_serde_json_value_reads() {
        let texts = [
            r#"{"a": {"b": [1, -2, 3.5, "x", null, true]}, "c": "d\"e\u00e9", "e": {}, "f": []}"#,
            r#"[{"k": 1}, [[]], {"z": {"y": {"x": [0]}}}, 18446744073709551615, -9223372036854775808]"#,
            r#""just a string""#,
            "12",
            "1.5e300",
            r#"{"dup": 1, "other": [1, 2], "dup": {"in": [3]}, "last": false}"#,
            r#"{"a": {"dup": 1, "dup": 2}, "dup": [{"x": 1, "x": 2, "y": 3}]}"#,
        ];
        for t in texts {
            let (d, v) = both(t);
            assert_eq!(d.root().to_value(), v, "{t}");
            assert!(d.root() == v, "{t}");
            assert_eq!(d.root().to_string(), v.to_string(), "{t}");
        }
    }

    #[test]
    fn keys_compare_at_every_length() {
        let words = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "abcdefghijklmnopqrstuvwxyz0123456789",
        ];
        for a in words {
            for b in words {
                assert_eq!(same(a.as_bytes(), b.as_bytes()), a == b, "{a} {b}");
            }
            // One byte changed anywhere is told apart.
            for i in 0..a.len() {
                let mut c = a.as_bytes().to_vec();
                c[i] ^= 1;
                assert!(!same(a.as_bytes(), &c), "{a} at {i}");
            }
        }
    }

    #[test]
    fn nodes_stay_small() {
        assert_eq!(std::mem::size_of::<Node>(), 16);
    }

    #[test]
    fn lookups_and_iteration() {
        let (d, v) = both(r#"{"a": {"b": [10, {"c": "x"}], "n": -3}, "s": "t", "a2": 2}"#);
        let r = d.root();
        assert_eq!(r.kind(), Kind::Object);
        assert_eq!(r.get("s").and_then(Ref::as_str), Some("t"));
        assert_eq!(r.get("a2").and_then(Ref::as_i64), Some(2));
        assert!(r.get("nope").is_none());
        let b = r.get("a").and_then(|a| a.get("b")).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.index(0).and_then(Ref::as_u64), Some(10));
        assert_eq!(
            b.index(1).and_then(|x| x.get("c")).and_then(Ref::as_str),
            Some("x")
        );
        assert!(b.index(2).is_none());
        assert_eq!(
            r.get("a").and_then(|a| a.get("n")).and_then(Ref::as_f64),
            Some(-3.0)
        );
        let keys: Vec<&str> = r.as_object().unwrap().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "s", "a2"]);
        assert_eq!(r.children().count(), 3);
        assert!(r.get("a").unwrap() == v["a"]);
        assert!(r.get("a").unwrap() != r.get("s").unwrap());
    }

    #[test]
    fn repeated_keys_keep_the_first_place_and_the_last_value() {
        let d =
            Doc::parse_str(r#"{"a": 1, "b": {"x": [1, 2]}, "a": [3, {"q": 4}], "c": 5}"#).unwrap();
        let r = d.root();
        assert_eq!(r.len(), 3);
        assert_eq!(r.to_string(), r#"{"a":[3,{"q":4}],"b":{"x":[1,2]},"c":5}"#);
        assert_eq!(
            r.get("a")
                .and_then(|a| a.index(1))
                .and_then(|x| x.get("q"))
                .and_then(Ref::as_i64),
            Some(4)
        );
        assert_eq!(r.get("c").and_then(Ref::as_i64), Some(5));
    }

    #[test]
    fn skipped_members_are_checked_and_left_out() {
        let skip: &[&[&str]] = &[&["r", "o", "m"], &["top"]];
        let text =
            r#"{"r": {"o": {"m": [1, {"deep": 2}], "n": 1}, "m": 3}, "top": {"a": 1}, "k": 0}"#;
        let mut de = serde_json::Deserializer::from_str(text);
        let d = Doc::read(&mut de, skip).unwrap();
        assert_eq!(
            d.root().to_value(),
            json!({"r": {"o": {"n": 1}, "m": 3}, "k": 0})
        );
        // A malformed skipped part fails as it would if kept.
        let bad = r#"{"r": {"o": {"m": [1, }}}"#;
        let mut de = serde_json::Deserializer::from_str(bad);
        let kept = serde_json::from_str::<Json>(bad).unwrap_err().to_string();
        assert_eq!(Doc::read(&mut de, skip).unwrap_err().to_string(), kept);
    }

    #[test]
    fn malformed_text_fails_as_serde_json_fails() {
        for bad in [
            "",
            "{",
            "[1,]",
            r#"{"a" 1}"#,
            "nul",
            "1 2",
            r#"{"a": "\x"}"#,
            "[1e]",
        ] {
            let want = serde_json::from_str::<Json>(bad).unwrap_err().to_string();
            assert_eq!(
                Doc::parse_str(bad).unwrap_err().to_string(),
                want,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn pointers_read_as_serde_json_reads_them() {
        let (d, v) = both(r#"{"a": {"b/c": [1, {"~d": 2}]}, "": 3, "e": [5, 6]}"#);
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/1/~0d",
            "/",
            "/e/0",
            "/e/01",
            "/e/2",
            "/e/-",
            "/nope",
            "a",
            "/a/b~1c/x",
            "/e/+1",
        ] {
            assert_eq!(
                d.root().pointer(p).map(Ref::to_value),
                v.pointer(p).cloned(),
                "{p}"
            );
        }
    }

    /// Random documents (nested, with repeated keys, escapes, every kind of number) read as
    /// `serde_json` reads them: the whole value, every member lookup and every pointer.
    #[test]
    fn random_documents_read_as_serde_json_reads_them() {
        let mut next = testgen::rng(0x2545_f491_4f6c_dd1d);
        fn pointers(v: &Json, at: String, out: &mut Vec<String>) {
            out.push(at.clone());
            match v {
                Json::Object(m) => {
                    for (k, x) in m {
                        let k = k.replace('~', "~0").replace('/', "~1");
                        pointers(x, format!("{at}/{k}"), out);
                    }
                }
                Json::Array(a) => {
                    for (i, x) in a.iter().enumerate() {
                        pointers(x, format!("{at}/{i}"), out);
                    }
                }
                _ => {}
            }
        }
        let mut read = 0;
        for _ in 0..2000 {
            let mut text = String::new();
            testgen::document(&mut next, 0, &mut text);
            // Numbers out of range are serde_json's errors.
            if serde_json::from_str::<Json>(&text).is_err() {
                continue;
            }
            read += 1;
            let (d, v) = both(&text);
            assert_eq!(d.root().to_value(), v, "{text}");
            assert_eq!(d.root().to_string(), v.to_string(), "{text}");
            let mut ps = Vec::new();
            pointers(&v, String::new(), &mut ps);
            ps.push("/missing".into());
            for p in ps {
                let got = d.root().pointer(&p);
                assert_eq!(
                    got.map(Ref::to_value),
                    v.pointer(&p).cloned(),
                    "{text} at {p}"
                );
                if let (Some(r), Some(Json::Object(m))) = (got, v.pointer(&p)) {
                    for k in [
                        "a",
                        "metadata",
                        "spec",
                        "k\"q",
                        "",
                        "\u{e9}/",
                        "\u{e9}t\u{e9}",
                        "containers_and_a_long_key_name",
                        "zz",
                    ] {
                        assert_eq!(
                            r.get(k).map(Ref::to_value),
                            m.get(k).cloned(),
                            "{text} {p} {k}"
                        );
                    }
                }
            }
        }
        assert!(read > 1500, "{read}");
    }

    #[test]
    fn appended_values_stand_apart_from_the_root() {
        let mut d = Doc::parse_str(r#"{"a": 1}"#).unwrap();
        let v = json!({"x": [1, "two", {"y": null}], "z": -1.5});
        let at = d.push_value(&v);
        let s = d.push_string("tail");
        let o = d.push_object(&[("v", at), ("s", s), ("a", 0)]);
        assert_eq!(
            d.at(o).to_value(),
            json!({"v": v.clone(), "s": "tail", "a": {"a": 1}})
        );
        assert_eq!(d.at(at).to_value(), v);
        assert_eq!(d.at(s).as_str(), Some("tail"));
        assert_eq!((d.at(at).node(), d.at(s).node()), (at, s));
        let x = d.at(at).get("x").unwrap();
        assert_eq!(d.at(x.node()).to_value(), json!([1, "two", {"y": null}]));
        assert_eq!(d.root().to_value(), json!({"a": 1}));
        assert_eq!(Doc::from_value(&v).root().to_value(), v);
    }
}
