//! A reader of JSON text straight into a [`Doc`], for the text most documents are.
//!
//! [`Doc::read`] goes through serde's visitor calls: a call per value and per key, and each
//! string copied into serde_json's scratch buffer before the document's. This reader walks
//! the bytes itself, copies each string's runs once and finds their ends eight bytes at a
//! time. It answers `None` rather than decide anything serde_json decides in a way it might
//! not repeat exactly — malformed text, numbers other than plain integers (handed to
//! serde_json's own number parser), nesting deeper than [`MAX_DEPTH`] — and the caller then
//! reads the text with [`Doc::read`], which answers the same document or serde_json's error.
//! A document this reader answers is the one [`Doc::read`] answers for the same text, key set
//! included (the tests compare both on generated and mutated documents).

use serde_json::Number;

use super::{count, number, skip_below, skip_mask, Builder, Doc, Member, Node};

/// Containers nested deeper than this are left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// Whether some byte of the eight in `w` (little-endian) is one a JSON string cannot hold
/// as it is: a control character (below 0x20), a quote or a backslash.
#[inline]
pub fn json_special_in(w: u64) -> bool {
    json_specials(w) != 0
}

/// A mask whose lowest set bit is the high bit of the first byte of `w` (little-endian)
/// that [`json_special_in`] looks for; zero when there is none. (Bits above it may be set
/// for bytes that are not special.)
#[inline]
fn json_specials(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
        | zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
}

impl Doc {
    /// Parses one JSON value (whitespace around it, nothing else), leaving out the members
    /// at `skip` as [`Doc::read`] does. `None` when the text is malformed or not one this
    /// reader takes on its own (see the module's documentation): read it with
    /// [`Doc::read`] then, for the document or the error.
    pub fn parse_plain(text: &str, skip: &[&[&str]]) -> Option<Doc> {
        // Every count of the document stays below 2^32 (see `Doc::too_large`).
        if text.len() >= (u32::MAX / 2) as usize {
            return None;
        }
        let mut p = Parser {
            text,
            s: text.as_bytes(),
            i: 0,
            b: Builder::new(),
            skip,
        };
        p.value(0, skip_mask(skip))?;
        p.ws();
        if p.i != p.s.len() {
            return None;
        }
        Some(p.b.finish())
    }
}

