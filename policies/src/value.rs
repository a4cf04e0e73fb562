//! Values that field extraction yields.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The value of one field on one event. Borrows from the event where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// The event does not carry this field (Falco's `<NA>`): every comparison is false.
    Missing,
    Str(Cow<'a, str>),
    Int(i64),
    Bool(bool),
    /// A list-valued field (e.g. `ka.user.groups`): `in` needs every element in the set,
    /// `intersects` needs one, other operators hold when one element satisfies them.
    List(Vec<Value<'a>>),
    /// A field that stands for several candidates (`proc.aname` without an index): every
    /// operator holds when one candidate satisfies it.
    AnyOf(Vec<Value<'a>>),
}

impl Value<'_> {
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }

    /// An owned copy that no longer borrows from the event.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Missing => Value::Missing,
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Int(i) => Value::Int(i),
            Value::Bool(b) => Value::Bool(b),
            Value::List(v) => Value::List(v.into_iter().map(Value::into_owned).collect()),
            Value::AnyOf(v) => Value::AnyOf(v.into_iter().map(Value::into_owned).collect()),
        }
    }

    /// The value as Falco prints it in outputs: `<NA>` for missing, lists as `(a,b)`.
    pub fn render(&self, out: &mut String) {
        match self {
            Value::Missing => out.push_str("<NA>"),
            Value::Str(s) => out.push_str(s),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::List(v) | Value::AnyOf(v) => {
                out.push('(');
                for (i, item) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.render(out);
                }
                out.push(')');
            }
        }
    }

    /// The value as a JSON value for `output_fields`: numbers stay numbers, missing is null.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Missing => serde_json::Value::Null,
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::List(_) | Value::AnyOf(_) => {
                let mut s = String::new();
                self.render(&mut s);
                serde_json::Value::String(s)
            }
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.render(&mut s);
        f.write_str(&s)
    }
}

/// Converts a JSON scalar found in an event to a field value, borrowing strings.
pub(crate) fn from_json(v: &serde_json::Value) -> Value<'_> {
    match v {
        serde_json::Value::Null => Value::Missing,
        serde_json::Value::String(s) => Value::Str(Cow::Borrowed(s)),
        serde_json::Value::Bool(b) => Value::Str(Cow::Borrowed(if *b { "true" } else { "false" })),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Str(Cow::Owned(n.to_string())),
        },
        other => Value::Str(Cow::Owned(other.to_string())),
    }
}

/// Converts a JSON value found in an event's document to a field value, as [`from_json`].
pub(crate) fn from_ref(v: crate::doc::Ref<'_>) -> Value<'_> {
    use crate::doc::View;
    match v.view() {
        View::Null => Value::Missing,
        View::String(s) => Value::Str(Cow::Borrowed(s)),
        View::Bool(b) => Value::Str(Cow::Borrowed(if b { "true" } else { "false" })),
        View::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Str(Cow::Owned(n.to_string())),
        },
        View::Array(_) | View::Object(_) => Value::Str(Cow::Owned(v.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_falco() {
        assert_eq!(Value::Missing.to_string(), "<NA>");
        let l = Value::List(vec![Value::Str("a".into()), Value::Int(3)]);
        assert_eq!(l.to_string(), "(a,3)");
        assert_eq!(Value::Int(7).to_json(), serde_json::json!(7));
        assert_eq!(Value::Missing.to_json(), serde_json::Value::Null);
    }

    #[test]
    fn json_scalars_convert() {
        assert_eq!(
            from_json(&serde_json::json!(true)),
            Value::Str("true".into())
        );
        assert_eq!(from_json(&serde_json::json!(201)), Value::Int(201));
        assert_eq!(from_json(&serde_json::json!(null)), Value::Missing);
        assert_eq!(
            from_json(&serde_json::json!({"a":1})),
            Value::Str("{\"a\":1}".into())
        );
        for v in [
            serde_json::json!(true),
            serde_json::json!(false),
            serde_json::json!(201),
            serde_json::json!(-3),
            serde_json::json!(18446744073709551615u64),
            serde_json::json!(2.5),
            serde_json::json!(null),
            serde_json::json!("s"),
            serde_json::json!({"a": [1, {"b": null}]}),
        ] {
            let d = crate::doc::Doc::from_value(&v);
            assert_eq!(from_ref(d.root()), from_json(&v), "{v}");
        }
    }
}
