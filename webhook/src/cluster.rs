//! The webhook's view of the cluster: namespace labels and the labels of pods that CONNECT
//! reviews target, read from the Kubernetes API when the webhook has one.
//!
//! `--kube auto|on|off` decides once, at start:
//! - `off`: never uses the API.
//! - `on`: refuses to start unless a client configuration is found (`--kubeconfig`, else
//!   `KUBECONFIG`, `~/.kube/config` or the in-cluster service account) and the API answers.
//! - `auto` (the default): as `on` when both hold; otherwise runs without the API and logs
//!   once why (and `/readyz` says so under `cluster`).
//!
//! With the API:
//! - One watch of `Namespace`s keeps each namespace's labels (only its labels) in memory.
//!   Every review whose namespace is in that store is evaluated with the namespace's labels,
//!   so rule scopes with `tether.scope.namespace_labels` apply. Reading them is an `Arc`
//!   clone under a read lock. A namespace not (yet) in the store has unknown labels, and a
//!   scope that selects on them leaves the review out of scope (the rule detects). `/readyz`
//!   is not ready until the first namespace list has synced.
//! - A CONNECT review (exec, attach, port-forward) carries `PodExecOptions`, not the pod.
//!   When the target pod's labels are not in the webhook's label cache, the pod is read
//!   with one GET, bounded by `--pod-lookup-timeout-ms` and by half the evaluation budget,
//!   and its labels are cached. On an error or timeout the review is evaluated without pod
//!   labels. There is no pod watch: pods are many, namespaces few.
//!
//! RBAC the webhook's service account then needs: `get` on `pods`; `list` and `watch` on
//! `namespaces`.
//!
//! Metrics: `cluster_lookups_total{kind="namespace|pod",result}`, the gauge
//! `cluster_namespaces` (namespaces in the store) and `cluster_watch_errors_total` (the watch
//! failed; it is retried with backoff, and the labels last seen keep serving meanwhile, so
//! after a first sync `/readyz` stays ready and shows `last_watch_error`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::{LookupLabels, Metrics};
use crate::session::PodLabelCache;

/// How long the API gets to answer the start-up probe (`GET /version`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the webhook uses the Kubernetes API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KubeMode {
    /// Use the API when a configuration is found and the API answers.
    Auto,
    /// Refuse to start without the API.
    On,
    /// Never use the API.
    Off,
}

impl KubeMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// The flags of `tether webhook` about the Kubernetes API.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubernetes API use, for namespace labels (rule scopes with `namespace_labels`) and
    /// the labels of pods that exec/attach/port-forward target: `auto` uses the API when a
    /// configuration is found and the API answers, else runs without it; `on` refuses to
    /// start without it; `off` never uses it. Needs `get` on pods and `list`/`watch` on
    /// namespaces.
    #[arg(long, value_enum, default_value_t = KubeMode::Auto)]
    pub kube: KubeMode,
    /// Kubeconfig file to use (default: `KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Longest wait for the GET of a pod a CONNECT review targets when its labels are not
    /// cached, in milliseconds; never more than half the evaluation budget.
    #[arg(long, default_value_t = 50)]
    pub pod_lookup_timeout_ms: u64,
    /// How long labels of a pod that CONNECT reviews target are taken from the cache (filled
    /// by pod CREATE/UPDATE reviews and by earlier reads) before the pod is read again, in
    /// seconds: a label put on a running pod while the webhook did not see the update (the
    /// webhook was down, `failurePolicy: Ignore`) is seen at the latest this long after.
    /// When the read fails, the cached labels are used however old.
    #[arg(long, default_value_t = 30)]
    pub pod_labels_max_age_secs: u64,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        Self {
            kube: KubeMode::Auto,
            kubeconfig: None,
            pod_lookup_timeout_ms: 50,
            pod_labels_max_age_secs: 30,
        }
    }
}

impl ClusterArgs {
    /// Never use the API.
    pub fn off() -> Self {
        Self {
            kube: KubeMode::Off,
            ..Self::default()
        }
    }
}

/// The webhook could not get the Kubernetes API it was told to use.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--kube on: no Kubernetes client configuration found (looked at KUBECONFIG, ~/.kube/config and the in-cluster service account): {0}")]
    NoConfig(String),
    #[error("--kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("--kube on: cannot make a Kubernetes client for {url}: {reason}")]
    Client { url: String, reason: String },
    #[error("--kube on: the Kubernetes API at {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
}