struct Parser<'t, 's> {
    text: &'t str,
    s: &'t [u8],
    i: usize,
    b: Builder,
    skip: &'s [&'s [&'s str]],
}

impl Parser<'_, '_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// The byte after whitespace, consumed.
    #[inline]
    fn next_token(&mut self) -> Option<u8> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// One value, its nodes appended; `depth` containers enclose it; `mask`: the skip paths
    /// that match the keys from the root to here.
    fn value(&mut self, depth: usize, mask: u32) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'{' => self.object(depth, mask),
            b'[' => self.array(depth),
            b'"' => {
                self.i += 1;
                let (at, len) = self.string()?;
                self.b.doc.nodes.push(Node::Str { at, len });
                Some(())
            }
            b't' => self.literal(b"true", Node::Bool(true)),
            b'f' => self.literal(b"false", Node::Bool(false)),
            b'n' => self.literal(b"null", Node::Null),
            b'-' | b'0'..=b'9' => {
                let n = self.number()?;
                self.b.doc.nodes.push(n);
                Some(())
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], node: Node) -> Option<()> {
        if self.s.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        self.b.doc.nodes.push(node);
        Some(())
    }

    /// A number: plain integers here, every other number by serde_json's parser.
    fn number(&mut self) -> Option<Node> {
        let start = self.i;
        let neg = self.peek() == Some(b'-');
        let digits = start + usize::from(neg);
        let mut end = digits;
        while self.s.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let plain = matches!(end - digits, 1..=18)
            && !(self.s[digits] == b'0' && end - digits > 1)
            && !matches!(self.s.get(end), Some(b'.' | b'e' | b'E'));
        if plain {
            let v = self.s[digits..end]
                .iter()
                .fold(0u64, |v, d| v * 10 + u64::from(d - b'0'));
            // Below 10^18: no overflow either way. serde_json reads `-0` as a float.
            if !neg || v != 0 {
                self.i = end;
                return Some(if neg {
                    Node::I64(-(v as i64))
                } else {
                    Node::U64(v)
                });
            }
        }
        // What can be part of a number; serde_json decides whether it is one.
        while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = self.s.get(end) {
            end += 1;
        }
        let n: Number = serde_json::from_str(self.text.get(start..end)?).ok()?;
        self.i = end;
        Some(number(&n))
    }

    /// The rest of a string whose opening quote is read: its text appended to the
    /// document's strings, answered as (position, length).
    fn string(&mut self) -> Option<(u32, u32)> {
        let at = self.b.doc.strs.len();
        let mut run = self.i;
        loop {
            // Eight bytes at a time to the next byte that needs a look.
            while let Some(chunk) = self.s.get(self.i..self.i + 8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                let found = json_specials(u64::from_le_bytes(w));
                if found != 0 {
                    self.i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.i += 8;
            }
            let c = *self.s.get(self.i)?;
            match c {
                b'"' => {
                    self.b.doc.strs.push_str(self.text.get(run..self.i)?);
                    self.i += 1;
                    return Some((count(at), count(self.b.doc.strs.len() - at)));
                }
                b'\\' => {
                    self.b.doc.strs.push_str(self.text.get(run..self.i)?);
                    self.i += 1;
                    let ch = self.escape()?;
                    self.b.doc.strs.push(ch);
                    run = self.i;
                }
                // A control character: serde_json's error.
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// The character of an escape whose backslash is read.
    fn escape(&mut self) -> Option<char> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        Some(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDBFF => {
                        // A surrogate pair; a lone surrogate is serde_json's error.
                        if self.s.get(self.i..self.i + 2)? != b"\\u" {
                            return None;
                        }
                        self.i += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return None;
                        }
                        char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                    }
                    0xDC00..=0xDFFF => return None,
                    _ => char::from_u32(hi)?,
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.s.get(self.i..self.i + 4)?;
        let mut v = 0;
        for d in digits {
            v = v * 16 + char::from(*d).to_digit(16)?;
        }
        self.i += 4;
        Some(v)
    }

    /// Reads a container's opening bracket and appends its node, to be filled when it
    /// closes; answers the node and whether the container is empty (its closing bracket
    /// read too).
    fn open(&mut self, depth: usize, close: u8) -> Option<(u32, bool)> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        let node = count(self.b.doc.nodes.len());
        self.b.doc.nodes.push(Node::Null);
        self.ws();
        let empty = self.peek()? == close;
        if empty {
            self.i += 1;
        }
        Some((node, empty))
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        let (node, empty) = self.open(depth, b']')?;
        let base = self.b.elems.len();
        if !empty {
            loop {
                let val = count(self.b.doc.nodes.len());
                self.value(depth + 1, 0)?;
                self.b.elems.push(val);
                match self.next_token()? {
                    b',' => continue,
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.b.close_array(node, base);
        Some(())
    }

    fn object(&mut self, depth: usize, mask: u32) -> Option<()> {
        let (node, empty) = self.open(depth, b'}')?;
        let base = self.b.members.len();
        if empty {
            self.b.close_object(node, base);
            return Some(());
        }
        loop {
            if self.next_token()? != b'"' {
                return None;
            }
            let (key_at, key_len) = self.string()?;
            let doc = &mut self.b.doc;
            let key = doc
                .strs
                .get(key_at as usize..(key_at + key_len) as usize)
                .unwrap_or_default();
            doc.keys.insert(key);
            let below = skip_below(self.skip, mask, depth, key);
            if self.next_token()? != b':' {
                return None;
            }
            match below {
                None => self.discard(depth + 1)?,
                Some(sub) => {
                    let val = count(self.b.doc.nodes.len());
                    self.value(depth + 1, sub)?;
                    self.b.members.push(Member {
                        key_at,
                        key_len,
                        val,
                    });
                }
            }
            match self.next_token()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        self.b.close_object(node, base);
        Some(())
    }

    /// Reads a value (checked as a kept one is) and leaves no trace of it: what it appended
    /// is cut off again, the key set as it was.
    fn discard(&mut self, depth: usize) -> Option<()> {
        let doc = &self.b.doc;
        let marks = (
            doc.nodes.len(),
            doc.members.len(),
            doc.elems.len(),
            doc.strs.len(),
            doc.keys,
        );
        self.value(depth, 0)?;
        let (nodes, members, elems, strs, keys) = marks;
        let doc = &mut self.b.doc;
        doc.nodes.truncate(nodes);
        doc.members.truncate(members);
        doc.elems.truncate(elems);
        doc.strs.truncate(strs);
        doc.keys = keys;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::testgen::{document, rng};

    /// What [`Doc::read`] answers for `text`: the document, or that it is an error.
    fn read(text: &str, skip: &[&[&str]]) -> Option<Doc> {
        let mut de = serde_json::Deserializer::from_str(text);
        let doc = Doc::read(&mut de, skip).ok()?;
        de.end().ok()?;
        Some(doc)
    }

    /// A document this reader answers is the one `Doc::read` answers, key set included;
    /// answers whether it answered one.
    fn agrees(text: &str, skip: &[&[&str]]) -> bool {
        match Doc::parse_plain(text, skip) {
            Some(doc) => {
                let other = read(text, skip)
                    .unwrap_or_else(|| panic!("taken here, an error for serde_json: {text:?}"));
                assert_eq!(doc, other, "{text:?}");
                assert_eq!(doc.keys(), other.keys(), "{text:?}");
                true
            }
            None => false,
        }
    }

    const SKIP: &[&[&str]] = &[&["metadata", "managedFields"], &["a"], &["spec", "a", "a"]];

    /// Generated documents: every one serde_json reads is read here too (bar the numbers
    /// out of range, which are errors), alike; then each mutated (a byte dropped, changed
    /// or added, the text cut short), where whatever this reader answers, serde_json
    /// answers the same.
    #[test]
    fn generated_and_mutated_documents_read_as_doc_read_reads_them() {
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        let (mut taken, mut mutated_taken) = (0, 0);
        for round in 0..3000 {
            let mut text = String::new();
            document(&mut next, 0, &mut text);
            let skip: &[&[&str]] = if round % 2 == 0 { &[] } else { SKIP };
            let valid = read(&text, skip).is_some();
            assert_eq!(agrees(&text, skip), valid, "{text:?}");
            taken += usize::from(valid);
            for _ in 0..8 {
                let mut bytes = text.clone().into_bytes();
                let at = next(bytes.len() as u64 + 1) as usize;
                const BYTES: &[u8] = b"{}[]\",:\\ -+.0123456789eEtrufalsn\x01\x1fu";
                match next(4) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 if at < bytes.len() => bytes[at] = BYTES[next(BYTES.len() as u64) as usize],
                    2 => bytes.insert(at, BYTES[next(BYTES.len() as u64) as usize]),
                    _ => bytes.truncate(at),
                }
                if let Ok(m) = String::from_utf8(bytes) {
                    mutated_taken += usize::from(agrees(&m, skip));
                }
            }
        }
        assert!(taken > 2000, "{taken}");
        assert!(mutated_taken > 1000, "{mutated_taken}");
    }

    #[test]
    fn edges_read_as_doc_read_reads_them() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        for (text, taken) in [
            ("{}", true),
            ("[]", true),
            (" [ ] ", true),
            ("{\"a\":1,\"a\":{\"b\":2},\"c\":[3],\"a\":4}", true),
            ("\"\\ud83d\"", false),
            ("\"\\ude00\"", false),
            ("\"\\ud83d\\u0041\"", false),
            ("\"\\x\"", false),
            ("\"\\u12g4\"", false),
            ("\"a\u{1}\"", false),
            ("[1,]", false),
            ("{\"a\":1,}", false),
            ("{\"a\" 1}", false),
            ("{1:2}", false),
            ("01", false),
            ("1.", false),
            ("-", false),
            ("+1", false),
            ("[1-2]", false),
            ("tru", false),
            ("nulls", false),
            ("1 2", false),
            ("", false),
            ("   ", false),
            ("\"unterminated", false),
            ("{\"a\":", false),
        ] {
            assert_eq!(agrees(text, &[]), taken, "{text:?}");
            assert_eq!(read(text, &[]).is_some(), taken, "{text:?}");
        }
        // Deep nesting is left to serde_json (valid up to its limit of 128).
        assert!(agrees(&deep(MAX_DEPTH), &[]));
        assert!(!agrees(&deep(MAX_DEPTH + 1), &[]));
        assert!(read(&deep(MAX_DEPTH + 1), &[]).is_some());
        // Floats are serde_json's own, including its `-0`.
        let doc = Doc::parse_plain("[-0, 1.5, 1e2]", &[]).unwrap();
        assert_eq!(doc.root().to_string(), "[-0.0,1.5,100.0]");
    }

    /// Every JSON document and JSON line of the fixtures (audit events, admission reviews,
    /// Kubernetes objects) is read here, as `Doc::read` reads it, whole and without
    /// `metadata.managedFields`.
    #[test]
    fn fixture_documents_read_as_doc_read_reads_them() {
        let fixtures = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures"
        ));
        let mut stack = vec![fixtures];
        let mut docs = 0;
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.to_string_lossy().to_string();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !(name.ends_with(".json") || name.ends_with(".jsonl")) {
                    continue;
                }
                let whole = std::fs::read_to_string(&path).unwrap();
                // Some `.json` files of Falco's are JSON lines too.
                let texts: Vec<&str> = if read(&whole, &[]).is_some() {
                    vec![&whole]
                } else {
                    whole.lines().filter(|l| !l.trim().is_empty()).collect()
                };
                for text in texts {
                    for skip in [
                        &[][..],
                        &[&["request", "object", "metadata", "managedFields"][..]],
                    ] {
                        assert!(agrees(text, skip), "{name}");
                    }
                    docs += 1;
                }
            }
        }
        assert!(docs > 50, "{docs}");
    }
}
