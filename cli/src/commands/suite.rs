//! `tether policy test` suites: YAML files that name rules files, input events and the
//! expected rule hits and admission decisions, in the spirit of `kyverno test` and Falco's
//! `falco_k8s_audit_tests.yaml`.
//!
//! # Format
//!
//! ```yaml
//! name: exec and pod rules             # optional, printed in the report
//! rules:                               # default rules files for every case, loaded together
//!   - ../../policies/library/k8s.yaml  # in this order (as Falco does); relative to this file
//! cases:
//!   - name: exec into a pod is reported            # required, unique within the suite
//!     rules: [extra.yaml]                          # optional: replaces the suite's `rules`
//!     inputs:                                      # required, at least one
//!       - traces/exec_pod.json                     # a file relative to this file (any shape:
//!                                                  #   Event, EventList, JSON lines, JSON array,
//!                                                  #   AdmissionReview)
//!       - file: traces/more.jsonl                  # the same, spelled out
//!       - json: {kind: AdmissionReview, ...}       # an inline document (YAML or JSON syntax)
//!       - text: '{"kind": 0}'                      # inline raw text, parsed like a file
//!     expect:                                      # required, at least one expectation
//!       hits: {"Attach/Exec Pod": 1, "Create Privileged Pod": 0}  # exact count per rule
//!       total: 1                 # exact number of alerts from all rules together
//!       priorities: [NOTICE]     # at least one alert at each of these priorities
//!       rejected: 0              # exact number of rejected input documents (default 0)
//!       rejected_contains: [...] # texts that must appear in the rejection messages
//!       decision: deny           # allow | deny: every admission input gets this decision
//!     skip_reason: "..."         # optional: the case is not run; the reason is printed
//!     known_difference: "..."    # optional: the case runs; a failure is reported as a known
//!                                #   difference with this reason; a pass is a failure (the
//!                                #   mark is stale and must be removed)
//! ```
//!
//! Every error in the suite file itself names the file and the line: unknown keys, wrong
//! types, missing files, duplicate case names, cases that expect nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use policies::{Event, RuleSet, Source};

use yaml::{Node, NodeKind};

/// An error in a suite file, with its position (`line` 0: the file as a whole).
#[derive(Debug, thiserror::Error)]
pub struct SuiteError {
    pub file: String,
    pub line: usize,
    pub what: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.what)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.what)
        }
    }
}

/// Falco's priority names, most severe first; `INFO` is accepted for `INFORMATIONAL`.
pub const PRIORITIES: [&str; 8] = [
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFORMATIONAL",
    "DEBUG",
];

/// Canonical upper-case priority name, or `None` when `s` is not one.
pub fn canonical_priority(s: &str) -> Option<&'static str> {
    let up = s.trim().to_ascii_uppercase();
    let up = if up == "INFO" {
        "INFORMATIONAL".to_string()
    } else {
        up
    };
    PRIORITIES.iter().copied().find(|p| *p == up)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        })
    }
}

#[derive(Debug, Clone)]
pub enum InputSpec {
    File(PathBuf),
    Json(serde_json::Value),
    Text(String),
}

#[derive(Debug, Clone)]
pub struct Input {
    pub spec: InputSpec,
    pub line: usize,
}

