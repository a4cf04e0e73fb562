//! The rule set being served, its reload on file change, and the seam to the rule engine.
//!
//! [`RulesHandle`] holds the current generation of loaded rules and swaps it whole on
//! reload. A load that fails keeps the last good generation serving and records the error
//! (log, `errors_total{kind="rules_reload"}`, `/readyz` detail) until a later load
//! succeeds. Before the first successful load the webhook is not ready.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use policies::doc::Doc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::cluster::{NamespaceLabels, UnknownNamespace};
use crate::metrics::{ErrorKind, Metrics};
use crate::review::ReviewRequest;

/// A rule's configured mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMode {
    Detect,
    Enforce,
}

impl RuleMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Detect => "detect",
            Self::Enforce => "enforce",
        }
    }
}

/// One rule that matched a review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHit {
    pub rule: String,
    pub priority: policies::Priority,
    /// The mode the rule is configured with.
    pub mode: RuleMode,
    /// Why the review falls outside the rule's enforcement scope (namespaces, labels), or
    /// `None` when inside. An `enforce` rule outside its scope only detects.
    pub out_of_scope: Option<String>,
    /// The rendered output.
    pub output: String,
}

impl RuleHit {
    /// Whether the review falls inside the rule's enforcement scope.
    pub fn in_scope(&self) -> bool {
        self.out_of_scope.is_none()
    }
}

/// Evaluation failed (an internal error, answered per the failure mode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// What the webhook knows about a review beyond its body.
#[derive(Debug, Clone, Copy)]
pub struct ReviewContext<'a> {
    /// The labels of the pod a CONNECT review targets, when known.
    pub pod_labels: Option<&'a serde_json::Map<String, Value>>,
    /// The labels of the review's namespace (for scopes with `namespace_labels`), or why
    /// they are not known.
    pub namespace_labels: NamespaceLabels<'a>,
}

impl Default for ReviewContext<'_> {
    fn default() -> Self {
        Self {
            pod_labels: None,
            namespace_labels: NamespaceLabels::Unknown(UnknownNamespace::NoCluster),
        }
    }
}

/// One loaded generation of rules.
pub trait Rules: Send + Sync + 'static {
    /// Evaluates one admission review (the whole review JSON, moved in) whose request was
    /// checked as `request`. `pod_labels` are the labels of the pod a CONNECT review
    /// targets, when known.
    fn evaluate(
        &self,
        review: Doc,
        request: &ReviewRequest,
        pod_labels: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<RuleHit>, EvalError>;

    /// [`Rules::evaluate`] with everything the webhook knows about the review (what the
    /// server calls). Rules that do not use the namespace's labels need not implement it.
    fn evaluate_in(
        &self,
        review: Doc,
        request: &ReviewRequest,
        context: &ReviewContext<'_>,
    ) -> Result<Vec<RuleHit>, EvalError> {
        self.evaluate(review, request, context.pod_labels)
    }

    /// Starts evaluating on the calling thread and stops once `deadline` has passed; what
    /// is left is returned to finish elsewhere (an evaluation thread, under the budget)
    /// with the same context. Finished either way, the hits are those of
    /// [`Rules::evaluate_in`]. By default nothing runs here: the whole evaluation is left.
    fn evaluate_started(
        self: Arc<Self>,
        review: Doc,
        request: &ReviewRequest,
        context: &ReviewContext<'_>,
        deadline: Instant,
    ) -> Started {
        let _ = (context, deadline);
        let request = request.clone();
        Started::Rest(Box::new(move |context| {
            self.evaluate_in(review, &request, context)
        }))
    }

    /// How many rules apply at admission time.
    fn rule_count(&self) -> usize;

    /// Whether the rules may read an object's `metadata.managedFields`; when not, reviews
    /// are parsed without them (see [`crate::review::ParseOptions`]).
    fn reads_managed_fields(&self) -> bool {
        true
    }
}

/// The rest of an evaluation [`Rules::evaluate_started`] did not finish, to run with the
/// review's context.
pub type RestOfEvaluation =
    Box<dyn FnOnce(&ReviewContext<'_>) -> Result<Vec<RuleHit>, EvalError> + Send>;

/// What [`Rules::evaluate_started`] did before its deadline.
pub enum Started {
    /// The evaluation finished.
    Done(Result<Vec<RuleHit>, EvalError>),
    /// The deadline passed first (or nothing was evaluated): this is what is left.
    Rest(RestOfEvaluation),
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Self::Rest(_) => f.write_str("Rest(..)"),
        }
    }
}

/// Loads a generation of rules (from files, or the bundled library).
pub trait RulesLoader: Send + Sync + 'static {
    fn load(&self) -> Result<Arc<dyn Rules>, String>;
    /// The files whose change triggers a reload (empty: never reloads).
    fn watched_files(&self) -> &[PathBuf];
    /// A short description for logs and `/readyz` (file list or "bundled library").
    fn describe(&self) -> String;
}

