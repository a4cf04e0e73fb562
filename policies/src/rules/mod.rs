//! Rule sets: loading Falco rules files, compiling them, and evaluating events.
//!
//! Loading follows Falco: files are read in order; `append: true` and `override:` change
//! earlier definitions; a rule/macro/list defined again in a later file replaces the earlier
//! one; unknown keys and unknown top-level items are warnings; `required_plugin_versions` is
//! ignored with a warning. Every error names `FILE:LINE:COL`, the item and what is wrong, and
//! nothing loads while there is one.

mod compile;
mod eval;
mod loader;
mod types;
pub(crate) mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value as Json;

pub use loader::{parse_duration, ENGINE_VERSION};
pub use types::{
    ActionKind, ItemRef, LabelExpression, LabelSelector, LoadError, LoadErrors, LoadWarning, Match,
    Mode, OutputMatch, Priority, RuleInfo, Scope, SequenceInfo, TetherSettings, UnknownPriority,
};

use compile::{Compiler, Expr};
use loader::Loaded;

use crate::body::Body;
use crate::condition;
use crate::doc::KeySet;
use crate::event::{Event, Payload};
use crate::fields::{self, FieldId};
use crate::output::Template;
use crate::source::Source;

/// The embedded `policies/library/**/*.yaml` files, in sorted path order.
mod bundled {
    include!(concat!(env!("OUT_DIR"), "/library.rs"));
}

/// How many rules are evaluated between two reads of the clock under a deadline.
const DEADLINE_EVERY: usize = 4;

/// The outcome of [`RuleSet::evaluate_outputs_until`].
#[derive(Debug)]
pub enum Evaluation {
    /// Every rule ran: the matches, in load order.
    Done(Vec<OutputMatch>),
    /// The deadline passed first: finish with [`RuleSet::resume_outputs`].
    Interrupted(Partial),
}

/// An evaluation interrupted at its deadline: the matches so far and where to go on.
#[derive(Debug)]
pub struct Partial {
    next: usize,
    matches: Vec<OutputMatch>,
}

/// A loaded, compiled, immutable set of rules. Share it as `Arc<RuleSet>`; reload by
/// building a new one.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<RuleInfo>>,
    compiled: Vec<Compiled>,
    sequences: Vec<Arc<SequenceInfo>>,
    warnings: Vec<LoadWarning>,
    syscall: Index,
    audit: Index,
    admission: Index,
    /// Compiled macros: the size of an evaluation's macro memo.
    macros: u32,
    /// Some rule evaluated at admission reads an object's `metadata.managedFields`.
    admission_reads_managed_fields: bool,
}

#[derive(Debug)]
struct Compiled {
    expr: Expr,
    output: Template,
    /// Keys an event's objects must have for `expr` to hold ([`compile::needed_keys`]).
    needs: KeySet,
}

/// Which rules can match an event, by the value of one or two key fields.
#[derive(Debug, Default)]
struct Index {
    /// Rules that no key narrows.
    any: Vec<u32>,
    key1: Option<FieldId>,
    by_key1: HashMap<String, Vec<u32>>,
    key2: Option<FieldId>,
    by_key2: HashMap<String, Vec<u32>>,
}

impl Index {
    fn new(key1: Option<FieldId>, key2: Option<FieldId>) -> Self {
        Index {
            key1,
            key2,
            ..Default::default()
        }
    }

    fn add(&mut self, i: u32, e: &Expr) {
        if let Some(k) = self.key1 {
            if let Some(vals) = compile::possible_values(e, k) {
                for v in vals {
                    self.by_key1.entry(v).or_default().push(i);
                }
                return;
            }
        }
        if let Some(k) = self.key2 {
            if let Some(vals) = compile::possible_values(e, k) {
                for v in vals {
                    self.by_key2.entry(v).or_default().push(i);
                }
                return;
            }
        }
        self.any.push(i);
    }

