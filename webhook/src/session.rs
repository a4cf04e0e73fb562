//! Exec sessions from CONNECT reviews on `pods/exec`, `pods/attach`, `pods/portforward`,
//! and the pod labels those reviews do not carry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engine::{ExecSession, SessionKind};
use policies::doc::{Doc, Ref};
use serde_json::{Map, Value};

use crate::review::{Operation, ReviewRequest};

/// The session kind of a CONNECT review, if it opens one.
pub fn session_kind(req: &ReviewRequest) -> Option<SessionKind> {
    if req.operation != Operation::Connect || req.resource != "pods" || !req.group.is_empty() {
        return None;
    }
    match req.subresource.as_deref() {
        Some(sub @ ("exec" | "attach" | "portforward")) => SessionKind::from_subresource(sub),
        _ => None,
    }
}

/// The session a CONNECT review opens (id = request uid), or `None` for other reviews.
pub fn exec_session(req: &ReviewRequest, review: &Doc, now_ns: i64) -> Option<ExecSession> {
    let kind = session_kind(req)?;
    let object = review.root().pointer("/request/object");
    let str_at = |key: &str| {
        object
            .and_then(|o| o.get(key))
            .and_then(Ref::as_str)
            .map(str::to_string)
    };
    let command = object
        .and_then(|o| o.get("command"))
        .and_then(Ref::as_array)
        .map(|items| items.filter_map(Ref::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let tty = object
        .and_then(|o| o.get("tty"))
        .and_then(Ref::as_bool)
        .unwrap_or(false);
    Some(ExecSession {
        id: req.uid.clone(),
        kind,
        user: req.username.clone(),
        groups: req.groups.clone(),
        uid: req.user_uid.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        pod: req.name.clone().unwrap_or_default(),
        container: str_at("container"),
        command,
        tty,
        source_ips: Vec::new(),
        audit_id: None,
        started_ns: now_ns,
        observed_by: vec!["webhook".to_string()],
    })
}

/// Labels of pods seen in CREATE/UPDATE reviews (or read from the API for a CONNECT review,
/// see [`crate::cluster`]), by namespace and name, so that rules on CONNECT reviews (which
/// carry only `PodExecOptions`) can read the target pod's labels. Bounded: when full, an
/// arbitrary entry gives way. Without the Kubernetes API, a pod created before this webhook
/// started is unknown until its next UPDATE.
/// Labels by (namespace, name), with when they were learnt.
type LabelsByPod = HashMap<(String, String), (Map<String, Value>, Instant)>;

#[derive(Debug)]
pub struct PodLabelCache {
    max_entries: usize,
    pods: Mutex<LabelsByPod>,
}

impl PodLabelCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Learns from a pod CREATE/UPDATE/DELETE review.
    pub fn observe(&self, req: &ReviewRequest, review: &Doc) {
        if req.resource != "pods" || !req.group.is_empty() || req.subresource.is_some() {
            return;
        }
        if req.dry_run {
            return;
        }
        let Some(ns) = req.namespace.clone() else {
            return;
        };
        let name = req.name.clone().or_else(|| {
            review
                .root()
                .pointer("/request/object/metadata/name")
                .and_then(Ref::as_str)
                .map(str::to_string)
        });
        let Some(name) = name else { return };
        let Ok(mut pods) = self.pods.lock() else {
            return;
        };
        match req.operation {
            Operation::Delete => {
                pods.remove(&(ns, name));
            }
            Operation::Create | Operation::Update => {
                let labels = match review
                    .root()
                    .pointer("/request/object/metadata/labels")
                    .map(Ref::to_value)
                {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                self.insert_locked(&mut pods, ns, name, labels);
            }
            Operation::Connect => {}
        }
    }

    /// Forgets pod `namespace/name` (the API says it does not exist).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut pods) = self.pods.lock() {
            pods.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Remembers the labels of pod `namespace/name` (read from the API).
    pub fn insert(&self, namespace: String, name: String, labels: Map<String, Value>) {
        if let Ok(mut pods) = self.pods.lock() {
            self.insert_locked(&mut pods, namespace, name, labels);
        }
    }

    fn insert_locked(
        &self,
        pods: &mut LabelsByPod,
        namespace: String,
        name: String,
        labels: Map<String, Value>,
    ) {
        let key = (namespace, name);
        if pods.len() >= self.max_entries && !pods.contains_key(&key) {
            if let Some(k) = pods.keys().next().cloned() {
                pods.remove(&k);
            }
        }
        pods.insert(key, (labels, Instant::now()));
    }

    /// The labels of a pod, if it was seen, and within `max_age` when one is given.
    pub fn labels(
        &self,
        namespace: &str,
        name: &str,
        max_age: Option<Duration>,
    ) -> Option<Map<String, Value>> {
        let pods = self.pods.lock().ok()?;
        let (labels, learnt) = pods.get(&(namespace.to_string(), name.to_string()))?;
        if max_age.is_some_and(|age| learnt.elapsed() > age) {
            return None;
        }
        Some(labels.clone())
    }

    pub fn len(&self) -> usize {
        self.pods.lock().map(|p| p.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;
    use crate::review::parse;

    #[test]
    fn captured_exec_reviews_become_sessions() {
        for (file, cmd, tty) in [
            (
                "admission-pod-exec-connect-post-stdin-sh.json",
                vec!["sh"],
                false,
            ),
            (
                "admission-pod-exec-connect-websocket-get.json",
                vec!["id"],
                false,
            ),
        ] {
            let r = parse(&fixture(&format!("apiserver-captures/{file}"))).unwrap();
            let req = r.request.clone().unwrap();
            let s = exec_session(&req, &r.body, 42).unwrap();
            assert_eq!(s.id, r.uid);
            assert_eq!(s.kind, SessionKind::Exec);
            assert_eq!(s.user, "kapi-admin");
            assert_eq!(s.uid.as_deref(), Some("kapi-admin-uid"));
            assert_eq!(s.groups, vec!["system:masters", "system:authenticated"]);
            assert_eq!(s.namespace, "default");
            assert_eq!(s.pod, "good-pod");
            assert_eq!(s.container.as_deref(), Some("c"));
            assert_eq!(s.command, cmd);
            assert_eq!(s.tty, tty);
            assert_eq!(s.started_ns, 42);
            assert_eq!(s.observed_by, vec!["webhook"]);
        }
        let r = parse(&fixture(
            "apiserver-captures/admission-pod-create-good-pod-allowed.json",
        ))
        .unwrap();
        assert!(exec_session(&r.request.clone().unwrap(), &r.body, 1).is_none());
    }

    #[test]
    fn label_cache_follows_create_and_delete_and_stays_bounded() {
        let r = parse(&fixture(
            "apiserver-captures/admission-pod-create-good-pod-allowed.json",
        ))
        .unwrap();
        let mut req = r.request.clone().unwrap();
        let cache = PodLabelCache::new(2);
        cache.observe(&req, &r.body);
        assert_eq!(
            cache.labels("default", "good-pod", None).unwrap()["app"],
            "web"
        );
        for i in 0..5 {
            req.name = Some(format!("p{i}"));
            cache.observe(&req, &r.body);
        }
        assert_eq!(cache.len(), 2);
        req.operation = Operation::Delete;
        req.name = Some("p4".into());
        cache.observe(&req, &r.body);
        assert!(cache.labels("default", "p4", None).is_none());

        // Labels read from the API go in the same bounded cache.
        cache.insert(
            "prod".into(),
            "db-0".into(),
            r.body.root().to_value()["request"]["object"]["metadata"]["labels"]
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(cache.labels("prod", "db-0", None).unwrap()["app"], "web");
        assert_eq!(cache.len(), 2);

        // Past the maximum age an entry is not given out; without one it always is.
        let age = Duration::from_millis(20);
        assert!(cache.labels("prod", "db-0", Some(age)).is_some());
        std::thread::sleep(age * 2);
        assert!(cache.labels("prod", "db-0", Some(age)).is_none());
        assert!(cache.labels("prod", "db-0", None).is_some());
    }
}
