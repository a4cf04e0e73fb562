//! HTTP front: routing, discovery, verbs, watch streaming.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::kinds::{self, KindId, KindSpec, KINDS};
use crate::patch::{self, PatchKind};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Change, EventType, Store, WriteOpts};

/// Largest accepted request body, as kube-apiserver's 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The version the double reports at `/version`.
pub const REPORTED_VERSION: (&str, &str) = ("1", "33");

/// One request seen by the double.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Request path without the query, e.g. `/api/v1/namespaces/default/pods/web`.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// `Content-Type` of the request, if sent.
    pub content_type: Option<String>,
    /// HTTP status code answered (for watches, the status that opened the stream).
    pub status: u16,
    /// The request body as received (empty when none, or when it was over the size limit).
    pub body: Bytes,
}

/// State shared by all connections.
pub struct Shared {
    pub(crate) store: Mutex<Store>,
    pub(crate) log: Mutex<Vec<RequestRecord>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) bookmark_interval: Duration,
    pub(crate) server_address: String,
}

impl Shared {
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn log(&self) -> std::sync::MutexGuard<'_, Vec<RequestRecord>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    q.get(k).is_some_and(|v| v == "true" || v == "1")
}

/// Where a request points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Discovery(Value),
    Collection {
        kind: KindId,
        ns: Option<String>,
    },
    Object {
        kind: KindId,
        ns: String,
        name: String,
        sub: Option<String>,
    },
}

fn resource_list(group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for k in KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({"name": name, "versions": vs, "preferredVersion": preferred})
}

fn route(path: &str, server_address: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => {
            return Ok(Target::Discovery(json!({
                "major": REPORTED_VERSION.0,
                "minor": REPORTED_VERSION.1,
                "gitVersion": format!("v{}.{}.0+apiserver-double", REPORTED_VERSION.0, REPORTED_VERSION.1),
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "none (test double)",
                "compiler": "none",
                "platform": "linux/amd64"
            })))
        }
        ["api"] => {
            return Ok(Target::Discovery(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
            })))
        }
        ["apis"] => {
            let groups: Vec<Value> = kinds::groups()
                .iter()
                .map(|(g, vs)| api_group(g, vs))
                .collect();
            return Ok(Target::Discovery(
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["api", "v1"] => return Ok(Target::Discovery(resource_list("", "v1"))),
        ["apis", g] => {
            let groups = kinds::groups();
            let (name, vs) = groups
                .iter()
                .find(|(n, _)| n == g)
                .ok_or_else(ApiError::no_route)?;
            let mut v = api_group(name, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            return Ok(Target::Discovery(v));
        }
        ["apis", g, v] => {
            if !KINDS.iter().any(|k| k.group == *g && k.version == *v) {
                return Err(ApiError::no_route());
            }
            return Ok(Target::Discovery(resource_list(g, v)));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let find = |plural: &str| kinds::by_path(group, version, plural);
    let namespaced = |plural: &str| find(plural).filter(|k| KINDS[*k].namespaced);
    let cluster = |plural: &str| find(plural).filter(|k| !KINDS[*k].namespaced);
    let object = |kind, ns: &str, name: &str, sub: Option<&str>| Target::Object {
        kind,
        ns: ns.to_string(),
        name: name.to_string(),
        sub: sub.map(str::to_string),
    };
    let status_sub = |k: KindId, sub: &str| sub == "status" && KINDS[k].status_subresource;
    let target = match rest {
        ["namespaces", ns, plural] if namespaced(plural).is_some() => {
            namespaced(plural).map(|kind| Target::Collection {
                kind,
                ns: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name] => namespaced(plural).map(|k| object(k, ns, name, None)),
        ["namespaces", ns, plural, name, sub] => namespaced(plural)
            .filter(|k| status_sub(*k, sub))
            .map(|k| object(k, ns, name, Some(sub))),
        [plural] => find(plural).map(|kind| Target::Collection { kind, ns: None }),
        [plural, name] => cluster(plural).map(|k| object(k, "", name, None)),
        [plural, name, sub] => cluster(plural)
            .filter(|k| status_sub(*k, sub))
            .map(|k| object(k, "", name, Some(sub))),
        _ => None,
    };
    target.ok_or_else(ApiError::no_route)
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large(MAX_BODY_BYTES))
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading request body: {e}"
                )))
            }
        }
    }
}

