//! Compilation: condition ASTs become [`Expr`] trees with fields resolved to ids, lists to
//! hash sets, regexes and globs compiled, and macros expanded once (a macro compiles to one
//! shared `Arc<Expr>` that every rule using it points to).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;

use super::loader::{CondText, ExcItem, ExcValue, ExceptionDef, Loaded};
use super::types::{ItemRef, LoadError};
use super::yaml::Mark;
use crate::condition::{self, Ast, ListItem, Op, Operand, Rhs, Transformer};
use crate::doc::KeySet;
use crate::fields::{self, FieldError, FieldId, FieldRef, FieldType};

/// A compiled condition.
#[derive(Debug)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Macro(Arc<MacroExpr>),
    Cmp(Box<Cmp>),
}

/// A compiled macro, shared by every condition that uses it. Its value depends only on the
/// event, so one evaluation of a rule set computes it once (see [`super::eval::Memo`]).
#[derive(Debug)]
pub(crate) struct MacroExpr {
    /// Index of the macro's slot in an evaluation's memo, below [`Compiler::macro_count`].
    pub id: u32,
    pub expr: Expr,
}

#[derive(Debug)]
pub(crate) struct COperand {
    pub field: FieldRef,
    /// Applied innermost first.
    pub transforms: Vec<Transformer>,
    pub ty: FieldType,
}

#[derive(Debug)]
pub(crate) struct Cmp {
    pub lhs: COperand,
    pub op: Op,
    pub rhs: CRhs,
}

#[derive(Debug)]
pub(crate) enum CRhs {
    None,
    Text(String),
    /// Lower-cased, for `icontains`.
    Lower(String),
    Int(i64),
    Glob(GlobMatcher),
    Regex(Regex),
    Set {
        strs: StrSet,
        ints: HashSet<i64>,
    },
    /// Path prefixes for `pmatch`.
    Paths(Vec<String>),
    /// Bytes for `bcontains` / `bstartswith` (written as hex in the rule).
    Bytes(Vec<u8>),
    Operand(COperand),
}

/// A compile error at a byte offset of the condition text; `message: None` means the
/// problem (in a macro) was already reported where it is.
#[derive(Debug)]
pub(crate) struct CErr {
    pub pos: usize,
    pub message: Option<String>,
    pub unknown_field: bool,
}

impl CErr {
    fn at(pos: usize, m: impl Into<String>) -> Self {
        CErr {
            pos,
            message: Some(m.into()),
            unknown_field: false,
        }
    }
}

/// How deep macros may reference macros, and lists contain lists (Falco's files use < 10).
const MAX_NEST: usize = 32;

pub(crate) struct Compiler<'a> {
    pub loaded: &'a Loaded,
    lists: HashMap<String, Option<Vec<String>>>,
    macros: HashMap<String, Option<Arc<MacroExpr>>>,
    macro_count: u32,
    macro_stack: Vec<String>,
    list_depth: usize,
    pub errors: Vec<LoadError>,
    pub used_lists: HashSet<String>,
    pub used_macros: HashSet<String>,
}

impl<'a> Compiler<'a> {
    pub fn new(loaded: &'a Loaded) -> Self {
        Compiler {
            loaded,
            lists: HashMap::new(),
            macros: HashMap::new(),
            macro_count: 0,
            macro_stack: Vec::new(),
            list_depth: 0,
            errors: Vec::new(),
            used_lists: HashSet::new(),
            used_macros: HashSet::new(),
        }
    }

    pub fn error_at(
        &mut self,
        file: usize,
        line: usize,
        col: usize,
        item: Option<ItemRef>,
        message: String,
    ) {
        let name = self
            .loaded
            .files
            .get(file)
            .map_or_else(String::new, |f| f.name.clone());
        self.errors.push(LoadError {
            file: name,
            line,
            col,
            item,
            message,
        });
    }

    /// Reports an error at an offset of a condition text.
    pub fn cond_error(&mut self, cond: &CondText, pos: usize, item: ItemRef, message: String) {
        let (f, l, c) = cond.locate(&self.loaded.files, pos);
        self.error_at(f, l, c, Some(item), message);
    }

