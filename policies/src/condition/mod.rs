//! Falco's condition language: tokenizer, parser, AST.
//!
//! Grammar (EBNF). Keywords and operators are case-sensitive, as in Falco.
//!
//! ```text
//! Expr         ::= OrExpr
//! OrExpr       ::= AndExpr ( "or" AndExpr )*
//! AndExpr      ::= NotExpr ( "and" NotExpr )*
//! NotExpr      ::= "not" NotExpr | Check
//! Check        ::= "(" Expr ")"
//!                | Operand UnaryOp
//!                | Operand CmpOp RValue
//!                | Operand ListOp ListValue
//!                | Identifier                        (* a macro *)
//! Operand      ::= Field | Transformer "(" Operand ")"
//! Transformer  ::= "tolower" | "toupper" | "basename" | "len" | "b64"
//! Field        ::= FieldName ( "[" FieldArg "]" )?
//! FieldName    ::= Ident ( "." Ident )+ | "json"      (* json[$.path] *)
//! FieldArg     ::= any text with balanced brackets; quotes around it are removed
//! UnaryOp      ::= "exists"
//! CmpOp        ::= "=" | "==" | "!=" | "<" | "<=" | ">" | ">="
//!                | "contains" | "icontains" | "bcontains" | "startswith" | "bstartswith"
//!                | "endswith" | "glob" | "iglob" | "regex"
//! ListOp       ::= "in" | "intersects" | "pmatch"
//! RValue       ::= Quoted | Bare | "val" "(" Operand ")" | Transformer "(" Operand ")"
//! ListValue    ::= "(" ( ListItem ( "," ListItem )* )? ")"
//! ListItem     ::= Quoted | Bare                       (* a bare list name expands to its items *)
//! Quoted       ::= '"' ( [^"\\] | "\\" . )* '"' | "'" ( [^'\\] | "\\" . )* "'"
//! Bare         ::= [^ \t\r\n()]+                       (* in lists also without "," *)
//! Ident        ::= [A-Za-z_] [A-Za-z0-9_]*
//! ```
//!
//! The parser never panics: every malformed input becomes a [`ParseError`] with the byte
//! offset where it was found and what was expected there.

mod lexer;
mod parser;

pub use parser::parse;

use std::fmt;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Not(Box<Ast>),
    /// A macro reference.
    Macro {
        name: String,
        pos: usize,
    },
    Cmp {
        lhs: Operand,
        op: Op,
        rhs: Rhs,
        pos: usize,
    },
}

/// The left side of a comparison, or a `val()` right side.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field {
        name: String,
        arg: Option<String>,
        pos: usize,
    },
    Transform {
        func: Transformer,
        inner: Box<Operand>,
        pos: usize,
    },
}

impl Operand {
    pub fn pos(&self) -> usize {
        match self {
            Operand::Field { pos, .. } | Operand::Transform { pos, .. } => *pos,
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Field {
                name, arg: Some(a), ..
            } => write!(f, "{name}[{a}]"),
            Operand::Field { name, .. } => f.write_str(name),
            Operand::Transform { func, inner, .. } => write!(f, "{}({inner})", func.as_str()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transformer {
    ToLower,
    ToUpper,
    Basename,
    Len,
    B64,
}

impl Transformer {
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "tolower" => Transformer::ToLower,
            "toupper" => Transformer::ToUpper,
            "basename" => Transformer::Basename,
            "len" => Transformer::Len,
            "b64" => Transformer::B64,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transformer::ToLower => "tolower",
            Transformer::ToUpper => "toupper",
            Transformer::Basename => "basename",
            Transformer::Len => "len",
            Transformer::B64 => "b64",
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    IContains,
    BContains,
    StartsWith,
    BStartsWith,
    EndsWith,
    Glob,
    IGlob,
    Regex,
    In,
    Intersects,
    PMatch,
    Exists,
}

impl Op {
    pub fn from_word(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "contains" => Op::Contains,
            "icontains" => Op::IContains,
            "bcontains" => Op::BContains,
            "startswith" => Op::StartsWith,
            "bstartswith" => Op::BStartsWith,
            "endswith" => Op::EndsWith,
            "glob" => Op::Glob,
            "iglob" => Op::IGlob,
            "regex" => Op::Regex,
            "in" => Op::In,
            "intersects" => Op::Intersects,
            "pmatch" => Op::PMatch,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Contains => "contains",
            Op::IContains => "icontains",
            Op::BContains => "bcontains",
            Op::StartsWith => "startswith",
            Op::BStartsWith => "bstartswith",
            Op::EndsWith => "endswith",
            Op::Glob => "glob",
            Op::IGlob => "iglob",
            Op::Regex => "regex",
            Op::In => "in",
            Op::Intersects => "intersects",
            Op::PMatch => "pmatch",
            Op::Exists => "exists",
        }
    }

    pub fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::PMatch)
    }
}

/// The right side of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    /// `exists` has none.
    None,
    Value {
        text: String,
        quoted: bool,
        pos: usize,
    },
    List(Vec<ListItem>),
    /// `val(field)` or a transformer: compare against another field of the same event.
    Operand(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListItem {
    pub text: String,
    pub quoted: bool,
    pub pos: usize,
}

/// A syntax error at a byte offset of the condition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(offset: usize, message: String) -> Self {
        ParseError { offset, message }
    }
}
