//! A direct evaluator for `json[...]` JSONPath queries.
//!
//! It walks `jsonpath_rust`'s parsed query over the event's JSON with exactly the semantics of
//! `jsonpath_rust::query::js_path_process` (same nodes, same order, the same answers for
//! missing values and mixed types), without building the normalized path string of every node
//! it visits, which is most of that function's cost. Queries that call a function (`length()`,
//! `match()`, ...) are not handled here: [`select`] answers `None` and the caller falls back to
//! `jsonpath_rust`.

use jsonpath_rust::parser::model::{
    Comparable, Comparison, Filter, FilterAtom, JpQuery, Literal, Segment, Selector, SingularQuery,
    SingularQuerySegment, Test,
};
use serde_json::Value as Json;

use crate::body::Body;
use crate::doc::{KeySet, Kind, Ref};

/// The query calls a function: left to `jsonpath_rust`.
struct Unsupported;

type R<T> = Result<T, Unsupported>;

/// A node; `item` marks the element a filter is testing (`@` itself), which `jsonpath_rust`
/// treats apart (a filter applied to it yields a boolean, not nodes).
#[derive(Clone, Copy)]
struct Node<'a> {
    v: Ref<'a>,
    item: bool,
}

#[derive(Clone)]
enum Data<'a> {
    Ref(Node<'a>),
    Refs(Vec<Node<'a>>),
    /// A filter applied to the item itself answers a boolean; no step reads which.
    Value,
    Nothing,
}

impl<'a> Data<'a> {
    fn reduce(self, other: Data<'a>) -> Data<'a> {
        match (self, other) {
            (Data::Ref(a), Data::Ref(b)) => Data::Refs(vec![a, b]),
            (Data::Ref(a), Data::Refs(mut v)) => {
                v.insert(0, a);
                Data::Refs(v)
            }
            (Data::Refs(mut v), Data::Ref(b)) => {
                v.push(b);
                Data::Refs(v)
            }
            (Data::Refs(mut v), Data::Refs(w)) => {
                v.extend(w);
                Data::Refs(v)
            }
            (d @ (Data::Ref(_) | Data::Refs(_)), Data::Nothing) => d,
            (Data::Nothing, d @ (Data::Ref(_) | Data::Refs(_))) => d,
            _ => Data::Nothing,
        }
    }

    fn flat_map<F>(self, f: F) -> R<Data<'a>>
    where
        F: Fn(Node<'a>) -> R<Data<'a>>,
    {
        Ok(match self {
            Data::Ref(n) => f(n)?,
            Data::Refs(v) => {
                let mut out = Vec::with_capacity(v.len());
                for n in v {
                    match f(n)? {
                        Data::Ref(x) => out.push(x),
                        Data::Refs(xs) => out.extend(xs),
                        _ => {}
                    }
                }
                Data::Refs(out)
            }
            _ => Data::Nothing,
        })
    }
}

/// The root of the query: the event's body, whose top-level values are read one by one and
/// whose whole document is built only for a query that names `$` inside a filter.
#[derive(Clone, Copy)]
struct Root<'a>(&'a Body);

impl<'a> Root<'a> {
    fn full(self) -> Ref<'a> {
        self.0.whole()
    }
}

/// The values `q` selects in the body, in `jsonpath_rust`'s order; `Some(Err(()))` where
/// `jsonpath_rust` answers an error (the query yields a value, not nodes), `None` when the
/// query calls a function.
pub(crate) fn select<'a>(q: &'a JpQuery, body: &'a Body) -> Option<Result<Vec<Ref<'a>>, ()>> {
    let root = Root(body);
    // `$.name...`: the first step reads one top-level value.
    let (start, rest) = match q.segments.split_first() {
        Some((Segment::Selector(Selector::Name(k)), rest)) => (
            body.get(k).map_or(Data::Nothing, |v| Data::Ref(child(v))),
            rest,
        ),
        _ => (Data::Ref(child(root.full())), q.segments.as_slice()),
    };
    match segments(rest, start, root) {
        Err(Unsupported) => None,
        Ok(Data::Ref(n)) => Some(Ok(vec![n.v])),
        Ok(Data::Refs(v)) => Some(Ok(v.into_iter().map(|n| n.v).collect())),
        Ok(Data::Value) => Some(Err(())),
        Ok(Data::Nothing) => Some(Ok(Vec::new())),
    }
}

/// Whether `q` selects some value that is not `null` in the body (what `json[q] exists`
/// tests), as [`select`] would answer, but depth first and stopping at the first such value,
/// without collecting nodes. `None` when the query calls a function or has a form left to
/// [`select`] (the descendant segment, slices).
pub(crate) fn exists(q: &JpQuery, body: &Body) -> Option<bool> {
    let root = Root(body);
    let found = match q.segments.split_first() {
        Some((Segment::Selector(Selector::Name(k)), rest)) => match body.get(k) {
            Some(v) => any(rest, v, root),
            None => Ok(false),
        },
        _ => any(&q.segments, root.full(), root),
    };
    found.ok()
}

/// Whether `segs`, applied to `v` (never the item a filter tests), select a value that is
/// not `null`.
fn any<'a>(segs: &'a [Segment], v: Ref<'a>, root: Root<'a>) -> R<bool> {
    let Some((s, rest)) = segs.split_first() else {
        return Ok(!v.is_null());
    };
    match s {
        Segment::Selector(sel) => any_selected(sel, rest, v, root),
        Segment::Selectors(sels) if !sels.is_empty() => {
            for sel in sels {
                if any_selected(sel, rest, v, root)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Segment::Selectors(_) | Segment::Descendant(_) => Err(Unsupported),
    }
}

fn any_selected<'a>(sel: &'a Selector, rest: &'a [Segment], v: Ref<'a>, root: Root<'a>) -> R<bool> {
    let each = |d: Data<'a>| -> R<bool> {
        match d {
            Data::Ref(n) => any(rest, n.v, root),
            Data::Refs(ns) => {
                for n in ns {
                    if any(rest, n.v, root)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Data::Value | Data::Nothing => Ok(false),
        }
    };
    match sel {
        Selector::Name(k) => each(key(child(v), k)),
        Selector::Index(i) => each(index(child(v), *i)),
        Selector::Wildcard => each(wildcard(child(v))),
        Selector::Slice(..) => Err(Unsupported),
        Selector::Filter(f) => any_kept(f, v.children(), rest, root),
    }
}

/// Whether some item the filter keeps leads, through `rest`, to a value that is not `null`.
fn any_kept<'a>(
    f: &'a Filter,
    items: impl Iterator<Item = Ref<'a>>,
    rest: &'a [Segment],
    root: Root<'a>,
) -> R<bool> {
    for item in items {
        if filter_item(f, item, root)? && any(rest, item, root)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Object keys below the top level that the event must have for `q` to select anything:
/// the names along its path and those its filters compare with a literal or test for.
/// Empty when that cannot be said: the query does not start with a top-level name, or
/// calls a function (answered by `jsonpath_rust`).
pub(crate) fn needed_keys(q: &JpQuery) -> KeySet {
    match q.segments.split_first() {
        Some((Segment::Selector(Selector::Name(_)), rest)) if !unusual(&q.segments) => {
            KeySet::all_of(rest.iter().map(segment_needs))
        }
        _ => KeySet::default(),
    }
}

/// Whether a query calls a function, or has an empty selector list (which selects the
/// root again), anywhere.
fn unusual(segs: &[Segment]) -> bool {
    segs.iter().any(|s| match s {
        Segment::Descendant(inner) => unusual(std::slice::from_ref(inner.as_ref())),
        Segment::Selector(sel) => selector_unusual(sel),
        Segment::Selectors(sels) => sels.is_empty() || sels.iter().any(selector_unusual),
    })
}

fn selector_unusual(sel: &Selector) -> bool {
    match sel {
        Selector::Filter(f) => filter_unusual(f),
        Selector::Name(_) | Selector::Index(_) | Selector::Wildcard | Selector::Slice(..) => false,
    }
}

fn filter_unusual(f: &Filter) -> bool {
    match f {
        Filter::Or(fs) | Filter::And(fs) => fs.iter().any(filter_unusual),
        Filter::Atom(FilterAtom::Filter { expr, .. }) => filter_unusual(expr),
        Filter::Atom(FilterAtom::Test { expr, .. }) => match expr.as_ref() {
            Test::RelQuery(segs) => unusual(segs),
            Test::AbsQuery(q) => unusual(&q.segments),
            Test::Function(_) => true,
        },
        Filter::Atom(FilterAtom::Comparison(c)) => {
            let (l, r) = c.vals();
            matches!(l, Comparable::Function(_)) || matches!(r, Comparable::Function(_))
        }
    }
}

fn segment_needs(s: &Segment) -> KeySet {
    match s {
        Segment::Selector(sel) => selector_needs(sel),
        // `..x` selects an `x` somewhere below.
        Segment::Descendant(inner) => segment_needs(inner),
        Segment::Selectors(sels) => KeySet::common_to(sels.iter().map(selector_needs)),
    }
}

fn selector_needs(sel: &Selector) -> KeySet {
    match sel {
        Selector::Name(k) => KeySet::of([k.as_str()]),
        Selector::Filter(f) => filter_needs(f),
        Selector::Index(_) | Selector::Wildcard | Selector::Slice(..) => KeySet::default(),
    }
}

/// Keys an item must have for the filter to keep it.
fn filter_needs(f: &Filter) -> KeySet {
    match f {
        Filter::And(fs) => KeySet::all_of(fs.iter().map(filter_needs)),
        Filter::Or(fs) => KeySet::common_to(fs.iter().map(filter_needs)),
        Filter::Atom(FilterAtom::Filter { expr, not: false }) => filter_needs(expr),
        // `?@.a.b`: the item has `a` with `b`.
        Filter::Atom(FilterAtom::Test { expr, not: false }) => match expr.as_ref() {
            Test::RelQuery(segs) => KeySet::of(segs.iter().filter_map(|s| match s {
                Segment::Selector(Selector::Name(k)) => Some(k.as_str()),
                _ => None,
            })),
            Test::AbsQuery(_) | Test::Function(_) => KeySet::default(),
        },
        // A value the item lacks compares false with a literal, except by `!=`.
        Filter::Atom(FilterAtom::Comparison(c)) if !matches!(c.as_ref(), Comparison::Ne(..)) => {
            match c.vals() {
                (
                    Comparable::Literal(_),
                    Comparable::SingularQuery(SingularQuery::Current(segs)),
                )
                | (
                    Comparable::SingularQuery(SingularQuery::Current(segs)),
                    Comparable::Literal(_),
                ) => KeySet::of(segs.iter().filter_map(|s| match s {
                    SingularQuerySegment::Name(k) => Some(k.as_str()),
                    SingularQuerySegment::Index(_) => None,
                })),
                _ => KeySet::default(),
            }
        }
        Filter::Atom(_) => KeySet::default(),
    }
}

/// Whether `q` may read the value at `path` (object keys from the root) or a value that
/// contains it: a node it selects, or a node a filter of it tests or compares, is on the
/// path or below it. Conservative: a function call counts as reading everything.
pub(crate) fn may_read(q: &JpQuery, path: &[&str]) -> bool {
    reads(&q.segments, Some(0), path)
}

/// `at`: how many keys of `path` lead to the current node, if it is on the path; `None`
/// once the query has left the path (only a filter's absolute query can come back).
fn reads(segs: &[Segment], at: Option<usize>, path: &[&str]) -> bool {
    if at == Some(path.len()) {
        return true;
    }
    let Some((s, rest)) = segs.split_first() else {
        // Selects the node: an ancestor of the path's end when on the path.
        return at.is_some();
    };
    match s {
        Segment::Descendant(inner) => {
            at.is_some()
                || reads(std::slice::from_ref(inner.as_ref()), None, path)
                || reads(rest, None, path)
        }
        Segment::Selector(sel) => step_reads(sel, rest, at, path),
        Segment::Selectors(sels) => sels.iter().any(|sel| step_reads(sel, rest, at, path)),
    }
}

fn step_reads(sel: &Selector, rest: &[Segment], at: Option<usize>, path: &[&str]) -> bool {
    // A child of the current node that is on the path.
    let child_at = at.map(|i| i + 1);
    match sel {
        Selector::Name(k) => reads(
            rest,
            at.filter(|i| path.get(*i) == Some(&k.as_str()))
                .map(|i| i + 1),
            path,
        ),
        // Array elements: the path is of object keys.
        Selector::Index(_) | Selector::Slice(..) => reads(rest, None, path),
        Selector::Wildcard => reads(rest, child_at, path),
        Selector::Filter(f) => filter_reads(f, child_at, path) || reads(rest, child_at, path),
    }
}

/// Whether a filter tested on an item (`item_at`: the item's place on the path, if any)
/// may read the path.
fn filter_reads(f: &Filter, item_at: Option<usize>, path: &[&str]) -> bool {
    match f {
        Filter::Or(fs) | Filter::And(fs) => fs.iter().any(|x| filter_reads(x, item_at, path)),
        Filter::Atom(FilterAtom::Filter { expr, .. }) => filter_reads(expr, item_at, path),
        Filter::Atom(FilterAtom::Test { expr, .. }) => match expr.as_ref() {
            Test::RelQuery(segs) => reads(segs, item_at, path),
            Test::AbsQuery(q) => reads(&q.segments, Some(0), path),
            Test::Function(_) => true,
        },
        Filter::Atom(FilterAtom::Comparison(c)) => {
            let (l, r) = c.vals();
            [l, r].into_iter().any(|side| match side {
                Comparable::Literal(_) => false,
                Comparable::Function(_) => true,
                Comparable::SingularQuery(SingularQuery::Current(segs)) => {
                    singular_reads(segs, item_at, path)
                }
                Comparable::SingularQuery(SingularQuery::Root(segs)) => {
                    singular_reads(segs, Some(0), path)
                }
            })
        }
    }
}

fn singular_reads(segs: &[SingularQuerySegment], mut at: Option<usize>, path: &[&str]) -> bool {
    for s in segs {
        if at == Some(path.len()) {
            return true;
        }
        at = match s {
            SingularQuerySegment::Name(k) => at
                .filter(|i| path.get(*i) == Some(&k.as_str()))
                .map(|i| i + 1),
            SingularQuerySegment::Index(_) => None,
        };
    }
    at.is_some()
}

fn segments<'a>(segs: &'a [Segment], mut d: Data<'a>, root: Root<'a>) -> R<Data<'a>> {
    for s in segs {
        d = segment(s, d, root)?;
    }
    Ok(d)
}

fn segment<'a>(s: &'a Segment, d: Data<'a>, root: Root<'a>) -> R<Data<'a>> {
    match s {
        Segment::Descendant(inner) => {
            let d = d.flat_map(|n| Ok(descendants(n)))?;
            segment(inner, d, root)
        }
        Segment::Selector(sel) => selector(sel, d, root),
        Segment::Selectors(sels) => {
            let mut acc: Option<Data<'a>> = None;
            for sel in sels {
                let r = selector(sel, d.clone(), root)?;
                acc = Some(match acc {
                    None => r,
                    Some(a) => a.reduce(r),
                });
            }
            Ok(acc.unwrap_or(Data::Ref(child(root.full()))))
        }
    }
}