/// Why a review's namespace labels are not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownNamespace {
    /// The webhook runs without the Kubernetes API.
    NoCluster,
    /// The review is about a cluster-scoped object.
    NoNamespace,
    /// The first namespace list has not synced yet.
    NotSynced,
    /// The namespace is not (yet) in the store (created a moment ago, or deleted).
    NotInStore,
}

impl UnknownNamespace {
    /// A sentence for logs and reasons, naming the namespace.
    pub fn describe(self, namespace: Option<&str>) -> String {
        let ns = namespace.unwrap_or("");
        match self {
            Self::NoCluster => format!(
                "the labels of namespace \"{ns}\" are not known: the webhook runs without the Kubernetes API (--kube)"
            ),
            Self::NoNamespace => "the object is cluster-scoped: it has no namespace labels".to_string(),
            Self::NotSynced => format!(
                "the labels of namespace \"{ns}\" are not known: the namespace list has not synced yet"
            ),
            Self::NotInStore => format!(
                "the labels of namespace \"{ns}\" are not known: the namespace is not in the webhook's namespace store (not created yet, or deleted)"
            ),
        }
    }
}

/// The labels of a review's namespace, as the webhook knows them.
#[derive(Debug, Clone, Copy)]
pub enum NamespaceLabels<'a> {
    Known(&'a BTreeMap<String, String>),
    Unknown(UnknownNamespace),
}

impl NamespaceLabels<'_> {
    pub fn known(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Self::Known(l) => Some(l),
            Self::Unknown(_) => None,
        }
    }
}

/// A namespace lookup's answer, owned (what the server carries to the evaluation).
#[derive(Debug, Clone)]
pub enum NamespaceLookup {
    Known(Arc<BTreeMap<String, String>>),
    Unknown(UnknownNamespace),
}

impl NamespaceLookup {
    pub fn as_labels(&self) -> NamespaceLabels<'_> {
        match self {
            Self::Known(l) => NamespaceLabels::Known(l),
            Self::Unknown(why) => NamespaceLabels::Unknown(*why),
        }
    }
}