    /// The items of a list with nested list names expanded.
    pub fn list(&mut self, name: &str) -> Option<Vec<String>> {
        if let Some(v) = self.lists.get(name) {
            self.used_lists.insert(name.to_string());
            return v.clone();
        }
        let def = self.loaded.lists.get(name)?;
        self.used_lists.insert(name.to_string());
        if self.list_depth >= MAX_NEST {
            let item = ItemRef {
                kind: "list",
                name: name.to_string(),
            };
            let (file, mark) = (def.file, def.mark);
            self.error_at(
                file,
                mark.line,
                mark.col,
                Some(item),
                format!("lists nest deeper than {MAX_NEST} levels"),
            );
            return None;
        }
        // Guard against a list containing itself.
        self.lists.insert(name.to_string(), None);
        let mut out = Vec::new();
        for item in &def.items {
            if item != name && self.loaded.lists.get(item).is_some() {
                self.list_depth += 1;
                let inner = self.list(item);
                self.list_depth -= 1;
                if let Some(inner) = inner {
                    out.extend(inner);
                    continue;
                }
            }
            out.push(unquote(item).to_string());
        }
        self.lists.insert(name.to_string(), Some(out.clone()));
        Some(out)
    }

    /// The compiled body of a macro; `None` when it has errors (reported once, at the macro).
    /// How many macros were compiled: the size of an evaluation's memo.
    pub fn macro_count(&self) -> u32 {
        self.macro_count
    }

    pub fn macro_expr(&mut self, name: &str) -> Result<Option<Arc<MacroExpr>>, String> {
        if let Some(m) = self.macros.get(name) {
            self.used_macros.insert(name.to_string());
            return Ok(m.clone());
        }
        let Some(def) = self.loaded.macros.get(name) else {
            return Err(format!("undefined macro \"{name}\""));
        };
        if self.macro_stack.len() >= MAX_NEST {
            return Err(format!(
                "macros nest deeper than {MAX_NEST} levels (from \"{}\")",
                self.macro_stack.first().map_or("", String::as_str)
            ));
        }
        if self.macro_stack.iter().any(|m| m == name) {
            let mut chain = self.macro_stack.clone();
            chain.push(name.to_string());
            return Err(format!("macro cycle: {}", chain.join(" -> ")));
        }
        self.used_macros.insert(name.to_string());
        let cond = def.cond.clone();
        let item = ItemRef {
            kind: "macro",
            name: name.to_string(),
        };
        let text = cond.joined();
        let result = match condition::parse(&text) {
            Err(e) => {
                self.cond_error(
                    &cond,
                    e.offset,
                    item,
                    format!("invalid condition: {}", e.message),
                );
                None
            }
            Ok(ast) => {
                self.macro_stack.push(name.to_string());
                let r = self.expr(&ast);
                self.macro_stack.pop();
                match r {
                    Ok(expr) => {
                        let id = self.macro_count;
                        self.macro_count += 1;
                        Some(Arc::new(MacroExpr { id, expr }))
                    }
                    Err(e) => {
                        if let Some(m) = e.message {
                            self.cond_error(&cond, e.pos, item, m);
                        }
                        None
                    }
                }
            }
        };
        self.macros.insert(name.to_string(), result.clone());
        Ok(result)
    }

    pub fn expr(&mut self, ast: &Ast) -> Result<Expr, CErr> {
        Ok(match ast {
            Ast::And(v) => Expr::And(v.iter().map(|a| self.expr(a)).collect::<Result<_, _>>()?),
            Ast::Or(v) => Expr::Or(v.iter().map(|a| self.expr(a)).collect::<Result<_, _>>()?),
            Ast::Not(a) => Expr::Not(Box::new(self.expr(a)?)),
            Ast::Macro { name, pos } => match self.macro_expr(name) {
                Ok(Some(e)) => Expr::Macro(e),
                Ok(None) => {
                    return Err(CErr {
                        pos: *pos,
                        message: None,
                        unknown_field: false,
                    })
                }
                Err(m) => return Err(CErr::at(*pos, m)),
            },
            Ast::Cmp { lhs, op, rhs, .. } => Expr::Cmp(Box::new(self.cmp(lhs, *op, rhs)?)),
        })
    }