    /// The candidate rules for an event, in rule order.
    fn candidates(&self, ev: &Event, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.any);
        for (key, map) in [(self.key1, &self.by_key1), (self.key2, &self.by_key2)] {
            let Some(k) = key else { continue };
            if map.is_empty() {
                continue;
            }
            if let Some(list) = key_value(ev, k).and_then(|v| map.get(v)) {
                out.extend_from_slice(list);
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// The text of an index key field, without allocating.
fn key_value(ev: &Event, k: FieldId) -> Option<&str> {
    let name = k.def().name;
    match ev.payload() {
        Payload::Syscall(s) if name == "evt.type" => Some(s.evt_type.as_str()),
        Payload::Json(j) => match name {
            "ka.target.resource" => j.get("objectRef")?.get("resource")?.as_str(),
            "ka.verb" => j.get("verb")?.as_str(),
            _ => None,
        },
        _ => None,
    }
}

impl RuleSet {
    /// Loads rules files in the given order (Falco's load order: later files append to or
    /// override earlier ones).
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<RuleSet, LoadErrors> {
        Self::from_texts(&Self::read_files(paths)?)
    }

    /// The `(name, yaml)` pairs [`RuleSet::load`] loads: the files in the given order, a
    /// directory standing for its `*.yaml` / `*.yml` files in name order (as in Falco).
    pub fn read_files(paths: &[impl AsRef<Path>]) -> Result<Vec<(String, String)>, LoadErrors> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        let mut expanded = Vec::new();
        for p in paths {
            let p = p.as_ref();
            if p.is_dir() {
                match std::fs::read_dir(p) {
                    Ok(rd) => {
                        let mut inner: Vec<std::path::PathBuf> = rd
                            .flatten()
                            .map(|e| e.path())
                            .filter(|f| {
                                f.is_file()
                                    && f.extension().is_some_and(|x| x == "yaml" || x == "yml")
                            })
                            .collect();
                        inner.sort();
                        expanded.extend(inner);
                    }
                    Err(e) => errors.push(LoadError {
                        file: p.display().to_string(),
                        line: 1,
                        col: 1,
                        item: None,
                        message: format!("cannot read the directory: {e}"),
                    }),
                }
            } else {
                expanded.push(p.to_path_buf());
            }
        }
        for p in &expanded {
            let name = p.display().to_string();
            match std::fs::read(p) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => files.push((name, text)),
                    Err(e) => errors.push(LoadError {
                        file: name,
                        line: 1,
                        col: 1,
                        item: None,
                        message: format!(
                            "the file is not UTF-8 text (invalid byte at offset {})",
                            e.utf8_error().valid_up_to()
                        ),
                    }),
                },
                Err(e) => errors.push(LoadError {
                    file: name,
                    line: 1,
                    col: 1,
                    item: None,
                    message: format!("cannot read the file: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        Ok(files)
    }

    /// Loads rules from `(name, yaml)` pairs, in order.
    pub fn from_texts(files: &[(String, String)]) -> Result<RuleSet, LoadErrors> {
        let mut loaded = Loaded::default();
        for (name, text) in files {
            loaded.add_file(name, text);
        }
        build(loaded)
    }

    /// The rules under `policies/library/`, embedded at build time. When they fail to load
    /// (a build that would fail its own tests), the set is empty and the errors are in
    /// [`RuleSet::warnings`].
    pub fn bundled_library() -> RuleSet {
        match Self::try_bundled_library() {
            Ok(r) => r,
            Err(errs) => {
                for e in errs.iter() {
                    tracing::error!(error = %e, "bundled rule library failed to load");
                }
                let warnings = errs
                    .0
                    .into_iter()
                    .map(|e| LoadWarning {
                        file: e.file,
                        line: e.line,
                        col: e.col,
                        item: e.item,
                        message: format!("bundled library not loaded: {}", e.message),
                    })
                    .collect();
                RuleSet {
                    warnings,
                    ..RuleSet::empty()
                }
            }
        }
    }

    /// The bundled library, or why it does not load.
    pub fn try_bundled_library() -> Result<RuleSet, LoadErrors> {
        let files: Vec<(String, String)> = bundled_files()
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        Self::from_texts(&files)
    }

    /// A set with no rules.
    pub fn empty() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            compiled: Vec::new(),
            sequences: Vec::new(),
            warnings: Vec::new(),
            syscall: Index::default(),
            audit: Index::default(),
            admission: Index::default(),
            macros: 0,
            admission_reads_managed_fields: false,
        }
    }

    /// Every enabled rule that matches the event, in load order. Audit events run the
    /// `k8s_audit` rules; admission events run the `k8s_admission` rules and the `k8s_audit`
    /// rules with `tether.admission: true`; syscall events run the `syscall` rules.
    pub fn evaluate(&self, ev: &Event) -> Vec<Match> {
        let mut out = Vec::new();
        self.each_match(ev, 0, None, |c, r| {
            let (output, output_fields) = c.output.render(ev);
            out.push(Match {
                rule: Arc::clone(r),
                output,
                output_fields,
            });
        });
        out
    }

    /// The same matches as [`RuleSet::evaluate`], in the same order, with their rendered
    /// outputs but without the output fields: for callers that show the outputs only (the
    /// admission webhook's answers and decisions).
    pub fn evaluate_outputs(&self, ev: &Event) -> Vec<OutputMatch> {
        let mut out = Vec::new();
        self.each_match(ev, 0, None, |c, r| {
            out.push(OutputMatch {
                rule: Arc::clone(r),
                output: c.output.render_text(ev),
            });
        });
        out
    }

    /// [`RuleSet::evaluate_outputs`] that stops between two rules once `deadline` has
    /// passed (the clock is read every few rules; a rule that has started is finished).
    /// [`RuleSet::resume_outputs`] finishes an interrupted evaluation, with the same result
    /// as one uninterrupted call.
    pub fn evaluate_outputs_until(&self, ev: &Event, deadline: Instant) -> Evaluation {
        self.outputs_from(ev, Vec::new(), 0, Some(deadline))
    }

    /// Finishes an evaluation [`RuleSet::evaluate_outputs_until`] of this rule set
    /// interrupted, on the same event.
    pub fn resume_outputs(&self, ev: &Event, partial: Partial) -> Vec<OutputMatch> {
        match self.outputs_from(ev, partial.matches, partial.next, None) {
            Evaluation::Done(m) => m,
            // Without a deadline the evaluation runs to the end.
            Evaluation::Interrupted(p) => p.matches,
        }
    }

    fn outputs_from(
        &self,
        ev: &Event,
        mut out: Vec<OutputMatch>,
        from: usize,
        deadline: Option<Instant>,
    ) -> Evaluation {
        let next = self.each_match(ev, from, deadline, |c, r| {
            out.push(OutputMatch {
                rule: Arc::clone(r),
                output: c.output.render_text(ev),
            });
        });
        match next {
            None => Evaluation::Done(out),
            Some(next) => Evaluation::Interrupted(Partial { next, matches: out }),
        }
    }

    /// Calls `f` with every enabled rule that matches the event, in load order, starting at
    /// candidate `from`. With a deadline, stops between two candidates once it has passed
    /// and answers the candidate to resume at.
    fn each_match(
        &self,
        ev: &Event,
        from: usize,
        deadline: Option<Instant>,
        mut f: impl FnMut(&Compiled, &Arc<RuleInfo>),
    ) -> Option<usize> {
        let index = match ev.source() {
            Source::Syscall => &self.syscall,
            Source::K8sAudit => &self.audit,
            Source::K8sAdmission => &self.admission,
        };
        let mut cands = Vec::with_capacity(self.rules.len());
        index.candidates(ev, &mut cands);
        let mut memo = eval::Memo::new(self.macros);
        // A rule that needs a key the event's objects lack cannot hold: skipped unread (the
        // pod security rules each test a field most pods do not set).
        let keys = ev.body().and_then(Body::keys).copied();
        // Rules evaluated since the clock was last read.
        let mut unchecked = 0;
        for (at, i) in cands.iter().enumerate().skip(from) {
            let i = *i as usize;
            let (Some(c), Some(r)) = (self.compiled.get(i), self.rules.get(i)) else {
                continue;
            };
            if keys.is_some_and(|k| !k.may_hold_all(&c.needs)) {
                continue;
            }
            if let Some(d) = deadline {
                // Reading the clock costs about as much as a cheap rule: every few rules
                // evaluated (never before the first, so that every call makes progress).
                if unchecked == DEADLINE_EVERY {
                    if Instant::now() >= d {
                        return Some(at);
                    }
                    unchecked = 0;
                }
                unchecked += 1;
            }
            if eval::eval(&c.expr, ev, &mut memo) {
                f(c, r);
            }
        }
        None
    }

    /// Whether some enabled rule evaluated at admission (a `k8s_admission` rule, or a
    /// `k8s_audit` rule with `tether.admission: true`) reads an object's
    /// `metadata.managedFields` in its condition or output (see
    /// [`crate::fields::FieldRef::reads_managed_fields`]). When none does, a reader of
    /// admission reviews may leave `managedFields` out of the event.
    pub fn admission_reads_managed_fields(&self) -> bool {
        self.admission_reads_managed_fields
    }

    /// Every rule (enabled or not), in load order.
    pub fn rules(&self) -> &[Arc<RuleInfo>] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Arc<RuleInfo>> {
        self.rules.iter().find(|r| r.name == name)
    }

    pub fn sequences(&self) -> &[Arc<SequenceInfo>] {
        &self.sequences
    }

    pub fn warnings(&self) -> &[LoadWarning] {
        &self.warnings
    }
}

/// The embedded library files: `(path relative to policies/, yaml)`, sorted by path.
pub fn bundled_files() -> &'static [(&'static str, &'static str)] {
    bundled::FILES
}

fn build(loaded: Loaded) -> Result<RuleSet, LoadErrors> {
    let mut errors = loaded.errors.clone();
    let mut warnings = loaded.warnings.clone();
    let mut cx = Compiler::new(&loaded);

    let mut rules = Vec::new();
    let mut compiled = Vec::new();
    for def in &loaded.rules.items {
        let item = ItemRef {
            kind: "rule",
            name: def.name.clone(),
        };
        let text = def.cond.joined();
        let cond_text = text.clone();
        let ast = match condition::parse(&text) {
            Ok(a) => a,
            Err(e) => {
                cx.cond_error(
                    &def.cond,
                    e.offset,
                    item,
                    format!("invalid condition: {}", e.message),
                );
                continue;
            }
        };
        let before = cx.errors.len();
        let expr = match cx.expr(&ast) {
            Ok(e) => e,
            Err(e) => {
                if e.unknown_field && def.skip_if_unknown_filter {
                    let (f, l, c) = def.cond.locate(&loaded.files, e.pos);
                    warnings.push(LoadWarning {
                        file: loaded
                            .files
                            .get(f)
                            .map_or_else(String::new, |x| x.name.clone()),
                        line: l,
                        col: c,
                        item: Some(item),
                        message: format!(
                            "rule skipped (skip-if-unknown-filter): {}",
                            e.message.unwrap_or_default()
                        ),
                    });
                    cx.errors.truncate(before);
                } else if let Some(m) = e.message {
                    cx.cond_error(&def.cond, e.pos, item, m);
                }
                continue;
            }
        };
        let expr = match cx.exceptions(&def.exceptions, &def.name) {
            Ok(Some(exc)) => Expr::And(vec![expr, Expr::Not(Box::new(exc))]),
            Ok(None) => expr,
            Err(()) => continue,
        };
        // Every field must be one the rule's source provides.
        let mut used = Vec::new();
        compile::fields_of(&expr, &mut used);
        let output = match Template::compile(&def.output) {
            Ok(t) => t,
            Err(e) => {
                let text = loaded.files.get(def.output_file).map_or("", |f| &f.text);
                let (line, col) = yaml::locate(
                    text,
                    def.output_mark,
                    def.output_style,
                    &def.output,
                    e.offset,
                );
                cx.error_at(def.output_file, line, col, Some(item), e.message);
                continue;
            }
        };
        let mut bad = false;
        let sources: &[Source] = if def.tether.admission {
            &[Source::K8sAudit, Source::K8sAdmission]
        } else {
            std::slice::from_ref(&def.source)
        };
        for (id, text) in used
            .iter()
            .cloned()
            .chain(output.fields().map(|f| (f.id, f.text.clone())))
        {
            let d = id.def();
            if let Some(s) = sources.iter().find(|s| !field_available(d.sources, **s)) {
                let from = d
                    .sources
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                // Point at the field in the rule's own condition when it is written there.
                match cond_text.find(text.as_str()) {
                    Some(off) => {
                        let m = format!("field \"{text}\" is not available for source {s} (it comes from {from})");
                        cx.cond_error(&def.cond, off, item.clone(), m);
                    }
                    None => {
                        let m = format!("field \"{text}\" is not available for source {s} (it comes from {from}); it is used in a macro, the output or an exception");
                        cx.error_at(def.file, def.mark.line, def.mark.col, Some(item.clone()), m);
                    }
                }
                bad = true;
                break;
            }
        }
        if bad {
            continue;
        }
        rules.push(Arc::new(RuleInfo {
            name: def.name.clone(),
            desc: def.desc.clone(),
            source: def.source,
            priority: def.priority,
            tags: def.tags.clone(),
            enabled: def.enabled,
            tether: def.tether.clone(),
            condition: text,
            output: def.output.clone(),
            file: loaded
                .files
                .get(def.file)
                .map_or_else(String::new, |f| f.name.clone()),
            line: def.mark.line,
        }));
        let needs = compile::needed_keys(&expr);
        compiled.push(Compiled {
            expr,
            output,
            needs,
        });
    }

    // Macros no rule uses are still checked, so a broken macro is found before it is used.
    let unused_macros: Vec<&loader::MacroDef> = loaded
        .macros
        .items
        .iter()
        .filter(|m| !cx.used_macros.contains(&m.name))
        .collect();
    for m in &loaded.macros.items {
        let _ = cx.macro_expr(&m.name);
    }
    for m in unused_macros {
        warnings.push(LoadWarning {
            file: loaded
                .files
                .get(m.file)
                .map_or_else(String::new, |f| f.name.clone()),
            line: m.mark.line,
            col: m.mark.col,
            item: Some(ItemRef {
                kind: "macro",
                name: m.name.clone(),
            }),
            message: "macro is not used by any rule".to_string(),
        });
    }
    for l in &loaded.lists.items {
        if !cx.used_lists.contains(&l.name) {
            warnings.push(LoadWarning {
                file: loaded
                    .files
                    .get(l.file)
                    .map_or_else(String::new, |f| f.name.clone()),
                line: l.mark.line,
                col: l.mark.col,
                item: Some(ItemRef {
                    kind: "list",
                    name: l.name.clone(),
                }),
                message: "list is not used by any rule or macro".to_string(),
            });
        }
    }

    // Sequences: step rules must exist; `by` fields must be registered.
    let mut sequences = Vec::new();
    let rule_names: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    for s in &loaded.sequences.items {
        let item = ItemRef {
            kind: "sequence",
            name: s.name.clone(),
        };
        let mut ok = true;
        for (step, m) in &s.steps {
            if !rule_names.contains(step.as_str()) {
                cx.error_at(
                    s.file,
                    m.line,
                    m.col,
                    Some(item.clone()),
                    format!("step \"{step}\" is not a loaded rule"),
                );
                ok = false;
            }
        }
        for (f, m) in &s.by {
            let (name, arg) = match f.find('[') {
                Some(i) if f.ends_with(']') => (&f[..i], Some(&f[i + 1..f.len() - 1])),
                _ => (f.as_str(), None),
            };
            if let Err(e) = fields::resolve(name, arg) {
                cx.error_at(
                    s.file,
                    m.line,
                    m.col,
                    Some(item.clone()),
                    format!("\"by\": {e}"),
                );
                ok = false;
            }
        }
        if let Err(e) = Template::compile(&s.output) {
            cx.error_at(
                s.file,
                s.mark.line,
                s.mark.col,
                Some(item.clone()),
                e.message,
            );
            ok = false;
        }
        if ok {
            sequences.push(Arc::new(SequenceInfo {
                name: s.name.clone(),
                desc: s.desc.clone(),
                by: s.by.iter().map(|(f, _)| f.clone()).collect(),
                within: s.within,
                steps: s.steps.iter().map(|(f, _)| f.clone()).collect(),
                priority: s.priority,
                tags: s.tags.clone(),
                enabled: s.enabled,
                output: s.output.clone(),
                tether: s.tether.clone(),
                file: loaded
                    .files
                    .get(s.file)
                    .map_or_else(String::new, |f| f.name.clone()),
                line: s.mark.line,
            }));
        }
    }

    errors.append(&mut cx.errors);
    if !errors.is_empty() {
        // Report in file, then position order, each problem once.
        let order: BTreeMap<&str, usize> = loaded
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.as_str(), i))
            .collect();
        errors.sort_by_key(|e| {
            (
                order.get(e.file.as_str()).copied().unwrap_or(usize::MAX),
                e.line,
                e.col,
            )
        });
        errors.dedup();
        return Err(LoadErrors(errors));
    }

