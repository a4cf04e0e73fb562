//! The double's state: objects per kind, one global resourceVersion counter, a bounded watch
//! history, and a broadcast of every change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::broadcast;

use crate::kinds::{by_name, KindId, KindSpec, KINDS};
use crate::patch::{self, PatchKind};
use crate::status::{self, ApiError};
use crate::validate;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// `ADDED`
    Added,
    /// `MODIFIED`
    Modified,
    /// `DELETED`
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Kind changed.
    pub kind: KindId,
    /// Event type.
    pub event: EventType,
    /// The object after the change (for DELETED, the last state with the delete's rv).
    pub object: Value,
    /// The object before the change, for MODIFIED (lets selector watches turn a change into
    /// ADDED or DELETED when an object enters or leaves the selection).
    pub old: Option<Value>,
}

/// What a watch starts with: changes to replay, and the live feed.
pub struct WatchStart {
    /// Changes to send first (history after the requested resourceVersion, or synthetic ADDED).
    pub initial: Vec<Arc<Change>>,
    /// The global resourceVersion at the moment the watch started.
    pub rv: u64,
    /// Changes at or before this resourceVersion are not sent live (a watch from a
    /// resourceVersion ahead of the store waits for it).
    pub after: u64,
    /// Every later change.
    pub live: broadcast::Receiver<Arc<Change>>,
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// Write to the `status` subresource.
    pub status: bool,
}

type Key = (String, String);

/// All state, behind one mutex in the server.
pub struct Store {
    rv: u64,
    objects: Vec<BTreeMap<Key, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    compacted: u64,
    require_namespaces: bool,
    tx: broadcast::Sender<Arc<Change>>,
}

fn now() -> String {
    let t = OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

fn meta(obj: &Value, field: &str) -> Option<String> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn set_meta(obj: &mut Value, field: &str, v: Value) {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"][field] = v;
}

fn remove_meta(obj: &mut Value, field: &str) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove(field);
    }
}

/// Everything but `metadata` and `status`: a change here bumps `generation`.
fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

impl Store {
    /// An empty store with the usual namespaces of a fresh cluster.
    pub fn new(history_limit: usize, require_namespaces: bool) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let mut s = Store {
            rv: 0,
            objects: KINDS.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            require_namespaces,
            tx,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = s.seed(obj) {
                tracing::error!(namespace = ns, error = %e, "seeding namespace failed");
            }
        }
        s
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Every later change.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Drop the watch history: a watch from any resourceVersion before now gets 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn commit(
        &mut self,
        kind: KindId,
        event: EventType,
        mut obj: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        let key = (
            meta(&obj, "namespace").unwrap_or_default(),
            meta(&obj, "name").unwrap_or_default(),
        );
        if let Some(map) = self.objects.get_mut(kind) {
            if event == EventType::Deleted {
                map.remove(&key);
            } else {
                map.insert(key.clone(), obj.clone());
            }
        }
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            event,
            object: obj.clone(),
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        // no receivers is fine: nobody is watching
        let _ = self.tx.send(change);
        tracing::debug!(kind = KINDS[kind].plural, event = event.as_str(), rv = self.rv, ns = %key.0, name = %key.1, "change committed");
        obj
    }

    fn map(&self, kind: KindId) -> Option<&BTreeMap<Key, Value>> {
        self.objects.get(kind)
    }

