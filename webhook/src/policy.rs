//! The rule engine behind the webhook: `policies::RuleSet` on `k8s_admission` events.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use policies::decision::{scope_check, NAMESPACE_LABELS_UNKNOWN};
use policies::doc::{Doc, Ref};
use policies::{Evaluation, Event, Mode, OutputMatch, RuleSet};
use serde_json::{Map, Value};

use crate::cluster::{NamespaceLabels, UnknownNamespace};
use crate::review::ReviewRequest;
use crate::rules::{EvalError, ReviewContext, RuleHit, RuleMode, Rules, RulesLoader, Started};

/// A loaded `RuleSet`, evaluated on admission reviews.
pub struct PolicyRules {
    set: Arc<RuleSet>,
    admission_rules: usize,
}

impl PolicyRules {
    pub fn new(set: RuleSet) -> Self {
        let admission_rules = set.rules().iter().filter(|r| r.runs_at_admission()).count();
        Self {
            set: Arc::new(set),
            admission_rules,
        }
    }
}

impl Rules for PolicyRules {
    fn evaluate(
        &self,
        review: Doc,
        request: &ReviewRequest,
        pod_labels: Option<&Map<String, Value>>,
    ) -> Result<Vec<RuleHit>, EvalError> {
        let context = ReviewContext {
            pod_labels,
            ..ReviewContext::default()
        };
        self.evaluate_in(review, request, &context)
    }

    fn evaluate_in(
        &self,
        review: Doc,
        _request: &ReviewRequest,
        context: &ReviewContext<'_>,
    ) -> Result<Vec<RuleHit>, EvalError> {
        let event = event_of(review, context)?;
        let matches = self.set.evaluate_outputs(&event);
        Ok(hits(matches, &event, context))
    }

    fn evaluate_started(
        self: Arc<Self>,
        review: Doc,
        _request: &ReviewRequest,
        context: &ReviewContext<'_>,
        deadline: Instant,
    ) -> Started {
        let event = match event_of(review, context) {
            Ok(e) => e,
            Err(e) => return Started::Done(Err(e)),
        };
        match self.set.evaluate_outputs_until(&event, deadline) {
            Evaluation::Done(matches) => Started::Done(Ok(hits(matches, &event, context))),
            Evaluation::Interrupted(partial) => Started::Rest(Box::new(move |context| {
                let matches = self.set.resume_outputs(&event, partial);
                Ok(hits(matches, &event, context))
            })),
        }
    }

    fn rule_count(&self) -> usize {
        self.admission_rules
    }

    fn reads_managed_fields(&self) -> bool {
        self.set.admission_reads_managed_fields()
    }
}

/// The review as a `k8s_admission` event.
fn event_of(review: Doc, context: &ReviewContext<'_>) -> Result<Event, EvalError> {
    let review = match context.pod_labels {
        Some(labels) => with_pod_labels(review, labels),
        None => review,
    };
    Event::from_admission_doc(review)
        .map_err(|e| EvalError(format!("review not usable as an event: {e}")))
}

/// A CONNECT review carries PodExecOptions, not the pod: the target pod's labels are
/// presented as the object's labels, so that rules and scope selectors read them as they
/// would on the pod. (The review is small; it is rebuilt with them.)
fn with_pod_labels(review: Doc, labels: &Map<String, Value>) -> Doc {
    if !review
        .root()
        .pointer("/request/object")
        .is_some_and(Ref::is_object)
    {
        return review;
    }
    let mut v = review.root().to_value();
    if let Some(Value::Object(object)) = v.pointer_mut("/request/object") {
        let metadata = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = metadata {
            m.insert("labels".to_string(), Value::Object(labels.clone()));
        }
    }
    Doc::from_value(&v)
}

