//! Pod metadata for this node from the Kubernetes API: a kube-rs watch of the pods whose
//! `spec.nodeName` is this node, kept in a cache keyed by pod uid; and a watch of the
//! namespaces' labels, for rules scoped with `tether.scope.namespace_labels`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::watcher;
use kube::Api;
use tokio_util::sync::CancellationToken;

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerMeta {
    pub name: String,
    /// `container.image.repository`, e.g. `docker.io/library/nginx`.
    pub image_repository: String,
    pub image_tag: String,
    pub privileged: Option<bool>,
}

/// What the node needs to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub node_name: String,
    /// By full container id (the `containerID` of the status, runtime prefix removed).
    pub containers: HashMap<String, ContainerMeta>,
}

/// Namespace labels, as far as the namespace watch knows them.
#[derive(Debug, Default)]
enum NamespaceState {
    /// No watch runs (no Kubernetes API).
    #[default]
    NoWatch,
    /// The watch runs; its first list has not arrived.
    NotSynced,
    Synced(HashMap<String, Arc<BTreeMap<String, String>>>),
}

/// The shared cache the watches fill and the event pipeline reads.
#[derive(Debug, Clone, Default)]
pub struct PodCache {
    inner: Arc<RwLock<HashMap<String, Arc<PodMeta>>>>,
    namespaces: Arc<RwLock<NamespaceState>>,
    /// Bumped after every change of pods or namespaces: readers that derived state from the
    /// cache (the node's scoped kernel denies) know when to derive it again.
    generation: Arc<AtomicU64>,
}

impl PodCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, uid: &str) -> Option<Arc<PodMeta>> {
        self.inner.read().ok().and_then(|m| m.get(uid).cloned())
    }

    /// Changes so far; a reader that saw the same number has seen every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn upsert(&self, pod: &Pod) {
        if let Some(meta) = pod_meta(pod) {
            if let Ok(mut m) = self.inner.write() {
                m.insert(meta.uid.clone(), Arc::new(meta));
            }
        }
        self.changed();
    }

    pub fn remove(&self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            if let Ok(mut m) = self.inner.write() {
                m.remove(uid);
            }
        }
        self.changed();
    }

    /// The labels of namespace `ns`, or why they are not known.
    pub fn namespace_labels(&self, ns: &str) -> Result<Arc<BTreeMap<String, String>>, String> {
        let state = self
            .namespaces
            .read()
            .map_err(|_| "the namespace store is unreadable".to_string())?;
        match &*state {
            NamespaceState::NoWatch => Err(format!(
                "the labels of namespace \"{ns}\" are not known: no namespace watch (no Kubernetes API)"
            )),
            NamespaceState::NotSynced => Err(format!(
                "the labels of namespace \"{ns}\" are not known: the namespace watch has not synced yet"
            )),
            NamespaceState::Synced(m) => m.get(ns).cloned().ok_or_else(|| {
                format!("the labels of namespace \"{ns}\" are not known: the namespace is not in the namespace store")
            }),
        }
    }

    fn namespaces_watched(&self) {
        if let Ok(mut st) = self.namespaces.write() {
            if matches!(*st, NamespaceState::NoWatch) {
                *st = NamespaceState::NotSynced;
            }
        }
        self.changed();
    }

    fn namespaces_replace(&self, all: &[Namespace]) {
        let fresh = all.iter().filter_map(namespace_entry).collect();
        if let Ok(mut st) = self.namespaces.write() {
            *st = NamespaceState::Synced(fresh);
        }
        self.changed();
    }

    fn namespace_upsert(&self, n: &Namespace) {
        if let (Some((name, labels)), Ok(mut st)) = (namespace_entry(n), self.namespaces.write()) {
            if let NamespaceState::Synced(m) = &mut *st {
                m.insert(name, labels);
            }
        }
        self.changed();
    }

    fn namespace_remove(&self, n: &Namespace) {
        if let (Some(name), Ok(mut st)) = (n.metadata.name.as_deref(), self.namespaces.write()) {
            if let NamespaceState::Synced(m) = &mut *st {
                m.remove(name);
            }
        }
        self.changed();
    }

    fn replace(&self, pods: &[Pod]) {
        let fresh: HashMap<String, Arc<PodMeta>> = pods
            .iter()
            .filter_map(pod_meta)
            .map(|m| (m.uid.clone(), Arc::new(m)))
            .collect();
        if let Ok(mut m) = self.inner.write() {
            *m = fresh;
        }
        self.changed();
    }
}

