//! From rule hits to the admission answer, per DESIGN.md "Modes and rollout".
//!
//! - A hit of an `enforce` rule inside its scope denies (`allowed: false`, 403) with a
//!   message naming every enforcing rule and its rendered output — unless the webhook runs
//!   detect-only.
//! - Every other hit allows, with a warning per rule and the rule names in the
//!   `detect` audit annotation.
//! - Whatever the outcome, the decision records what enforcement would have answered:
//!   a denial by every matching rule whose scope covers the review, were it (and the
//!   global switch) set to enforce — as `policies::decision` defines it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use engine::{AdmissionDecision, DecisionOutcome, RuleVerdict};

use crate::review::{AdmissionResponse, ReviewRequest};
use crate::rules::{RuleHit, RuleMode};

/// Kubernetes shows warnings of up to 256 characters whole.
const MAX_WARNING_CHARS: usize = 256;

/// How the webhook answers reviews it could not evaluate (internal error, budget overrun,
/// rules not loaded yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    Allow,
    Deny,
}

impl FailureMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }
}

/// The answer and its record.
#[derive(Debug, Clone)]
pub struct Decided {
    pub response: AdmissionResponse,
    /// The answer enforcement of every matching rule would have sent.
    pub would_response: AdmissionResponse,
    pub decision: AdmissionDecision,
}

fn truncate(mut s: String, max: usize) -> String {
    // No more bytes than `max` is no more characters either.
    if s.len() <= max {
        return s;
    }
    let keep = max.saturating_sub(3);
    match s.char_indices().nth(keep) {
        Some((at, _)) if s[at..].chars().nth(3).is_some() => {
            s.truncate(at);
            s.push_str("...");
            s
        }
        // At most `max` characters: whole.
        _ => s,
    }
}

const DENIED: &str = "denied by tether: ";
const DETECTED: &str = "tether detect: ";
/// What `rule "NAME": OUTPUT` adds to the name and output, and the separator between two.
const RULE_OVERHEAD: usize = "rule \"\": ; ".len();

/// Appends `rule "NAME": OUTPUT`, the name quoted as Rust's `{:?}` quotes it.
fn push_rule(out: &mut String, h: &RuleHit) {
    out.push_str("rule ");
    // Names are mostly plain printable ASCII, which `{:?}` leaves as it is.
    if h.rule
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(&h.rule);
        out.push('"');
    } else {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{:?}", h.rule);
    }
    out.push_str(": ");
    out.push_str(&h.output);
}

fn deny_message<'h>(hits: impl Iterator<Item = &'h RuleHit> + Clone) -> String {
    let mut out = String::with_capacity(
        DENIED.len()
            + hits
                .clone()
                .map(|h| h.rule.len() + h.output.len() + RULE_OVERHEAD)
                .sum::<usize>(),
    );
    out.push_str(DENIED);
    for (i, h) in hits.enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        push_rule(&mut out, h);
    }
    out
}

fn warning(h: &RuleHit) -> String {
    let mut out =
        String::with_capacity(DETECTED.len() + h.rule.len() + h.output.len() + RULE_OVERHEAD);
    out.push_str(DETECTED);
    push_rule(&mut out, h);
    truncate(out, MAX_WARNING_CHARS)
}

fn rule_names<'h>(hits: impl Iterator<Item = &'h RuleHit>) -> String {
    let mut out = String::new();
    for (i, h) in hits.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&h.rule);
    }
    out
}

/// The effective mode of a hit.
pub fn effective_mode(hit: &RuleHit, detect_only: bool) -> RuleMode {
    if hit.mode == RuleMode::Enforce && hit.in_scope() && !detect_only {
        RuleMode::Enforce
    } else {
        RuleMode::Detect
    }
}

/// Why a hit ran in detect mode (`None` when it enforced). Outside its scope comes first:
/// there enforcing the rule would not deny either.
fn detect_reason(hit: &mut RuleHit, detect_only: bool) -> Option<Cow<'static, str>> {
    if let Some(why) = hit.out_of_scope.take() {
        return Some(Cow::Owned(format!("{OUTSIDE_SCOPE}: {why}")));
    }
    match hit.mode {
        RuleMode::Detect => Some(Cow::Borrowed("the rule's mode is detect")),
        RuleMode::Enforce if detect_only => {
            Some(Cow::Borrowed("the global detect-only switch is on"))
        }
        RuleMode::Enforce => None,
    }
}

/// How the reason of a hit outside its enforcement scope starts.
pub const OUTSIDE_SCOPE: &str = "outside its enforcement scope";