fn decode_object(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("application/json");
    let v: Value = match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as JSON: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" => serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding request body as YAML: {e}"))
        })?,
        other => {
            return Err(ApiError::unsupported_media_type(
                other,
                "application/json, application/yaml",
            ))
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "error decoding request body: expected a JSON object, got {}",
            match v {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    Ok(v)
}

fn list_response(
    kind: &KindSpec,
    items: Vec<Value>,
    rv: u64,
    cont: Option<String>,
    remaining: usize,
) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            // kube-apiserver omits apiVersion and kind on list items
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
        meta["remainingItemCount"] = json!(remaining);
    }
    json!({"kind": kind.list_kind(), "apiVersion": kind.api_version(), "metadata": meta, "items": items})
}

fn object_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

fn encode_continue(rv: u64, key: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}\n{key}"))
}

fn decode_continue(token: &str) -> Result<String, ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("continue key is not valid: \"{token}\""));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    s.split_once('\n')
        .map(|(_, k)| k.to_string())
        .ok_or_else(bad)
}

struct Selection {
    labels: LabelSelector,
    fields: FieldSelector,
    ns: Option<String>,
}

impl Selection {
    fn matches(&self, o: &Value) -> bool {
        self.ns
            .as_deref()
            .is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && self.labels.matches(o)
            && self.fields.matches(o)
    }

    /// The event a watcher of this selection sees for a change, if any.
    fn view(&self, c: &Change) -> Option<EventType> {
        let now = self.matches(&c.object);
        match (c.event, &c.old) {
            (EventType::Modified, Some(old)) => match (self.matches(old), now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
            (e, _) => now.then_some(e),
        }
    }
}

fn selection(
    kind: &KindSpec,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Selection, ApiError> {
    Ok(Selection {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), kind)?,
        ns,
    })
}

fn parse_rv(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid resourceVersion \"{s}\": must be a decimal number"
            ))
        }),
    }
}

fn list(
    shared: &Shared,
    kid: KindId,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Value, ApiError> {
    let kind = &KINDS[kid];
    let sel = selection(kind, ns.clone(), q)?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid limit \"{l}\": must be a non-negative integer"
            ))
        })?),
    };
    let after = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_continue(c)?),
        None => None,
    };
    let (all, rv) = {
        let store = shared.store();
        (store.list(kid, ns.as_deref()), store.resource_version())
    };
    let mut items: Vec<Value> = all
        .into_iter()
        .filter(|o| sel.matches(o))
        .filter(|o| after.as_ref().is_none_or(|a| object_key(o) > *a))
        .collect();
    let mut cont = None;
    let mut remaining = 0;
    if let Some(limit) = limit {
        if items.len() > limit {
            remaining = items.len() - limit;
            items.truncate(limit);
            cont = items.last().map(|o| encode_continue(rv, &object_key(o)));
        }
    }
    Ok(list_response(kind, items, rv, cont, remaining))
}

fn watch_line(event: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(kind: &KindSpec, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": meta}),
    )
}

