//! Evaluation of compiled conditions against an event, with Falco's semantics: a missing
//! value makes every comparison false; list fields need every element for `in` and one for
//! `intersects` and the other operators.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::compile::{COperand, CRhs, Cmp, Expr};
use crate::condition::{Op, Transformer};
use crate::event::Event;
use crate::value::Value;

/// The values of the macros evaluated so far on one event. A macro's value depends only on
/// the event, and the rules of a set share macros (every pod security rule starts with
/// `tether_pod_spec_write`, many Falco rules with `kevt` or `spawned_process`), so one
/// evaluation of a rule set computes each macro at most once.
pub(crate) struct Memo(Vec<u8>);

const UNKNOWN: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;

impl Memo {
    /// A memo for a rule set with `macros` compiled macros.
    pub(crate) fn new(macros: u32) -> Memo {
        Memo(vec![UNKNOWN; macros as usize])
    }
}

pub(crate) fn eval(e: &Expr, ev: &Event, memo: &mut Memo) -> bool {
    match e {
        Expr::And(v) => v.iter().all(|x| eval(x, ev, memo)),
        Expr::Or(v) => v.iter().any(|x| eval(x, ev, memo)),
        Expr::Not(x) => !eval(x, ev, memo),
        Expr::Macro(m) => {
            let slot = m.id as usize;
            match memo.0.get(slot).copied() {
                Some(TRUE) => true,
                Some(FALSE) => false,
                _ => {
                    let v = eval(&m.expr, ev, memo);
                    if let Some(s) = memo.0.get_mut(slot) {
                        *s = if v { TRUE } else { FALSE };
                    }
                    v
                }
            }
        }
        Expr::Cmp(c) => cmp(c, ev),
    }
}

pub(crate) fn operand_value<'e>(o: &'e COperand, ev: &'e Event) -> Value<'e> {
    let mut v = o.field.extract(ev);
    for t in &o.transforms {
        v = transform(*t, v);
    }
    v
}

fn transform(t: Transformer, v: Value<'_>) -> Value<'_> {
    match v {
        Value::Missing => Value::Missing,
        Value::List(items) if t != Transformer::Len => {
            Value::List(items.into_iter().map(|i| transform(t, i)).collect())
        }
        Value::AnyOf(items) => Value::AnyOf(items.into_iter().map(|i| transform(t, i)).collect()),
        Value::List(items) => Value::Int(i64::try_from(items.len()).unwrap_or(i64::MAX)),
        other => {
            let s = text(&other);
            match t {
                Transformer::ToLower => Value::Str(Cow::Owned(s.to_lowercase())),
                Transformer::ToUpper => Value::Str(Cow::Owned(s.to_uppercase())),
                Transformer::Basename => {
                    Value::Str(Cow::Owned(s.rsplit('/').next().unwrap_or(&s).to_string()))
                }
                Transformer::Len => Value::Int(i64::try_from(s.len()).unwrap_or(i64::MAX)),
                Transformer::B64 => {
                    use base64::Engine as _;
                    match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                        Ok(b) => Value::Str(Cow::Owned(String::from_utf8_lossy(&b).into_owned())),
                        Err(_) => Value::Missing,
                    }
                }
            }
        }
    }
}

