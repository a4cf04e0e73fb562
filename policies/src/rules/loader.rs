//! Reads Falco rules files (plus Tether's `tether:` key and `sequence:` items) into
//! definitions, applying Falco's load-order semantics: later files append to or override
//! earlier definitions; a plain redefinition in a later file replaces the earlier one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::types::{
    ActionKind, ItemRef, LabelExpression, LabelSelector, LoadError, LoadWarning, Mode, Priority,
    Scope, TetherSettings,
};
use super::yaml::{self, Mark, Node, Style};
use crate::source::Source;

/// The Falco rules engine version Tether's loader implements (`required_engine_version`).
pub const ENGINE_VERSION: (u64, u64, u64) = (0, 57, 0);

/// One rules file's text.
#[derive(Debug)]
pub(crate) struct SrcFile {
    pub name: String,
    pub text: Arc<str>,
}

/// A piece of condition text and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct CondPart {
    pub text: String,
    pub file: usize,
    pub mark: Mark,
    pub style: Style,
}

/// A condition made of its definition and appends, joined by a blank as Falco does.
#[derive(Debug, Clone, Default)]
pub(crate) struct CondText {
    pub parts: Vec<CondPart>,
}

impl CondText {
    pub fn joined(&self) -> String {
        self.parts
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The file, line and column of a byte offset in `joined()`.
    pub fn locate(&self, files: &[SrcFile], offset: usize) -> (usize, usize, usize) {
        let mut base = 0usize;
        for (i, p) in self.parts.iter().enumerate() {
            let end = base + p.text.len();
            if offset < end || i + 1 == self.parts.len() {
                let local = offset.saturating_sub(base).min(p.text.len());
                let text = files.get(p.file).map_or("", |f| &f.text);
                let (l, c) = yaml::locate(text, p.mark, p.style, &p.text, local);
                return (p.file, l, c);
            }
            base = end + 1;
        }
        (0, 1, 1)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ListDef {
    pub name: String,
    pub items: Vec<String>,
    pub file: usize,
    pub mark: Mark,
}

#[derive(Debug, Clone)]
pub(crate) struct MacroDef {
    pub name: String,
    pub cond: CondText,
    pub file: usize,
    pub mark: Mark,
}

/// One `exceptions` entry.
#[derive(Debug, Clone)]
pub(crate) struct ExceptionDef {
    pub name: String,
    /// The field names; `single` when `fields` was one string.
    pub fields: Vec<String>,
    pub single: bool,
    pub comps: Vec<String>,
    pub values: Vec<ExcValue>,
    pub file: usize,
    pub mark: Mark,
}

/// One exception value: a tuple for multi-field exceptions, a single item otherwise.
#[derive(Debug, Clone)]
pub(crate) enum ExcValue {
    Tuple(Vec<ExcItem>, Mark),
    Single(ExcItem, Mark),
}

#[derive(Debug, Clone)]
pub(crate) enum ExcItem {
    Scalar(String),
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct RuleDef {
    pub name: String,
    pub desc: String,
    pub cond: CondText,
    pub output: String,
    pub output_file: usize,
    pub output_mark: Mark,
    pub output_style: Style,
    pub priority: Priority,
    pub source: Source,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub exceptions: Vec<ExceptionDef>,
    pub tether: TetherSettings,
    pub skip_if_unknown_filter: bool,
    pub file: usize,
    pub mark: Mark,
}

#[derive(Debug, Clone)]
pub(crate) struct SequenceDef {
    pub name: String,
    pub desc: String,
    pub by: Vec<(String, Mark)>,
    pub within: Duration,
    pub steps: Vec<(String, Mark)>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub output: String,
    pub tether: TetherSettings,
    pub file: usize,
    pub mark: Mark,
}

/// Definitions keyed by name, in first-definition order.
#[derive(Debug)]
pub(crate) struct Named<T> {
    pub items: Vec<T>,
    pub by_name: HashMap<String, usize>,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named {
            items: Vec::new(),
            by_name: HashMap::new(),
        }
    }
}

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.by_name.get(name).and_then(|&i| self.items.get(i))
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        match self.by_name.get(name) {
            Some(&i) => self.items.get_mut(i),
            None => None,
        }
    }

    fn put(&mut self, name: &str, v: T) {
        match self.by_name.get(name) {
            Some(&i) => {
                if let Some(slot) = self.items.get_mut(i) {
                    *slot = v;
                }
            }
            None => {
                self.by_name.insert(name.to_string(), self.items.len());
                self.items.push(v);
            }
        }
    }
}

/// Everything read from the files, before compilation.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub files: Vec<SrcFile>,
    pub lists: Named<ListDef>,
    pub macros: Named<MacroDef>,
    pub rules: Named<RuleDef>,
    pub sequences: Named<SequenceDef>,
    /// Sources named by rules that Tether does not know (skipped with a warning).
    pub errors: Vec<LoadError>,
    pub warnings: Vec<LoadWarning>,
}

struct Ctx<'a> {
    file: usize,
    item: Option<ItemRef>,
    loaded: &'a mut Loaded,
}