    let evt_type = fields::lookup("evt.type");
    let mut syscall = Index::new(evt_type, None);
    let mut audit = Index::new(
        fields::lookup("ka.target.resource"),
        fields::lookup("ka.verb"),
    );
    let mut admission = Index::new(
        fields::lookup("ka.target.resource"),
        fields::lookup("ka.verb"),
    );
    let mut admission_reads_managed_fields = false;
    for (i, (r, c)) in rules.iter().zip(&compiled).enumerate() {
        if !r.enabled {
            continue;
        }
        let Ok(i) = u32::try_from(i) else { break };
        match r.source {
            Source::Syscall => syscall.add(i, &c.expr),
            Source::K8sAudit => audit.add(i, &c.expr),
            Source::K8sAdmission => {}
        }
        if r.runs_at_admission() {
            admission.add(i, &c.expr);
            if !admission_reads_managed_fields {
                admission_reads_managed_fields =
                    compile::any_field(&c.expr, &mut |f| f.reads_managed_fields())
                        || c.output.fields().any(|f| f.reads_managed_fields());
            }
        }
    }
    Ok(RuleSet {
        rules,
        compiled,
        sequences,
        warnings,
        syscall,
        audit,
        admission,
        macros: cx.macro_count(),
        admission_reads_managed_fields,
    })
}