    fn operand(&mut self, o: &Operand) -> Result<COperand, CErr> {
        match o {
            Operand::Field { name, arg, pos } => {
                let field = fields::resolve(name, arg.as_deref()).map_err(|e| CErr {
                    pos: *pos,
                    unknown_field: matches!(e, FieldError::Unknown(_)),
                    message: Some(e.to_string()),
                })?;
                let ty = field.id.def().ftype;
                Ok(COperand {
                    field,
                    transforms: Vec::new(),
                    ty,
                })
            }
            Operand::Transform { func, inner, pos } => {
                let mut c = self.operand(inner)?;
                if c.ty != FieldType::String
                    && c.ty != FieldType::IpAddr
                    && *func != Transformer::Len
                {
                    return Err(CErr::at(
                        *pos,
                        format!(
                            "transformer {}() needs a string operand, \"{inner}\" is not a string",
                            func.as_str()
                        ),
                    ));
                }
                if c.ty == FieldType::Int && *func == Transformer::Len {
                    return Err(CErr::at(*pos, format!("transformer len() needs a string or list operand, \"{inner}\" is a number")));
                }
                c.transforms.push(*func);
                c.ty = if *func == Transformer::Len {
                    FieldType::Int
                } else {
                    FieldType::String
                };
                Ok(c)
            }
        }
    }

    fn list_items(&mut self, items: &[ListItem]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for it in items {
            if !it.quoted {
                if let Some(expanded) = self.list(&it.text) {
                    out.extend(expanded.into_iter().map(|s| (s, it.pos)));
                    continue;
                }
            }
            out.push((it.text.clone(), it.pos));
        }
        out
    }

    fn cmp(&mut self, lhs: &Operand, op: Op, rhs: &Rhs) -> Result<Cmp, CErr> {
        let l = self.operand(lhs)?;
        let numeric = l.ty.is_numeric();
        let name = lhs.to_string();
        let pos = lhs.pos();
        if numeric
            && !matches!(
                op,
                Op::Eq
                    | Op::Ne
                    | Op::Lt
                    | Op::Le
                    | Op::Gt
                    | Op::Ge
                    | Op::In
                    | Op::Intersects
                    | Op::Exists
            )
        {
            return Err(CErr::at(
                pos,
                format!(
                    "operator {} is not supported on numeric field \"{name}\"",
                    op.as_str()
                ),
            ));
        }
        if l.ty == FieldType::Bool && !matches!(op, Op::Eq | Op::Ne | Op::In | Op::Exists) {
            return Err(CErr::at(
                pos,
                format!(
                    "operator {} is not supported on boolean field \"{name}\"",
                    op.as_str()
                ),
            ));
        }
        let parse_int = |text: &str, at: usize| -> Result<i64, CErr> {
            text.trim().parse::<i64>().map_err(|_| {
                CErr::at(
                    at,
                    format!("expected a number to compare with \"{name}\", found \"{text}\""),
                )
            })
        };
        let check_bool = |text: &str, at: usize| -> Result<(), CErr> {
            if l.ty == FieldType::Bool && !matches!(text, "true" | "false") {
                return Err(CErr::at(
                    at,
                    format!("expected true or false to compare with \"{name}\", found \"{text}\""),
                ));
            }
            Ok(())
        };
        let r = match rhs {
            Rhs::None => CRhs::None,
            Rhs::Operand(o) => {
                if !matches!(
                    op,
                    Op::Eq
                        | Op::Ne
                        | Op::Lt
                        | Op::Le
                        | Op::Gt
                        | Op::Ge
                        | Op::Contains
                        | Op::IContains
                        | Op::StartsWith
                        | Op::EndsWith
                        | Op::BContains
                        | Op::BStartsWith
                ) {
                    return Err(CErr::at(
                        o.pos(),
                        format!("operator {} cannot compare with a field", op.as_str()),
                    ));
                }
                let c = self.operand(o)?;
                if c.ty.is_numeric() != numeric {
                    return Err(CErr::at(o.pos(), format!("cannot compare \"{name}\" with \"{o}\": one is a number, the other is not")));
                }
                CRhs::Operand(c)
            }
            Rhs::List(items) => {
                let items = self.list_items(items);
                match op {
                    Op::PMatch => {
                        if numeric {
                            return Err(CErr::at(
                                pos,
                                format!(
                                    "operator pmatch needs a path field, \"{name}\" is a number"
                                ),
                            ));
                        }
                        CRhs::Paths(
                            items
                                .into_iter()
                                .map(|(s, _)| s.trim_end_matches('/').to_string())
                                .collect(),
                        )
                    }
                    _ => {
                        let mut strs = HashSet::new();
                        let mut ints = HashSet::new();
                        for (s, at) in items {
                            if numeric {
                                ints.insert(parse_int(&s, at)?);
                            } else {
                                check_bool(&s, at)?;
                                strs.insert(s);
                            }
                        }
                        CRhs::Set {
                            strs: StrSet::new(strs),
                            ints,
                        }
                    }
                }
            }
            Rhs::Value {
                text, pos: vpos, ..
            } => match op {
                Op::Glob | Op::IGlob => {
                    let g = GlobBuilder::new(text)
                        .case_insensitive(op == Op::IGlob)
                        .literal_separator(false)
                        .backslash_escape(true)
                        .build()
                        .map_err(|e| {
                            CErr::at(*vpos, format!("invalid glob \"{text}\": {}", e.kind()))
                        })?;
                    CRhs::Glob(g.compile_matcher())
                }
                Op::Regex => {
                    let re = Regex::new(text).map_err(|e| {
                        let why = e
                            .to_string()
                            .lines()
                            .last()
                            .unwrap_or("")
                            .trim()
                            .to_string();
                        CErr::at(*vpos, format!("invalid regex \"{text}\": {why}"))
                    })?;
                    CRhs::Regex(re)
                }
                Op::IContains => CRhs::Lower(text.to_lowercase()),
                Op::BContains | Op::BStartsWith => {
                    CRhs::Bytes(hex_bytes(text).ok_or_else(|| {
                        CErr::at(
                            *vpos,
                            format!(
                                "{} needs an even number of hex digits, found \"{text}\"",
                                op.as_str()
                            ),
                        )
                    })?)
                }
                _ if numeric => CRhs::Int(parse_int(text, *vpos)?),
                _ => {
                    check_bool(text, *vpos)?;
                    CRhs::Text(text.clone())
                }
            },
        };
        Ok(Cmp { lhs: l, op, rhs: r })
    }

