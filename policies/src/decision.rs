//! Admission verdicts: turns the matches of one `k8s_admission` event into allow/deny, per
//! rule mode and scope, with a global detect-only switch. Used by the webhook and by
//! `tether policy test`.

use std::collections::BTreeMap;

use globset::Glob;
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::rules::{ActionKind, Match, Mode, Priority, Scope};

/// Inputs beyond the matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionOptions {
    /// Force every rule to detect (the rollout switch).
    #[serde(default)]
    pub detect_only: bool,
    /// The labels of the event's namespace, when the caller knows them (needed by scopes with
    /// `namespace_labels`).
    #[serde(default)]
    pub namespace_labels: Option<BTreeMap<String, String>>,
}

/// One matching rule's part in a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleOutcome {
    pub rule: String,
    pub priority: Priority,
    /// The mode the rule is configured with.
    pub configured_mode: Mode,
    /// The mode it ran in here (detect when the switch is on or the event is outside the
    /// rule's enforcement scope).
    pub effective_mode: Mode,
    pub output: String,
    pub actions: Vec<ActionKind>,
    /// Why an `enforce` rule only detected here, if it did.
    pub reason: Option<String>,
    /// Whether the event is inside the rule's scope.
    pub in_scope: bool,
}

/// The admission answer for one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Rules that denied (enforce, in scope, switch off).
    pub denied_by: Vec<RuleOutcome>,
    /// Rules that matched but only detect: sent as admission warnings.
    pub warnings: Vec<RuleOutcome>,
    /// What enforcement would have answered: denied when any matching rule whose scope covers
    /// the event would deny if it (and the global switch) were set to enforce.
    pub would_allow: bool,
    /// Rules that would have denied under full enforcement.
    pub would_deny_by: Vec<String>,
    /// The denial message: the denying rules and their outputs.
    pub message: Option<String>,
}

/// Decides an admission event from its matches.
pub fn decide(ev: &Event, matches: &[Match], opts: &DecisionOptions) -> Verdict {
    let ns = ev.namespace();
    let labels = ev.object_labels();
    let mut denied_by = Vec::new();
    let mut warnings = Vec::new();
    let mut would_deny_by = Vec::new();
    for m in matches {
        let r = &m.rule;
        let scope = scope_check(&r.tether.scope, ns, &labels, opts.namespace_labels.as_ref());
        let in_scope = scope.is_ok();
        if in_scope {
            would_deny_by.push(r.name.clone());
        }
        let (effective, reason) = match (r.tether.mode, opts.detect_only, scope) {
            (Mode::Detect, _, _) => (Mode::Detect, None),
            (Mode::Enforce, true, _) => (
                Mode::Detect,
                Some("the global detect-only switch is on".to_string()),
            ),
            (Mode::Enforce, false, Err(why)) => (
                Mode::Detect,
                Some(format!("outside the rule's enforcement scope: {why}")),
            ),
            (Mode::Enforce, false, Ok(())) => (Mode::Enforce, None),
        };
        let o = RuleOutcome {
            rule: r.name.clone(),
            priority: r.priority,
            configured_mode: r.tether.mode,
            effective_mode: effective,
            output: m.output.clone(),
            actions: r.tether.actions.clone(),
            reason,
            in_scope,
        };
        if effective == Mode::Enforce {
            denied_by.push(o);
        } else {
            warnings.push(o);
        }
    }
    let message = (!denied_by.is_empty()).then(|| {
        denied_by
            .iter()
            .map(|o| format!("denied by rule \"{}\": {}", o.rule, o.output))
            .collect::<Vec<_>>()
            .join("; ")
    });
    Verdict {
        allowed: denied_by.is_empty(),
        denied_by,
        warnings,
        would_allow: would_deny_by.is_empty(),
        would_deny_by,
        message,
    }
}

fn glob_hit(globs: &[String], s: &str) -> bool {
    globs.iter().any(|g| {
        Glob::new(g)
            .map(|g| g.compile_matcher().is_match(s))
            .unwrap_or(false)
    })
}

/// [`scope_check`]'s reason when the scope selects on namespace labels the caller does not
/// know (callers that know why may say more).
pub const NAMESPACE_LABELS_UNKNOWN: &str = "the namespace's labels are not known";

/// Ok when the event is inside the scope; else why not.
pub fn scope_check(
    scope: &Scope,
    ns: Option<&str>,
    object_labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Result<(), String> {
    if !scope.namespaces.is_empty() {
        match ns {
            None => return Err("the object has no namespace and the scope lists namespaces".into()),
            Some(n) if !glob_hit(&scope.namespaces, n) => {
                return Err(format!(
                    "namespace \"{n}\" is not in {:?}",
                    scope.namespaces
                ))
            }
            _ => {}
        }
    }
    if let Some(n) = ns {
        if glob_hit(&scope.exclude_namespaces, n) {
            return Err(format!("namespace \"{n}\" is excluded"));
        }
    }
    if let Some(sel) = &scope.namespace_labels {
        match namespace_labels {
            None => return Err(NAMESPACE_LABELS_UNKNOWN.into()),
            Some(l) if !sel.matches(l) => return Err("the namespace's labels do not match".into()),
            _ => {}
        }
    }
    if let Some(sel) = &scope.object_labels {
        if !sel.matches(object_labels) {
            return Err("the object's labels do not match".into());
        }
    }
    Ok(())
}