fn descendants(n: Node<'_>) -> Data<'_> {
    if !matches!(n.v.kind(), Kind::Array | Kind::Object) {
        return Data::Nothing;
    }
    let children: Vec<Node<'_>> = n.v.children().map(child).collect();
    let below = Data::Refs(children)
        .flat_map(|c| Ok(descendants(c)))
        .unwrap_or(Data::Nothing);
    Data::Ref(n).reduce(below)
}

fn child(v: Ref<'_>) -> Node<'_> {
    Node { v, item: false }
}

fn key<'a>(n: Node<'a>, k: &str) -> Data<'a> {
    match n.v.get(k) {
        Some(v) => Data::Ref(child(v)),
        None => Data::Nothing,
    }
}

fn index(n: Node<'_>, idx: i64) -> Data<'_> {
    let Some(a) = n.v.as_array() else {
        return Data::Nothing;
    };
    let i = if idx >= 0 {
        match usize::try_from(idx) {
            Ok(i) if i < a.len() => i,
            _ => return Data::Nothing,
        }
    } else {
        match usize::try_from(idx.unsigned_abs()) {
            Ok(back) if back <= a.len() => a.len() - back,
            _ => return Data::Nothing,
        }
    };
    n.v.index(i).map_or(Data::Nothing, |v| Data::Ref(child(v)))
}

fn wildcard(n: Node<'_>) -> Data<'_> {
    if n.v.is_empty() {
        return Data::Nothing;
    }
    Data::Refs(n.v.children().map(child).collect())
}

fn slice(n: Node<'_>, start: Option<i64>, end: Option<i64>, step: Option<i64>) -> Data<'_> {
    let Some(a) = n.v.as_array() else {
        return Data::Nothing;
    };
    let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
    let norm = |i: i64| if i >= 0 { i } else { len.saturating_add(i) };
    let mut out = Vec::new();
    let at = |i: i64| usize::try_from(i).ok().and_then(|i| n.v.index(i));
    match step.unwrap_or(1) {
        e if e > 0 => {
            let lower = norm(start.unwrap_or(0)).max(0).min(len);
            let upper = norm(end.unwrap_or(len)).max(0).min(len);
            let mut i = lower;
            while i < upper {
                if let Some(v) = at(i) {
                    out.push(child(v));
                }
                i = i.saturating_add(e);
            }
        }
        e if e < 0 => {
            let lower = norm(end.unwrap_or((-len).saturating_sub(1)))
                .max(-1)
                .min(len - 1);
            let upper = norm(start.unwrap_or(len - 1)).max(-1).min(len - 1);
            let mut i = upper;
            while lower < i {
                if let Some(v) = at(i) {
                    out.push(child(v));
                }
                i = i.saturating_add(e);
            }
        }
        _ => {}
    }
    Data::Refs(out)
}

fn selector<'a>(s: &'a Selector, d: Data<'a>, root: Root<'a>) -> R<Data<'a>> {
    match s {
        Selector::Name(k) => d.flat_map(|n| Ok(key(n, k))),
        Selector::Index(i) => d.flat_map(|n| Ok(index(n, *i))),
        Selector::Wildcard => d.flat_map(|n| Ok(wildcard(n))),
        Selector::Slice(a, b, c) => d.flat_map(|n| Ok(slice(n, *a, *b, *c))),
        Selector::Filter(f) => d.flat_map(|n| {
            if n.item {
                filter_item(f, n.v, root)?;
                return Ok(Data::Value);
            }
            if !matches!(n.v.kind(), Kind::Array | Kind::Object) {
                return Ok(Data::Nothing);
            }
            let mut out = Vec::new();
            for v in n.v.children() {
                if filter_item(f, v, root)? {
                    out.push(child(v));
                }
            }
            Ok(Data::Refs(out))
        }),
    }
}

/// Whether the filter holds for `item` (`@`).
fn filter_item<'a>(f: &'a Filter, item: Ref<'a>, root: Root<'a>) -> R<bool> {
    match f {
        Filter::Or(fs) => {
            for x in fs {
                if filter_item(x, item, root)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Filter::And(fs) => {
            for x in fs {
                if !filter_item(x, item, root)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Filter::Atom(a) => atom(a, item, root),
    }
}

fn at_item(item: Ref<'_>) -> Data<'_> {
    Data::Ref(Node {
        v: item,
        item: true,
    })
}

fn atom<'a>(a: &'a FilterAtom, item: Ref<'a>, root: Root<'a>) -> R<bool> {
    match a {
        FilterAtom::Filter { expr, not } => Ok(filter_item(expr, item, root)? != *not),
        FilterAtom::Test { expr, not } => {
            let d = match expr.as_ref() {
                Test::RelQuery(segs) => segments(segs, at_item(item), root)?,
                Test::AbsQuery(q) => segments(&q.segments, Data::Ref(child(root.full())), root)?,
                Test::Function(_) => return Err(Unsupported),
            };
            let present = match &d {
                Data::Ref(_) => true,
                Data::Refs(v) => !v.is_empty(),
                _ => false,
            };
            Ok(present != *not)
        }
        FilterAtom::Comparison(c) => comparison(c, item, root),
    }
}

/// One side of a comparison.
enum Side<'a> {
    Node(Ref<'a>),
    Lit(&'a Literal),
    Nothing,
}

fn comparable<'a>(c: &'a Comparable, item: Ref<'a>, root: Root<'a>) -> R<Side<'a>> {
    match c {
        Comparable::Literal(l) => Ok(Side::Lit(l)),
        Comparable::Function(_) => Err(Unsupported),
        Comparable::SingularQuery(q) => {
            let (segs, mut d) = match q {
                SingularQuery::Current(s) => (s, at_item(item)),
                SingularQuery::Root(s) => (s, Data::Ref(child(root.full()))),
            };
            for s in segs {
                d = match s {
                    SingularQuerySegment::Index(i) => d.flat_map(|n| Ok(index(n, *i)))?,
                    SingularQuerySegment::Name(k) => d.flat_map(|n| Ok(key(n, k)))?,
                };
            }
            // Name and index steps from one node give one node or none.
            Ok(match d {
                Data::Ref(n) => Side::Node(n.v),
                _ => Side::Nothing,
            })
        }
    }
}

fn comparison<'a>(c: &'a Comparison, item: Ref<'a>, root: Root<'a>) -> R<bool> {
    let (l, r) = c.vals();
    let l = comparable(l, item, root)?;
    let r = comparable(r, item, root)?;
    Ok(match c {
        Comparison::Eq(..) => eq(&l, &r),
        Comparison::Ne(..) => !eq(&l, &r),
        Comparison::Gt(..) => lt(&r, &l),
        Comparison::Gte(..) => lt(&r, &l) || eq(&l, &r),
        Comparison::Lt(..) => lt(&l, &r),
        Comparison::Lte(..) => lt(&l, &r) || eq(&l, &r),
    })
}

/// The number `jsonpath_rust` reads from a side (a non-finite float literal becomes `null`).
fn num(s: &Side<'_>) -> Option<f64> {
    match s {
        Side::Node(v) => v.as_f64(),
        Side::Lit(Literal::Int(i)) => Some(*i as f64),
        Side::Lit(Literal::Float(f)) if f.is_finite() => Some(*f),
        _ => None,
    }
}

fn text<'a>(s: &Side<'a>) -> Option<&'a str> {
    match s {
        Side::Node(v) => v.as_str(),
        Side::Lit(Literal::String(t)) => Some(t),
        _ => None,
    }
}