    /// Builds the `not (...)` part of a rule from its exceptions; errors point at the
    /// exception in the YAML.
    pub fn exceptions(&mut self, excs: &[ExceptionDef], rule: &str) -> Result<Option<Expr>, ()> {
        let mut alts = Vec::new();
        let mut failed = false;
        for e in excs {
            let item = ItemRef {
                kind: "rule",
                name: rule.to_string(),
            };
            if e.fields.is_empty() {
                self.error_at(
                    e.file,
                    e.mark.line,
                    e.mark.col,
                    Some(item),
                    format!("exception \"{}\" has no fields", e.name),
                );
                failed = true;
                continue;
            }
            let fail = |c: &mut Self, m: Mark, msg: String| {
                c.error_at(
                    e.file,
                    m.line,
                    m.col,
                    Some(item.clone()),
                    format!("exception \"{}\": {msg}", e.name),
                );
            };
            let ops: Vec<Op> = e.comps.iter().filter_map(|c| Op::from_word(c)).collect();
            let field_ops: Vec<(Operand, Op)> = e
                .fields
                .iter()
                .zip(ops.iter())
                .map(|(f, op)| (field_operand(f), *op))
                .collect();
            let mut tuples: Vec<(Vec<Ast>, Mark)> = Vec::new();
            if e.single {
                let Some((lhs, op)) = field_ops.first().cloned() else {
                    continue;
                };
                let mut items: Vec<String> = Vec::new();
                let mut m = e.mark;
                for v in &e.values {
                    match v {
                        ExcValue::Single(ExcItem::Scalar(s), vm) => {
                            items.push(s.clone());
                            m = *vm;
                        }
                        ExcValue::Single(ExcItem::List(l), vm) => {
                            items.extend(l.iter().cloned());
                            m = *vm;
                        }
                        // Values appended without `fields` arrive as tuples.
                        ExcValue::Tuple(t, vm) => {
                            for x in t {
                                match x {
                                    ExcItem::Scalar(s) => items.push(s.clone()),
                                    ExcItem::List(l) => items.extend(l.iter().cloned()),
                                }
                            }
                            m = *vm;
                        }
                    }
                }
                if items.is_empty() {
                    continue;
                }
                let rhs = if op.takes_list() {
                    Rhs::List(items.iter().map(|s| list_item(s)).collect())
                } else if items.len() == 1 {
                    Rhs::Value {
                        text: items[0].clone(),
                        quoted: true,
                        pos: 0,
                    }
                } else {
                    // Several values with a scalar operator: any of them.
                    let alts_single: Vec<Ast> = items
                        .iter()
                        .map(|s| Ast::Cmp {
                            lhs: lhs.clone(),
                            op,
                            rhs: Rhs::Value {
                                text: s.clone(),
                                quoted: true,
                                pos: 0,
                            },
                            pos: 0,
                        })
                        .collect();
                    tuples.push((vec![Ast::Or(alts_single)], m));
                    continue;
                };
                tuples.push((
                    vec![Ast::Cmp {
                        lhs,
                        op,
                        rhs,
                        pos: 0,
                    }],
                    m,
                ));
            } else {
                for v in &e.values {
                    let (vals, vm) = match v {
                        ExcValue::Tuple(vals, vm) => (vals, vm),
                        ExcValue::Single(_, vm) => {
                            fail(
                                self,
                                *vm,
                                format!(
                                    "each value must be a list with one entry per field ({} fields)",
                                    field_ops.len()
                                ),
                            );
                            failed = true;
                            continue;
                        }
                    };
                    if vals.len() != field_ops.len() {
                        fail(
                            self,
                            *vm,
                            format!(
                                "value has {} entries for {} fields",
                                vals.len(),
                                field_ops.len()
                            ),
                        );
                        failed = true;
                        continue;
                    }
                    let mut cmps = Vec::new();
                    for ((lhs, op), val) in field_ops.iter().zip(vals) {
                        let rhs = match (op.takes_list(), val) {
                            (true, ExcItem::List(l)) => {
                                Rhs::List(l.iter().map(|s| list_item(s)).collect())
                            }
                            (true, ExcItem::Scalar(s)) => Rhs::List(vec![list_item(s)]),
                            (false, ExcItem::Scalar(s)) => Rhs::Value {
                                text: s.clone(),
                                quoted: true,
                                pos: 0,
                            },
                            (false, ExcItem::List(_)) => {
                                fail(
                                    self,
                                    *vm,
                                    format!(
                                        "operator {} takes a single value, found a list",
                                        op.as_str()
                                    ),
                                );
                                failed = true;
                                continue;
                            }
                        };
                        cmps.push(Ast::Cmp {
                            lhs: lhs.clone(),
                            op: *op,
                            rhs,
                            pos: 0,
                        });
                    }
                    tuples.push((cmps, *vm));
                }
            }
            for (cmps, m) in tuples {
                let ast = if cmps.len() == 1 {
                    cmps.into_iter().next().unwrap_or(Ast::And(Vec::new()))
                } else {
                    Ast::And(cmps)
                };
                match self.expr(&ast) {
                    Ok(x) => alts.push(x),
                    Err(err) => {
                        if let Some(msg) = err.message {
                            fail(self, m, msg);
                        }
                        failed = true;
                    }
                }
            }
        }
        if failed {
            return Err(());
        }
        Ok(match alts.len() {
            0 => None,
            1 => alts.pop(),
            _ => Some(Expr::Or(alts)),
        })
    }
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() % 2 != 0 {
        return None;
    }
    b.chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            u8::try_from(h * 16 + l).ok()
        })
        .collect()
}