impl Input {
    /// The name used in rejection messages: the path for files, `inline@LINE` otherwise.
    fn display_name(&self) -> String {
        match &self.spec {
            InputSpec::File(p) => p.display().to_string(),
            InputSpec::Json(_) | InputSpec::Text(_) => format!("inline@{}", self.line),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        match &self.spec {
            InputSpec::File(p) => {
                std::fs::read(p).map_err(|e| format!("cannot read input {}: {e}", p.display()))
            }
            InputSpec::Json(v) => serde_json::to_vec(v)
                .map_err(|e| format!("cannot encode inline input of line {}: {e}", self.line)),
            InputSpec::Text(t) => Ok(t.clone().into_bytes()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub hits: Vec<(String, u64)>,
    pub total: Option<u64>,
    pub priorities: Vec<&'static str>,
    pub rejected: u64,
    pub rejected_contains: Vec<String>,
    pub decision: Option<Decision>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub line: usize,
    pub rules: Vec<PathBuf>,
    pub inputs: Vec<Input>,
    pub expect: Expect,
    pub skip_reason: Option<String>,
    pub known_difference: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Suite {
    pub file: PathBuf,
    pub name: Option<String>,
    pub cases: Vec<Case>,
}

/// Reads and validates one suite file.
pub fn load_suite(path: &Path) -> Result<Suite, SuiteError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SuiteError {
        file: file.clone(),
        line: 0,
        what: format!("cannot read suite: {e}"),
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_suite(&file, &text, &base).map(|(name, cases)| Suite {
        file: path.to_path_buf(),
        name,
        cases,
    })
}

type Parsed = (Option<String>, Vec<Case>);

/// Parses suite text; `base` is the directory relative paths are resolved against.
pub fn parse_suite(file: &str, text: &str, base: &Path) -> Result<Parsed, SuiteError> {
    let err = |line: usize, what: String| SuiteError {
        file: file.to_string(),
        line,
        what,
    };
    let root = yaml::parse(text).map_err(|(line, what)| err(line, what))?;
    let Some(root) = root else {
        return Err(err(
            1,
            "the suite is empty: expected a mapping with `cases`".into(),
        ));
    };
    let top = root.as_map().ok_or_else(|| {
        err(
            root.line,
            format!(
                "expected a mapping at the top level, found {}",
                root.kind_name()
            ),
        )
    })?;
    let mut name = None;
    let mut default_rules: Option<Vec<PathBuf>> = None;
    let mut cases_node = None;
    for (key, value) in top {
        match key.as_str() {
            "name" => name = Some(scalar(value, "name").map_err(|w| err(value.line, w))?),
            "rules" => {
                default_rules =
                    Some(paths(value, base, "rules", "rules file").map_err(|(l, w)| err(l, w))?)
            }
            "cases" => cases_node = Some(value),
            other => {
                return Err(err(
                    value.line,
                    format!("unknown key `{other}` (expected name, rules, cases)"),
                ))
            }
        }
    }
    let Some(cases_node) = cases_node else {
        return Err(err(root.line, "missing `cases`".into()));
    };
    let NodeKind::Seq(items) = &cases_node.kind else {
        return Err(err(
            cases_node.line,
            format!("`cases` must be a list, found {}", cases_node.kind_name()),
        ));
    };
    if items.is_empty() {
        return Err(err(cases_node.line, "`cases` is empty".into()));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut cases = Vec::with_capacity(items.len());
    for item in items {
        let case = parse_case(item, base, default_rules.as_deref()).map_err(|(l, w)| err(l, w))?;
        if let Some(first) = seen.insert(case.name.clone(), case.line) {
            return Err(err(
                case.line,
                format!(
                    "duplicate case name {:?} (first at line {first})",
                    case.name
                ),
            ));
        }
        cases.push(case);
    }
    Ok((name, cases))
}

type Located<T> = Result<T, (usize, String)>;

fn scalar(node: &Node, what: &str) -> Result<String, String> {
    match &node.kind {
        NodeKind::Scalar(s, _) => Ok(s.clone()),
        other => Err(format!("`{what}` must be a string, found {}", other.name())),
    }
}

fn non_empty_scalar(node: &Node, what: &str) -> Located<String> {
    let s = scalar(node, what).map_err(|w| (node.line, w))?;
    if s.trim().is_empty() {
        return Err((node.line, format!("`{what}` must not be empty")));
    }
    Ok(s)
}

fn count(node: &Node, what: &str) -> Located<u64> {
    match &node.kind {
        NodeKind::Scalar(s, yaml::Style::Plain) => s.trim().parse::<u64>().map_err(|_| {
            (
                node.line,
                format!("`{what}` must be a non-negative integer, found {s:?}"),
            )
        }),
        other => Err((
            node.line,
            format!(
                "`{what}` must be a non-negative integer, found {}",
                other.name()
            ),
        )),
    }
}

fn paths(node: &Node, base: &Path, key: &str, what: &str) -> Located<Vec<PathBuf>> {
    let NodeKind::Seq(items) = &node.kind else {
        return Err((
            node.line,
            format!(
                "`{key}` must be a list of paths, found {}",
                node.kind_name()
            ),
        ));
    };
    if items.is_empty() {
        return Err((node.line, format!("`{key}` is empty")));
    }
    items
        .iter()
        .map(|item| {
            let rel = non_empty_scalar(item, key)?;
            existing_file(base, &rel, what).map_err(|w| (item.line, w))
        })
        .collect()
}

fn existing_file(base: &Path, rel: &str, what: &str) -> Result<PathBuf, String> {
    let p = base.join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "{what} {rel:?} not found (looked at {})",
            p.display()
        ))
    }
}

fn parse_case(node: &Node, base: &Path, default_rules: Option<&[PathBuf]>) -> Located<Case> {
    let map = node.as_map().ok_or_else(|| {
        (
            node.line,
            format!("a case must be a mapping, found {}", node.kind_name()),
        )
    })?;
    let mut name = None;
    let mut rules = None;
    let mut inputs = None;
    let mut expect = None;
    let mut skip_reason = None;
    let mut known_difference = None;
    for (key, value) in map {
        match key.as_str() {
            "name" => name = Some(non_empty_scalar(value, "name")?),
            "rules" => rules = Some(paths(value, base, "rules", "rules file")?),
            "inputs" => inputs = Some(parse_inputs(value, base)?),
            "expect" => expect = Some(parse_expect(value)?),
            "skip_reason" => skip_reason = Some(non_empty_scalar(value, "skip_reason")?),
            "known_difference" => {
                known_difference = Some(non_empty_scalar(value, "known_difference")?)
            }
            other => {
                return Err((
                    value.line,
                    format!(
                        "unknown key `{other}` in case (expected name, rules, inputs, expect, skip_reason, known_difference)"
                    ),
                ))
            }
        }
    }
    let name = name.ok_or_else(|| (node.line, "case without `name`".to_string()))?;
    let ctx = |what: String| (node.line, format!("case {name:?}: {what}"));
    let rules = match rules {
        Some(r) => r,
        None => default_rules
            .map(<[PathBuf]>::to_vec)
            .ok_or_else(|| ctx("no `rules` here and none at the suite level".into()))?,
    };
    let inputs = inputs.ok_or_else(|| ctx("missing `inputs`".into()))?;
    let expect = expect.ok_or_else(|| ctx("missing `expect`".into()))?;
    if skip_reason.is_some() && known_difference.is_some() {
        return Err(ctx(
            "`skip_reason` and `known_difference` exclude each other".into(),
        ));
    }
    Ok(Case {
        name,
        line: node.line,
        rules,
        inputs,
        expect,
        skip_reason,
        known_difference,
    })
}

fn parse_inputs(node: &Node, base: &Path) -> Located<Vec<Input>> {
    let NodeKind::Seq(items) = &node.kind else {
        return Err((
            node.line,
            format!("`inputs` must be a list, found {}", node.kind_name()),
        ));
    };
    if items.is_empty() {
        return Err((node.line, "`inputs` is empty".into()));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let spec = match &item.kind {
            NodeKind::Scalar(s, _) => {
                InputSpec::File(existing_file(base, s, "input file").map_err(|w| (item.line, w))?)
            }
            NodeKind::Map(entries) => {
                let [(key, value)] = entries.as_slice() else {
                    return Err((
                        item.line,
                        "an input mapping must have exactly one key: file, json or text".into(),
                    ));
                };
                match key.as_str() {
                    "file" => {
                        let rel = non_empty_scalar(value, "file")?;
                        InputSpec::File(
                            existing_file(base, &rel, "input file").map_err(|w| (value.line, w))?,
                        )
                    }
                    "json" => {
                        let v = value.to_json().map_err(|w| (value.line, w))?;
                        if !(v.is_object() || v.is_array()) {
                            return Err((value.line, "`json` must be an object or a list".into()));
                        }
                        InputSpec::Json(v)
                    }
                    "text" => InputSpec::Text(scalar(value, "text").map_err(|w| (value.line, w))?),
                    other => {
                        return Err((
                            item.line,
                            format!("unknown input kind `{other}` (expected file, json or text)"),
                        ))
                    }
                }
            }
            other => {
                return Err((
                    item.line,
                    format!(
                        "an input must be a path or a mapping, found {}",
                        other.name()
                    ),
                ))
            }
        };
        out.push(Input {
            spec,
            line: item.line,
        });
    }
    Ok(out)
}

fn parse_expect(node: &Node) -> Located<Expect> {
    let map = node.as_map().ok_or_else(|| {
        (
            node.line,
            format!("`expect` must be a mapping, found {}", node.kind_name()),
        )
    })?;
    let mut e = Expect::default();
    let mut any = false;
    for (key, value) in map {
        match key.as_str() {
            "hits" => {
                let hits = value.as_map().ok_or_else(|| {
                    (value.line, format!("`hits` must map rule names to counts, found {}", value.kind_name()))
                })?;
                if hits.is_empty() {
                    return Err((value.line, "`hits` is empty".into()));
                }
                for (rule, n) in hits {
                    if e.hits.iter().any(|(r, _)| r == rule) {
                        return Err((n.line, format!("rule {rule:?} is listed twice in `hits`")));
                    }
                    e.hits.push((rule.clone(), count(n, &format!("hits.{rule}"))?));
                }
                any = true;
            }
            "total" => {
                e.total = Some(count(value, "total")?);
                any = true;
            }
            "priorities" => {
                let items: Vec<&Node> = match &value.kind {
                    NodeKind::Seq(items) => items.iter().collect(),
                    NodeKind::Scalar(..) => vec![value],
                    other => {
                        return Err((value.line, format!("`priorities` must be a list, found {}", other.name())))
                    }
                };
                for item in items {
                    let s = non_empty_scalar(item, "priorities")?;
                    let p = canonical_priority(&s).ok_or_else(|| {
                        (
                            item.line,
                            format!("unknown priority {s:?} (expected one of {})", PRIORITIES.join(", ")),
                        )
                    })?;
                    e.priorities.push(p);
                }
                any = true;
            }
            "rejected" => {
                e.rejected = count(value, "rejected")?;
                any = true;
            }
            "rejected_contains" => {
                let items: Vec<&Node> = match &value.kind {
                    NodeKind::Seq(items) => items.iter().collect(),
                    _ => vec![value],
                };
                for item in items {
                    e.rejected_contains.push(non_empty_scalar(item, "rejected_contains")?);
                }
                any = true;
            }
            "decision" => {
                let s = non_empty_scalar(value, "decision")?;
                e.decision = Some(match s.to_ascii_lowercase().as_str() {
                    "allow" | "allowed" => Decision::Allow,
                    "deny" | "denied" => Decision::Deny,
                    _ => {
                        return Err((value.line, format!("`decision` must be allow or deny, found {s:?}")))
                    }
                });
                any = true;
            }
            other => {
                return Err((
                    value.line,
                    format!(
                        "unknown key `{other}` in expect (expected hits, total, priorities, rejected, rejected_contains, decision)"
                    ),
                ))
            }
        }
    }
    if !any {
        return Err((node.line, "`expect` has no expectations".into()));
    }
    Ok(e)
}

/// What running a case found.
#[derive(Debug, Default)]
pub struct Observed {
    pub hits: BTreeMap<String, u64>,
    pub total: u64,
    pub priorities: BTreeMap<&'static str, u64>,
    pub rejected: Vec<String>,
    pub decisions: Vec<(String, Decision)>,
    pub events: u64,
}

/// Outcome of one case.
#[derive(Debug)]
pub enum Outcome {
    Pass,
    Fail(Vec<String>),
    KnownDifference {
        reason: String,
        problems: Vec<String>,
    },
    Skip(String),
}

/// Loads rule sets once per distinct list of files.
#[derive(Default)]
pub struct RuleSetCache {
    sets: HashMap<Vec<PathBuf>, Result<Arc<RuleSet>, Vec<String>>>,
}

impl RuleSetCache {
    fn get(&mut self, files: &[PathBuf]) -> Result<Arc<RuleSet>, Vec<String>> {
        self.sets
            .entry(files.to_vec())
            .or_insert_with(|| {
                RuleSet::load(files)
                    .map(Arc::new)
                    .map_err(|e| super::load_error_lines(&e))
            })
            .clone()
    }
}

/// Runs one case and compares what it found with what it expects.
pub fn run_case(case: &Case, cache: &mut RuleSetCache) -> Outcome {
    if let Some(reason) = &case.skip_reason {
        return Outcome::Skip(reason.clone());
    }
    let problems = match cache.get(&case.rules) {
        Err(lines) => lines
            .into_iter()
            .map(|l| format!("rules do not load: {l}"))
            .collect(),
        Ok(rules) => match observe(case, &rules) {
            Ok(obs) => compare(&case.expect, &obs, &rules),
            Err(e) => vec![e],
        },
    };
    match (&case.known_difference, problems.is_empty()) {
        (None, true) => Outcome::Pass,
        (None, false) => Outcome::Fail(problems),
        (Some(reason), false) => Outcome::KnownDifference {
            reason: reason.clone(),
            problems,
        },
        (Some(reason), true) => Outcome::Fail(vec![format!(
            "marked as a known difference ({reason}) but passes: remove `known_difference`"
        )]),
    }
}

fn observe(case: &Case, rules: &RuleSet) -> Result<Observed, String> {
    let mut obs = Observed::default();
    for input in &case.inputs {
        let bytes = input.bytes()?;
        let name = input.display_name();
        for parsed in policies::input::parse_document(&name, &bytes) {
            match parsed {
                Ok(event) => record(&mut obs, rules, &event),
                Err(e) => obs.rejected.push(e.to_string()),
            }
        }
    }
    Ok(obs)
}

fn record(obs: &mut Observed, rules: &RuleSet, event: &Event) {
    obs.events += 1;
    let matches = rules.evaluate(event);
    for m in &matches {
        *obs.hits.entry(m.rule.name.clone()).or_default() += 1;
        obs.total += 1;
        if let Some(p) = canonical_priority(&m.rule.priority.to_string()) {
            *obs.priorities.entry(p).or_default() += 1;
        }
    }
    if event.source() == Source::K8sAdmission {
        let verdict = policies::decide(event, &matches, &policies::DecisionOptions::default());
        let decision = if verdict.allowed {
            Decision::Allow
        } else {
            Decision::Deny
        };
        obs.decisions.push((admission_label(event), decision));
    }
}

/// `uid VERB resource[/subresource] namespace/name` of an admission event, for reports.
fn admission_label(event: &Event) -> String {
    let Some(j) = event.json() else {
        return "(no body)".to_string();
    };
    let s = |p: &str| j.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
    let mut resource = s("/objectRef/resource").to_string();
    if !s("/objectRef/subresource").is_empty() {
        resource = format!("{resource}/{}", s("/objectRef/subresource"));
    }
    let ns = s("/objectRef/namespace");
    let name = s("/objectRef/name");
    let target = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    format!("{} {} {resource} {target}", s("/auditID"), s("/verb"))
}

fn compare(expect: &Expect, obs: &Observed, rules: &RuleSet) -> Vec<String> {
    let mut problems = Vec::new();
    for (rule, want) in &expect.hits {
        if !rules.rules().iter().any(|r| &r.name == rule) {
            problems.push(format!(
                "expected {want} hit(s) of rule {rule:?}, but no rule of that name is loaded"
            ));
            continue;
        }
        let got = obs.hits.get(rule).copied().unwrap_or(0);
        if got != *want {
            problems.push(format!("rule {rule:?}: expected {want} hit(s), got {got}"));
        }
    }
    if let Some(want) = expect.total {
        if obs.total != want {
            problems.push(format!(
                "expected {want} alert(s) in total, got {}{}",
                obs.total,
                describe_hits(&obs.hits)
            ));
        }
    }
    for p in &expect.priorities {
        if !obs.priorities.contains_key(p) {
            problems.push(format!(
                "expected at least one alert at priority {p}, got none{}",
                describe_hits(&obs.hits)
            ));
        }
    }
    if obs.rejected.len() as u64 != expect.rejected {
        let detail = if obs.rejected.is_empty() {
            String::new()
        } else {
            format!(": {}", obs.rejected.join("; "))
        };
        problems.push(format!(
            "expected {} rejected input(s), got {}{detail}",
            expect.rejected,
            obs.rejected.len()
        ));
    }
    for text in &expect.rejected_contains {
        if !obs.rejected.iter().any(|r| r.contains(text.as_str())) {
            problems.push(format!("no rejection message contains {text:?}"));
        }
    }
    if let Some(want) = expect.decision {
        if obs.decisions.is_empty() {
            problems.push(format!(
                "expected decision {want}, but the case has no admission input"
            ));
        }
        for (label, got) in &obs.decisions {
            if got != &want {
                problems.push(format!("admission {label}: expected {want}, got {got}"));
            }
        }
    }
    if obs.events == 0 && obs.rejected.is_empty() {
        problems.push("the inputs hold no events".into());
    }
    problems
}

fn describe_hits(hits: &BTreeMap<String, u64>) -> String {
    if hits.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = hits.iter().map(|(r, n)| format!("{r:?}: {n}")).collect();
    format!(" ({})", parts.join(", "))
}

/// Totals over every suite run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub passed: u64,
    pub failed: u64,
    pub known: u64,
    pub skipped: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} known differences, {} skipped",
            self.passed, self.failed, self.known, self.skipped
        )
    }
}