    /// One object.
    pub fn get(&self, kind: KindId, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.map(kind)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&KINDS[kind], name))
    }

    /// Every object of a kind (in one namespace, or all), ordered by namespace then name.
    pub fn list(&self, kind: KindId, ns: Option<&str>) -> Vec<Value> {
        self.map(kind)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        by_name("namespaces")
            .and_then(|k| self.map(k))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    /// Resolve apiVersion/kind and namespace of a body against the request.
    fn prepare(kind: &KindSpec, ns: &str, obj: &mut Value) -> Result<(), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(format!(
                "the request body must be a JSON object describing a {}",
                kind.kind
            )));
        }
        let want_av = kind.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(want_av),
            Some(av) if av == want_av => {}
            Some(av) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )))
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(kind.kind),
            Some(k) if k == kind.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    kind.kind
                )))
            }
        }
        if let Some(m) = obj.get("metadata") {
            if !m.is_object() && !m.is_null() {
                return Err(ApiError::bad_request("metadata must be a JSON object"));
            }
        }
        if kind.namespaced {
            match meta(obj, "namespace") {
                Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})"
                    )))
                }
                _ => set_meta(obj, "namespace", json!(ns)),
            }
        } else {
            remove_meta(obj, "namespace");
        }
        Ok(())
    }

    fn invalid(kind: &KindSpec, obj: &Value) -> Result<(), ApiError> {
        let errs = validate::validate(kind, obj);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(
                kind,
                &meta(obj, "name").unwrap_or_default(),
                &errs,
            ))
        }
    }

    /// POST: create.
    pub fn create(
        &mut self,
        kid: KindId,
        ns: &str,
        mut obj: Value,
        opts: WriteOpts,
    ) -> Result<Value, ApiError> {
        let kind = &KINDS[kid];
        Self::prepare(kind, ns, &mut obj)?;
        if meta(&obj, "name").is_none_or(|n| n.is_empty()) {
            if let Some(g) = meta(&obj, "generateName").filter(|g| !g.is_empty()) {
                set_meta(&mut obj, "name", json!(format!("{g}{}", random_suffix())));
            }
        }
        validate::default_object(kind, &mut obj);
        Self::invalid(kind, &obj)?;
        let name = meta(&obj, "name").unwrap_or_default();
        if kind.namespaced && self.require_namespaces && !self.namespace_exists(ns) {
            let nsk = by_name("namespaces").map(|k| &KINDS[k]).unwrap_or(kind);
            return Err(ApiError::not_found(nsk, ns));
        }
        if self.get(kid, ns, &name).is_ok() {
            return Err(ApiError::already_exists(kind, &name));
        }
        set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
        set_meta(&mut obj, "creationTimestamp", json!(now()));
        set_meta(&mut obj, "generation", json!(1));
        remove_meta(&mut obj, "resourceVersion");
        remove_meta(&mut obj, "deletionTimestamp");
        if opts.dry_run {
            return Ok(obj);
        }
        Ok(self.commit(kid, EventType::Added, obj, None))
    }

    /// Store `new` as the next state of `old` (shared by PUT and PATCH).
    fn replace(
        &mut self,
        kid: KindId,
        old: Value,
        mut new: Value,
        opts: WriteOpts,
    ) -> Result<Value, ApiError> {
        let kind = &KINDS[kid];
        let name = meta(&old, "name").unwrap_or_default();
        match meta(&new, "name") {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => set_meta(&mut new, "name", json!(name)),
        }
        let old_rv = meta(&old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&new, "resourceVersion").filter(|r| !r.is_empty()) {
            if rv != old_rv {
                return Err(ApiError::conflict(
                    kind,
                    &name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        if let (Some(u), Some(old_u)) = (meta(&new, "uid"), meta(&old, "uid")) {
            if !u.is_empty() && u != old_u {
                return Err(ApiError::conflict(
                    kind,
                    &name,
                    &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {old_u}"),
                ));
            }
        }
        if kind.status_subresource {
            if opts.status {
                // the status subresource changes status only
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            } else {
                // the main resource cannot change status
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
        }
        for keep in ["uid", "creationTimestamp", "namespace", "deletionTimestamp"] {
            match old.get("metadata").and_then(|m| m.get(keep)) {
                Some(v) => set_meta(&mut new, keep, v.clone()),
                None => remove_meta(&mut new, keep),
            }
        }
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_part(&old) != spec_part(&new) {
            generation + 1
        } else {
            generation
        };
        set_meta(&mut new, "generation", json!(generation));
        set_meta(&mut new, "resourceVersion", json!(old_rv));
        validate::default_object(kind, &mut new);
        Self::invalid(kind, &new)?;
        if new == old || opts.dry_run {
            // a no-op write changes nothing and emits no event, as in kube-apiserver
            return Ok(new);
        }
        let finalized =
            old.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&new);
        if finalized {
            let obj = self.commit(kid, EventType::Modified, new, Some(old));
            return Ok(self.commit(kid, EventType::Deleted, obj, None));
        }
        Ok(self.commit(kid, EventType::Modified, new, Some(old)))
    }

    /// PUT: replace (or create, for kinds that allow create on update).
    pub fn update(
        &mut self,
        kid: KindId,
        ns: &str,
        name: &str,
        mut obj: Value,
        opts: WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let kind = &KINDS[kid];
        Self::prepare(kind, ns, &mut obj)?;
        match self.get(kid, ns, name) {
            Ok(old) => Ok((self.replace(kid, old, obj, opts)?, false)),
            Err(e) if kind.create_on_update && !opts.status => {
                match meta(&obj, "name") {
                    Some(n) if !n.is_empty() && n != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => set_meta(&mut obj, "name", json!(name)),
                }
                if meta(&obj, "resourceVersion").is_some_and(|r| !r.is_empty()) {
                    return Err(e);
                }
                Ok((self.create(kid, ns, obj, opts)?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// PATCH; server-side apply creates a missing object.
    pub fn patch(
        &mut self,
        kid: KindId,
        ns: &str,
        name: &str,
        pk: PatchKind,
        body: &Value,
        opts: WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        let kind = &KINDS[kid];
        match self.get(kid, ns, name) {
            Ok(old) => {
                let mut new = patch::apply(pk, &old, body)?;
                if pk == PatchKind::Apply {
                    Self::check_apply_types(kind, body)?;
                }
                Self::prepare(kind, ns, &mut new)?;
                Ok((self.replace(kid, old, new, opts)?, false))
            }
            Err(e) if pk == PatchKind::Apply && !opts.status => {
                Self::check_apply_types(kind, body)?;
                let mut obj = patch::apply(pk, &json!({}), body)?;
                match meta(&obj, "name") {
                    Some(n) if !n.is_empty() && n != name => {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        )))
                    }
                    _ => set_meta(&mut obj, "name", json!(name)),
                }
                if meta(&obj, "resourceVersion").is_some_and(|r| !r.is_empty()) {
                    return Err(e);
                }
                Ok((self.create(kid, ns, obj, opts)?, true))
            }
            Err(e) => Err(e),
        }
    }

    fn check_apply_types(kind: &KindSpec, body: &Value) -> Result<(), ApiError> {
        for field in ["apiVersion", "kind"] {
            if body
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::bad_request(format!(
                    "apply patch for {} must set {field}",
                    kind.qualified_resource()
                )));
            }
        }
        Ok(())
    }

    /// DELETE with optional preconditions. Objects with finalizers get a deletionTimestamp and
    /// stay until their finalizers are removed.
    pub fn delete(
        &mut self,
        kid: KindId,
        ns: &str,
        name: &str,
        preconditions: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let kind = &KINDS[kid];
        let obj = self.get(kid, ns, name)?;
        if let Some(p) = preconditions {
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if let Some(want) = p.get(field).and_then(Value::as_str) {
                    let got = meta(&obj, field).unwrap_or_default();
                    if want != got {
                        return Err(ApiError::conflict(
                            kind,
                            name,
                            &format!("Precondition failed: {label} in precondition: {want}, {label} in object meta: {got}"),
                        ));
                    }
                }
            }
        }
        let uid = meta(&obj, "uid").unwrap_or_default();
        let answer = |o: Value| {
            if kind.delete_returns_object {
                o
            } else {
                status::success(kind, name, &uid)
            }
        };
        if dry_run {
            return Ok(answer(obj));
        }
        if has_finalizers(&obj) {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(answer(obj));
            }
            let mut marked = obj.clone();
            set_meta(&mut marked, "deletionTimestamp", json!(now()));
            set_meta(&mut marked, "deletionGracePeriodSeconds", json!(0));
            return Ok(answer(self.commit(
                kid,
                EventType::Modified,
                marked,
                Some(obj),
            )));
        }
        let deleted = self.commit(kid, EventType::Deleted, obj, None);
        if kind.kind == "Namespace" && kind.group.is_empty() {
            self.delete_namespace_contents(name);
        }
        Ok(answer(deleted))
    }

    fn delete_namespace_contents(&mut self, ns: &str) {
        for (kid, k) in KINDS.iter().enumerate().filter(|(_, k)| k.namespaced) {
            for obj in self.list(kid, Some(ns)) {
                let name = meta(&obj, "name").unwrap_or_default();
                if let Err(e) = self.delete(kid, ns, &name, None, false) {
                    tracing::warn!(kind = k.plural, ns, name, error = %e, "namespace cleanup failed");
                }
            }
        }
    }

    /// Start a watch. `from` is the requested resourceVersion (`None`/0: current state first).
    pub fn watch(
        &self,
        kid: KindId,
        from: Option<u64>,
        send_initial: bool,
    ) -> Result<WatchStart, ApiError> {
        let live = self.tx.subscribe();
        let synthetic = |s: &Self| -> Vec<Arc<Change>> {
            s.list(kid, None)
                .into_iter()
                .map(|o| {
                    Arc::new(Change {
                        rv: o
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .and_then(|r| r.parse().ok())
                            .unwrap_or(0),
                        kind: kid,
                        event: EventType::Added,
                        object: o,
                        old: None,
                    })
                })
                .collect()
        };
        let initial = match from {
            _ if send_initial => synthetic(self),
            None | Some(0) => synthetic(self),
            Some(r) if r < self.compacted => {
                return Err(ApiError::expired(r, self.compacted + 1));
            }
            Some(r) => self
                .history
                .iter()
                .filter(|c| c.rv > r && c.kind == kid)
                .cloned()
                .collect(),
        };
        Ok(WatchStart {
            initial,
            rv: self.rv,
            after: if send_initial { 0 } else { from.unwrap_or(0) },
            live,
        })
    }

    /// Seed an object directly: create or overwrite, no validation beyond apiVersion, kind and
    /// name. Emits ADDED or MODIFIED like any write.
    pub fn seed(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let av = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let k = obj
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kid = crate::kinds::by_type(&av, &k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the double does not serve apiVersion \"{av}\" kind \"{k}\""
            ))
        })?;
        let kind = &KINDS[kid];
        let name = meta(&obj, "name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("seeded objects need metadata.name"))?;
        let ns = if kind.namespaced {
            let ns = meta(&obj, "namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into());
            set_meta(&mut obj, "namespace", json!(ns));
            ns
        } else {
            remove_meta(&mut obj, "namespace");
            String::new()
        };
        validate::default_object(kind, &mut obj);
        match self.get(kid, &ns, &name) {
            Ok(old) => {
                for keep in ["uid", "creationTimestamp"] {
                    if meta(&obj, keep).is_none() {
                        if let Some(v) = old.get("metadata").and_then(|m| m.get(keep)) {
                            set_meta(&mut obj, keep, v.clone());
                        }
                    }
                }
                if obj.pointer("/metadata/generation").is_none() {
                    set_meta(&mut obj, "generation", json!(1));
                }
                Ok(self.commit(kid, EventType::Modified, obj, Some(old)))
            }
            Err(_) => {
                if meta(&obj, "uid").is_none() {
                    set_meta(&mut obj, "uid", json!(uuid::Uuid::new_v4().to_string()));
                }
                if meta(&obj, "creationTimestamp").is_none() {
                    set_meta(&mut obj, "creationTimestamp", json!(now()));
                }
                if obj.pointer("/metadata/generation").is_none() {
                    set_meta(&mut obj, "generation", json!(1));
                }
                Ok(self.commit(kid, EventType::Added, obj, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> KindId {
        by_name("pods").unwrap()
    }

    fn pod(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    }

    #[test]
    fn create_assigns_metadata_and_counts_versions() {
        let mut s = Store::new(100, true);
        let start = s.resource_version();
        let p = s
            .create(pods(), "default", pod("a"), WriteOpts::default())
            .unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], (start + 1).to_string());
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["generation"], 1);
        assert_eq!(p["status"]["phase"], "Pending");
        assert!(p["metadata"]["uid"].as_str().unwrap().len() == 36);
        let e = s
            .create(pods(), "default", pod("a"), WriteOpts::default())
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "AlreadyExists"));
        let e = s
            .create(pods(), "nowhere", pod("b"), WriteOpts::default())
            .unwrap_err();
        assert_eq!(e.message, "namespaces \"nowhere\" not found");
        let mut g = pod("");
        g["metadata"] = json!({"generateName": "web-"});
        let p = s
            .create(pods(), "default", g, WriteOpts::default())
            .unwrap();
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(p["metadata"]["name"].as_str().unwrap().len(), 9);
    }

    #[test]
    fn update_conflicts_generation_and_noop() {
        let mut s = Store::new(100, true);
        let p = s
            .create(pods(), "default", pod("a"), WriteOpts::default())
            .unwrap();
        let mut stale = p.clone();
        let mut next = p.clone();
        next["spec"]["containers"][0]["image"] = json!("busybox:2");
        let (n, created) = s
            .update(pods(), "default", "a", next, WriteOpts::default())
            .unwrap();
        assert!(!created);
        assert_eq!(n["metadata"]["generation"], 2);
        stale["metadata"]["labels"] = json!({"x": "y"});
        let e = s
            .update(pods(), "default", "a", stale, WriteOpts::default())
            .unwrap_err();
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        let rv = s.resource_version();
        let (same, _) = s
            .update(pods(), "default", "a", n.clone(), WriteOpts::default())
            .unwrap();
        assert_eq!(same, n);
        assert_eq!(
            s.resource_version(),
            rv,
            "a no-op update does not bump the version"
        );
    }

    #[test]
    fn status_is_only_written_through_the_subresource() {
        let mut s = Store::new(100, true);
        let p = s
            .create(pods(), "default", pod("a"), WriteOpts::default())
            .unwrap();
        let mut m = p.clone();
        m["status"]["phase"] = json!("Running");
        let (n, _) = s
            .update(pods(), "default", "a", m.clone(), WriteOpts::default())
            .unwrap();
        assert_eq!(n["status"]["phase"], "Pending");
        let st = WriteOpts {
            status: true,
            ..Default::default()
        };
        m["metadata"]["resourceVersion"] = n["metadata"]["resourceVersion"].clone();
        let (n, _) = s.update(pods(), "default", "a", m, st).unwrap();
        assert_eq!(n["status"]["phase"], "Running");
    }

    #[test]
    fn finalizers_delay_deletion() {
        let mut s = Store::new(100, true);
        let mut p = pod("f");
        p["metadata"]["finalizers"] = json!(["tether.dev/x"]);
        s.create(pods(), "default", p, WriteOpts::default())
            .unwrap();
        let d = s.delete(pods(), "default", "f", None, false).unwrap();
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        assert!(s.get(pods(), "default", "f").is_ok());
        let patch = json!({"metadata": {"finalizers": null}});
        s.patch(
            pods(),
            "default",
            "f",
            PatchKind::Merge,
            &patch,
            WriteOpts::default(),
        )
        .unwrap();
        assert_eq!(s.get(pods(), "default", "f").unwrap_err().code, 404);
    }

    #[test]
    fn watch_history_and_expiry() {
        let mut s = Store::new(3, true);
        let a = s
            .create(pods(), "default", pod("a"), WriteOpts::default())
            .unwrap();
        let rv: u64 = a["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        s.delete(pods(), "default", "a", None, false).unwrap();
        let w = s.watch(pods(), Some(rv), false).unwrap();
        assert_eq!(w.initial.len(), 1);
        assert_eq!(w.initial[0].event, EventType::Deleted);
        for n in ["b", "c", "d", "e"] {
            s.create(pods(), "default", pod(n), WriteOpts::default())
                .unwrap();
        }
        let e = s.watch(pods(), Some(rv), false).err().unwrap();
        assert_eq!((e.code, e.reason), (410, "Expired"));
        let w = s.watch(pods(), None, false).unwrap();
        assert_eq!(w.initial.len(), 4);
        s.compact();
        assert!(s
            .watch(pods(), Some(s.resource_version() - 1), false)
            .is_err());
        assert!(s.watch(pods(), Some(s.resource_version()), false).is_ok());
    }

    #[test]
    fn deleting_a_namespace_deletes_its_objects() {
        let mut s = Store::new(100, true);
        let ns = by_name("namespaces").unwrap();
        s.create(
            ns,
            "",
            json!({"metadata": {"name": "team"}}),
            WriteOpts::default(),
        )
        .unwrap();
        s.create(pods(), "team", pod("a"), WriteOpts::default())
            .unwrap();
        let d = s.delete(ns, "", "team", None, false).unwrap();
        assert_eq!(d["kind"], "Namespace");
        assert!(s.list(pods(), Some("team")).is_empty());
    }
}