fn list_item(s: &str) -> ListItem {
    ListItem {
        text: s.to_string(),
        quoted: false,
        pos: 0,
    }
}

/// `proc.aname[2]` -> field operand with its argument.
fn field_operand(f: &str) -> Operand {
    let f = f.trim();
    match f.find('[') {
        Some(i) if f.ends_with(']') => Operand::Field {
            name: f[..i].to_string(),
            arg: Some(f[i + 1..f.len() - 1].to_string()),
            pos: 0,
        },
        _ => Operand::Field {
            name: f.to_string(),
            arg: None,
            pos: 0,
        },
    }
}

fn unquote(s: &str) -> &str {
    let t = s.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return &t[1..t.len() - 1];
        }
    }
    s
}

/// Every field an expression reads (macros included).
pub(crate) fn fields_of(e: &Expr, out: &mut Vec<(FieldId, String)>) {
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().for_each(|x| fields_of(x, out)),
        Expr::Not(x) => fields_of(x, out),
        Expr::Macro(m) => fields_of(&m.expr, out),
        Expr::Cmp(c) => {
            out.push((c.lhs.field.id, c.lhs.field.text.clone()));
            if let CRhs::Operand(o) = &c.rhs {
                out.push((o.field.id, o.field.text.clone()));
            }
        }
    }
}