fn watch(
    shared: &Arc<Shared>,
    kid: KindId,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, ApiError> {
    let kind = &KINDS[kid];
    let sel = selection(kind, ns, q)?;
    let from = parse_rv(q)?;
    let bookmarks = flag(q, "allowWatchBookmarks");
    let send_initial = flag(q, "sendInitialEvents");
    let timeout = match q.get("timeoutSeconds").map(String::as_str) {
        None | Some("") => Duration::from_secs(1800),
        Some(t) => Duration::from_secs(t.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid timeoutSeconds \"{t}\": must be a non-negative integer"
            ))
        })?),
    };
    let started = shared.store().watch(kid, from, send_initial);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let shared2 = shared.clone();
    match started {
        Err(e) if e.code == 410 => {
            // kube-apiserver answers 200 and sends the 410 as an ERROR event
            tokio::spawn(async move {
                let _ = tx.send(watch_line("ERROR", &e.to_status())).await;
            });
        }
        Err(e) => return Err(e),
        Ok(start) => {
            tokio::spawn(async move {
                run_watch(
                    shared2,
                    kid,
                    sel,
                    start,
                    tx,
                    bookmarks,
                    send_initial,
                    timeout,
                )
                .await;
            });
        }
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn run_watch(
    shared: Arc<Shared>,
    kid: KindId,
    sel: Selection,
    start: crate::store::WatchStart,
    tx: mpsc::Sender<Bytes>,
    bookmarks: bool,
    send_initial: bool,
    timeout: Duration,
) {
    let kind = &KINDS[kid];
    let mut live = start.live;
    let after = start.after;
    let deliver = |c: &Change| -> Option<Bytes> {
        if c.kind != kid || c.rv <= after {
            return None;
        }
        sel.view(c).map(|e| watch_line(e.as_str(), &c.object))
    };
    for c in &start.initial {
        if let Some(line) = deliver(c) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
    }
    if send_initial && tx.send(bookmark(kind, start.rv, true)).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(shared.bookmark_interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = shared.cancel.cancelled() => return,
            _ = tx.closed() => return,
            _ = tick.tick(), if bookmarks => {
                // every change up to `rv` is already queued in `live`: send those first
                let rv = shared.store().resource_version();
                loop {
                    match live.try_recv() {
                        Ok(c) => {
                            if let Some(line) = deliver(&c) {
                                if tx.send(line).await.is_err() { return; }
                            }
                        }
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Err(_) => return,
                    }
                }
                if tx.send(bookmark(kind, rv, false)).await.is_err() { return; }
            }
            got = live.recv() => match got {
                Ok(c) => {
                    if let Some(line) = deliver(&c) {
                        if tx.send(line).await.is_err() { return; }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    // the client re-watches from its last resourceVersion and catches up from history
                    tracing::warn!(kind = kind.plural, skipped = n, "watcher lagged; closing the stream");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

fn write_opts(q: &HashMap<String, String>, status: bool) -> WriteOpts {
    WriteOpts {
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        status,
    }
}

/// Handle one request.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_body(req.into_body()).await;
    let resp = match &body {
        Ok(body) => dispatch(
            &shared,
            body,
            &method,
            &path,
            &query,
            content_type.as_deref(),
        ),
        Err(e) => Err(e.clone()),
    };
    let resp = resp.unwrap_or_else(|e| error_response(&e));
    let status = resp.status().as_u16();
    tracing::debug!(%method, path, query, status, "request served");
    shared.log().push(RequestRecord {
        method: method.to_string(),
        path,
        query,
        content_type,
        status,
        body: body.unwrap_or_default(),
    });
    resp
}

fn dispatch(
    shared: &Arc<Shared>,
    body: &Bytes,
    method: &Method,
    path: &str,
    query: &str,
    content_type: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        let mut r = Response::new(Body::from("ok"));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        return Ok(r);
    }
    let q = parse_query(query);
    match route(path, &shared.server_address)? {
        Target::Discovery(v) => {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed());
            }
            Ok(json_response(200, &v))
        }
        Target::Collection { kind, ns } => {
            let spec = &KINDS[kind];
            match *method {
                Method::GET if flag(&q, "watch") => watch(shared, kind, ns, &q),
                Method::GET => Ok(json_response(200, &list(shared, kind, ns, &q)?)),
                Method::POST => {
                    let Some(ns) = ns.or_else(|| (!spec.namespaced).then(String::new)) else {
                        return Err(ApiError::method_not_allowed());
                    };
                    let obj = decode_object(content_type, body)?;
                    let created = shared
                        .store()
                        .create(kind, &ns, obj, write_opts(&q, false))?;
                    Ok(json_response(201, &created))
                }
                Method::DELETE => {
                    let sel = selection(spec, ns.clone(), &q)?;
                    let dry = write_opts(&q, false).dry_run;
                    let mut store = shared.store();
                    let targets: Vec<Value> = store
                        .list(kind, ns.as_deref())
                        .into_iter()
                        .filter(|o| sel.matches(o))
                        .collect();
                    let mut deleted = Vec::new();
                    for o in targets {
                        let ns = o
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        let name = o
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        store.delete(kind, &ns, &name, None, dry)?;
                        deleted.push(o);
                    }
                    let rv = store.resource_version();
                    Ok(json_response(
                        200,
                        &list_response(spec, deleted, rv, None, 0),
                    ))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Target::Object {
            kind,
            ns,
            name,
            sub,
        } => {
            let spec = &KINDS[kind];
            let status = match sub.as_deref() {
                None => false,
                Some("status") if spec.status_subresource => true,
                Some(_) => return Err(ApiError::no_route()),
            };
            match *method {
                Method::GET => Ok(json_response(200, &shared.store().get(kind, &ns, &name)?)),
                Method::PUT => {
                    let obj = decode_object(content_type, body)?;
                    let (v, created) =
                        shared
                            .store()
                            .update(kind, &ns, &name, obj, write_opts(&q, status))?;
                    Ok(json_response(if created { 201 } else { 200 }, &v))
                }
                Method::PATCH => {
                    let ct = content_type.unwrap_or("");
                    let pk = PatchKind::from_content_type(ct)
                        .ok_or_else(|| ApiError::unsupported_media_type(ct, patch::ACCEPTED))?;
                    if pk == PatchKind::Apply && q.get("fieldManager").is_none_or(String::is_empty)
                    {
                        return Err(ApiError::bad_request(
                            "fieldManager is required for apply requests",
                        ));
                    }
                    let p = patch::parse_body(pk, body)?;
                    let (v, created) =
                        shared
                            .store()
                            .patch(kind, &ns, &name, pk, &p, write_opts(&q, status))?;
                    Ok(json_response(if created { 201 } else { 200 }, &v))
                }
                Method::DELETE if !status => {
                    let opts: Option<Value> = if body.iter().all(u8::is_ascii_whitespace) {
                        None
                    } else {
                        Some(serde_json::from_slice(body).map_err(|e| {
                            ApiError::bad_request(format!("error decoding DeleteOptions: {e}"))
                        })?)
                    };
                    let pre = opts.as_ref().and_then(|o| o.get("preconditions"));
                    let dry = write_opts(&q, false).dry_run
                        || opts
                            .as_ref()
                            .and_then(|o| o.get("dryRun"))
                            .and_then(Value::as_array)
                            .is_some_and(|d| d.iter().any(|x| x == "All"));
                    let v = shared.store().delete(kind, &ns, &name, pre, dry)?;
                    Ok(json_response(200, &v))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let pods = kinds::by_name("pods").unwrap();
        assert_eq!(
            route("/api/v1/namespaces/default/pods", "x").unwrap(),
            Target::Collection {
                kind: pods,
                ns: Some("default".into())
            }
        );
        assert_eq!(
            route("/api/v1/pods", "x").unwrap(),
            Target::Collection {
                kind: pods,
                ns: None
            }
        );
        let ns = kinds::by_name("namespaces").unwrap();
        assert_eq!(
            route("/api/v1/namespaces/default", "x").unwrap(),
            Target::Object {
                kind: ns,
                ns: String::new(),
                name: "default".into(),
                sub: None
            }
        );
        assert_eq!(
            route("/api/v1/namespaces/default/status", "x").unwrap(),
            Target::Object {
                kind: ns,
                ns: String::new(),
                name: "default".into(),
                sub: Some("status".into())
            }
        );
        let lease = kinds::by_name("leases").unwrap();
        assert_eq!(
            route(
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
                "x"
            )
            .unwrap(),
            Target::Object {
                kind: lease,
                ns: "kube-system".into(),
                name: "l".into(),
                sub: None
            }
        );
        assert!(route("/api/v1/namespaces/default/widgets", "x").is_err());
        assert!(route("/api/v1/nodes/n/x/y", "x").is_err());
        assert!(route("/apis/apps/v1", "x").is_err());
        assert!(matches!(route("/apis", "x").unwrap(), Target::Discovery(_)));
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app%20in%20(a%2Cb)&watch=1&x");
        assert_eq!(q["labelSelector"], "app in (a,b)");
        assert!(flag(&q, "watch"));
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(7, "ns/name");
        assert_eq!(decode_continue(&t).unwrap(), "ns/name");
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
