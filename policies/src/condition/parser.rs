//! Recursive-descent parser for the grammar in the module doc.

use super::lexer::{Lexer, Tok, TokKind};
use super::{Ast, ListItem, Op, Operand, ParseError, Rhs, Transformer};

/// Deepest nesting of parentheses, `not` and transformers accepted.
const MAX_DEPTH: usize = 100;

/// Parses a condition.
pub fn parse(src: &str) -> Result<Ast, ParseError> {
    let mut p = Parser {
        lx: Lexer::new(src),
        depth: 0,
    };
    if src.trim().is_empty() {
        return Err(ParseError::at(0, "empty condition".to_string()));
    }
    let e = p.or_expr()?;
    let t = p.lx.next()?;
    match t.kind {
        TokKind::Eof => Ok(e),
        TokKind::RParen => Err(ParseError::at(
            t.start,
            "unbalanced ')': no matching '('".to_string(),
        )),
        other => Err(ParseError::at(
            t.start,
            format!(
                "unexpected {}: expected 'and', 'or' or the end of the condition",
                describe(&other)
            ),
        )),
    }
}

fn describe(k: &TokKind) -> String {
    match k {
        TokKind::LParen => "'('".into(),
        TokKind::RParen => "')'".into(),
        TokKind::Comma => "','".into(),
        TokKind::Word(w) => format!("'{w}'"),
        TokKind::Sym(s) => format!("'{s}'"),
        TokKind::Arg(a) => format!("'[{a}]'"),
        TokKind::Quoted(q) => format!("string \"{q}\""),
        TokKind::Bare(b) => format!("'{b}'"),
        TokKind::Eof => "end of condition".into(),
    }
}

struct Parser<'a> {
    lx: Lexer<'a>,
    depth: usize,
}

