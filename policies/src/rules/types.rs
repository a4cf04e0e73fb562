//! The public types of a loaded rule set.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::source::Source;

/// Falco's priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl Priority {
    pub const ALL: [Priority; 8] = [
        Priority::Emergency,
        Priority::Alert,
        Priority::Critical,
        Priority::Error,
        Priority::Warning,
        Priority::Notice,
        Priority::Informational,
        Priority::Debug,
    ];

    /// The name Falco prints in alerts (`Warning`, `Informational`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of Falco's priority names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown priority \"{0}\": expected one of emergency, alert, critical, error, warning, notice, informational (info), debug")]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// Case-insensitive, as Falco; `info` is accepted for `informational`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "emergency" => Priority::Emergency,
            "alert" => Priority::Alert,
            "critical" => Priority::Critical,
            "error" => Priority::Error,
            "warning" => Priority::Warning,
            "notice" => Priority::Notice,
            "informational" | "info" => Priority::Informational,
            "debug" => Priority::Debug,
            _ => return Err(UnknownPriority(s.to_string())),
        })
    }
}

/// Whether a rule only reports or also stops what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Detect,
    Enforce,
}

impl Mode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Detect => "detect",
            Mode::Enforce => "enforce",
        }
    }
}

/// A response a rule asks for (DESIGN.md, "Responses and safety rails").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    Block,
    Kill,
    Isolate,
    Taint,
    Cordon,
    Delete,
    Label,
    Annotate,
    DenyIdentity,
    Notify,
}

impl ActionKind {
    pub const ALL: [ActionKind; 10] = [
        ActionKind::Block,
        ActionKind::Kill,
        ActionKind::Isolate,
        ActionKind::Taint,
        ActionKind::Cordon,
        ActionKind::Delete,
        ActionKind::Label,
        ActionKind::Annotate,
        ActionKind::DenyIdentity,
        ActionKind::Notify,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ActionKind::Block => "block",
            ActionKind::Kill => "kill",
            ActionKind::Isolate => "isolate",
            ActionKind::Taint => "taint",
            ActionKind::Cordon => "cordon",
            ActionKind::Delete => "delete",
            ActionKind::Label => "label",
            ActionKind::Annotate => "annotate",
            ActionKind::DenyIdentity => "deny-identity",
            ActionKind::Notify => "notify",
        }
    }
}

impl FromStr for ActionKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ActionKind::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown action \"{s}\": expected one of {}",
                    ActionKind::ALL.map(ActionKind::as_str).join(", ")
                )
            })
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelExpression>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelExpression {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default)]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether the labels satisfy the selector (an empty selector selects everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let v = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => v.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => v.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => v.is_some(),
                    "DoesNotExist" => v.is_none(),
                    _ => false,
                }
            })
    }
}

/// Where a rule enforces. Outside its scope an `enforce` rule only detects.
///
/// YAML keys: `namespaces` and `exclude_namespaces` (lists of globs), `namespace_labels` and
/// `object_labels` (Kubernetes label selectors).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Scope {
    /// Namespace globs; empty means every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// A selector on the namespace's labels (the caller supplies them).
    #[serde(default)]
    pub namespace_labels: Option<LabelSelector>,
    /// A selector on the labels of the object the event is about.
    #[serde(default)]
    pub object_labels: Option<LabelSelector>,
}

impl Scope {
    pub fn is_unrestricted(&self) -> bool {
        self.namespaces.is_empty()
            && self.exclude_namespaces.is_empty()
            && self.namespace_labels.is_none()
            && self.object_labels.is_none()
    }
}

/// Tether's additions to a rule, under its `tether:` key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TetherSettings {
    pub mode: Mode,
    pub actions: Vec<ActionKind>,
    pub scope: Scope,
    /// A `k8s_audit` rule that also runs on admission events.
    pub admission: bool,
}

/// One loaded rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleInfo {
    pub name: String,
    pub desc: String,
    pub source: Source,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub tether: TetherSettings,
    /// The condition text as written (with appends), before macro expansion.
    pub condition: String,
    /// The output template.
    pub output: String,
    /// Where the rule was (last) defined.
    pub file: String,
    pub line: usize,
}

impl RuleInfo {
    /// Whether the rule is evaluated on admission reviews: a `k8s_admission` rule, or a
    /// `k8s_audit` rule with `tether.admission: true`.
    pub fn runs_at_admission(&self) -> bool {
        self.source == Source::K8sAdmission
            || (self.source == Source::K8sAudit && self.tether.admission)
    }
}

/// A correlation rule: steps (rule names) matched in order, joined by fields, within a window.
/// Parsed and validated here; the engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SequenceInfo {
    pub name: String,
    pub desc: String,
    pub by: Vec<String>,
    pub within: Duration,
    pub steps: Vec<String>,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub output: String,
    pub tether: TetherSettings,
    pub file: String,
    pub line: usize,
}

/// A rule that matched an event.
#[derive(Debug, Clone)]
pub struct Match {
    pub rule: Arc<RuleInfo>,
    /// The rendered output (without Falco's time and priority prefix).
    pub output: String,
    /// The values of the fields the output names, keyed by field text (`proc.aname[2]`).
    pub output_fields: serde_json::Map<String, serde_json::Value>,
}

/// A matching rule and its rendered output, without the output fields (see
/// [`crate::RuleSet::evaluate_outputs`]).
#[derive(Debug, Clone)]
pub struct OutputMatch {
    pub rule: Arc<RuleInfo>,
    /// The rendered output (without Falco's time and priority prefix).
    pub output: String,
}

/// Where a problem was found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRef {
    /// `rule`, `macro`, `list`, `sequence`.
    pub kind: &'static str,
    pub name: String,
}

/// One problem that stops a rules file from loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// The item the problem is in, when there is one.
    pub item: Option<ItemRef>,
    pub message: String,
}

impl fmt::Display for LoadError {
    /// `FILE:LINE:COL: rule "NAME": what is wrong` (`macro`/`list`/`sequence` for those items;
    /// without the item part for file-level problems).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if let Some(i) = &self.item {
            write!(f, "{} \"{}\": ", i.kind, i.name)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found while loading; nothing is loaded when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl LoadErrors {
    pub fn iter(&self) -> impl Iterator<Item = &LoadError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for LoadErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Something worth telling that does not stop loading (an ignored key, an unknown source, an
/// unused list or macro, `required_plugin_versions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadWarning {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub item: Option<ItemRef>,
    pub message: String,
}

impl fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if let Some(i) = &self.item {
            write!(f, "{} \"{}\": ", i.kind, i.name)?;
        }
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_case_insensitively() {
        assert_eq!("WARNING".parse::<Priority>(), Ok(Priority::Warning));
        assert_eq!("Info".parse::<Priority>(), Ok(Priority::Informational));
        assert!("SEVERE".parse::<Priority>().is_err());
        assert!(Priority::Emergency < Priority::Debug);
    }

    #[test]
    fn selectors() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        let s = LabelSelector {
            match_labels: labels.clone(),
            match_expressions: vec![LabelExpression {
                key: "tier".into(),
                operator: "DoesNotExist".into(),
                values: vec![],
            }],
        };
        assert!(s.matches(&labels));
        labels.insert("tier".into(), "x".into());
        assert!(!s.matches(&labels));
    }

    #[test]
    fn error_display() {
        let e = LoadError {
            file: "r.yaml".into(),
            line: 3,
            col: 14,
            item: Some(ItemRef {
                kind: "rule",
                name: "R".into(),
            }),
            message: "unknown field \"proc.nme\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "r.yaml:3:14: rule \"R\": unknown field \"proc.nme\""
        );
    }
}
