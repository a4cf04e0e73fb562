//! The tokenizer of the condition language. It is driven by the parser, which asks for the
//! token class the grammar expects at each point (a value after an operator is lexed
//! differently from a field name), as Falco's own scanner does.

use super::ParseError;

/// One token with its byte span in the condition text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tok {
    pub kind: TokKind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokKind {
    LParen,
    RParen,
    Comma,
    /// A word: keyword, field name, macro/list name or transformer.
    Word(String),
    /// A comparison operator made of symbols (`=`, `==`, `!=`, `<`, `<=`, `>`, `>=`).
    Sym(&'static str),
    /// A field argument between brackets, without the brackets.
    Arg(String),
    /// A quoted string, unescaped.
    Quoted(String),
    /// A bare value (after an operator or inside a list).
    Bare(String),
    Eof,
}

pub(crate) struct Lexer<'a> {
    pub src: &'a str,
    pub pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    pub fn skip_ws(&mut self) {
        let n = self
            .rest()
            .char_indices()
            .find(|(_, c)| !c.is_whitespace())
            .map_or(self.rest().len(), |(i, _)| i);
        self.pos += n;
    }

    pub fn peek_char(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Whether the next non-blank text starts with `c`.
    pub fn at(&mut self, c: char) -> bool {
        self.skip_ws();
        self.peek_char() == Some(c)
    }

    /// Lexes a structural token: parenthesis, comma, symbolic operator or word.
    pub fn next(&mut self) -> Result<Tok, ParseError> {
        self.skip_ws();
        let start = self.pos;
        let Some(c) = self.peek_char() else {
            return Ok(Tok {
                kind: TokKind::Eof,
                start,
                end: start,
            });
        };
        let one = |l: &mut Lexer<'_>, kind: TokKind, n: usize| {
            l.pos += n;
            Ok(Tok {
                kind,
                start,
                end: start + n,
            })
        };
        match c {
            '(' => one(self, TokKind::LParen, 1),
            ')' => one(self, TokKind::RParen, 1),
            ',' => one(self, TokKind::Comma, 1),
            '=' if self.rest().starts_with("==") => one(self, TokKind::Sym("=="), 2),
            '=' => one(self, TokKind::Sym("="), 1),
            '!' if self.rest().starts_with("!=") => one(self, TokKind::Sym("!="), 2),
            '<' if self.rest().starts_with("<=") => one(self, TokKind::Sym("<="), 2),
            '<' => one(self, TokKind::Sym("<"), 1),
            '>' if self.rest().starts_with(">=") => one(self, TokKind::Sym(">="), 2),
            '>' => one(self, TokKind::Sym(">"), 1),
            c if c.is_ascii_alphabetic() || c == '_' => {
                let n = self
                    .rest()
                    .char_indices()
                    .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.')))
                    .map_or(self.rest().len(), |(i, _)| i);
                let w = self.rest()[..n].trim_end_matches('.').to_string();
                let n = w.len();
                one(self, TokKind::Word(w), n)
            }
            '"' | '\'' => self.quoted(),
            other => Err(ParseError::at(
                start,
                format!("unexpected character '{other}'"),
            )),
        }
    }

    /// Lexes a bracketed field argument; the cursor is on `[`. Nested brackets and quotes
    /// inside the argument are kept (JSONPath uses both).
    pub fn field_arg(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        for (i, c) in self.rest().char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') if depth > 0 && i > 0 => quote = Some(c),
                (None, '[') => depth += 1,
                (None, ']') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        let inner = &self.src[start + 1..start + i];
                        self.pos = start + i + 1;
                        let inner = strip_quotes(inner);
                        return Ok(Tok {
                            kind: TokKind::Arg(inner),
                            start,
                            end: self.pos,
                        });
                    }
                }
                _ => {}
            }
        }
        Err(ParseError::at(
            start,
            "unterminated field argument: expected ']'".to_string(),
        ))
    }

    /// Lexes a value after a comparison operator: a quoted string or a bare string that runs
    /// to the next blank or parenthesis.
    pub fn value(&mut self) -> Result<Tok, ParseError> {
        self.skip_ws();
        match self.peek_char() {
            Some('"' | '\'') => self.quoted(),
            _ => self.bare(&[]),
        }
    }

    /// Lexes a list item: a quoted string or a bare string up to a blank, `,` or `)`.
    pub fn list_item(&mut self) -> Result<Tok, ParseError> {
        self.skip_ws();
        match self.peek_char() {
            Some('"' | '\'') => self.quoted(),
            _ => self.bare(&[',']),
        }
    }

    fn bare(&mut self, extra_stops: &[char]) -> Result<Tok, ParseError> {
        let start = self.pos;
        let n = self
            .rest()
            .char_indices()
            .find(|(_, c)| c.is_whitespace() || matches!(c, '(' | ')') || extra_stops.contains(c))
            .map_or(self.rest().len(), |(i, _)| i);
        if n == 0 {
            let what = match self.peek_char() {
                None => "end of condition".to_string(),
                Some(c) => format!("'{c}'"),
            };
            return Err(ParseError::at(
                start,
                format!("expected a value, found {what}"),
            ));
        }
        let v = self.rest()[..n].to_string();
        self.pos += n;
        Ok(Tok {
            kind: TokKind::Bare(v),
            start,
            end: self.pos,
        })
    }

    fn quoted(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut chars = self.rest().char_indices();
        let Some((_, q)) = chars.next() else {
            return Err(ParseError::at(
                start,
                "expected a quoted string".to_string(),
            ));
        };
        let mut out = String::new();
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                match c {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' | '"' | '\'' => out.push(c),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                self.pos = start + i + c.len_utf8();
                return Ok(Tok {
                    kind: TokKind::Quoted(out),
                    start,
                    end: self.pos,
                });
            } else {
                out.push(c);
            }
        }
        Err(ParseError::at(
            start,
            format!("unterminated string: expected a closing {q}"),
        ))
    }
}

fn strip_quotes(s: &str) -> String {
    let t = s.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return t[1..t.len() - 1].to_string();
        }
    }
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_symbols_and_values() {
        let mut l = Lexer::new("proc.name!= 'a b' (x, \"y\\\"z\")");
        assert_eq!(l.next().unwrap().kind, TokKind::Word("proc.name".into()));
        assert_eq!(l.next().unwrap().kind, TokKind::Sym("!="));
        assert_eq!(l.value().unwrap().kind, TokKind::Quoted("a b".into()));
        assert_eq!(l.next().unwrap().kind, TokKind::LParen);
        assert_eq!(l.list_item().unwrap().kind, TokKind::Bare("x".into()));
        assert_eq!(l.next().unwrap().kind, TokKind::Comma);
        assert_eq!(l.list_item().unwrap().kind, TokKind::Quoted("y\"z".into()));
        assert_eq!(l.next().unwrap().kind, TokKind::RParen);
        assert_eq!(l.next().unwrap().kind, TokKind::Eof);
    }

    #[test]
    fn field_arguments_nest() {
        let mut l = Lexer::new("[$.spec.containers[?(@.name == ']')].image] rest");
        assert_eq!(
            l.field_arg().unwrap().kind,
            TokKind::Arg("$.spec.containers[?(@.name == ']')].image".into())
        );
        let mut l = Lexer::new("[unterminated");
        assert!(l.field_arg().is_err());
    }

    #[test]
    fn errors() {
        assert!(Lexer::new("'open").next().is_err());
        assert!(Lexer::new("#").next().is_err());
        assert!(Lexer::new("").value().is_err());
    }
}
