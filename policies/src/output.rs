//! Output templates: `%field` and `%field[arg]` interpolation, rendered Falco-style.

use serde_json::{Map, Value as Json};

use crate::event::Event;
use crate::fields::{self, FieldRef};

/// A compiled output template.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Field(FieldRef),
}

/// A template problem at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

impl Template {
    /// Compiles a template. `%` not followed by a field name is kept as text.
    pub fn compile(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()) {
                let start = i;
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.')
                {
                    j += 1;
                }
                // A sentence-ending dot is not part of the name.
                while j > i + 1 && b[j - 1] == b'.' {
                    j -= 1;
                }
                let name = &text[i + 1..j];
                let mut arg = None;
                if b.get(j) == Some(&b'[') {
                    let mut depth = 0usize;
                    let mut k = j;
                    let mut end = None;
                    while k < b.len() {
                        match b[k] {
                            b'[' => depth += 1,
                            b']' => {
                                depth = depth.saturating_sub(1);
                                if depth == 0 {
                                    end = Some(k);
                                    break;
                                }
                            }
                            _ => {}
                        }
                        k += 1;
                    }
                    let Some(end) = end else {
                        return Err(TemplateError {
                            offset: j,
                            message: format!("unterminated argument of %{name}: expected ']'"),
                        });
                    };
                    arg = Some(&text[j + 1..end]);
                    j = end + 1;
                }
                let f = fields::resolve(name, arg).map_err(|e| TemplateError {
                    offset: start,
                    message: format!("invalid output: {e}"),
                })?;
                if !lit.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut lit)));
                }
                parts.push(Part::Field(f));
                i = j;
            } else {
                let ch = text[i..].chars().next().unwrap_or(' ');
                lit.push(ch);
                i += ch.len_utf8();
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// The fields the template names.
    pub fn fields(&self) -> impl Iterator<Item = &FieldRef> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f),
            Part::Lit(_) => None,
        })
    }

    /// About how long a rendered output is: its literal text and a short value per field,
    /// so that rendering seldom grows the string.
    fn size_hint(&self) -> usize {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.len(),
                Part::Field(_) => 24,
            })
            .sum()
    }

    /// The rendered text alone (what [`Template::render`] returns first), without
    /// collecting the field values.
    pub fn render_text(&self, ev: &Event) -> String {
        let mut out = String::with_capacity(self.size_hint());
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => f.extract(ev).render(&mut out),
            }
        }
        out
    }

    /// The rendered text and the value of each named field (`null` when missing).
    pub fn render(&self, ev: &Event) -> (String, Map<String, Json>) {
        let mut out = String::with_capacity(self.size_hint());
        let mut fields = Map::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => {
                    let v = f.extract(ev);
                    v.render(&mut out);
                    fields.insert(f.text.clone(), v.to_json());
                }
            }
        }
        (out, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_and_keeps_text() {
        let ev = Event::from_audit_value(json!({
            "kind": "Event", "stage": "ResponseComplete", "verb": "create",
            "user": {"username": "bob"}, "responseStatus": {"code": 201},
            "requestURI": "/x?command=sh&command=-c"
        }))
        .unwrap();
        let t = Template::compile("user=%ka.user.name code=%ka.response.code ns=%ka.target.namespace cmd=%ka.uri.param[command] 100% done.").unwrap();
        let (s, f) = t.render(&ev);
        assert_eq!(s, "user=bob code=201 ns=<NA> cmd=(sh,-c) 100% done.");
        assert_eq!(t.render_text(&ev), s);
        assert_eq!(f["ka.response.code"], json!(201));
        assert_eq!(f["ka.target.namespace"], Json::Null);
        assert_eq!(f["ka.uri.param[command]"], json!("(sh,-c)"));
        let t = Template::compile("by %ka.user.name.").unwrap();
        assert_eq!(t.render(&ev).0, "by bob.");
    }

    #[test]
    fn bad_templates() {
        let e = Template::compile("x %proc.nme y").unwrap_err();
        assert_eq!(e.offset, 2);
        assert_eq!(e.message, "invalid output: unknown field \"proc.nme\"");
        assert!(Template::compile("%proc.aname[2").is_err());
    }
}
