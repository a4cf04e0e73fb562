//! The write-open prefilter: which opens with write intent some rule could match, as path
//! prefixes and suffixes the kernel checks before anything reaches user space.
//!
//! Every syscall rule's condition is expanded (macros and lists as defined in the rule files)
//! and read as if the event were an open for write (`evt.type` one of `open`, `openat`,
//! `openat2`). Each rule is then one of: it cannot match such an event (its `evt.type` test
//! excludes opens), it matches only paths with given prefixes or suffixes (`fd.name
//! startswith/=/in/pmatch/glob`, `fd.directory =/in/startswith`, `fd.filename =/in/endswith`,
//! `fd.name endswith`; `fd.name(raw) contains "../"` needs nothing, the kernel reports every
//! such path), or it is not reducible to paths — then every write-open is reported and
//! the rule is named as the reason. The result over-approximates: a kept open may match no
//! rule; an open a rule matches is never dropped.

use std::collections::{BTreeSet, HashMap};

use policies::condition::{self, Ast, Op, Operand, Rhs};
use policies::rules::RuleSet;
use policies::Source;
use serde::Serialize;

/// Longest prefix or suffix a kernel key holds; longer ones are shortened (keeping more).
const KEY_MAX: usize = 63;
/// Macro nesting beyond this is treated as not reducible.
const MAX_DEPTH: usize = 64;

/// What the kernel reports of opens with write intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum WriteFilter {
    /// Every write-open is reported; `reasons` names the rules (or the missing rule set) that
    /// need them all.
    All { reasons: Vec<String> },
    /// Only absolute paths with one of these prefixes or suffixes (relative paths, paths
    /// longer than 63 bytes, unreadable ones and those with a `../` are reported too).
    Paths {
        prefixes: BTreeSet<String>,
        suffixes: BTreeSet<String>,
    },
}

impl WriteFilter {
    /// One line for `tether node status` and the start log.
    pub fn summary(&self) -> String {
        match self {
            WriteFilter::All { reasons } => format!(
                "every write-open is reported (not reducible to path prefixes: {})",
                reasons.join("; ")
            ),
            WriteFilter::Paths { prefixes, suffixes }
                if prefixes.is_empty() && suffixes.is_empty() =>
            {
                "no rule matches an open for write: write-opens are filtered in the kernel"
                    .to_string()
            }
            WriteFilter::Paths { prefixes, suffixes } => format!(
                "write-opens are reported only for {} path prefixes and {} suffixes",
                prefixes.len(),
                suffixes.len()
            ),
        }
    }
}

/// Macro conditions and list items as the rule files define them (appends applied).
#[derive(Debug, Default, Clone)]
pub struct Definitions {
    macros: HashMap<String, String>,
    lists: HashMap<String, Vec<String>>,
}

/// A rule file that is not valid YAML.
#[derive(Debug, thiserror::Error)]
#[error("rules file {file}: {error}")]
pub struct DefinitionsError {
    pub file: String,
    pub error: String,
}

impl Definitions {
    /// Reads `- macro:` and `- list:` items of rule files, in order (later definitions replace
    /// earlier ones, `append: true` or `override: append` extends them).
    pub fn from_texts(files: &[(String, String)]) -> Result<Definitions, DefinitionsError> {
        let mut d = Definitions::default();
        for (file, text) in files {
            let doc: serde_yaml::Value =
                serde_yaml::from_str(text).map_err(|e| DefinitionsError {
                    file: file.clone(),
                    error: e.to_string(),
                })?;
            let Some(items) = doc.as_sequence() else {
                continue;
            };
            for item in items {
                d.add_item(item);
            }
        }
        Ok(d)
    }

