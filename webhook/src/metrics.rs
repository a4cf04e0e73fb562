//! Prometheus metrics of the webhook, and the named events that bump them.
//!
//! Each thing worth counting is one method that logs and counts together, so a log line
//! and its metric never disagree. Names (with the `tether_webhook_` prefix):
//!
//! | metric | labels |
//! |---|---|
//! | `reviews_total` | `operation`, `resource`, `decision` (allow, deny, invalid, error) |
//! | `evaluation_seconds` (histogram) | |
//! | `rule_hits_total` | `rule`, `mode` (the effective mode: detect, enforce) |
//! | `errors_total` | `kind` (malformed, oversize, unsupported_media_type, shed, budget, internal, not_ready, sink, decision_log, rules_reload, cert_reload) |
//! | `sessions_total` | `kind` (exec, attach, portforward) |
//! | `rules_generation` | successful rules loads so far |
//! | `rules_loaded` | rules in the serving set |
//! | `cert_generation` | successful serving-certificate loads so far |
//! | `cluster_lookups_total` | `kind` (namespace, pod), `result` (namespace: known, not_synced, not_in_store; pod: found, not_found, error, timeout) |
//! | `cluster_namespaces` | namespaces in the store the namespace watch keeps |
//! | `cluster_watch_errors_total` | failures of the namespace watch (retried with backoff; the labels last seen keep serving meanwhile, so an increase means they may be stale) |

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::RwLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub operation: String,
    pub resource: String,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub kind: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Error kinds counted in `errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Malformed,
    Oversize,
    UnsupportedMediaType,
    Shed,
    Budget,
    Internal,
    NotReady,
    Sink,
    DecisionLog,
    RulesReload,
    CertReload,
}

impl ErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversize => "oversize",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Shed => "shed",
            Self::Budget => "budget",
            Self::Internal => "internal",
            Self::NotReady => "not_ready",
            Self::Sink => "sink",
            Self::DecisionLog => "decision_log",
            Self::RulesReload => "rules_reload",
            Self::CertReload => "cert_reload",
        }
    }
}

/// The webhook's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub evaluation_seconds: Histogram,
    pub rule_hits: Family<RuleLabels, Counter>,
    pub errors: Family<KindLabels, Counter>,
    pub sessions: Family<KindLabels, Counter>,
    pub rules_generation: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub rules_loaded: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub cert_generation: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub cluster_lookups: Family<LookupLabels, Counter>,
    pub cluster_namespaces: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub cluster_watch_errors: Counter,
    /// The counters of `reviews` and `rule_hits` used so far, by their family and labels
    /// joined in one text: counted per review without building a label set.
    counters: RwLock<HashMap<String, Counter>>,
}

thread_local! {
    /// Where the text key of a counter is joined.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        let evaluation_seconds = Histogram::new(exponential_buckets(0.000_01, 2.0, 18));
        let rule_hits = Family::<RuleLabels, Counter>::default();
        let errors = Family::<KindLabels, Counter>::default();
        let sessions = Family::<KindLabels, Counter>::default();
        let rules_generation = Gauge::default();
        let rules_loaded = Gauge::default();
        let cert_generation = Gauge::default();
        let cluster_lookups = Family::<LookupLabels, Counter>::default();
        let cluster_namespaces = Gauge::default();
        let cluster_watch_errors = Counter::default();
        registry.register(
            "reviews",
            "Admission reviews answered, by operation, resource and decision",
            reviews.clone(),
        );
        registry.register(
            "evaluation_seconds",
            "Time to evaluate the rules for one admission review",
            evaluation_seconds.clone(),
        );
        registry.register(
            "rule_hits",
            "Rule matches, by rule and effective mode",
            rule_hits.clone(),
        );
        registry.register("errors", "Errors, by kind", errors.clone());
        registry.register(
            "sessions",
            "Exec, attach and port-forward sessions recorded, by kind",
            sessions.clone(),
        );
        registry.register(
            "rules_generation",
            "Successful rules loads since start",
            rules_generation.clone(),
        );
        registry.register(
            "rules_loaded",
            "Rules in the set being served",
            rules_loaded.clone(),
        );
        registry.register(
            "cert_generation",
            "Successful serving-certificate loads since start",
            cert_generation.clone(),
        );
        registry.register(
            "cluster_lookups",
            "Reads of the cluster view (namespace labels, pods of CONNECT reviews), by kind and result",
            cluster_lookups.clone(),
        );
        registry.register(
            "cluster_namespaces",
            "Namespaces in the store kept by the namespace watch",
            cluster_namespaces.clone(),
        );
        registry.register(
            "cluster_watch_errors",
            "Failures of the namespace watch (retried; the labels last seen serve meanwhile)",
            cluster_watch_errors.clone(),
        );
        Self {
            registry,
            reviews,
            evaluation_seconds,
            rule_hits,
            errors,
            sessions,
            rules_generation,
            rules_loaded,
            cert_generation,
            cluster_lookups,
            cluster_namespaces,
            cluster_watch_errors,
            counters: RwLock::new(HashMap::new()),
        }
    }

    /// Increments the counter whose labels join to `parts` (the first part names the
    /// family), made by `create` the first time.
    fn inc(&self, parts: &[&str], create: impl FnOnce() -> Counter) {
        let mut create = Some(create);
        let _ = KEY.try_with(|key| {
            let Ok(mut key) = key.try_borrow_mut() else {
                return;
            };
            key.clear();
            let mut len = itoa::Buffer::new();
            for p in parts {
                // Each part prefixed with its length: no two label sets join alike.
                key.push_str(len.format(p.len()));
                key.push(':');
                key.push_str(p);
            }
            if let Ok(counters) = self.counters.read() {
                if let Some(c) = counters.get(key.as_str()) {
                    c.inc();
                    create = None;
                    return;
                }
            }
            if let Some(create) = create.take() {
                let counter = create();
                counter.inc();
                if let Ok(mut counters) = self.counters.write() {
                    counters.insert(key.clone(), counter);
                }
            }
        });
        // Not counted above (the thread is ending): through the family.
        if let Some(create) = create {
            create().inc();
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    // --- named events ---

    /// A review answered: `resource` is `resource/subresource` in the label.
    pub fn review_answered(
        &self,
        operation: &str,
        resource: &str,
        subresource: Option<&str>,
        decision: &'static str,
    ) {
        let sub = subresource.unwrap_or("");
        self.inc(&["reviews", operation, resource, sub, decision], || {
            let resource = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            self.reviews
                .get_or_create(&ReviewLabels {
                    operation: operation.to_string(),
                    resource,
                    decision,
                })
                .clone()
        });
    }

    pub fn rule_hit(&self, rule: &str, mode: &'static str) {
        self.inc(&["rule_hits", rule, mode], || {
            self.rule_hits
                .get_or_create(&RuleLabels {
                    rule: rule.to_string(),
                    mode,
                })
                .clone()
        });
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn session_recorded(&self, kind: &'static str) {
        self.sessions.get_or_create(&KindLabels { kind }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn counters_found_by_their_joined_labels_are_the_families_own() {
        let m = Metrics::new();
        for _ in 0..3 {
            m.review_answered("CONNECT", "pods", Some("exec"), "allow");
        }
        m.review_answered("CREATE", "pods", None, "deny");
        // Labels that would join alike without their lengths stay apart.
        m.rule_hit("a", "detect");
        m.rule_hit("a", "detect");
        m.rule_hit("a:detect", "enforce");
        let text = m.encode().unwrap();
        let reviews = "tether_webhook_reviews_total{operation=";
        assert_eq!(
            value(
                &text,
                &format!("{reviews}\"CONNECT\",resource=\"pods/exec\",decision=\"allow\"}}")
            ),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("{reviews}\"CREATE\",resource=\"pods\",decision=\"deny\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "tether_webhook_rule_hits_total{rule=\"a\",mode=\"detect\"}"
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                "tether_webhook_rule_hits_total{rule=\"a:detect\",mode=\"enforce\"}"
            ),
            Some(1.0)
        );
    }
}