/// State of the rules for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesStatus {
    pub loaded: bool,
    pub generation: u64,
    pub rules: usize,
    pub source: String,
    pub last_error: Option<String>,
}

/// The current rules, swapped whole on reload.
pub struct RulesHandle {
    loader: Arc<dyn RulesLoader>,
    current: RwLock<Option<Arc<dyn Rules>>>,
    generation: AtomicU64,
    last_error: Mutex<Option<String>>,
    fingerprint: Mutex<Option<u64>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RulesHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesHandle")
            .field("source", &self.loader.describe())
            .field("generation", &self.generation.load(Ordering::SeqCst))
            .finish()
    }
}

/// A hash of the watched files' contents; a missing file hashes as missing (and reloads,
/// so the load reports it).
fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        match std::fs::read(f) {
            Ok(bytes) => bytes.hash(&mut h),
            Err(e) => e.kind().to_string().hash(&mut h),
        }
    }
    h.finish()
}

impl RulesHandle {
    /// A handle with nothing loaded yet; call [`RulesHandle::reload`] (or start the
    /// watcher, which loads first).
    pub fn new(loader: Arc<dyn RulesLoader>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            loader,
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            last_error: Mutex::new(None),
            fingerprint: Mutex::new(None),
            metrics,
        })
    }

    /// The rules being served, if any loaded.
    pub fn current(&self) -> Option<Arc<dyn Rules>> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Loads when the watched files changed since the last attempt (or nothing is loaded
    /// yet). `Ok(true)`: a new generation serves; `Ok(false)`: unchanged; `Err`: the load
    /// failed and the previous generation (if any) keeps serving.
    pub fn reload(&self) -> Result<bool, String> {
        let files = self.loader.watched_files();
        let fp = fingerprint(files);
        let loaded_before = self.current().is_some();
        if let Ok(mut last) = self.fingerprint.lock() {
            if loaded_before && *last == Some(fp) {
                return Ok(false);
            }
            // A failed load is not retried until the files change again.
            if !loaded_before && *last == Some(fp) && !files.is_empty() {
                return Ok(false);
            }
            *last = Some(fp);
        }
        match self.loader.load() {
            Ok(rules) => {
                let count = rules.rule_count();
                if let Ok(mut c) = self.current.write() {
                    *c = Some(rules);
                }
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                self.metrics
                    .rules_generation
                    .set(i64::try_from(generation).unwrap_or(i64::MAX));
                self.metrics
                    .rules_loaded
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
                tracing::info!(
                    source = %self.loader.describe(),
                    generation,
                    rules = count,
                    "rules loaded"
                );
                Ok(true)
            }
            Err(e) => {
                self.metrics.error(ErrorKind::RulesReload);
                tracing::error!(
                    source = %self.loader.describe(),
                    error = %e,
                    serving_generation = self.generation.load(Ordering::SeqCst),
                    "rules failed to load; the last good rules keep serving"
                );
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.clone());
                }
                Err(e)
            }
        }
    }

    pub fn status(&self) -> RulesStatus {
        let current = self.current();
        RulesStatus {
            loaded: current.is_some(),
            generation: self.generation.load(Ordering::SeqCst),
            rules: current.map_or(0, |r| r.rule_count()),
            source: self.loader.describe(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Loads now (in a blocking task), then polls the watched files every `interval`
    /// until `shutdown`.
    pub fn spawn_watcher(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                if self.loader.watched_files().is_empty() && self.current().is_some() {
                    continue;
                }
                let this = self.clone();
                // Errors are logged and counted inside reload.
                let _ = tokio::task::spawn_blocking(move || this.reload()).await;
            }
        })
    }
}

/// Rules that never match: the webhook then only records exec sessions. Used where a
/// deployment wants sessions without admission rules, and as the baseline in benchmarks.
#[derive(Debug, Default)]
pub struct NoRules;

impl Rules for NoRules {
    fn evaluate(
        &self,
        _review: Doc,
        _request: &ReviewRequest,
        _pod_labels: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Vec<RuleHit>, EvalError> {
        Ok(Vec::new())
    }
    fn rule_count(&self) -> usize {
        0
    }
}

/// A loader of fixed rules (tests, benchmarks).
pub struct StaticLoader(pub Arc<dyn Rules>, pub String);

impl RulesLoader for StaticLoader {
    fn load(&self) -> Result<Arc<dyn Rules>, String> {
        Ok(self.0.clone())
    }
    fn watched_files(&self) -> &[PathBuf] {
        &[]
    }
    fn describe(&self) -> String {
        self.1.clone()
    }
}