/// A literal as the JSON value `jsonpath_rust` makes of it.
fn lit_json(l: &Literal) -> Json {
    match l {
        Literal::Int(i) => Json::from(*i),
        Literal::Float(f) => Json::from(*f),
        Literal::String(s) => Json::from(s.as_str()),
        Literal::Bool(b) => Json::Bool(*b),
        Literal::Null => Json::Null,
    }
}

fn lit_eq(v: Ref<'_>, l: &Literal) -> bool {
    match l {
        Literal::String(s) => v.as_str() == Some(s.as_str()),
        Literal::Bool(b) => v.as_bool() == Some(*b),
        Literal::Null => v.is_null(),
        Literal::Float(f) if !f.is_finite() => v.is_null(),
        // Numbers against numbers are compared as f64 before this.
        Literal::Int(_) | Literal::Float(_) => false,
    }
}

fn lt(l: &Side<'_>, r: &Side<'_>) -> bool {
    if matches!(l, Side::Nothing) || matches!(r, Side::Nothing) {
        return false;
    }
    if let (Some(x), Some(y)) = (num(l), num(r)) {
        x < y
    } else if let (Some(x), Some(y)) = (text(l), text(r)) {
        x < y
    } else {
        false
    }
}

fn eq(l: &Side<'_>, r: &Side<'_>) -> bool {
    if let (Some(x), Some(y)) = (num(l), num(r)) {
        return (x - y).abs() < f64::EPSILON;
    }
    match (l, r) {
        (Side::Nothing, Side::Nothing) => true,
        (Side::Nothing, _) | (_, Side::Nothing) => false,
        (Side::Node(a), Side::Node(b)) => a == b,
        (Side::Node(v), Side::Lit(l)) | (Side::Lit(l), Side::Node(v)) => lit_eq(*v, l),
        (Side::Lit(a), Side::Lit(b)) => lit_json(a) == lit_json(b),
    }
}