    fn add_item(&mut self, item: &serde_yaml::Value) {
        let appends = |key: &str| {
            item.get("append").and_then(serde_yaml::Value::as_bool) == Some(true)
                || item
                    .get("override")
                    .and_then(|o| o.get(key))
                    .and_then(serde_yaml::Value::as_str)
                    == Some("append")
        };
        if let Some(name) = item.get("macro").and_then(serde_yaml::Value::as_str) {
            let Some(cond) = item.get("condition").and_then(serde_yaml::Value::as_str) else {
                return;
            };
            if appends("condition") {
                if let Some(old) = self.macros.get_mut(name) {
                    old.push(' ');
                    old.push_str(cond);
                    return;
                }
            }
            self.macros.insert(name.to_string(), cond.to_string());
        } else if let Some(name) = item.get("list").and_then(serde_yaml::Value::as_str) {
            let Some(seq) = item.get("items").and_then(serde_yaml::Value::as_sequence) else {
                return;
            };
            let new: Vec<String> = seq
                .iter()
                .filter_map(|v| match v {
                    serde_yaml::Value::String(s) => Some(s.clone()),
                    serde_yaml::Value::Number(n) => Some(n.to_string()),
                    serde_yaml::Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .collect();
            if appends("items") {
                if let Some(old) = self.lists.get_mut(name) {
                    old.extend(new);
                    return;
                }
            }
            self.lists.insert(name.to_string(), new);
        }
    }
}

/// What one (sub)condition says about a write-open.
#[derive(Debug, Clone, PartialEq)]
enum Abs {
    /// False for every write-open.
    Never,
    /// True for every write-open.
    Always,
    /// Depends on something other than the path.
    Maybe,
    /// True only for paths with one of these patterns.
    Paths(Pats),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Pats {
    prefixes: BTreeSet<String>,
    suffixes: BTreeSet<String>,
}

impl Pats {
    fn len(&self) -> usize {
        self.prefixes.len() + self.suffixes.len()
    }
}

const OPEN_TYPES: [&str; 3] = ["open", "openat", "openat2"];

/// The prefilter for a rule set: the union over every enabled syscall rule.
pub fn compute(rules: Option<&RuleSet>, defs: &Definitions) -> WriteFilter {
    let Some(rules) = rules else {
        return WriteFilter::All {
            reasons: vec!["no rules loaded (visibility only)".to_string()],
        };
    };
    let mut all = Pats::default();
    let mut reasons = Vec::new();
    for r in rules.rules() {
        if !r.enabled || r.source != Source::Syscall {
            continue;
        }
        let a = match condition::parse(&r.condition) {
            Ok(ast) => analyse(&ast, defs, 0),
            Err(_) => Abs::Maybe,
        };
        match a {
            Abs::Never => {}
            Abs::Paths(p) => {
                all.prefixes.extend(p.prefixes);
                all.suffixes.extend(p.suffixes);
            }
            Abs::Always | Abs::Maybe => reasons.push(format!("rule \"{}\"", r.name)),
        }
    }
    if !reasons.is_empty() {
        return WriteFilter::All { reasons };
    }
    if all
        .prefixes
        .iter()
        .chain(&all.suffixes)
        .any(String::is_empty)
    {
        return WriteFilter::All {
            reasons: vec!["a rule matches the empty path prefix".to_string()],
        };
    }
    WriteFilter::Paths {
        prefixes: all.prefixes,
        suffixes: all.suffixes,
    }
}

fn analyse(ast: &Ast, defs: &Definitions, depth: usize) -> Abs {
    if depth > MAX_DEPTH {
        return Abs::Maybe;
    }
    match ast {
        Ast::And(parts) => {
            let mut acc = Abs::Always;
            for p in parts {
                acc = and(acc, analyse(p, defs, depth + 1));
                if acc == Abs::Never {
                    break;
                }
            }
            acc
        }
        Ast::Or(parts) => {
            let mut acc = Abs::Never;
            for p in parts {
                acc = or(acc, analyse(p, defs, depth + 1));
                if acc == Abs::Always {
                    break;
                }
            }
            acc
        }
        Ast::Not(inner) => match analyse(inner, defs, depth + 1) {
            Abs::Never => Abs::Always,
            Abs::Always => Abs::Never,
            _ => Abs::Maybe,
        },
        Ast::Macro { name, .. } => match defs.macros.get(name) {
            Some(text) => match condition::parse(text) {
                Ok(ast) => analyse(&ast, defs, depth + 1),
                Err(_) => Abs::Maybe,
            },
            None => Abs::Maybe,
        },
        Ast::Cmp { lhs, op, rhs, .. } => compare(lhs, *op, rhs, defs),
    }
}

fn and(a: Abs, b: Abs) -> Abs {
    match (a, b) {
        (Abs::Never, _) | (_, Abs::Never) => Abs::Never,
        (Abs::Always, x) | (x, Abs::Always) => x,
        (Abs::Maybe, x) | (x, Abs::Maybe) => x,
        // both must hold: either set alone is a sound bound; keep the smaller
        (Abs::Paths(x), Abs::Paths(y)) => Abs::Paths(if y.len() < x.len() { y } else { x }),
    }
}

fn or(a: Abs, b: Abs) -> Abs {
    match (a, b) {
        (Abs::Always, _) | (_, Abs::Always) => Abs::Always,
        (Abs::Never, x) | (x, Abs::Never) => x,
        (Abs::Maybe, _) | (_, Abs::Maybe) => Abs::Maybe,
        (Abs::Paths(mut x), Abs::Paths(y)) => {
            x.prefixes.extend(y.prefixes);
            x.suffixes.extend(y.suffixes);
            Abs::Paths(x)
        }
    }
}

/// The right side's values, lists expanded (`None` when it is a field).
fn values(rhs: &Rhs, defs: &Definitions) -> Option<Vec<String>> {
    match rhs {
        Rhs::Value { text, .. } => Some(vec![text.clone()]),
        Rhs::List(items) => {
            let mut out = Vec::new();
            for it in items {
                expand_item(&it.text, it.quoted, defs, &mut out, 0);
            }
            Some(out)
        }
        Rhs::None | Rhs::Operand(_) => None,
    }
}

fn expand_item(text: &str, quoted: bool, defs: &Definitions, out: &mut Vec<String>, depth: usize) {
    match defs.lists.get(text) {
        Some(items) if !quoted && depth < MAX_DEPTH => {
            for i in items {
                expand_item(i, false, defs, out, depth + 1);
            }
        }
        _ => out.push(text.to_string()),
    }
}

fn compare(lhs: &Operand, op: Op, rhs: &Rhs, defs: &Definitions) -> Abs {
    let Operand::Field {
        name, arg: None, ..
    } = lhs
    else {
        return Abs::Maybe;
    };
    let Some(vals) = values(rhs, defs) else {
        return Abs::Maybe;
    };
    match name.as_str() {
        "evt.type" => event_type(op, &vals),
        // the kernel reports every path with a `../` anyway
        "fd.name" | "fd.nameraw"
            if matches!(op, Op::Contains) && vals.iter().all(|v| v.contains("../")) =>
        {
            Abs::Paths(Pats::default())
        }
        "fd.name" => match op {
            Op::Eq | Op::In | Op::StartsWith | Op::PMatch => prefixes(&vals),
            Op::EndsWith => suffixes(vals.iter().map(String::as_str)),
            Op::Glob => {
                let lits: Vec<String> = vals
                    .iter()
                    .map(|v| v.split(['*', '?', '[']).next().unwrap_or("").to_string())
                    .collect();
                prefixes(&lits)
            }
            _ => Abs::Maybe,
        },
        "fd.directory" => match op {
            Op::Eq | Op::In => {
                let dirs: Vec<String> = vals
                    .iter()
                    .map(|d| {
                        if d.ends_with('/') {
                            d.clone()
                        } else {
                            format!("{d}/")
                        }
                    })
                    .collect();
                prefixes(&dirs)
            }
            Op::StartsWith | Op::PMatch => prefixes(&vals),
            _ => Abs::Maybe,
        },
        "fd.filename" => match op {
            Op::Eq | Op::In => {
                let names: Vec<String> = vals.iter().map(|f| format!("/{f}")).collect();
                suffixes(names.iter().map(String::as_str))
            }
            Op::EndsWith => suffixes(vals.iter().map(String::as_str)),
            _ => Abs::Maybe,
        },
        _ => Abs::Maybe,
    }
}

fn event_type(op: Op, vals: &[String]) -> Abs {
    let hits = OPEN_TYPES
        .iter()
        .filter(|t| vals.iter().any(|v| v == *t))
        .count();
    let positive = match op {
        Op::Eq | Op::In => true,
        Op::Ne => false,
        _ => return Abs::Maybe,
    };
    let truth = if hits == OPEN_TYPES.len() {
        Abs::Always
    } else if hits == 0 {
        Abs::Never
    } else {
        Abs::Maybe
    };
    match (positive, truth) {
        (true, t) => t,
        (false, Abs::Always) => Abs::Never,
        (false, Abs::Never) => Abs::Always,
        (false, _) => Abs::Maybe,
    }
}

fn prefixes(vals: &[String]) -> Abs {
    let mut p = Pats::default();
    for v in vals {
        let mut end = v.len().min(KEY_MAX);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        p.prefixes.insert(v[..end].to_string());
    }
    Abs::Paths(p)
}

fn suffixes<'a>(vals: impl Iterator<Item = &'a str>) -> Abs {
    let mut p = Pats::default();
    for v in vals {
        let mut start = v.len().saturating_sub(KEY_MAX);
        while !v.is_char_boundary(start) {
            start += 1;
        }
        p.suffixes.insert(v[start..].to_string());
    }
    Abs::Paths(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> WriteFilter {
        let files = vec![("r.yaml".to_string(), text.to_string())];
        let rules = RuleSet::from_texts(&files).unwrap();
        let defs = Definitions::from_texts(&files).unwrap();
        compute(Some(&rules), &defs)
    }

    const HEAD: &str = r#"
- list: bin_dirs
  items: [/bin, /sbin, /usr/bin]
- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true and fd.typechar='f' and fd.num>=0)
- macro: bin_dir
  condition: (fd.directory in (bin_dirs))
- macro: etc_dir
  condition: (fd.name startswith /etc/)
- macro: spawned_process
  condition: (evt.type in (execve, execveat) and evt.dir=<)
"#;

    fn rule(name: &str, cond: &str) -> String {
        format!(
            "- rule: {name}\n  desc: d\n  condition: {cond}\n  output: o\n  priority: WARNING\n"
        )
    }

    #[test]
    fn macros_and_lists_become_prefixes() {
        let text = format!(
            "{HEAD}{}{}{}",
            rule(
                "w bin",
                "open_write and bin_dir and not proc.name in (dpkg)"
            ),
            rule("w etc", "open_write and container and etc_dir"),
            rule("shell", "spawned_process and proc.name = bash"),
        );
        let f = filter(&text.replace("and container ", ""));
        let WriteFilter::Paths { prefixes, suffixes } = f else {
            panic!("not reducible: {f:?}");
        };
        let want: BTreeSet<String> = ["/bin/", "/sbin/", "/usr/bin/", "/etc/"]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(prefixes, want);
        assert!(suffixes.is_empty());
    }

    #[test]
    fn filenames_and_endswith_become_suffixes() {
        let text = format!(
            "{HEAD}{}{}",
            rule(
                "logs",
                "open_write and (fd.directory in (/var/log) or fd.filename in (lastlog, wtmp))"
            ),
            rule("agent", "open_write and fd.name endswith release_agent"),
        );
        let WriteFilter::Paths { prefixes, suffixes } = filter(&text) else {
            panic!("not reducible");
        };
        assert!(prefixes.contains("/var/log/"));
        for s in ["/lastlog", "/wtmp", "release_agent"] {
            assert!(suffixes.contains(s), "{s} missing from {suffixes:?}");
        }
    }

    #[test]
    fn a_rule_without_a_path_test_reports_everything_and_is_named() {
        let text = format!(
            "{HEAD}{}{}",
            rule("w bin", "open_write and bin_dir"),
            rule("any write", "open_write and proc.name = dd"),
        );
        match filter(&text) {
            WriteFilter::All { reasons } => {
                assert_eq!(reasons, vec!["rule \"any write\"".to_string()]);
            }
            f => panic!("expected all, got {f:?}"),
        }
    }

    #[test]
    fn or_with_an_unrestricted_branch_and_negated_paths_are_not_reducible() {
        let text = format!(
            "{HEAD}{}",
            rule("neg", "open_write and not fd.name startswith /tmp")
        );
        assert!(matches!(filter(&text), WriteFilter::All { .. }));
        let text = format!(
            "{HEAD}{}",
            rule("either", "open_write and (etc_dir or proc.name = vi)")
        );
        assert!(matches!(filter(&text), WriteFilter::All { .. }));
    }

    #[test]
    fn rules_that_exclude_opens_add_nothing() {
        let text = format!(
            "{HEAD}{}{}",
            rule("shell", "spawned_process and proc.name = bash"),
            rule("conn", "evt.type = connect and fd.sport = 22"),
        );
        assert_eq!(
            filter(&text),
            WriteFilter::Paths {
                prefixes: BTreeSet::new(),
                suffixes: BTreeSet::new()
            }
        );
        assert!(matches!(
            compute(None, &Definitions::default()),
            WriteFilter::All { .. }
        ));
    }

    #[test]
    fn long_patterns_are_shortened_to_a_key() {
        let long = format!("/{}", "a".repeat(100));
        let text = format!(
            "{HEAD}{}",
            rule("long", &format!("open_write and fd.name startswith {long}"))
        );
        let WriteFilter::Paths { prefixes, .. } = filter(&text) else {
            panic!("not reducible");
        };
        assert_eq!(prefixes.iter().next().map(String::len), Some(KEY_MAX));
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let e = Definitions::from_texts(&[("x.yaml".into(), "- [".into())]).unwrap_err();
        assert!(e.to_string().contains("x.yaml"), "{e}");
    }

    #[test]
    fn falco_stable_rules_reduce_to_paths() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/falco-rules/falco_rules.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let files = vec![(path.to_string(), text)];
        let rules = RuleSet::from_texts(&files).unwrap();
        let defs = Definitions::from_texts(&files).unwrap();
        let f = compute(Some(&rules), &defs);
        let WriteFilter::Paths { prefixes, .. } = &f else {
            panic!("falco_rules.yaml not reducible: {}", f.summary());
        };
        assert!(prefixes
            .iter()
            .any(|p| "/etc/shadow".starts_with(p.as_str())));
        assert!(!prefixes.iter().any(|p| "/tmp/x".starts_with(p.as_str())));
    }
}