/// Namespace labels by namespace name, filled by the namespace watch.
#[derive(Debug, Default)]
pub struct NamespaceStore {
    labels: RwLock<HashMap<String, Arc<BTreeMap<String, String>>>>,
    synced: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl NamespaceStore {
    /// The labels of `namespace`, or why they are not known.
    pub fn get(&self, namespace: &str) -> NamespaceLookup {
        let found = match self.labels.read() {
            Ok(m) => m.get(namespace).cloned(),
            Err(p) => p.into_inner().get(namespace).cloned(),
        };
        match found {
            Some(l) => NamespaceLookup::Known(l),
            None if !self.is_synced() => NamespaceLookup::Unknown(UnknownNamespace::NotSynced),
            None => NamespaceLookup::Unknown(UnknownNamespace::NotInStore),
        }
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        match self.labels.read() {
            Ok(m) => m.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last error of the watch, cleared by the next successful event.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<BTreeMap<String, String>>>> {
        match self.labels.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// Replaces the whole store with a complete list, and marks it synced.
    pub fn replace(&self, all: Vec<(String, BTreeMap<String, String>)>) {
        let fresh: HashMap<_, _> = all.into_iter().map(|(n, l)| (n, Arc::new(l))).collect();
        *self.write() = fresh;
        self.synced.store(true, Ordering::Release);
        self.set_error(None);
    }

    /// Adds or updates one namespace (kept as is when its labels did not change).
    pub fn upsert(&self, name: String, labels: BTreeMap<String, String>) {
        let mut m = self.write();
        if m.get(&name).is_some_and(|old| **old == labels) {
            return;
        }
        m.insert(name, Arc::new(labels));
    }

    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = e;
        }
    }
}

/// Counters of `cluster_lookups_total`, resolved once so that counting is one atomic add.
#[derive(Debug)]
struct LookupCounters {
    namespace_known: Counter,
    namespace_not_synced: Counter,
    namespace_not_in_store: Counter,
    pod_found: Counter,
    pod_not_found: Counter,
    pod_error: Counter,
    pod_timeout: Counter,
}

impl LookupCounters {
    fn new(metrics: &Metrics) -> Self {
        let c = |kind: &'static str, result: &'static str| {
            metrics
                .cluster_lookups
                .get_or_create(&LookupLabels { kind, result })
                .clone()
        };
        Self {
            namespace_known: c("namespace", "known"),
            namespace_not_synced: c("namespace", "not_synced"),
            namespace_not_in_store: c("namespace", "not_in_store"),
            pod_found: c("pod", "found"),
            pod_not_found: c("pod", "not_found"),
            pod_error: c("pod", "error"),
            pod_timeout: c("pod", "timeout"),
        }
    }
}

/// A connected Kubernetes API: the namespace store and pod lookups.
pub struct Cluster {
    client: kube::Client,
    url: String,
    namespaces: NamespaceStore,
    pod_lookup_timeout: Duration,
    pod_labels_max_age: Duration,
    counters: LookupCounters,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("namespaces", &self.namespaces.len())
            .field("synced", &self.namespaces.is_synced())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster view on `client` (not watching yet: see [`Cluster::spawn_namespace_watch`]).
    pub fn new(
        client: kube::Client,
        url: String,
        pod_lookup_timeout: Duration,
        pod_labels_max_age: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            url,
            namespaces: NamespaceStore::default(),
            pod_lookup_timeout,
            pod_labels_max_age,
            counters: LookupCounters::new(&metrics),
            metrics,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn namespaces(&self) -> &NamespaceStore {
        &self.namespaces
    }

    /// The labels of `namespace` (counted in `cluster_lookups_total{kind="namespace"}`).
    pub fn namespace_labels(&self, namespace: &str) -> NamespaceLookup {
        let found = self.namespaces.get(namespace);
        match &found {
            NamespaceLookup::Known(_) => self.counters.namespace_known.inc(),
            NamespaceLookup::Unknown(UnknownNamespace::NotSynced) => {
                self.counters.namespace_not_synced.inc()
            }
            NamespaceLookup::Unknown(_) => self.counters.namespace_not_in_store.inc(),
        };
        found
    }

    /// How long a pod GET may take within an evaluation budget (zero: no budget).
    /// How long cached pod labels are used before the pod is read again.
    pub fn pod_labels_max_age(&self) -> Duration {
        self.pod_labels_max_age
    }

    pub fn lookup_timeout(&self, budget: Duration) -> Duration {
        if budget.is_zero() {
            self.pod_lookup_timeout
        } else {
            self.pod_lookup_timeout.min(budget / 2)
        }
    }

    /// Reads the labels of pod `namespace/name` with one GET bounded by `timeout`, and
    /// remembers them in `cache` (a pod that does not exist is forgotten there). `None` when
    /// the pod does not exist or the GET failed or timed out (each counted in
    /// `cluster_lookups_total{kind="pod"}`).
    pub async fn pod_labels(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        cache: &PodLabelCache,
    ) -> Option<Map<String, Value>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match tokio::time::timeout(timeout, api.get_opt(name)).await {
            Ok(Ok(Some(pod))) => {
                self.counters.pod_found.inc();
                let labels: Map<String, Value> = pod
                    .metadata
                    .labels
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                cache.insert(namespace.to_string(), name.to_string(), labels.clone());
                Some(labels)
            }
            Ok(Ok(None)) => {
                self.counters.pod_not_found.inc();
                cache.forget(namespace, name);
                tracing::debug!(namespace, pod = name, "pod of a CONNECT review not found");
                None
            }
            Ok(Err(e)) => {
                self.counters.pod_error.inc();
                tracing::warn!(namespace, pod = name, error = %e, "cannot read the pod of a CONNECT review; evaluating with the labels cached earlier, if any");
                None
            }
            Err(_) => {
                self.counters.pod_timeout.inc();
                tracing::warn!(
                    namespace,
                    pod = name,
                    timeout_ms = timeout.as_millis(),
                    "reading the pod of a CONNECT review timed out; evaluating with the labels cached earlier, if any"
                );
                None
            }
        }
    }

    fn namespaces_changed(&self) {
        self.metrics
            .cluster_namespaces
            .set(i64::try_from(self.namespaces.len()).unwrap_or(i64::MAX));
    }

    /// Watches namespaces until `shutdown`, keeping their labels in the store. Errors are
    /// logged, kept for `/readyz`, and retried with the watcher's backoff.
    pub fn spawn_namespace_watch(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let api: Api<Namespace> = Api::all(this.client.clone());
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            let mut buffer: Vec<(String, BTreeMap<String, String>)> = Vec::new();
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return,
                    n = stream.next() => n,
                };
                let store = &this.namespaces;
                match next {
                    None => return,
                    Some(Ok(watcher::Event::Init)) => buffer.clear(),
                    Some(Ok(watcher::Event::InitApply(ns))) => {
                        if let Some(entry) = name_and_labels(ns) {
                            buffer.push(entry);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => {
                        let first = !store.is_synced();
                        let count = buffer.len();
                        store.replace(std::mem::take(&mut buffer));
                        this.namespaces_changed();
                        if first {
                            tracing::info!(api = %this.url, namespaces = count, "namespace list synced");
                        } else {
                            tracing::info!(api = %this.url, namespaces = count, "namespace list resynced");
                        }
                    }
                    Some(Ok(watcher::Event::Apply(ns))) => {
                        if let Some((name, labels)) = name_and_labels(ns) {
                            store.upsert(name, labels);
                            this.namespaces_changed();
                        }
                        store.set_error(None);
                    }
                    Some(Ok(watcher::Event::Delete(ns))) => {
                        if let Some(name) = ns.metadata.name {
                            store.remove(&name);
                            this.namespaces_changed();
                        }
                        store.set_error(None);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(api = %this.url, error = %e, "namespace watch failed; retrying");
                        this.metrics.cluster_watch_errors.inc();
                        store.set_error(Some(e.to_string()));
                    }
                }
            }
        })
    }
}