/// Runs every case of a suite, writing one report line (plus detail lines) per case.
pub fn run_suite(
    suite: &Suite,
    cache: &mut RuleSetCache,
    out: &mut dyn std::io::Write,
) -> std::io::Result<Summary> {
    let mut sum = Summary::default();
    let title = suite.name.as_deref().unwrap_or("");
    writeln!(
        out,
        "suite {}{}{} ({} cases)",
        suite.file.display(),
        if title.is_empty() { "" } else { ": " },
        title,
        suite.cases.len()
    )?;
    for case in &suite.cases {
        let at = format!("{}:{}", suite.file.display(), case.line);
        match run_case(case, cache) {
            Outcome::Pass => {
                sum.passed += 1;
                writeln!(out, "PASS {}", case.name)?;
            }
            Outcome::Fail(problems) => {
                sum.failed += 1;
                writeln!(out, "FAIL {} ({at})", case.name)?;
                for p in problems {
                    writeln!(out, "  - {p}")?;
                }
            }
            Outcome::KnownDifference { reason, problems } => {
                sum.known += 1;
                writeln!(out, "KNOWN DIFFERENCE {} ({at}): {reason}", case.name)?;
                for p in problems {
                    writeln!(out, "  - observed: {p}")?;
                }
            }
            Outcome::Skip(reason) => {
                sum.skipped += 1;
                writeln!(out, "SKIP {} ({at}): {reason}", case.name)?;
            }
        }
    }
    Ok(sum)
}