/// The hits of the matching rules, with their scopes checked.
fn hits(matches: Vec<OutputMatch>, event: &Event, context: &ReviewContext<'_>) -> Vec<RuleHit> {
    let namespace = event.namespace();
    // Read only for the scopes of matching rules that select on them.
    let labels = if matches
        .iter()
        .any(|m| m.rule.tether.scope.object_labels.is_some())
    {
        event.object_labels()
    } else {
        std::collections::BTreeMap::new()
    };
    let namespace_labels = context.namespace_labels.known();
    matches
        .into_iter()
        .map(|m| {
            let settings = &m.rule.tether;
            // Namespace labels not known (no Kubernetes API, namespace not in the
            // store yet): a scope that selects on them leaves the event out of scope
            // (the rule detects).
            let scope =
                scope_check(&settings.scope, namespace, &labels, namespace_labels).map_err(|why| {
                    match context.namespace_labels {
                        NamespaceLabels::Unknown(unknown) if why == NAMESPACE_LABELS_UNKNOWN => {
                            unknown.describe(namespace)
                        }
                        _ => why,
                    }
                });
            if let (Err(why), Mode::Enforce) = (&scope, settings.mode) {
                match context.namespace_labels {
                    // Name why the labels are unknown (a namespace created a moment
                    // ago, a list not synced yet); running without the API was logged
                    // once at start.
                    NamespaceLabels::Unknown(
                        UnknownNamespace::NotSynced | UnknownNamespace::NotInStore,
                    ) if settings.scope.namespace_labels.is_some() => {
                        tracing::info!(
                            rule = %m.rule.name,
                            reason = %why,
                            "enforce rule only detects: outside its enforcement scope"
                        );
                    }
                    _ => tracing::debug!(
                        rule = %m.rule.name,
                        reason = %why,
                        "enforce rule only detects: outside its enforcement scope"
                    ),
                }
            }
            RuleHit {
                rule: m.rule.name.clone(),
                priority: m.rule.priority,
                mode: match settings.mode {
                    Mode::Enforce => RuleMode::Enforce,
                    Mode::Detect => RuleMode::Detect,
                },
                out_of_scope: scope.err(),
                output: m.output,
            }
        })
        .collect()
}

/// Loads rules files (in the order given, as Falco would), or the bundled library when no
/// file is given.
pub struct PolicyLoader {
    files: Vec<PathBuf>,
}

impl PolicyLoader {
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self { files }
    }
}

impl RulesLoader for PolicyLoader {
    fn load(&self) -> Result<Arc<dyn Rules>, String> {
        if self.files.is_empty() {
            return match RuleSet::try_bundled_library() {
                Ok(set) => Ok(Arc::new(PolicyRules::new(set))),
                Err(errors) => Err(format!("bundled library: {errors}")),
            };
        }
        match RuleSet::load(&self.files) {
            Ok(set) => Ok(Arc::new(PolicyRules::new(set))),
            Err(errors) => Err(errors.to_string()),
        }
    }

    fn watched_files(&self) -> &[PathBuf] {
        &self.files
    }

    fn describe(&self) -> String {
        if self.files.is_empty() {
            "bundled library".to_string()
        } else {
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixture;
    use std::time::Duration;

    use super::*;
    use crate::review::parse;

    /// Started inline and interrupted at once, or given time to finish: the same hits as
    /// one uninterrupted evaluation.
    #[test]
    fn a_started_evaluation_gives_the_hits_of_a_whole_one() {
        let rules = Arc::new(PolicyRules::new(RuleSet::try_bundled_library().unwrap()));
        let mut review: Value = serde_json::from_slice(&fixture(
            "apiserver-captures/admission-pod-create-good-pod-allowed.json",
        ))
        .unwrap();
        // A pod that trips several rules.
        review["request"]["object"]["spec"]["hostNetwork"] = true.into();
        review["request"]["object"]["spec"]["containers"][0]["securityContext"] =
            serde_json::json!({"privileged": true, "runAsUser": 0});
        let bytes = serde_json::to_vec(&review).unwrap();
        let p = parse(&bytes).unwrap();
        let req = p.request.unwrap();
        let context = ReviewContext::default();
        let whole = rules.evaluate_in(p.body.clone(), &req, &context).unwrap();
        assert!(whole.len() >= 3, "{whole:?}");

        let now = Instant::now();
        match rules
            .clone()
            .evaluate_started(p.body.clone(), &req, &context, now)
        {
            Started::Rest(rest) => assert_eq!(rest(&context).unwrap(), whole),
            Started::Done(_) => panic!("a deadline already past left nothing to finish"),
        }
        let later = Instant::now() + Duration::from_secs(60);
        match rules.evaluate_started(p.body, &req, &context, later) {
            Started::Done(hits) => assert_eq!(hits.unwrap(), whole),
            Started::Rest(_) => panic!("interrupted before its deadline"),
        }
    }
}