fn name_and_labels(ns: Namespace) -> Option<(String, BTreeMap<String, String>)> {
    let name = ns.metadata.name?;
    Some((name, ns.metadata.labels.unwrap_or_default()))
}

/// The webhook's access to the cluster: the connected API, or why there is none.
#[derive(Debug)]
pub struct ClusterAccess {
    pub mode: KubeMode,
    pub cluster: Option<Arc<Cluster>>,
    /// Why the API is not used (when it is not).
    pub unused_because: Option<String>,
}

impl ClusterAccess {
    /// No API (`--kube off`, tests).
    pub fn off() -> Self {
        Self {
            mode: KubeMode::Off,
            cluster: None,
            unused_because: Some("--kube off".to_string()),
        }
    }

    /// The labels of a review's namespace. Without the API this reads nothing.
    pub fn namespace_labels(&self, namespace: Option<&str>) -> NamespaceLookup {
        match (&self.cluster, namespace) {
            (None, _) => NamespaceLookup::Unknown(UnknownNamespace::NoCluster),
            (Some(_), None) => NamespaceLookup::Unknown(UnknownNamespace::NoNamespace),
            (Some(c), Some(ns)) => c.namespace_labels(ns),
        }
    }

    /// Why the webhook is not ready on the cluster's account, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        let c = self.cluster.as_ref()?;
        if c.namespaces.is_synced() {
            return None;
        }
        Some(match c.namespaces.last_error() {
            Some(e) => format!(
                "namespace list not synced yet from the Kubernetes API at {}: {e}",
                c.url
            ),
            None => format!(
                "namespace list not synced yet from the Kubernetes API at {}",
                c.url
            ),
        })
    }

    /// The `cluster` part of `/readyz`.
    pub fn status_json(&self) -> Value {
        match &self.cluster {
            Some(c) => serde_json::json!({
                "mode": self.mode.as_str(),
                "in_use": true,
                "api": c.url,
                "namespaces_synced": c.namespaces.is_synced(),
                "namespaces": c.namespaces.len(),
                "last_watch_error": c.namespaces.last_error(),
            }),
            None => serde_json::json!({
                "mode": self.mode.as_str(),
                "in_use": false,
                "reason": self.unused_because,
            }),
        }
    }
}

/// A client configuration, or why none was found.
enum ConfigFound {
    Yes(Box<kube::Config>),
    No(String),
}

/// Loads the client configuration: the `--kubeconfig` file (an error when unusable), else
/// kube-rs's inference (`KUBECONFIG`, `~/.kube/config`, the in-cluster service account).
async fn load_config(args: &ClusterArgs) -> Result<ConfigFound, ClusterError> {
    let Some(path) = &args.kubeconfig else {
        return Ok(match kube::Config::infer().await {
            Ok(c) => ConfigFound::Yes(Box::new(c)),
            Err(e) => ConfigFound::No(e.to_string()),
        });
    };
    let unusable = |reason: String| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        reason,
    };
    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| unusable(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| unusable(e.to_string()))?;
    Ok(ConfigFound::Yes(Box::new(config)))
}