impl Ctx<'_> {
    fn name(&self) -> &str {
        &self.loaded.files[self.file].name
    }

    fn err(&mut self, mark: Mark, message: impl Into<String>) {
        let e = LoadError {
            file: self.name().to_string(),
            line: mark.line,
            col: mark.col,
            item: self.item.clone(),
            message: message.into(),
        };
        self.loaded.errors.push(e);
    }

    fn warn(&mut self, mark: Mark, message: impl Into<String>) {
        let w = LoadWarning {
            file: self.name().to_string(),
            line: mark.line,
            col: mark.col,
            item: self.item.clone(),
            message: message.into(),
        };
        self.loaded.warnings.push(w);
    }
}

impl Loaded {
    /// Reads one file's text and applies its items.
    pub fn add_file(&mut self, name: &str, text: &str) {
        let file = self.files.len();
        let parsed = yaml::parse_lenient(text);
        let parsed_text = match &parsed {
            Ok((_, t)) => t.as_str(),
            Err(_) => text,
        };
        self.files.push(SrcFile {
            name: name.to_string(),
            text: Arc::from(parsed_text),
        });
        let mut cx = Ctx {
            file,
            item: None,
            loaded: self,
        };
        let docs = match parsed {
            Ok((d, _)) => d,
            Err(e) => {
                cx.err(e.mark, format!("invalid YAML: {}", e.message));
                return;
            }
        };
        for doc in docs {
            match doc {
                Node::Seq { items, .. } => {
                    for item in &items {
                        cx.item = None;
                        item_(&mut cx, item);
                    }
                }
                n if n.is_null() => {}
                other => cx.err(
                    other.mark(),
                    format!(
                        "a rules file must be a YAML sequence of items, found {}",
                        other.kind()
                    ),
                ),
            }
        }
    }
}

const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "source",
    "tags",
    "enabled",
    "exceptions",
    "append",
    "override",
    "tether",
    "warn_evttypes",
    "skip-if-unknown-filter",
    "capture",
    "capture_duration",
];
const MACRO_KEYS: &[&str] = &["macro", "condition", "append", "override", "source"];
const LIST_KEYS: &[&str] = &["list", "items", "append", "override"];
const SEQ_KEYS: &[&str] = &[
    "sequence", "desc", "by", "within", "steps", "priority", "tags", "enabled", "output", "tether",
];

fn item_(cx: &mut Ctx<'_>, item: &Node) {
    let Node::Map { entries, mark } = item else {
        cx.err(
            item.mark(),
            format!(
                "each item must be a mapping (rule, macro, list, ...), found {}",
                item.kind()
            ),
        );
        return;
    };
    // Duplicate keys are an error, whatever the item.
    let mut seen: HashMap<&str, Mark> = HashMap::new();
    for (k, _) in entries {
        match k.as_str() {
            Some(ks) => {
                if let Some(first) = seen.insert(ks, k.mark()) {
                    cx.err(
                        k.mark(),
                        format!("duplicate key \"{ks}\" (first at line {})", first.line),
                    );
                }
            }
            None => cx.err(
                k.mark(),
                format!("keys must be strings, found {}", k.kind()),
            ),
        }
    }
    if item.get("rule").is_some() {
        rule(cx, item, *mark);
    } else if item.get("macro").is_some() {
        macro_(cx, item, *mark);
    } else if item.get("list").is_some() {
        list(cx, item, *mark);
    } else if item.get("sequence").is_some() {
        sequence(cx, item, *mark);
    } else if let Some(v) = item.get("required_engine_version") {
        engine_version(cx, v);
    } else if item.get("required_plugin_versions").is_some() {
        cx.warn(
            *mark,
            "required_plugin_versions is ignored: Tether has no plugins; its k8s_audit fields are built in",
        );
    } else {
        let keys: Vec<&str> = entries.iter().filter_map(|(k, _)| k.as_str()).collect();
        cx.warn(
            *mark,
            format!(
                "unknown top-level item with keys [{}]: expected rule, macro, list, sequence, required_engine_version or required_plugin_versions; skipped",
                keys.join(", ")
            ),
        );
    }
}

fn engine_version(cx: &mut Ctx<'_>, v: &Node) {
    let Some(s) = v.as_str() else {
        cx.err(
            v.mark(),
            format!(
                "required_engine_version must be a version string, found {}",
                v.kind()
            ),
        );
        return;
    };
    let parsed: Option<(u64, u64, u64)> = if let Ok(n) = s.parse::<u64>() {
        Some((0, n, 0))
    } else {
        let parts: Vec<&str> = s.split('.').collect();
        match parts.as_slice() {
            [a, b, c] => match (a.parse(), b.parse(), c.parse()) {
                (Ok(a), Ok(b), Ok(c)) => Some((a, b, c)),
                _ => None,
            },
            _ => None,
        }
    };
    match parsed {
        None => cx.err(
            v.mark(),
            format!("required_engine_version \"{s}\" is not a version: expected MAJOR.MINOR.PATCH or a number"),
        ),
        Some(req) if req > ENGINE_VERSION => cx.err(
            v.mark(),
            format!(
                "the file requires engine version {s}, Tether implements {}.{}.{}",
                ENGINE_VERSION.0, ENGINE_VERSION.1, ENGINE_VERSION.2
            ),
        ),
        Some(_) => {}
    }
}