/// Whether some field the expression reads (macros included) satisfies `f`.
pub(crate) fn any_field(e: &Expr, f: &mut impl FnMut(&FieldRef) -> bool) -> bool {
    match e {
        Expr::And(v) | Expr::Or(v) => v.iter().any(|x| any_field(x, f)),
        Expr::Not(x) => any_field(x, f),
        Expr::Macro(m) => any_field(&m.expr, f),
        Expr::Cmp(c) => {
            f(&c.lhs.field)
                || match &c.rhs {
                    CRhs::Operand(o) => f(&o.field),
                    _ => false,
                }
        }
    }
}

/// Which values of one field (e.g. `evt.type`) an expression can match: `None` means any.
/// The strings of an `in`/`intersects` list. Small lists are searched one by one, which is
/// cheaper than hashing the value; large ones through a hash set.
#[derive(Debug, Clone)]
pub(crate) enum StrSet {
    Small(Vec<String>),
    Large(HashSet<String>),
}

/// Lists up to this length are searched one by one.
const SMALL_SET: usize = 8;

impl StrSet {
    fn new(set: HashSet<String>) -> StrSet {
        if set.len() <= SMALL_SET {
            StrSet::Small(set.into_iter().collect())
        } else {
            StrSet::Large(set)
        }
    }

    pub(crate) fn contains(&self, x: &str) -> bool {
        match self {
            StrSet::Small(v) => v.iter().any(|s| s == x),
            StrSet::Large(h) => h.contains(x),
        }
    }

    fn to_set(&self) -> HashSet<String> {
        match self {
            StrSet::Small(v) => v.iter().cloned().collect(),
            StrSet::Large(h) => h.clone(),
        }
    }
}

/// Object keys below the top level that an event must have for `e` to hold: those its
/// fields need ([`crate::fields::FieldRef::needed_keys`]) in every branch of an `or`, in
/// some part of an `and`; nothing under a `not`.
pub(crate) fn needed_keys(e: &Expr) -> KeySet {
    match e {
        Expr::And(v) => KeySet::all_of(v.iter().map(needed_keys)),
        Expr::Or(v) => KeySet::common_to(v.iter().map(needed_keys)),
        Expr::Not(_) => KeySet::default(),
        Expr::Macro(m) => needed_keys(&m.expr),
        Expr::Cmp(c) => c.lhs.field.needed_keys(),
    }
}

pub(crate) fn possible_values(e: &Expr, field: FieldId) -> Option<HashSet<String>> {
    match e {
        Expr::And(v) => {
            let mut acc: Option<HashSet<String>> = None;
            for x in v {
                if let Some(s) = possible_values(x, field) {
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a.intersection(&s).cloned().collect(),
                    });
                }
            }
            acc
        }
        Expr::Or(v) => {
            let mut acc = HashSet::new();
            for x in v {
                acc.extend(possible_values(x, field)?);
            }
            Some(acc)
        }
        Expr::Not(_) => None,
        Expr::Macro(m) => possible_values(&m.expr, field),
        Expr::Cmp(c) => {
            if c.lhs.field.id != field || !c.lhs.transforms.is_empty() {
                return None;
            }
            match (&c.op, &c.rhs) {
                (Op::Eq, CRhs::Text(t)) => Some(std::iter::once(t.clone()).collect()),
                (Op::In, CRhs::Set { strs, .. }) => Some(strs.to_set()),
                _ => None,
            }
        }
    }
}