fn namespace_entry(n: &Namespace) -> Option<(String, Arc<BTreeMap<String, String>>)> {
    let name = n.metadata.name.clone()?;
    Some((
        name,
        Arc::new(n.metadata.labels.clone().unwrap_or_default()),
    ))
}

/// Splits `registry/repo:tag` (or `repo@sha256:...`) into repository and tag.
pub fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    // a ':' after the last '/' separates the tag; one before it is a registry port
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image.get(slash..).and_then(|tail| tail.rfind(':')) {
        Some(i) => {
            let at = slash + i;
            (
                image.get(..at).unwrap_or(image).to_string(),
                image.get(at + 1..).unwrap_or("").to_string(),
            )
        }
        None => (image.to_string(), String::new()),
    }
}

fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let uid = pod.metadata.uid.clone()?;
    let spec = pod.spec.as_ref();
    let mut containers = HashMap::new();
    let specs: HashMap<&str, (&str, Option<bool>)> = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .map(|c| {
                    let privileged = c.security_context.as_ref().and_then(|sc| sc.privileged);
                    (
                        c.name.as_str(),
                        (c.image.as_deref().unwrap_or(""), privileged),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(status) = &pod.status {
        for cs in status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
        {
            let Some(cid) = cs.container_id.as_deref() else {
                continue;
            };
            let id = cid.split_once("://").map_or(cid, |(_, id)| id).to_string();
            let (spec_image, privileged) =
                specs.get(cs.name.as_str()).copied().unwrap_or(("", None));
            let image = if spec_image.is_empty() {
                cs.image.as_str()
            } else {
                spec_image
            };
            let (image_repository, image_tag) = split_image(image);
            containers.insert(
                id,
                ContainerMeta {
                    name: cs.name.clone(),
                    image_repository,
                    image_tag,
                    privileged,
                },
            );
        }
    }
    Some(PodMeta {
        uid,
        name: pod.metadata.name.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        containers,
    })
}

/// Follows one kube-rs watch until `shutdown`: `sync` gets the whole list at every (re)list,
/// `apply` and `delete` each later change. Errors are logged and retried after a second (the
/// watcher re-lists as needed).
async fn follow<K>(
    api: Api<K>,
    cfg: watcher::Config,
    what: &str,
    shutdown: CancellationToken,
    mut sync: impl FnMut(&[K]),
    mut apply: impl FnMut(&K),
    mut delete: impl FnMut(&K),
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut buffer: Vec<K> = Vec::new();
    let stream = watcher(api, cfg);
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            n = stream.next() => n,
        };
        match next {
            None => return,
            Some(Ok(watcher::Event::Init)) => buffer.clear(),
            Some(Ok(watcher::Event::InitApply(o))) => buffer.push(o),
            Some(Ok(watcher::Event::InitDone)) => {
                sync(&buffer);
                tracing::info!(watch = what, objects = buffer.len(), "watch synced");
                buffer.clear();
            }
            Some(Ok(watcher::Event::Apply(o))) => apply(&o),
            Some(Ok(watcher::Event::Delete(o))) => delete(&o),
            Some(Err(e)) => {
                tracing::warn!(watch = what, error = %e, "watch error; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Watches the pods scheduled on `node_name` until `shutdown`, keeping `cache` current.
/// Errors of the watch are logged and retried with backoff by the watcher.
pub async fn watch_pods(
    client: kube::Client,
    node_name: String,
    cache: PodCache,
    shutdown: CancellationToken,
) {
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    follow(
        Api::<Pod>::all(client),
        cfg,
        &format!("pods of node {node_name}"),
        shutdown,
        |all| cache.replace(all),
        |p| cache.upsert(p),
        |p| cache.remove(p),
    )
    .await;
}

/// Watches every namespace's labels until `shutdown`, keeping `cache` current (RBAC: list
/// and watch namespaces). Until the first list arrives, namespace labels are "not synced".
pub async fn watch_namespaces(client: kube::Client, cache: PodCache, shutdown: CancellationToken) {
    cache.namespaces_watched();
    follow(
        Api::<Namespace>::all(client),
        watcher::Config::default(),
        "namespaces",
        shutdown,
        |all| cache.namespaces_replace(all),
        |n| cache.namespace_upsert(n),
        |n| cache.namespace_remove(n),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_tag() {
        assert_eq!(split_image("nginx:1.25"), ("nginx".into(), "1.25".into()));
        assert_eq!(
            split_image("registry:5000/team/app:v2"),
            ("registry:5000/team/app".into(), "v2".into())
        );
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app".into(), String::new())
        );
        assert_eq!(
            split_image("busybox@sha256:abc"),
            ("busybox".into(), "sha256:abc".into())
        );
    }

    #[test]
    fn pod_meta_maps_container_ids() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "prod", "uid": "u-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "docker.io/library/busybox:1.36",
                      "securityContext": {"privileged": true}}]},
            "status": {"containerStatuses": [{"name": "app", "image": "busybox", "imageID": "", "ready": true,
                        "restartCount": 0, "containerID": "containerd://0123456789abcdef"}]}
        }))
        .unwrap();
        let m = pod_meta(&pod).unwrap();
        assert_eq!(m.namespace, "prod");
        assert_eq!(m.node_name, "n1");
        let c = m.containers.get("0123456789abcdef").unwrap();
        assert_eq!(c.name, "app");
        assert_eq!(c.image_repository, "docker.io/library/busybox");
        assert_eq!(c.image_tag, "1.36");
        assert_eq!(c.privileged, Some(true));
        let cache = PodCache::new();
        let g0 = cache.generation();
        cache.upsert(&pod);
        assert_eq!(cache.get("u-1").unwrap().name, "web-0");
        let g1 = cache.generation();
        assert!(g1 > g0, "an upsert is a change");
        // clones share the cache and its generation
        let reader = cache.clone();
        cache.remove(&pod);
        assert!(cache.is_empty());
        assert!(reader.generation() > g1, "a removal is a change");
    }

    #[test]
    fn namespace_labels_say_why_they_are_unknown() {
        let ns = |name: &str, labels: serde_json::Value| -> Namespace {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "labels": labels}
            }))
            .unwrap()
        };
        let cache = PodCache::new();
        assert!(cache
            .namespace_labels("prod")
            .unwrap_err()
            .contains("no namespace watch"));
        let g = cache.generation();
        cache.namespaces_watched();
        assert!(cache.generation() > g, "namespace changes are changes");
        assert!(cache
            .namespace_labels("prod")
            .unwrap_err()
            .contains("has not synced yet"));
        cache.namespaces_replace(&[ns("prod", serde_json::json!({"tier": "prod"}))]);
        assert_eq!(cache.namespace_labels("prod").unwrap()["tier"], "prod");
        assert!(cache
            .namespace_labels("dev")
            .unwrap_err()
            .contains("not in the namespace store"));
        cache.namespace_upsert(&ns("dev", serde_json::json!({})));
        assert!(cache.namespace_labels("dev").unwrap().is_empty());
        cache.namespace_remove(&ns("prod", serde_json::json!({})));
        assert!(cache.namespace_labels("prod").is_err());
    }
}