fn check_keys(cx: &mut Ctx<'_>, item: &Node, allowed: &[&str]) {
    if let Node::Map { entries, .. } = item {
        for (k, _) in entries {
            if let Some(ks) = k.as_str() {
                if !allowed.contains(&ks) {
                    cx.warn(k.mark(), format!("unknown key \"{ks}\" ignored"));
                }
            }
        }
    }
}

/// The item's name (a non-empty string).
fn name_of(cx: &mut Ctx<'_>, item: &Node, key: &str) -> Option<String> {
    let n = item.get(key)?;
    match n {
        Node::Scalar { value, .. } if !n.is_null() && !value.trim().is_empty() => {
            Some(value.clone())
        }
        _ => {
            // An empty value is marked at the next token: point at the key instead.
            let at = match item {
                Node::Map { entries, .. } if n.is_null() => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map_or(n.mark(), |(k, _)| k.mark()),
                _ => n.mark(),
            };
            cx.err(
                at,
                format!("\"{key}\" must be a non-empty name, found {}", n.kind()),
            );
            None
        }
    }
}

fn opt_bool(cx: &mut Ctx<'_>, item: &Node, key: &str) -> Option<bool> {
    let n = item.get(key)?;
    match n.as_bool() {
        Some(b) => Some(b),
        None => {
            cx.err(
                n.mark(),
                format!(
                    "\"{key}\" must be true or false, found {}",
                    n.as_str()
                        .map_or_else(|| n.kind().to_string(), |s| format!("\"{s}\""))
                ),
            );
            None
        }
    }
}

fn opt_string(cx: &mut Ctx<'_>, item: &Node, key: &str) -> Option<String> {
    let n = item.get(key)?;
    match n {
        Node::Scalar { value, .. } if !n.is_null() => Some(value.clone()),
        _ => {
            cx.err(
                n.mark(),
                format!("\"{key}\" must be a string, found {}", n.kind()),
            );
            None
        }
    }
}

fn string_list(cx: &mut Ctx<'_>, n: &Node, what: &str) -> Option<Vec<String>> {
    match n {
        Node::Seq { items, .. } => {
            let mut out = Vec::new();
            for i in items {
                match i {
                    Node::Scalar { value, .. } => out.push(value.clone()),
                    other => {
                        cx.err(
                            other.mark(),
                            format!("{what} must hold strings, found {}", other.kind()),
                        );
                        return None;
                    }
                }
            }
            Some(out)
        }
        n if n.is_null() => Some(Vec::new()),
        other => {
            cx.err(
                other.mark(),
                format!("{what} must be a list, found {}", other.kind()),
            );
            None
        }
    }
}

fn cond_part(cx: &mut Ctx<'_>, item: &Node, key: &str) -> Option<CondPart> {
    let n = item.get(key)?;
    match n {
        Node::Scalar { value, style, mark } if !n.is_null() => Some(CondPart {
            text: value.trim_end().to_string(),
            file: cx.file,
            mark: *mark,
            style: *style,
        }),
        _ => {
            cx.err(
                n.mark(),
                format!("\"{key}\" must be a condition string, found {}", n.kind()),
            );
            None
        }
    }
}

fn priority(cx: &mut Ctx<'_>, item: &Node) -> Option<Priority> {
    let n = item.get("priority")?;
    match n.as_str().map(str::parse::<Priority>) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            cx.err(n.mark(), e.to_string());
            None
        }
        None => {
            cx.err(
                n.mark(),
                format!("\"priority\" must be a name, found {}", n.kind()),
            );
            None
        }
    }
}

/// `override:` — key -> append | replace.
fn overrides(
    cx: &mut Ctx<'_>,
    item: &Node,
    appendable: &[&str],
    replaceable: &[&str],
) -> Option<Vec<(String, bool, Mark)>> {
    let n = item.get("override")?;
    let Node::Map { entries, .. } = n else {
        cx.err(
            n.mark(),
            format!(
                "\"override\" must be a mapping of key: append|replace, found {}",
                n.kind()
            ),
        );
        return Some(Vec::new());
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default().to_string();
        let how = v.as_str().unwrap_or_default();
        let append = match how {
            "append" => true,
            "replace" => false,
            _ => {
                cx.err(
                    v.mark(),
                    format!("override of \"{key}\" must be append or replace, found \"{how}\""),
                );
                continue;
            }
        };
        let allowed = if append { appendable } else { replaceable };
        if !allowed.contains(&key.as_str()) {
            cx.err(
                k.mark(),
                format!(
                    "key \"{key}\" cannot be overridden with {how}: expected one of {}",
                    allowed.join(", ")
                ),
            );
            continue;
        }
        if item.get(&key).is_none() {
            cx.err(
                k.mark(),
                format!("override names \"{key}\" but the item has no \"{key}\""),
            );
            continue;
        }
        out.push((key, append, k.mark()));
    }
    // Every other key of the item must be covered by the override.
    if let Node::Map {
        entries: item_entries,
        ..
    } = item
    {
        for (k, _) in item_entries {
            let ks = k.as_str().unwrap_or_default();
            if ["rule", "macro", "list", "override"].contains(&ks) {
                continue;
            }
            if n.get(ks).is_none() {
                cx.err(
                    k.mark(),
                    format!("key \"{ks}\" is not listed in \"override\""),
                );
            }
        }
    }
    Some(out)
}