fn base_decision(req: &ReviewRequest, now_ns: i64) -> AdmissionDecision {
    AdmissionDecision {
        time_ns: now_ns,
        request_uid: req.uid.clone(),
        user: req.username.clone(),
        operation: Cow::Borrowed(req.operation.as_str()),
        resource: req.resource.clone(),
        subresource: req.subresource.clone(),
        namespace: req.namespace.clone(),
        name: req.name.clone(),
        outcome: DecisionOutcome::Allow,
        would_outcome: DecisionOutcome::Allow,
        rules: Vec::new(),
        message: None,
    }
}

/// Decides a review from its rule hits (whose names and outputs move into the decision).
pub fn decide(req: &ReviewRequest, hits: Vec<RuleHit>, detect_only: bool, now_ns: i64) -> Decided {
    let mode = |h: &&RuleHit| effective_mode(h, detect_only);
    let enforced = || hits.iter().filter(|h| mode(h) == RuleMode::Enforce);
    let detected = || hits.iter().filter(|h| mode(h) == RuleMode::Detect);
    // Enforcing needs the scope: the enforcing hits are some of the in-scope ones.
    let all = || hits.iter().filter(|h| h.in_scope());
    let (n_enforced, n_all) = (enforced().count(), all().count());
    let would_response = if n_all == 0 {
        AdmissionResponse::allow(&req.uid)
    } else {
        AdmissionResponse::deny(&req.uid, 403, "Forbidden", deny_message(all()))
    };
    let mut response = if n_enforced == 0 {
        AdmissionResponse::allow(&req.uid)
    } else if n_enforced == n_all {
        // The same rules: the same answer as the would-be one.
        would_response.clone()
    } else {
        AdmissionResponse::deny(&req.uid, 403, "Forbidden", deny_message(enforced()))
    };
    response.warnings = detected().map(warning).collect();
    let mut annotations = BTreeMap::new();
    if n_enforced < hits.len() {
        annotations.insert("detect".to_string(), rule_names(detected()));
    }
    if n_enforced > 0 {
        annotations.insert("deny".to_string(), rule_names(enforced()));
    }
    response.audit_annotations = annotations;

    let mut decision = base_decision(req, now_ns);
    decision.outcome = if n_enforced == 0 {
        DecisionOutcome::Allow
    } else {
        DecisionOutcome::Deny
    };
    decision.would_outcome = if n_all == 0 {
        DecisionOutcome::Allow
    } else {
        DecisionOutcome::Deny
    };
    decision.rules = hits
        .into_iter()
        .map(|mut h| RuleVerdict {
            mode: Cow::Borrowed(effective_mode(&h, detect_only).as_str()),
            reason: detect_reason(&mut h, detect_only),
            rule: h.rule,
            output: h.output,
        })
        .collect();
    decision.message = response
        .status
        .as_ref()
        .or(would_response.status.as_ref())
        .map(|s| s.message.clone());
    Decided {
        response,
        would_response,
        decision,
    }
}