fn text<'a>(v: &'a Value<'_>) -> Cow<'a, str> {
    match v {
        Value::Str(s) => Cow::Borrowed(s.as_ref()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        other => Cow::Owned(other.to_string()),
    }
}

fn as_int(v: &Value<'_>) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Str(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn cmp(c: &Cmp, ev: &Event) -> bool {
    if c.op == Op::Exists && c.lhs.transforms.is_empty() {
        return c.lhs.field.present(ev);
    }
    let v = operand_value(&c.lhs, ev);
    if c.op == Op::Exists {
        return !v.is_missing();
    }
    let other = match &c.rhs {
        CRhs::Operand(o) => Some(operand_value(o, ev)),
        _ => None,
    };
    if matches!(other, Some(Value::Missing)) {
        return false;
    }
    test(&v, c, other.as_ref())
}

fn test(v: &Value<'_>, c: &Cmp, other: Option<&Value<'_>>) -> bool {
    match v {
        Value::Missing => false,
        Value::AnyOf(items) => items.iter().any(|i| test(i, c, other)),
        Value::List(items) => match c.op {
            Op::In => !items.is_empty() && items.iter().all(|i| scalar(i, c, other)),
            _ => items.iter().any(|i| scalar(i, c, other)),
        },
        _ => scalar(v, c, other),
    }
}

fn scalar(v: &Value<'_>, c: &Cmp, other: Option<&Value<'_>>) -> bool {
    if let Some(o) = other {
        return match o {
            Value::List(items) | Value::AnyOf(items) => {
                items.iter().any(|i| field_vs_field(v, c.op, i))
            }
            _ => field_vs_field(v, c.op, o),
        };
    }
    match &c.rhs {
        CRhs::None | CRhs::Operand(_) => false,
        CRhs::Int(n) => match as_int(v) {
            Some(x) => ord(c.op, x.cmp(n)),
            None => false,
        },
        CRhs::Set { strs, ints } => {
            if c.lhs.ty.is_numeric() {
                as_int(v).is_some_and(|x| ints.contains(&x))
            } else {
                strs.contains(text(v).as_ref())
            }
        }
        CRhs::Paths(paths) => {
            let s = text(v);
            paths.iter().any(|p| {
                s.as_ref() == p
                    || (s.starts_with(p.as_str()) && s.as_bytes().get(p.len()) == Some(&b'/'))
                    || p.is_empty() && s.starts_with('/')
            })
        }
        CRhs::Bytes(needle) => {
            let s = text(v);
            let h = s.as_bytes();
            match c.op {
                Op::BStartsWith => h.starts_with(needle),
                _ => h.windows(needle.len()).any(|w| w == needle.as_slice()),
            }
        }
        CRhs::Glob(g) => g.is_match(text(v).as_ref()),
        CRhs::Regex(r) => r.is_match(&text(v)),
        CRhs::Lower(needle) => contains_ignore_case(&text(v), needle),
        CRhs::Text(t) => {
            let s = text(v);
            let s = s.as_ref();
            match c.op {
                Op::Eq => s == t,
                Op::Ne => s != t,
                Op::Contains | Op::BContains => s.contains(t.as_str()),
                Op::StartsWith | Op::BStartsWith => s.starts_with(t.as_str()),
                Op::EndsWith => s.ends_with(t.as_str()),
                Op::Lt | Op::Le | Op::Gt | Op::Ge => ord(c.op, s.cmp(t.as_str())),
                _ => false,
            }
        }
    }
}

fn field_vs_field(a: &Value<'_>, op: Op, b: &Value<'_>) -> bool {
    if let (Some(x), Some(y), true) = (
        as_int(a),
        as_int(b),
        matches!(a, Value::Int(_)) || matches!(b, Value::Int(_)),
    ) {
        return ord(op, x.cmp(&y));
    }
    let (x, y) = (text(a), text(b));
    match op {
        Op::Contains | Op::BContains => x.contains(y.as_ref()),
        Op::IContains => contains_ignore_case(&x, &y.to_lowercase()),
        Op::StartsWith | Op::BStartsWith => x.starts_with(y.as_ref()),
        Op::EndsWith => x.ends_with(y.as_ref()),
        _ => ord(op, x.as_ref().cmp(y.as_ref())),
    }
}

fn ord(op: Op, o: Ordering) -> bool {
    match op {
        Op::Eq => o == Ordering::Equal,
        Op::Ne => o != Ordering::Equal,
        Op::Lt => o == Ordering::Less,
        Op::Le => o != Ordering::Greater,
        Op::Gt => o == Ordering::Greater,
        Op::Ge => o != Ordering::Less,
        _ => false,
    }
}

/// `needle` is already lower-case.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    if needle.is_ascii() && hay.is_ascii() {
        let (h, n) = (hay.as_bytes(), needle.as_bytes());
        if n.is_empty() {
            return true;
        }
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    hay.to_lowercase().contains(needle)
}