fn rule(cx: &mut Ctx<'_>, item: &Node, mark: Mark) {
    let Some(name) = name_of(cx, item, "rule") else {
        return;
    };
    cx.item = Some(ItemRef {
        kind: "rule",
        name: name.clone(),
    });
    check_keys(cx, item, RULE_KEYS);
    let append = opt_bool(cx, item, "append").unwrap_or(false);
    let ov = overrides(
        cx,
        item,
        &["condition", "output", "desc", "tags", "exceptions"],
        &[
            "condition",
            "output",
            "desc",
            "priority",
            "tags",
            "exceptions",
            "enabled",
            "tether",
            "warn_evttypes",
            "skip-if-unknown-filter",
            "capture",
            "capture_duration",
        ],
    );
    if append && ov.is_some() {
        cx.err(mark, "\"append\" and \"override\" cannot be used together");
        return;
    }
    let exists = cx.loaded.rules.get(&name).is_some();
    if append || ov.is_some() {
        if !exists {
            let how = if append { "appends to" } else { "overrides" };
            cx.err(mark, format!("{how} a rule that is not defined earlier"));
            return;
        }
        let cond = cond_part(cx, item, "condition");
        let output = opt_string(cx, item, "output");
        let desc = opt_string(cx, item, "desc");
        let tags = item
            .get("tags")
            .and_then(|n| string_list(cx, n, "\"tags\""));
        let exceptions = item
            .get("exceptions")
            .map(|n| exceptions_(cx, n))
            .unwrap_or_default();
        let prio = priority(cx, item);
        let enabled = opt_bool(cx, item, "enabled");
        let tether = item.get("tether").and_then(|n| tether_(cx, n));
        let skip = opt_bool(cx, item, "skip-if-unknown-filter");
        let file = cx.file;
        let output_mark = item.get("output").map(|n| (n.mark(), node_style(n)));
        let Some(r) = cx.loaded.rules.get_mut(&name) else {
            return;
        };
        let modes: Vec<(String, bool)> = match ov {
            Some(v) => v.into_iter().map(|(k, a, _)| (k, a)).collect(),
            None => [
                "condition",
                "output",
                "desc",
                "tags",
                "exceptions",
                "enabled",
                "priority",
            ]
            .iter()
            .map(|k| (k.to_string(), true))
            .collect(),
        };
        for (key, app) in modes {
            match key.as_str() {
                "condition" => {
                    if let Some(c) = cond.clone() {
                        if !app {
                            r.cond.parts.clear();
                        }
                        r.cond.parts.push(c);
                    }
                }
                "output" => {
                    if let Some(o) = output.clone() {
                        if app {
                            r.output.push(' ');
                            r.output.push_str(o.trim());
                        } else {
                            r.output = o.trim().to_string();
                        }
                        if let Some((m, st)) = output_mark {
                            r.output_file = file;
                            r.output_mark = m;
                            r.output_style = st;
                        }
                    }
                }
                "desc" => {
                    if let Some(d) = desc.clone() {
                        if app {
                            r.desc.push(' ');
                            r.desc.push_str(&d);
                        } else {
                            r.desc = d;
                        }
                    }
                }
                "tags" => {
                    if let Some(t) = tags.clone() {
                        if !app {
                            r.tags.clear();
                        }
                        for x in t {
                            if !r.tags.contains(&x) {
                                r.tags.push(x);
                            }
                        }
                    }
                }
                "exceptions" => {
                    if !app {
                        r.exceptions.clear();
                    }
                    for e in exceptions.clone() {
                        match r.exceptions.iter_mut().find(|x| x.name == e.name) {
                            Some(x) if app => x.values.extend(e.values),
                            _ => r.exceptions.push(e),
                        }
                    }
                }
                "priority" => {
                    if let Some(p) = prio {
                        r.priority = p;
                    }
                }
                "enabled" => {
                    if let Some(en) = enabled {
                        r.enabled = en;
                    }
                }
                "tether" => {
                    if let Some(t) = tether.clone() {
                        r.tether = t;
                    }
                }
                "skip-if-unknown-filter" => {
                    if let Some(s) = skip {
                        r.skip_if_unknown_filter = s;
                    }
                }
                _ => {}
            }
        }
        return;
    }
    // Only `enabled` (and the name): toggles an earlier rule, as Falco allows.
    let only_enabled = matches!(item, Node::Map { entries, .. } if entries.iter().all(|(k, _)| matches!(k.as_str(), Some("rule" | "enabled"))));
    if only_enabled && item.get("enabled").is_some() {
        let en = opt_bool(cx, item, "enabled");
        match (cx.loaded.rules.get_mut(&name), en) {
            (Some(r), Some(en)) => r.enabled = en,
            (None, _) => cx.err(
                mark,
                "sets \"enabled\" on a rule that is not defined earlier",
            ),
            _ => {}
        }
        return;
    }
    if let Some(prev) = cx.loaded.rules.get(&name) {
        if prev.file == cx.file {
            let line = prev.mark.line;
            cx.err(
                mark,
                format!("is defined twice in this file (first at line {line}); use append or override to change it"),
            );
            return;
        }
    }
    let mut missing = Vec::new();
    for k in ["condition", "output", "priority"] {
        if item.get(k).is_none() {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        cx.err(
            mark,
            format!("missing required key(s): {}", missing.join(", ")),
        );
        return;
    }
    let source = match item.get("source") {
        None => Source::Syscall,
        Some(n) => match n.as_str().map(str::parse::<Source>) {
            Some(Ok(s)) => s,
            Some(Err(_)) => {
                let s = n.as_str().unwrap_or_default().to_string();
                cx.warn(
                    n.mark(),
                    format!("source \"{s}\" is not one Tether provides (syscall, k8s_audit, k8s_admission); rule skipped"),
                );
                return;
            }
            None => {
                cx.err(
                    n.mark(),
                    format!("\"source\" must be a name, found {}", n.kind()),
                );
                return;
            }
        },
    };
    let cond = cond_part(cx, item, "condition");
    let output = opt_string(cx, item, "output");
    let desc = opt_string(cx, item, "desc").unwrap_or_default();
    let prio = priority(cx, item);
    let tags = item
        .get("tags")
        .map_or(Some(Vec::new()), |n| string_list(cx, n, "\"tags\""));
    let enabled = opt_bool(cx, item, "enabled").unwrap_or(true);
    let exceptions = item
        .get("exceptions")
        .map(|n| exceptions_(cx, n))
        .unwrap_or_default();
    let tether = match item.get("tether") {
        Some(n) => tether_(cx, n),
        None => Some(TetherSettings::default()),
    };
    let skip = opt_bool(cx, item, "skip-if-unknown-filter").unwrap_or(false);
    if let Some(t) = &tether {
        if t.admission && source != Source::K8sAudit {
            cx.err(
                item.get("tether").map_or(mark, Node::mark),
                format!("tether.admission applies to k8s_audit rules only, this rule's source is {source}"),
            );
        }
    }
    let (Some(cond), Some(output), Some(priority), Some(tags), Some(tether)) =
        (cond, output, prio, tags, tether)
    else {
        return;
    };
    let output_mark = item.get("output").map_or(mark, Node::mark);
    let output_style = item.get("output").map_or(Style::Plain, node_style);
    let def = RuleDef {
        name: name.clone(),
        desc,
        cond: CondText { parts: vec![cond] },
        output: output.trim().to_string(),
        output_file: cx.file,
        output_mark,
        output_style,
        priority,
        source,
        tags,
        enabled,
        exceptions,
        tether,
        skip_if_unknown_filter: skip,
        file: cx.file,
        mark,
    };
    cx.loaded.rules.put(&name, def);
}

fn exceptions_(cx: &mut Ctx<'_>, n: &Node) -> Vec<ExceptionDef> {
    let Node::Seq { items, .. } = n else {
        if !n.is_null() {
            cx.err(
                n.mark(),
                format!("\"exceptions\" must be a list, found {}", n.kind()),
            );
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in items {
        if !matches!(e, Node::Map { .. }) {
            cx.err(
                e.mark(),
                format!(
                    "an exception must be a mapping with name, fields, comps, values; found {}",
                    e.kind()
                ),
            );
            continue;
        }
        let Some(name) = name_of(cx, e, "name") else {
            if e.get("name").is_none() {
                cx.err(e.mark(), "an exception needs a \"name\"");
            }
            continue;
        };
        if let Node::Map { entries, .. } = e {
            for (k, _) in entries {
                let ks = k.as_str().unwrap_or_default();
                if !["name", "fields", "comps", "values"].contains(&ks) {
                    cx.err(k.mark(), format!("exception \"{name}\": unknown key \"{ks}\": expected name, fields, comps, values"));
                }
            }
        }
        let (fields, single) = match e.get("fields") {
            None => {
                // An append that only adds values to an existing exception.
                (Vec::new(), false)
            }
            Some(Node::Scalar { value, .. }) => (vec![value.clone()], true),
            Some(f) => match string_list(cx, f, &format!("exception \"{name}\" fields")) {
                Some(v) => (v, false),
                None => continue,
            },
        };
        let comps = match e.get("comps") {
            None => {
                if single {
                    vec!["in".to_string()]
                } else {
                    vec!["=".to_string(); fields.len()]
                }
            }
            Some(Node::Scalar { value, .. }) if single => vec![value.clone()],
            Some(c @ Node::Scalar { .. }) => {
                cx.err(
                    c.mark(),
                    format!("exception \"{name}\": comps must be a list when fields is a list"),
                );
                continue;
            }
            Some(c) => match string_list(cx, c, &format!("exception \"{name}\" comps")) {
                Some(v) => v,
                None => continue,
            },
        };
        let mut ok = true;
        if !fields.is_empty() && comps.len() != fields.len() {
            cx.err(
                e.get("comps").map_or(e.mark(), Node::mark),
                format!(
                    "exception \"{name}\": {} comps for {} fields",
                    comps.len(),
                    fields.len()
                ),
            );
            ok = false;
        }
        for (i, c) in comps.iter().enumerate() {
            if crate::condition::Op::from_word(c)
                .is_none_or(|op| op == crate::condition::Op::Exists)
            {
                cx.err(
                    e.get("comps").map_or(e.mark(), Node::mark),
                    format!(
                        "exception \"{name}\": comps item {i} \"{c}\" is not a comparison operator"
                    ),
                );
                ok = false;
            }
        }
        let mut values = Vec::new();
        match e.get("values") {
            None => {}
            Some(Node::Seq { items, .. }) => {
                let fields_absent = e.get("fields").is_none();
                for v in items {
                    if single || (fields_absent && !matches!(v, Node::Seq { .. })) {
                        match exc_item(v) {
                            Some(x) => values.push(ExcValue::Single(x, v.mark())),
                            None => {
                                cx.err(v.mark(), format!("exception \"{name}\": a value must be a string or a list, found {}", v.kind()));
                                ok = false;
                            }
                        }
                    } else {
                        let Node::Seq { items: tuple, .. } = v else {
                            cx.err(v.mark(), format!("exception \"{name}\": each value must be a list with one entry per field, found {}", v.kind()));
                            ok = false;
                            continue;
                        };
                        if !fields.is_empty() && tuple.len() != fields.len() {
                            cx.err(
                                v.mark(),
                                format!(
                                    "exception \"{name}\": value has {} entries for {} fields",
                                    tuple.len(),
                                    fields.len()
                                ),
                            );
                            ok = false;
                            continue;
                        }
                        let mut t = Vec::new();
                        for x in tuple {
                            match exc_item(x) {
                                Some(i) => t.push(i),
                                None => {
                                    cx.err(x.mark(), format!("exception \"{name}\": a value entry must be a string or a list, found {}", x.kind()));
                                    ok = false;
                                }
                            }
                        }
                        values.push(ExcValue::Tuple(t, v.mark()));
                    }
                }
            }
            Some(v) if v.is_null() => {}
            Some(v) => {
                cx.err(
                    v.mark(),
                    format!(
                        "exception \"{name}\": values must be a list, found {}",
                        v.kind()
                    ),
                );
                ok = false;
            }
        }
        if ok {
            out.push(ExceptionDef {
                name,
                fields,
                single,
                comps,
                values,
                file: cx.file,
                mark: e.mark(),
            });
        }
    }
    out
}

fn exc_item(n: &Node) -> Option<ExcItem> {
    match n {
        Node::Scalar { value, .. } => Some(ExcItem::Scalar(value.clone())),
        Node::Seq { items, .. } => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(ExcItem::List),
        Node::Map { .. } => None,
    }
}

fn tether_(cx: &mut Ctx<'_>, n: &Node) -> Option<TetherSettings> {
    let Node::Map { entries, .. } = n else {
        cx.err(
            n.mark(),
            format!(
                "\"tether\" must be a mapping (mode, actions, scope, admission), found {}",
                n.kind()
            ),
        );
        return None;
    };
    let mut t = TetherSettings::default();
    let mut ok = true;
    for (k, v) in entries {
        match k.as_str().unwrap_or_default() {
            "mode" => match v.as_str() {
                Some("detect") => t.mode = Mode::Detect,
                Some("enforce") => t.mode = Mode::Enforce,
                other => {
                    cx.err(
                        v.mark(),
                        format!(
                            "tether.mode must be detect or enforce, found {}",
                            other.map_or_else(|| v.kind().to_string(), |s| format!("\"{s}\""))
                        ),
                    );
                    ok = false;
                }
            },
            "actions" => match string_list(cx, v, "tether.actions") {
                Some(names) => {
                    for a in names {
                        match a.parse::<ActionKind>() {
                            Ok(a) => {
                                if !t.actions.contains(&a) {
                                    t.actions.push(a)
                                }
                            }
                            Err(e) => {
                                cx.err(v.mark(), format!("tether.actions: {e}"));
                                ok = false;
                            }
                        }
                    }
                }
                None => ok = false,
            },
            "scope" => match scope_(cx, v) {
                Some(s) => t.scope = s,
                None => ok = false,
            },
            "admission" => match v.as_bool() {
                Some(b) => t.admission = b,
                None => {
                    cx.err(v.mark(), "tether.admission must be true or false");
                    ok = false;
                }
            },
            other => {
                cx.err(
                    k.mark(),
                    format!(
                        "unknown key \"tether.{other}\": expected mode, actions, scope, admission"
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(t)
}

fn scope_(cx: &mut Ctx<'_>, n: &Node) -> Option<Scope> {
    let Node::Map { entries, .. } = n else {
        cx.err(
            n.mark(),
            format!("tether.scope must be a mapping, found {}", n.kind()),
        );
        return None;
    };
    let mut s = Scope::default();
    let mut ok = true;
    for (k, v) in entries {
        match k.as_str().unwrap_or_default() {
            key @ ("namespaces" | "exclude_namespaces") => {
                match string_list(cx, v, &format!("tether.scope.{key}")) {
                    Some(globs) => {
                        for g in &globs {
                            if let Err(e) = globset::Glob::new(g) {
                                cx.err(
                                    v.mark(),
                                    format!(
                                        "tether.scope.{key}: invalid glob \"{g}\": {}",
                                        e.kind()
                                    ),
                                );
                                ok = false;
                            }
                        }
                        if key == "namespaces" {
                            s.namespaces = globs;
                        } else {
                            s.exclude_namespaces = globs;
                        }
                    }
                    None => ok = false,
                }
            }
            key @ ("namespace_labels" | "object_labels") => match selector(cx, v, key) {
                Some(sel) => {
                    if key == "namespace_labels" {
                        s.namespace_labels = Some(sel);
                    } else {
                        s.object_labels = Some(sel);
                    }
                }
                None => ok = false,
            },
            other => {
                cx.err(k.mark(), format!("unknown key \"tether.scope.{other}\": expected namespaces, exclude_namespaces, namespace_labels, object_labels"));
                ok = false;
            }
        }
    }
    ok.then_some(s)
}

fn selector(cx: &mut Ctx<'_>, n: &Node, key: &str) -> Option<LabelSelector> {
    let Node::Map { entries, .. } = n else {
        cx.err(n.mark(), format!("tether.scope.{key} must be a label selector mapping (matchLabels, matchExpressions), found {}", n.kind()));
        return None;
    };
    let mut sel = LabelSelector::default();
    for (k, v) in entries {
        match k.as_str().unwrap_or_default() {
            "matchLabels" => {
                let Node::Map {
                    entries: labels, ..
                } = v
                else {
                    cx.err(
                        v.mark(),
                        format!("tether.scope.{key}.matchLabels must be a mapping"),
                    );
                    return None;
                };
                for (lk, lv) in labels {
                    match (lk.as_str(), lv.as_str()) {
                        (Some(a), Some(b)) => {
                            sel.match_labels.insert(a.to_string(), b.to_string());
                        }
                        _ => {
                            cx.err(
                                lv.mark(),
                                format!("tether.scope.{key}.matchLabels values must be strings"),
                            );
                            return None;
                        }
                    }
                }
            }
            "matchExpressions" => {
                let Node::Seq { items, .. } = v else {
                    cx.err(
                        v.mark(),
                        format!("tether.scope.{key}.matchExpressions must be a list"),
                    );
                    return None;
                };
                for e in items {
                    let k = e.get("key").and_then(Node::as_str);
                    let op = e.get("operator").and_then(Node::as_str);
                    let (Some(k), Some(op)) = (k, op) else {
                        cx.err(
                            e.mark(),
                            format!(
                                "tether.scope.{key}.matchExpressions entries need key and operator"
                            ),
                        );
                        return None;
                    };
                    if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&op) {
                        cx.err(e.mark(), format!("tether.scope.{key}: operator \"{op}\" must be In, NotIn, Exists or DoesNotExist"));
                        return None;
                    }
                    let values = match e.get("values") {
                        Some(vs) => string_list(cx, vs, "matchExpressions values")?,
                        None => Vec::new(),
                    };
                    if matches!(op, "In" | "NotIn") && values.is_empty() {
                        cx.err(
                            e.mark(),
                            format!("tether.scope.{key}: operator {op} needs values"),
                        );
                        return None;
                    }
                    sel.match_expressions.push(LabelExpression {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values,
                    });
                }
            }
            other => {
                cx.err(k.mark(), format!("unknown key \"{other}\" in tether.scope.{key}: expected matchLabels, matchExpressions"));
                return None;
            }
        }
    }
    Some(sel)
}

fn macro_(cx: &mut Ctx<'_>, item: &Node, mark: Mark) {
    let Some(name) = name_of(cx, item, "macro") else {
        return;
    };
    cx.item = Some(ItemRef {
        kind: "macro",
        name: name.clone(),
    });
    check_keys(cx, item, MACRO_KEYS);
    if !is_ident(&name) {
        cx.err(
            mark,
            "a macro name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)",
        );
        return;
    }
    let append = opt_bool(cx, item, "append").unwrap_or(false);
    let ov = overrides(cx, item, &["condition"], &["condition"]);
    let Some(part) = cond_part(cx, item, "condition") else {
        if item.get("condition").is_none() {
            cx.err(mark, "missing required key: condition");
        }
        return;
    };
    let file = cx.file;
    if append || ov.is_some() {
        let replace = ov.as_ref().is_some_and(|v| v.iter().any(|(_, a, _)| !a));
        match cx.loaded.macros.get_mut(&name) {
            Some(m) => {
                if replace {
                    m.cond.parts.clear();
                }
                m.cond.parts.push(part);
            }
            None => cx.err(
                mark,
                "appends to or overrides a macro that is not defined earlier",
            ),
        }
        return;
    }
    if let Some(prev) = cx.loaded.macros.get(&name) {
        if prev.file == file {
            let line = prev.mark.line;
            cx.err(
                mark,
                format!("is defined twice in this file (first at line {line})"),
            );
            return;
        }
    }
    cx.loaded.macros.put(
        &name,
        MacroDef {
            name: name.clone(),
            cond: CondText { parts: vec![part] },
            file,
            mark,
        },
    );
}

fn list(cx: &mut Ctx<'_>, item: &Node, mark: Mark) {
    let Some(name) = name_of(cx, item, "list") else {
        return;
    };
    cx.item = Some(ItemRef {
        kind: "list",
        name: name.clone(),
    });
    check_keys(cx, item, LIST_KEYS);
    let append = opt_bool(cx, item, "append").unwrap_or(false);
    let ov = overrides(cx, item, &["items"], &["items"]);
    let Some(items_node) = item.get("items") else {
        cx.err(mark, "missing required key: items");
        return;
    };
    let Some(items) = string_list(cx, items_node, "\"items\"") else {
        return;
    };
    let file = cx.file;
    if append || ov.is_some() {
        let replace = ov.as_ref().is_some_and(|v| v.iter().any(|(_, a, _)| !a));
        match cx.loaded.lists.get_mut(&name) {
            Some(l) => {
                if replace {
                    l.items.clear();
                }
                l.items.extend(items);
            }
            None => cx.err(
                mark,
                "appends to or overrides a list that is not defined earlier",
            ),
        }
        return;
    }
    if let Some(prev) = cx.loaded.lists.get(&name) {
        if prev.file == file {
            let line = prev.mark.line;
            cx.err(
                mark,
                format!("is defined twice in this file (first at line {line})"),
            );
            return;
        }
    }
    cx.loaded.lists.put(
        &name,
        ListDef {
            name: name.clone(),
            items,
            file,
            mark,
        },
    );
}

fn sequence(cx: &mut Ctx<'_>, item: &Node, mark: Mark) {
    let Some(name) = name_of(cx, item, "sequence") else {
        return;
    };
    cx.item = Some(ItemRef {
        kind: "sequence",
        name: name.clone(),
    });
    if let Node::Map { entries, .. } = item {
        for (k, _) in entries {
            let ks = k.as_str().unwrap_or_default();
            if !SEQ_KEYS.contains(&ks) {
                cx.err(
                    k.mark(),
                    format!(
                        "unknown key \"{ks}\": expected one of {}",
                        SEQ_KEYS.join(", ")
                    ),
                );
            }
        }
    }
    let mut missing = Vec::new();
    for k in ["by", "within", "steps", "priority"] {
        if item.get(k).is_none() {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        cx.err(
            mark,
            format!("missing required key(s): {}", missing.join(", ")),
        );
        return;
    }
    let by = match item.get("by") {
        Some(Node::Seq { items, .. }) if !items.is_empty() => {
            let mut v = Vec::new();
            for i in items {
                match i.as_str() {
                    Some(s) => v.push((s.to_string(), i.mark())),
                    None => cx.err(
                        i.mark(),
                        format!("\"by\" must list field names, found {}", i.kind()),
                    ),
                }
            }
            Some(v)
        }
        Some(n) => {
            cx.err(n.mark(), "\"by\" must be a non-empty list of field names");
            None
        }
        None => None,
    };
    let within = match item.get("within").and_then(Node::as_str) {
        Some(s) => match parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                cx.err(item.get("within").map_or(mark, Node::mark), e);
                None
            }
        },
        None => {
            cx.err(
                item.get("within").map_or(mark, Node::mark),
                "\"within\" must be a duration such as 30s, 10m, 1h",
            );
            None
        }
    };
    let steps = match item.get("steps") {
        Some(Node::Seq { items, .. }) if items.len() >= 2 => {
            let mut v = Vec::new();
            for i in items {
                match i.as_str() {
                    Some(s) => v.push((s.to_string(), i.mark())),
                    None => cx.err(
                        i.mark(),
                        format!("\"steps\" must list rule names, found {}", i.kind()),
                    ),
                }
            }
            Some(v)
        }
        Some(n) => {
            cx.err(
                n.mark(),
                "\"steps\" must be a list of at least two rule names",
            );
            None
        }
        None => None,
    };
    let prio = priority(cx, item);
    let desc = opt_string(cx, item, "desc").unwrap_or_default();
    let output = opt_string(cx, item, "output").unwrap_or_default();
    let tags = item
        .get("tags")
        .map_or(Some(Vec::new()), |n| string_list(cx, n, "\"tags\""));
    let enabled = opt_bool(cx, item, "enabled").unwrap_or(true);
    let tether = match item.get("tether") {
        Some(n) => tether_(cx, n),
        None => Some(TetherSettings::default()),
    };
    if let Some(t) = &tether {
        if t.admission {
            cx.err(
                item.get("tether").map_or(mark, Node::mark),
                "tether.admission does not apply to sequences",
            );
            return;
        }
    }
    if let Some(prev) = cx.loaded.sequences.get(&name) {
        if prev.file == cx.file {
            let line = prev.mark.line;
            cx.err(
                mark,
                format!("is defined twice in this file (first at line {line})"),
            );
            return;
        }
    }
    let (Some(by), Some(within), Some(steps), Some(priority), Some(tags), Some(tether)) =
        (by, within, steps, prio, tags, tether)
    else {
        return;
    };
    let file = cx.file;
    cx.loaded.sequences.put(
        &name,
        SequenceDef {
            name: name.clone(),
            desc,
            by,
            within,
            steps,
            priority,
            tags,
            enabled,
            output,
            tether,
            file,
            mark,
        },
    );
}

fn node_style(n: &Node) -> Style {
    match n {
        Node::Scalar { style, .. } => *style,
        _ => Style::Plain,
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Parses `1h30m`, `10m`, `45s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("\"within\" value \"{s}\" is not a duration: expected e.g. 500ms, 30s, 10m, 1h30m")
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let n_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_len == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..n_len].parse().map_err(|_| bad())?;
        rest = &rest[n_len..];
        let u_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..u_len];
        rest = &rest[u_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
    }
    if total.is_zero() {
        return Err(format!(
            "\"within\" must be longer than zero, found \"{s}\""
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn idents() {
        assert!(is_ident("spawned_process"));
        assert!(!is_ident("9x"));
        assert!(!is_ident("a-b"));
    }
}