/// The answer to a review that could not be evaluated (`why`), per the failure mode.
pub fn failed(req: &ReviewRequest, why: &str, mode: FailureMode, now_ns: i64) -> Decided {
    let message = format!("tether could not evaluate this request: {why}");
    let response = match mode {
        FailureMode::Allow => {
            let mut r = AdmissionResponse::allow(&req.uid);
            r.warnings = vec![truncate(
                format!("{message}; allowed by failure mode"),
                MAX_WARNING_CHARS,
            )];
            r
        }
        FailureMode::Deny => AdmissionResponse::deny(
            &req.uid,
            500,
            "InternalError",
            format!("{message}; denied by failure mode"),
        ),
    };
    let mut response = response;
    response
        .audit_annotations
        .insert("error".to_string(), why.to_string());
    let mut decision = base_decision(req, now_ns);
    decision.outcome = DecisionOutcome::Error;
    decision.would_outcome = DecisionOutcome::Error;
    decision.message = Some(message);
    Decided {
        would_response: response.clone(),
        response,
        decision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::Operation;

    fn req() -> ReviewRequest {
        ReviewRequest {
            uid: "u1".into(),
            operation: Operation::Create,
            group: String::new(),
            resource: "pods".into(),
            subresource: None,
            kind: "Pod".into(),
            namespace: Some("prod".into()),
            name: Some("p".into()),
            username: "alice".into(),
            user_uid: None,
            groups: vec![],
            dry_run: false,
        }
    }

    fn hit(rule: &str, mode: RuleMode, in_scope: bool) -> RuleHit {
        RuleHit {
            rule: rule.into(),
            priority: policies::Priority::Warning,
            mode,
            out_of_scope: (!in_scope).then(|| "namespace \"prod\" is excluded".to_string()),
            output: format!("{rule} output"),
        }
    }

    #[test]
    fn rule_names_are_quoted_as_debug_quotes_them() {
        for name in [
            "Plain Rule",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "caf\u{e9}",
            "bell\u{7}",
            "zero\u{200b}width",
            "",
        ] {
            let h = hit(name, RuleMode::Detect, true);
            let mut out = String::new();
            push_rule(&mut out, &h);
            assert_eq!(out, format!("rule {:?}: {}", h.rule, h.output), "{name:?}");
            assert_eq!(
                warning(&h),
                truncate(
                    format!("tether detect: rule {:?}: {}", h.rule, h.output),
                    MAX_WARNING_CHARS
                )
            );
        }
    }

    #[test]
    fn enforce_denies_naming_rule_and_output_detect_warns() {
        let hits = [
            hit("Privileged", RuleMode::Enforce, true),
            hit("Host path", RuleMode::Detect, true),
        ];
        let d = decide(&req(), hits.to_vec(), false, 1);
        assert!(!d.response.allowed);
        let status = d.response.status.as_ref().unwrap();
        assert_eq!(status.code, 403);
        assert!(status
            .message
            .contains("rule \"Privileged\": Privileged output"));
        assert!(!status.message.contains("Host path"));
        assert_eq!(d.response.warnings.len(), 1);
        assert!(d.response.warnings[0].contains("Host path"));
        assert_eq!(d.response.audit_annotations["detect"], "Host path");
        assert_eq!(d.response.audit_annotations["deny"], "Privileged");
        assert_eq!(d.decision.outcome, DecisionOutcome::Deny);
        assert_eq!(d.decision.rules[0].mode, "enforce");
        assert_eq!(d.decision.rules[0].reason, None);
        assert_eq!(d.decision.rules[1].mode, "detect");
        assert_eq!(
            d.decision.rules[1].reason.as_deref(),
            Some("the rule's mode is detect")
        );
    }

    #[test]
    fn detect_only_and_out_of_scope_allow_but_record_the_would_be_denial() {
        let hits = [hit("Privileged", RuleMode::Enforce, true)];
        let d = decide(&req(), hits.to_vec(), true, 1);
        assert!(d.response.allowed);
        assert!(!d.would_response.allowed);
        assert_eq!(d.decision.outcome, DecisionOutcome::Allow);
        assert_eq!(d.decision.would_outcome, DecisionOutcome::Deny);
        assert_eq!(d.decision.rules[0].mode, "detect");
        assert_eq!(
            d.decision.rules[0].reason.as_deref(),
            Some("the global detect-only switch is on")
        );

        // Outside its scope an enforcing rule only detects, and enforcement would not have
        // denied either.
        let hits = [hit("Privileged", RuleMode::Enforce, false)];
        let d = decide(&req(), hits.to_vec(), false, 1);
        assert!(d.response.allowed);
        assert_eq!(d.response.warnings.len(), 1);
        assert_eq!(d.decision.would_outcome, DecisionOutcome::Allow);
        assert_eq!(
            d.decision.rules[0].reason.as_deref(),
            Some("outside its enforcement scope: namespace \"prod\" is excluded")
        );
    }

    #[test]
    fn enforcing_every_hit_denies_as_full_enforcement_would() {
        let hits = [
            hit("Privileged", RuleMode::Enforce, true),
            hit("Host path", RuleMode::Enforce, true),
        ];
        let d = decide(&req(), hits.to_vec(), false, 1);
        assert_eq!(d.response.status, d.would_response.status);
        assert_eq!(
            d.response.status.as_ref().unwrap().message,
            "denied by tether: rule \"Privileged\": Privileged output; rule \"Host path\": Host path output"
        );
        assert_eq!(
            d.response.audit_annotations["deny"],
            "Privileged, Host path"
        );
        assert_eq!(d.response.uid, "u1");
    }

    #[test]
    fn no_hits_allow_plainly() {
        let d = decide(&req(), Vec::new(), false, 1);
        assert!(d.response.allowed);
        assert!(d.response.warnings.is_empty());
        assert!(d.response.audit_annotations.is_empty());
        assert_eq!(d.decision.would_outcome, DecisionOutcome::Allow);
    }

    #[test]
    fn failure_modes() {
        let d = failed(
            &req(),
            "evaluation exceeded its budget of 50ms",
            FailureMode::Allow,
            1,
        );
        assert!(d.response.allowed);
        assert!(d.response.warnings[0].contains("budget"));
        assert_eq!(d.decision.outcome, DecisionOutcome::Error);
        let d = failed(&req(), "boom", FailureMode::Deny, 1);
        assert!(!d.response.allowed);
        assert_eq!(d.response.status.unwrap().code, 500);
    }

    #[test]
    fn long_warnings_are_truncated() {
        let mut h = hit("R", RuleMode::Detect, true);
        h.output = "x".repeat(1000);
        let d = decide(&req(), vec![h], false, 1);
        assert_eq!(d.response.warnings[0].chars().count(), MAX_WARNING_CHARS);
    }
}