impl Parser<'_> {
    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::at(
                at,
                format!("condition nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn peek(&mut self) -> Result<Tok, ParseError> {
        let save = self.lx.pos;
        let t = self.lx.next();
        self.lx.pos = save;
        t
    }

    fn peek_word(&mut self, w: &str) -> bool {
        matches!(self.peek(), Ok(Tok { kind: TokKind::Word(ref x), .. }) if x == w)
    }

    fn or_expr(&mut self) -> Result<Ast, ParseError> {
        let mut items = vec![self.and_expr()?];
        while self.peek_word("or") {
            self.lx.next()?;
            items.push(self.and_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Ast::Or(Vec::new()))
        } else {
            Ast::Or(items)
        })
    }

    fn and_expr(&mut self) -> Result<Ast, ParseError> {
        let mut items = vec![self.not_expr()?];
        while self.peek_word("and") {
            self.lx.next()?;
            items.push(self.not_expr()?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Ast::And(Vec::new()))
        } else {
            Ast::And(items)
        })
    }

    fn not_expr(&mut self) -> Result<Ast, ParseError> {
        if self.peek_word("not") {
            let t = self.lx.next()?;
            self.enter(t.start)?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(Ast::Not(Box::new(inner)));
        }
        self.check()
    }

    fn check(&mut self) -> Result<Ast, ParseError> {
        let t = self.lx.next()?;
        match t.kind {
            TokKind::LParen => {
                self.enter(t.start)?;
                let e = self.or_expr()?;
                self.depth -= 1;
                let c = self.lx.next()?;
                match c.kind {
                    TokKind::RParen => Ok(e),
                    other => Err(ParseError::at(
                        c.start,
                        format!(
                            "expected ')' to close the '(' at offset {}, found {}",
                            t.start,
                            describe(&other)
                        ),
                    )),
                }
            }
            TokKind::Word(w) => {
                if matches!(w.as_str(), "and" | "or" | "not") {
                    return Err(ParseError::at(
                        t.start,
                        format!("expected a condition, found keyword '{w}'"),
                    ));
                }
                if Op::from_word(&w).is_some() {
                    return Err(ParseError::at(
                        t.start,
                        format!("expected a field, macro or '(' before operator '{w}'"),
                    ));
                }
                let operand = if let Some(func) = self.transformer_call(&w) {
                    self.transform(func, t.start)?
                } else if self.lx.peek_char() == Some('[') {
                    let a = self.lx.field_arg()?;
                    let TokKind::Arg(arg) = a.kind else {
                        return Err(ParseError::at(a.start, "expected a field argument".into()));
                    };
                    Operand::Field {
                        name: w,
                        arg: Some(arg),
                        pos: t.start,
                    }
                } else if w.contains('.') || self.next_is_operator() {
                    Operand::Field {
                        name: w,
                        arg: None,
                        pos: t.start,
                    }
                } else {
                    return Ok(Ast::Macro {
                        name: w,
                        pos: t.start,
                    });
                };
                self.condition(operand)
            }
            other => Err(ParseError::at(
                t.start,
                format!(
                    "expected a condition (a field comparison, a macro or '('), found {}",
                    describe(&other)
                ),
            )),
        }
    }

    fn next_is_operator(&mut self) -> bool {
        match self.peek() {
            Ok(Tok {
                kind: TokKind::Sym(_),
                ..
            }) => true,
            Ok(Tok {
                kind: TokKind::Word(w),
                ..
            }) => Op::from_word(&w).is_some(),
            _ => false,
        }
    }

    /// A transformer name directly followed by `(`.
    fn transformer_call(&mut self, w: &str) -> Option<Transformer> {
        let f = Transformer::from_name(w)?;
        (self.lx.peek_char() == Some('(')).then_some(f)
    }

    /// Parses `( Operand )` after a transformer name.
    fn transform(&mut self, func: Transformer, pos: usize) -> Result<Operand, ParseError> {
        self.enter(pos)?;
        let inner = self.paren_operand(func.as_str())?;
        self.depth -= 1;
        Ok(Operand::Transform {
            func,
            inner: Box::new(inner),
            pos,
        })
    }

    fn paren_operand(&mut self, what: &str) -> Result<Operand, ParseError> {
        let open = self.lx.next()?;
        if open.kind != TokKind::LParen {
            return Err(ParseError::at(
                open.start,
                format!("expected '(' after {what}, found {}", describe(&open.kind)),
            ));
        }
        let inner = self.operand()?;
        let close = self.lx.next()?;
        if close.kind != TokKind::RParen {
            return Err(ParseError::at(
                close.start,
                format!(
                    "expected ')' to close {what}(...), found {}",
                    describe(&close.kind)
                ),
            ));
        }
        Ok(inner)
    }

    /// A field, or a transformer applied to an operand.
    fn operand(&mut self) -> Result<Operand, ParseError> {
        let t = self.lx.next()?;
        match t.kind {
            TokKind::Word(w) => {
                if let Some(func) = self.transformer_call(&w) {
                    return self.transform(func, t.start);
                }
                let arg = if self.lx.peek_char() == Some('[') {
                    match self.lx.field_arg()?.kind {
                        TokKind::Arg(a) => Some(a),
                        _ => None,
                    }
                } else {
                    None
                };
                Ok(Operand::Field {
                    name: w,
                    arg,
                    pos: t.start,
                })
            }
            other => Err(ParseError::at(
                t.start,
                format!("expected a field name, found {}", describe(&other)),
            )),
        }
    }

    fn condition(&mut self, lhs: Operand) -> Result<Ast, ParseError> {
        let pos = lhs.pos();
        let t = self.lx.next()?;
        let op = match &t.kind {
            TokKind::Sym(s) => Op::from_word(s),
            TokKind::Word(w) => Op::from_word(w),
            _ => None,
        };
        let Some(op) = op else {
            return Err(ParseError::at(
                t.start,
                format!(
                    "expected an operator after '{lhs}', found {}",
                    describe(&t.kind)
                ),
            ));
        };
        let rhs = if op == Op::Exists {
            Rhs::None
        } else if op.takes_list() {
            self.list(op)?
        } else {
            self.rvalue()?
        };
        Ok(Ast::Cmp { lhs, op, rhs, pos })
    }

    fn rvalue(&mut self) -> Result<Rhs, ParseError> {
        self.lx.skip_ws();
        let save = self.lx.pos;
        if let Ok(Tok {
            kind: TokKind::Word(w),
            start,
            ..
        }) = self.lx.next()
        {
            if w == "val" && self.lx.peek_char() == Some('(') {
                self.enter(start)?;
                let o = self.paren_operand("val")?;
                self.depth -= 1;
                return Ok(Rhs::Operand(o));
            }
            if let Some(func) = self.transformer_call(&w) {
                return Ok(Rhs::Operand(self.transform(func, start)?));
            }
        }
        self.lx.pos = save;
        let t = self.lx.value()?;
        match t.kind {
            TokKind::Quoted(text) => Ok(Rhs::Value {
                text,
                quoted: true,
                pos: t.start,
            }),
            TokKind::Bare(text) => Ok(Rhs::Value {
                text,
                quoted: false,
                pos: t.start,
            }),
            other => Err(ParseError::at(
                t.start,
                format!("expected a value, found {}", describe(&other)),
            )),
        }
    }

    fn list(&mut self, op: Op) -> Result<Rhs, ParseError> {
        let open = self.lx.next()?;
        if open.kind != TokKind::LParen {
            return Err(ParseError::at(
                open.start,
                format!(
                    "expected '(' and a list after '{}', found {}",
                    op.as_str(),
                    describe(&open.kind)
                ),
            ));
        }
        let mut items = Vec::new();
        if self.lx.at(')') {
            self.lx.next()?;
            return Ok(Rhs::List(items));
        }
        loop {
            let t = self.lx.list_item()?;
            match t.kind {
                TokKind::Quoted(text) => items.push(ListItem {
                    text,
                    quoted: true,
                    pos: t.start,
                }),
                TokKind::Bare(text) => items.push(ListItem {
                    text,
                    quoted: false,
                    pos: t.start,
                }),
                other => {
                    return Err(ParseError::at(
                        t.start,
                        format!("expected a list item, found {}", describe(&other)),
                    ))
                }
            }
            let sep = self.lx.next()?;
            match sep.kind {
                TokKind::Comma => continue,
                TokKind::RParen => break,
                other => {
                    return Err(ParseError::at(
                        sep.start,
                        format!(
                            "expected ',' or ')' in the list, found {}",
                            describe(&other)
                        ),
                    ))
                }
            }
        }
        Ok(Rhs::List(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> ParseError {
        parse(src).unwrap_err()
    }

    #[test]
    fn precedence_and_shapes() {
        let a = parse("a and b or not c and d").unwrap();
        match a {
            Ast::Or(items) => {
                assert_eq!(items.len(), 2);
                assert!(matches!(&items[1], Ast::And(v) if matches!(v[0], Ast::Not(_))));
            }
            other => panic!("{other:?}"),
        }
        let a = parse("proc.aname[2]=sshd and ka.uri.param[command] in (sh, 'ba sh')").unwrap();
        let Ast::And(v) = a else { panic!() };
        assert!(
            matches!(&v[0], Ast::Cmp { lhs: Operand::Field { arg: Some(x), .. }, op: Op::Eq, .. } if x == "2")
        );
        assert!(
            matches!(&v[1], Ast::Cmp { rhs: Rhs::List(items), .. } if items.len() == 2 && items[1].text == "ba sh")
        );
        assert!(matches!(
            parse("tolower(proc.name) = val(proc.pname)").unwrap(),
            Ast::Cmp {
                lhs: Operand::Transform { .. },
                rhs: Rhs::Operand(_),
                ..
            }
        ));
        assert!(matches!(
            parse("json[$.a[0].b] exists").unwrap(),
            Ast::Cmp { op: Op::Exists, .. }
        ));
        assert!(matches!(parse("not(a)").unwrap(), Ast::Not(_)));
        assert!(
            matches!(parse("evt.type in ()").unwrap(), Ast::Cmp { rhs: Rhs::List(ref v), .. } if v.is_empty())
        );
        assert!(matches!(
            parse("len(basename(fd.name)) > 3").unwrap(),
            Ast::Cmp { op: Op::Gt, .. }
        ));
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            err("proc.name =").message,
            "expected a value, found end of condition"
        );
        assert_eq!(
            err("proc.name bash").message,
            "expected an operator after 'proc.name', found 'bash'"
        );
        assert_eq!(
            err("(a and b").message,
            "expected ')' to close the '(' at offset 0, found end of condition"
        );
        assert_eq!(err("a and b)").message, "unbalanced ')': no matching '('");
        assert_eq!(
            err("a b").message,
            "unexpected 'b': expected 'and', 'or' or the end of the condition"
        );
        assert_eq!(
            err("a and").message,
            "expected a condition (a field comparison, a macro or '('), found end of condition"
        );
        assert_eq!(
            err("proc.name in shells").message,
            "expected '(' and a list after 'in', found 'shells'"
        );
        assert_eq!(
            err("proc.name in (a b)").message,
            "expected ',' or ')' in the list, found 'b'"
        );
        assert_eq!(err("").message, "empty condition");
        assert_eq!(
            err("and x").message,
            "expected a condition, found keyword 'and'"
        );
        assert_eq!(
            err("proc.name = 'x").message,
            "unterminated string: expected a closing '"
        );
        let e = err("proc.name = bash and fd.name[x");
        assert_eq!(e.offset, 28);
        assert!(err(&"(".repeat(10_000)).message.contains("nests deeper"));
        assert!(err(&"not ".repeat(10_000)).message.contains("nests deeper"));
    }
}