/// A YAML reader that keeps the line of every node (serde_yaml does not), so that every
/// error in a suite file can name its line.
mod yaml {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::{Marker, TScalarStyle};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Style {
        Plain,
        Quoted,
    }

    #[derive(Debug, Clone)]
    pub enum NodeKind {
        Scalar(String, Style),
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>),
        Alias,
    }

    impl NodeKind {
        pub fn name(&self) -> &'static str {
            match self {
                NodeKind::Scalar(..) => "a scalar",
                NodeKind::Seq(_) => "a list",
                NodeKind::Map(_) => "a mapping",
                NodeKind::Alias => "an alias",
            }
        }
    }

    #[derive(Debug, Clone)]
    pub struct Node {
        pub kind: NodeKind,
        pub line: usize,
    }

    impl Node {
        pub fn as_map(&self) -> Option<&[(String, Node)]> {
            match &self.kind {
                NodeKind::Map(m) => Some(m),
                _ => None,
            }
        }

        pub fn kind_name(&self) -> &'static str {
            self.kind.name()
        }

        /// The node as JSON, with YAML 1.2 core-schema typing of plain scalars.
        pub fn to_json(&self) -> Result<serde_json::Value, String> {
            use serde_json::Value;
            Ok(match &self.kind {
                NodeKind::Scalar(s, Style::Quoted) => Value::String(s.clone()),
                NodeKind::Scalar(s, Style::Plain) => plain_scalar(s),
                NodeKind::Seq(items) => {
                    Value::Array(items.iter().map(Node::to_json).collect::<Result<_, _>>()?)
                }
                NodeKind::Map(entries) => {
                    let mut m = serde_json::Map::new();
                    for (k, v) in entries {
                        m.insert(k.clone(), v.to_json()?);
                    }
                    Value::Object(m)
                }
                NodeKind::Alias => {
                    return Err(format!(
                        "line {}: aliases are not supported in inline json",
                        self.line
                    ))
                }
            })
        }
    }

    fn plain_scalar(s: &str) -> serde_json::Value {
        use serde_json::Value;
        match s {
            "" | "~" | "null" | "Null" | "NULL" => Value::Null,
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            _ => {
                if let Ok(i) = s.parse::<i64>() {
                    Value::from(i)
                } else if let Some(f) = s
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && s.chars().any(|c| c.is_ascii_digit()))
                {
                    Value::from(f)
                } else {
                    Value::String(s.to_string())
                }
            }
        }
    }

    enum Frame {
        Seq(Vec<Node>, usize),
        Map(Vec<(String, Node)>, usize, Option<(String, usize)>),
    }

    #[derive(Default)]
    struct Builder {
        stack: Vec<Frame>,
        root: Option<Node>,
        docs: usize,
        error: Option<(usize, String)>,
    }

    impl Builder {
        fn push(&mut self, node: Node) {
            match self.stack.last_mut() {
                None => {
                    if self.root.is_none() {
                        self.root = Some(node);
                    }
                }
                Some(Frame::Seq(items, _)) => items.push(node),
                Some(Frame::Map(entries, _, pending)) => match pending.take() {
                    None => match node.kind {
                        NodeKind::Scalar(k, _) => *pending = Some((k, node.line)),
                        other => {
                            if self.error.is_none() {
                                self.error = Some((
                                    node.line,
                                    format!("mapping keys must be scalars, found {}", other.name()),
                                ));
                            }
                            *pending = Some((String::new(), node.line));
                        }
                    },
                    Some((key, key_line)) => {
                        if entries.iter().any(|(k, _)| *k == key) && self.error.is_none() {
                            self.error = Some((key_line, format!("duplicate key `{key}`")));
                        }
                        entries.push((key, node));
                    }
                },
            }
        }
    }

    impl MarkedEventReceiver for Builder {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            let line = mark.line();
            match ev {
                Event::DocumentStart => self.docs += 1,
                Event::Scalar(s, style, _, _) => {
                    let style = if style == TScalarStyle::Plain {
                        Style::Plain
                    } else {
                        Style::Quoted
                    };
                    self.push(Node {
                        kind: NodeKind::Scalar(s, style),
                        line,
                    });
                }
                Event::Alias(_) => self.push(Node {
                    kind: NodeKind::Alias,
                    line,
                }),
                Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new(), line)),
                Event::MappingStart(..) => self.stack.push(Frame::Map(Vec::new(), line, None)),
                Event::SequenceEnd | Event::MappingEnd => {
                    let node = match self.stack.pop() {
                        Some(Frame::Seq(items, l)) => Node {
                            kind: NodeKind::Seq(items),
                            line: l,
                        },
                        Some(Frame::Map(entries, l, _)) => Node {
                            kind: NodeKind::Map(entries),
                            line: l,
                        },
                        None => return,
                    };
                    self.push(node);
                }
                Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            }
        }
    }

    /// Parses one YAML document; `Ok(None)` for an empty text. Errors carry their line.
    pub fn parse(text: &str) -> Result<Option<Node>, (usize, String)> {
        let mut b = Builder::default();
        Parser::new_from_str(text)
            .load(&mut b, true)
            .map_err(|e| (e.marker().line(), format!("invalid yaml: {}", e.info())))?;
        if let Some(e) = b.error {
            return Err(e);
        }
        if b.docs > 1 {
            return Err((1, format!("expected one yaml document, found {}", b.docs)));
        }
        Ok(b.root)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures"
        ))
    }

    fn parse(text: &str) -> Result<Parsed, SuiteError> {
        parse_suite("s.yaml", text, &fixtures())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const RULES: &str = "falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml";
    const TRACE: &str = "falco-k8s-audit/trace_files/k8s_audit/exec_pod.json";

    #[test]
    fn a_full_case_parses() {
        let text = format!(
            "name: n\nrules: [{RULES}]\ncases:\n  - name: a\n    inputs:\n      - {TRACE}\n      - json: {{kind: Event, n: 1, q: \"1\"}}\n      - text: 'x'\n    expect:\n      hits: {{\"Attach/Exec Pod\": 1, \"Create Privileged Pod\": 0}}\n      total: 1\n      priorities: [notice, INFO]\n      decision: deny\n    known_difference: because\n"
        );
        let (name, cases) = parse(&text).unwrap();
        assert_eq!(name.as_deref(), Some("n"));
        let c = &cases[0];
        assert_eq!(c.line, 4);
        assert_eq!(c.rules, vec![fixtures().join(RULES)]);
        assert_eq!(c.inputs.len(), 3);
        assert_eq!(c.inputs[1].line, 7);
        match &c.inputs[1].spec {
            InputSpec::Json(v) => {
                assert_eq!(v, &serde_json::json!({"kind": "Event", "n": 1, "q": "1"}))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.expect.hits,
            vec![
                ("Attach/Exec Pod".to_string(), 1),
                ("Create Privileged Pod".to_string(), 0)
            ]
        );
        assert_eq!(c.expect.total, Some(1));
        assert_eq!(c.expect.priorities, vec!["NOTICE", "INFORMATIONAL"]);
        assert_eq!(c.expect.decision, Some(Decision::Deny));
        assert_eq!(c.expect.rejected, 0);
        assert_eq!(c.known_difference.as_deref(), Some("because"));
    }

    #[test]
    fn errors_name_the_line() {
        let base = format!("rules: [{RULES}]\ncases:\n  - name: a\n    inputs: [{TRACE}]\n");
        let cases = [
            (format!("{base}    expect: {{}}\n"), "s.yaml:5: `expect` has no expectations"),
            (format!("{base}    expect:\n      hits: {{x: -1}}\n"), "s.yaml:6: `hits.x` must be a non-negative integer"),
            (format!("{base}    expect:\n      totl: 1\n"), "s.yaml:6: unknown key `totl` in expect"),
            (format!("{base}    expect:\n      priorities: [LOUD]\n"), "s.yaml:6: unknown priority \"LOUD\""),
            (format!("{base}    expect:\n      decision: maybe\n"), "s.yaml:6: `decision` must be allow or deny"),
            (format!("{base}    expect: {{total: 0}}\n    skip_reason: ''\n"), "s.yaml:6: `skip_reason` must not be empty"),
            (format!("{base}    expect: {{total: 0}}\n  - name: a\n    inputs: [{TRACE}]\n    expect: {{total: 0}}\n"), "s.yaml:6: duplicate case name \"a\" (first at line 3)"),
            ("rules: [nope.yaml]\ncases: []\n".to_string(), "s.yaml:1: rules file \"nope.yaml\" not found"),
            (format!("rules: [{RULES}]\ncases: []\n"), "s.yaml:2: `cases` is empty"),
            (format!("cases:\n  - name: a\n    inputs: [{TRACE}]\n    expect: {{total: 0}}\n"), "s.yaml:2: case \"a\": no `rules` here and none at the suite level"),
            (format!("rules: [{RULES}]\ncases:\n  - name: a\n    inputs:\n      - missing.json\n    expect: {{total: 0}}\n"), "s.yaml:5: input file \"missing.json\" not found"),
            (format!("rules: [{RULES}]\ncases:\n  - name: a\n    inputs:\n      - json: 3\n    expect: {{total: 0}}\n"), "s.yaml:5: `json` must be an object or a list"),
            (format!("rules: [{RULES}]\ncases:\n  - name: a\n    inputs:\n      - url: x\n    expect: {{total: 0}}\n"), "s.yaml:5: unknown input kind `url`"),
            (format!("rules: [{RULES}]\ncases:\n  - name: a\n    input: []\n"), "s.yaml:4: unknown key `input` in case"),
            (format!("rules: [{RULES}]\ncases:\n  - name: a\n    expect: {{total: 0}}\n"), "s.yaml:3: case \"a\": missing `inputs`"),
            ("cases:\n  - [a\n".to_string(), "s.yaml:3: invalid yaml"),
            ("- 1\n".to_string(), "s.yaml:1: expected a mapping at the top level, found a list"),
            ("".to_string(), "s.yaml:1: the suite is empty"),
            ("cases: 1\ncases: 2\n".to_string(), "s.yaml:2: duplicate key `cases`"),
            ("name: a\n".to_string(), "s.yaml:1: missing `cases`"),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(
                got.starts_with(want),
                "for\n{text}\nwant prefix {want:?}\ngot {got:?}"
            );
        }
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let valid = format!(
            "name: n\nrules: [{RULES}]\ncases:\n  - name: a\n    inputs:\n      - {TRACE}\n      - json: {{kind: Event, a: [1, 2.5, ~, true, 'x']}}\n      - text: \"t\"\n    expect:\n      hits: {{\"Attach/Exec Pod\": 1}}\n      priorities: NOTICE\n      rejected_contains: x\n"
        );
        assert!(parse(&valid).is_ok(), "{:?}", parse(&valid).err());
        // Every prefix of a valid suite is either a valid suite or an error with a line.
        for (i, _) in valid.char_indices() {
            if let Err(e) = parse(&valid[..i]) {
                assert!(e.line >= 1, "prefix {i}: {e}");
            }
        }
        let odd = [
            "\t- x",
            "&a [*a]",
            "cases: &c [*c]",
            "cases:\n  - &x {name: a}\n  - *x\n",
            "--- 1\n--- 2\n",
            "cases:\n  - name: a\n    inputs: [{file: [1]}]\n    expect: {total: 0}\n",
            "cases:\n  - {? [a] : b}\n",
            "cases:\n  - name: a\n    inputs: [{json: {a: *x}}]\n",
            "\u{feff}cases: []",
            "cases:\n  - name: a\n    expect: {total: 99999999999999999999999}\n",
            "cases: [{name: a, inputs: [{}], expect: {total: 0}}]",
            "cases: [{name: a, inputs: [{file: x, text: y}], expect: {total: 0}}]",
        ];
        for text in odd {
            match parse(text) {
                Ok(_) => panic!("accepted {text:?}"),
                Err(e) => assert!(e.line >= 1, "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn priorities_are_canonical() {
        assert_eq!(canonical_priority("Info"), Some("INFORMATIONAL"));
        assert_eq!(canonical_priority("warning"), Some("WARNING"));
        assert_eq!(canonical_priority("warn"), None);
    }
}