/// Connects per `--kube`: `Ok` with the API (not yet watching) or with why it is not used;
/// `Err` when `--kube on` cannot have it or `--kubeconfig` is unusable.
pub async fn connect(
    args: &ClusterArgs,
    metrics: Arc<Metrics>,
) -> Result<ClusterAccess, ClusterError> {
    let mode = args.kube;
    let without = |why: String| {
        tracing::warn!(
            kube = mode.as_str(),
            reason = %why,
            "running without the Kubernetes API: rule scopes on namespace labels only detect, and CONNECT reviews see only pods created or updated since start"
        );
        Ok(ClusterAccess {
            mode,
            cluster: None,
            unused_because: Some(why),
        })
    };
    if mode == KubeMode::Off {
        tracing::info!("--kube off: namespace labels and pod lookups are not used");
        return Ok(ClusterAccess::off());
    }
    let config = match load_config(args).await? {
        ConfigFound::Yes(c) => *c,
        ConfigFound::No(none) if mode == KubeMode::On => return Err(ClusterError::NoConfig(none)),
        ConfigFound::No(none) => {
            return without(format!("no Kubernetes client configuration found: {none}"));
        }
    };
    let url = config.cluster_url.to_string();
    install_crypto_provider();
    let client = match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) if mode == KubeMode::On => {
            return Err(ClusterError::Client {
                url,
                reason: e.to_string(),
            })
        }
        Err(e) => return without(format!("cannot make a Kubernetes client for {url}: {e}")),
    };
    let probe = match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(info)) => Ok(info.git_version),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    match probe {
        Ok(version) => {
            tracing::info!(api = %url, %version, "using the Kubernetes API: watching namespaces, reading the pods CONNECT reviews target");
            let timeout = Duration::from_millis(args.pod_lookup_timeout_ms);
            let max_age = Duration::from_secs(args.pod_labels_max_age_secs);
            Ok(ClusterAccess {
                mode,
                cluster: Some(Arc::new(Cluster::new(
                    client, url, timeout, max_age, metrics,
                ))),
                unused_because: None,
            })
        }
        Err(reason) if mode == KubeMode::On => Err(ClusterError::Unreachable { url, reason }),
        Err(reason) => without(format!(
            "the Kubernetes API at {url} does not answer: {reason}"
        )),
    }
}

/// kube-rs builds its TLS configuration from rustls' process-wide provider; install `ring`
/// unless the process chose one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn store_answers_known_not_synced_and_not_in_store() {
        let store = NamespaceStore::default();
        assert!(matches!(
            store.get("a"),
            NamespaceLookup::Unknown(UnknownNamespace::NotSynced)
        ));
        store.replace(vec![("a".into(), labels(&[("tether.io/enforce", "true")]))]);
        match store.get("a") {
            NamespaceLookup::Known(l) => assert_eq!(l["tether.io/enforce"], "true"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.get("b"),
            NamespaceLookup::Unknown(UnknownNamespace::NotInStore)
        ));
        store.upsert("b".into(), labels(&[]));
        assert_eq!(store.len(), 2);
        store.remove("a");
        assert!(matches!(
            store.get("a"),
            NamespaceLookup::Unknown(UnknownNamespace::NotInStore)
        ));
    }

    #[test]
    fn unchanged_labels_keep_the_shared_map() {
        let store = NamespaceStore::default();
        store.replace(vec![("a".into(), labels(&[("x", "1")]))]);
        let NamespaceLookup::Known(before) = store.get("a") else {
            panic!("a is known")
        };
        store.upsert("a".into(), labels(&[("x", "1")]));
        let NamespaceLookup::Known(same) = store.get("a") else {
            panic!("a is known")
        };
        assert!(Arc::ptr_eq(&before, &same));
        store.upsert("a".into(), labels(&[("x", "2")]));
        let NamespaceLookup::Known(changed) = store.get("a") else {
            panic!("a is known")
        };
        assert_eq!(changed["x"], "2");
    }

    #[tokio::test]
    async fn pod_lookups_take_at_most_half_the_budget() {
        install_crypto_provider();
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let metrics = Arc::new(Metrics::new());
        let c = Cluster::new(
            client,
            "http://127.0.0.1:9".into(),
            Duration::from_millis(50),
            Duration::from_secs(30),
            metrics,
        );
        assert_eq!(
            c.lookup_timeout(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
        assert_eq!(
            c.lookup_timeout(Duration::from_millis(40)),
            Duration::from_millis(20)
        );
        // No budget: the configured timeout.
        assert_eq!(c.lookup_timeout(Duration::ZERO), Duration::from_millis(50));
    }

    #[test]
    fn without_the_api_nothing_is_read_and_the_reason_says_so() {
        let access = ClusterAccess::off();
        let found = access.namespace_labels(Some("prod"));
        let NamespaceLookup::Unknown(why) = found else {
            panic!("{found:?}")
        };
        assert_eq!(why, UnknownNamespace::NoCluster);
        assert!(why.describe(Some("prod")).contains("\"prod\""));
        assert!(why.describe(Some("prod")).contains("--kube"));
        assert!(UnknownNamespace::NotInStore
            .describe(Some("new-ns"))
            .contains("not in the webhook's namespace store"));
        assert!(access.not_ready_reason().is_none());
        assert_eq!(access.status_json()["in_use"], false);
    }
}