fn field_available(sources: &[Source], s: Source) -> bool {
    sources.contains(&s)
}

/// Converts a JSON value to an event of the kind it looks like (audit event or
/// AdmissionReview). Convenience for tests and tools.
pub fn event_from_json(v: Json) -> Result<Event, crate::InputError> {
    match v.get("kind").and_then(Json::as_str) {
        Some("AdmissionReview") => Event::from_admission_review(v),
        _ => Event::from_audit_value(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_and_sync() {
        assert_send_sync::<RuleSet>();
        assert_send_sync::<Event>();
        assert_send_sync::<crate::Alert>();
        assert_send_sync::<Match>();
    }

    #[test]
    fn bundled_library_loads_clean() {
        assert!(!bundled_files().is_empty());
        let mut names: Vec<&str> = bundled_files().iter().map(|(n, _)| *n).collect();
        let sorted = {
            let mut s = names.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(names, sorted, "embedded in sorted path order");
        names.dedup();
        if let Err(e) = RuleSet::try_bundled_library() {
            panic!("the bundled library does not load:\n{e}");
        }
        assert!(RuleSet::bundled_library()
            .warnings()
            .iter()
            .all(|w| !w.message.starts_with("bundled library not loaded")));
    }

    /// Macros are computed once per evaluation and shared by the rules that use them; each
    /// macro keeps its own value (nested, negated, used before and after another).
    #[test]
    fn shared_macros_keep_their_own_values() {
        let yaml = r#"
- macro: is_create
  condition: ka.verb = create
- macro: is_pods
  condition: ka.target.resource = pods
- macro: pod_create
  condition: is_create and is_pods
- rule: r1
  desc: d
  condition: is_create and not is_pods
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: r2
  desc: d
  condition: pod_create
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: r3
  desc: d
  condition: not is_create or is_pods
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: r4
  desc: d
  condition: is_pods and not pod_create
  output: o
  priority: NOTICE
  source: k8s_audit
"#;
        let rs = RuleSet::from_texts(&[("m.yaml".to_string(), yaml.to_string())]).unwrap();
        let fired = |verb: &str, resource: &str| -> Vec<String> {
            let ev = Event::from_audit_value(serde_json::json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
                "verb": verb, "auditID": "a", "requestURI": "/x",
                "objectRef": {"resource": resource, "namespace": "n", "name": "p"}
            }))
            .unwrap();
            rs.evaluate(&ev)
                .into_iter()
                .map(|m| m.rule.name.clone())
                .collect()
        };
        assert_eq!(fired("create", "pods"), ["r2", "r3"]);
        assert_eq!(fired("create", "secrets"), ["r1"]);
        assert_eq!(fired("delete", "pods"), ["r3", "r4"]);
        assert_eq!(fired("delete", "secrets"), ["r3"]);
    }

    #[test]
    fn admission_rules_that_read_managed_fields_are_known() {
        assert!(
            !RuleSet::try_bundled_library()
                .unwrap()
                .admission_reads_managed_fields(),
            "no rule of the bundled library reads managedFields at admission"
        );
        let set = |rule: &str| {
            RuleSet::from_texts(&[("m.yaml".to_string(), rule.to_string())])
                .unwrap()
                .admission_reads_managed_fields()
        };
        let rule = |cond: &str, output: &str, source: &str, admission: bool| {
            format!(
                "- macro: m\n  condition: {cond}\n- rule: r\n  desc: d\n  condition: ka.verb = create and m\n  output: {output}\n  priority: NOTICE\n  source: {source}\n  tether:\n    admission: {admission}\n"
            )
        };
        let reads = "json[$.requestObject.metadata.managedFields[*].manager] exists";
        // In a macro of the condition, or in the output.
        assert!(set(&rule(reads, "o", "k8s_admission", false)));
        assert!(set(&rule(
            "ka.target.name = x",
            "o %jevt.obj",
            "k8s_admission",
            false
        )));
        // A k8s_audit rule counts only when it runs at admission.
        assert!(set(&rule(reads, "o", "k8s_audit", true)));
        assert!(!set(&rule(reads, "o", "k8s_audit", false)));
        assert!(!set(&rule(
            "ka.target.name = x",
            "o %ka.user.name",
            "k8s_admission",
            false
        )));
    }

    #[test]
    fn rules_directories_are_read_as_their_yaml_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.d");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("b.yaml"), "- list: b\n  items: []\n").unwrap();
        std::fs::write(rules.join("a.yml"), "- list: a\n  items: []\n").unwrap();
        std::fs::write(rules.join("notes.txt"), "not rules").unwrap();
        let single = dir.path().join("z.yaml");
        std::fs::write(&single, "- list: z\n  items: []\n").unwrap();
        let texts = RuleSet::read_files(&[rules.clone(), single.clone()]).unwrap();
        let names: Vec<&str> = texts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                rules.join("a.yml").display().to_string(),
                rules.join("b.yaml").display().to_string(),
                single.display().to_string(),
            ]
        );
        let missing = dir.path().join("missing.yaml");
        let err = RuleSet::read_files(std::slice::from_ref(&missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.yaml") && err.contains("cannot read the file"),
            "{err}"
        );
    }

    fn needs_of(cond: &str) -> KeySet {
        let yaml = format!(
            "- rule: r\n  desc: d\n  condition: {cond}\n  output: o\n  priority: NOTICE\n  source: k8s_audit\n"
        );
        let set = RuleSet::from_texts(&[("n.yaml".to_string(), yaml)]).unwrap();
        set.compiled[0].needs
    }

    #[test]
    fn a_rule_needs_the_keys_of_its_pointers_and_queries_in_every_branch() {
        assert_eq!(
            needs_of("jevt.value[/requestObject/spec/containers/0/image] exists"),
            KeySet::of(["spec", "containers", "image"])
        );
        // Both branches of an `or` need `spec`; only one needs each of the others.
        assert_eq!(
            needs_of(
                "jevt.value[/requestObject/spec/hostPID] = true or jevt.value[/requestObject/spec/hostIPC] = true"
            ),
            KeySet::of(["spec"])
        );
        assert_eq!(
            needs_of(
                "ka.verb = create and json[$.requestObject.metadata.labels.app] = web and not jevt.value[/requestObject/spec/x] = 1"
            ),
            KeySet::of(["metadata", "labels", "app"])
        );
        // A macro's needs are its rule's.
        let yaml = "- macro: m\n  condition: jevt.value[/requestObject/spec/hostNetwork] = true\n- rule: r\n  desc: d\n  condition: ka.verb = create and m\n  output: o\n  priority: NOTICE\n  source: k8s_audit\n";
        let set = RuleSet::from_texts(&[("m.yaml".to_string(), yaml.to_string())]).unwrap();
        assert_eq!(set.compiled[0].needs, KeySet::of(["spec", "hostNetwork"]));
        // Fields other than pointers and queries need nothing.
        assert_eq!(needs_of("ka.target.name = x"), KeySet::default());
    }

    /// JSON of a YAML document (the Kyverno test resources).
    fn yaml_json(y: &yaml_rust2::Yaml) -> Json {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Hash(h) => Json::Object(
                h.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), yaml_json(v))))
                    .collect(),
            ),
            Yaml::Array(a) => Json::Array(a.iter().map(yaml_json).collect()),
            Yaml::String(s) => Json::from(s.as_str()),
            Yaml::Integer(i) => Json::from(*i),
            Yaml::Real(r) => r.parse::<f64>().map_or(Json::Null, Json::from),
            Yaml::Boolean(b) => Json::Bool(*b),
            _ => Json::Null,
        }
    }

    /// The Kyverno pod security resources as admission reviews (CREATE, and UPDATE from
    /// an older object), and the audit and admission events of the other fixtures.
    fn fixture_events() -> Vec<Event> {
        let fixtures = std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures"
        ));
        let mut events = Vec::new();
        let mut stack = vec![fixtures.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    stack.push(path);
                } else if name == "resource.yaml" {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for doc in yaml_rust2::YamlLoader::load_from_str(&text).unwrap() {
                        let object = yaml_json(&doc);
                        let Some(kind) = object["kind"].as_str() else {
                            continue;
                        };
                        let resource = format!("{}s", kind.to_lowercase());
                        let mut older = object.clone();
                        older["spec"] = serde_json::json!({});
                        for (op, old) in [("CREATE", Json::Null), ("UPDATE", older)] {
                            events.push(
                                Event::from_admission_review(serde_json::json!({
                                    "apiVersion": "admission.k8s.io/v1",
                                    "kind": "AdmissionReview",
                                    "request": {
                                        "uid": "u", "operation": op,
                                        "resource": {"group": "", "version": "v1", "resource": resource},
                                        "namespace": "default", "name": object["metadata"]["name"],
                                        "userInfo": {"username": "bob"},
                                        "object": object, "oldObject": old
                                    }
                                }))
                                .unwrap(),
                            );
                        }
                    }
                } else if path
                    .extension()
                    .is_some_and(|x| x == "json" || x == "jsonl")
                    && !path.starts_with(fixtures.join("kubernetes-api"))
                {
                    let bytes = std::fs::read(&path).unwrap();
                    events.extend(crate::parse_document(&name, &bytes).into_iter().flatten());
                }
            }
        }
        events
    }

    #[test]
    fn rules_skipped_for_keys_their_event_lacks_never_hold() {
        let set = RuleSet::try_bundled_library().unwrap();
        let events = fixture_events();
        let (mut skipped, mut checked) = (0, 0);
        for ev in &events {
            let Some(keys) = ev.body().and_then(Body::keys) else {
                continue;
            };
            for (c, r) in set.compiled.iter().zip(&set.rules) {
                if !r.enabled || r.source == Source::Syscall {
                    continue;
                }
                checked += 1;
                if keys.may_hold_all(&c.needs) {
                    continue;
                }
                skipped += 1;
                let mut memo = eval::Memo::new(set.macros);
                assert!(
                    !eval::eval(&c.expr, ev, &mut memo),
                    "rule {:?} skipped although it holds on {:?}",
                    r.name,
                    ev.json()
                );
            }
        }
        // Most pod security rules test a field most objects lack (about a fifth of all the
        // rule and event pairs here).
        assert!(events.len() > 300, "{} events", events.len());
        assert!(skipped * 10 > checked, "{skipped} of {checked} skipped");
    }
}
