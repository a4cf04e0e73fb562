//! The event model: one [`Event`] type for every source.
//!
//! Audit events keep their parsed JSON. An AdmissionReview is rewritten once, at parse time,
//! into an audit-shaped JSON body so that every `ka.*` and `jevt.*` field reads it exactly as it
//! reads an audit event. Syscall events carry a typed [`SyscallEvent`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::body::Body;
use crate::doc::{Doc, Kind, Ref};
use crate::input::InputError;
use crate::source::Source;

/// One event of any source. Cheap to clone (the payload is shared).
#[derive(Debug, Clone)]
pub struct Event {
    source: Source,
    time_ns: i64,
    payload: Payload,
    session: Option<Arc<SessionFields>>,
}

#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Json(Arc<Body>),
    Syscall(Arc<SyscallEvent>),
}

/// A kernel event as the node enforcer reports it. Field names follow Falco's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyscallEvent {
    /// `evt.type`: the syscall or event name (`execve`, `openat`, `connect`, ...).
    pub evt_type: String,
    /// `evt.res` / `evt.rawres`: the return value (negative errno on failure).
    pub evt_res: i64,
    /// `evt.time`: nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// `evt.arg.NAME`: the syscall arguments by Falco's argument names, rendered as text.
    pub args: BTreeMap<String, String>,
    pub proc: ProcInfo,
    pub user: UserInfo,
    /// The file descriptor the event acts on, if any.
    pub fd: Option<FdInfo>,
    pub container: ContainerInfo,
    pub k8s: K8sInfo,
    /// `evt.hostname`.
    pub hostname: String,
}

/// `proc.*` fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcInfo {
    pub pid: i64,
    pub ppid: i64,
    /// `proc.vpid`: the pid inside the process's pid namespace.
    pub vpid: i64,
    /// `proc.name`: the executable's short name (comm).
    pub name: String,
    /// `proc.exe`: `argv[0]`.
    pub exe: String,
    /// `proc.exepath`: the full path of the executable.
    pub exepath: String,
    /// `proc.args`: `argv[1..]`.
    pub args: Vec<String>,
    /// `proc.cwd`.
    pub cwd: String,
    /// `proc.tty`: the controlling terminal number, 0 when none.
    pub tty: i64,
    /// `proc.sid`.
    pub sid: i64,
    pub pname: String,
    pub pexe: String,
    pub pexepath: String,
    /// `proc.pcmdline`: the parent's name and arguments.
    pub pcmdline: String,
    /// Names of the ancestors, parent first (`proc.aname[1]` is `ancestors[0]`).
    pub ancestors: Vec<String>,
    /// Executable paths of the ancestors, parent first (`proc.aexepath[N]`).
    pub ancestor_exepaths: Vec<String>,
    /// `proc.env`: `KEY=VALUE` entries.
    pub env: Vec<String>,
}

/// `user.*` and `group.*` fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserInfo {
    pub uid: i64,
    /// `user.loginuid`: -1 when unset.
    pub loginuid: i64,
    pub name: String,
    pub loginname: String,
    pub gid: i64,
    pub group: String,
}

/// `fd.*` fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FdInfo {
    pub num: i64,
    /// `fd.name`: the path for files, `sip:sport->dip:dport` for sockets.
    pub name: String,
    /// `fd.typechar`: `f` file, `4` IPv4, `6` IPv6, `u` unix, `p` pipe, `e` eventfd, `s`
    /// signalfd, `l` eventpoll, `i` inotify, `t` timerfd, `n` netlink, `b` bpf, `o` other.
    pub typechar: String,
    /// Server IP (`fd.sip`, also `fd.dip`): the connection's destination for an outbound
    /// connect, the local address for an accepted one.
    pub sip: String,
    /// Server port (`fd.sport`, also `fd.dport`).
    pub sport: i64,
    /// Client IP (`fd.cip`): the side that initiated the connection.
    pub cip: String,
    /// Client port (`fd.cport`).
    pub cport: i64,
    /// `fd.l4proto`: `tcp`, `udp`, `icmp`, `raw`.
    pub l4proto: String,
}

/// `container.*` fields. `id` is `host` for host processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerInfo {
    /// The 12-character short id, or `host`.
    pub id: String,
    pub name: String,
    pub image_repository: String,
    pub image_tag: String,
    pub privileged: Option<bool>,
}

/// `k8s.*` fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct K8sInfo {
    pub ns_name: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub pod_labels: BTreeMap<String, String>,
    pub node_name: String,
}

/// The `session.*` fields the engine attaches to syscall events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionFields {
    pub id: String,
    /// `exec`, `attach`, `portforward` or `debug`.
    pub kind: String,
    pub user: String,
    pub groups: Vec<String>,
    pub uid: String,
    pub auditid: String,
    pub command: Vec<String>,
    pub sourceips: Vec<String>,
    /// Nanoseconds since the Unix epoch.
    pub started_ns: i64,
    /// `exact`, `matched` or `none`.
    pub confidence: String,
}

impl Event {
    /// One `audit.k8s.io` `Event` (v1 or v1beta1; a missing `apiVersion` is accepted, as in
    /// Falco's trace files). The event time is `stageTimestamp`, else `requestReceivedTimestamp`.
    pub fn from_audit_value(v: Json) -> Result<Event, InputError> {
        if !v.is_object() {
            return Err(InputError::new(
                "<value>",
                0,
                format!(
                    "data not recognized as a k8s audit event: expected an audit event object, found {}",
                    json_kind(&v)
                ),
            ));
        }
        Self::audit_body(Body::from_value(v)).map_err(|what| InputError::new("<value>", 0, what))
    }

    /// An audit event from the text of one JSON object, parsed lazily (see [`crate::body`]).
    pub(crate) fn from_audit_text(text: &str) -> Result<Event, String> {
        let body = Body::lazy(text)
            .map_err(|e| format!("data not recognized as a k8s audit event: {e}"))?;
        Self::audit_body(body)
    }

    pub(crate) fn from_audit_body(body: Body) -> Result<Event, String> {
        Self::audit_body(body)
    }

    fn audit_body(body: Body) -> Result<Event, String> {
        check_audit_shape(&body)
            .map_err(|what| format!("data not recognized as a k8s audit event: {what}"))?;
        let time_ns = audit_time_ns(&body);
        Ok(Event {
            source: Source::K8sAudit,
            time_ns,
            payload: Payload::Json(Arc::new(body)),
            session: None,
        })
    }

    /// An `AdmissionReview` (admission.k8s.io v1 or v1beta1) as a `k8s_admission` event whose
    /// body reads like an audit event: `requestObject` is `request.object` (or
    /// `request.options` when there is no object, e.g. the PodExecOptions of a CONNECT),
    /// `verb` is the lower-case operation, `stage` is `Admission`, `user` is
    /// `request.userInfo`, `objectRef` comes from `request.resource`/`subResource`/
    /// `namespace`/`name`, and `requestURI` is rebuilt (with the exec/attach/portforward
    /// options as query parameters, one `command` parameter per argv element).
    pub fn from_admission_review(v: Json) -> Result<Event, InputError> {
        Self::from_admission_doc(Doc::from_value(&v))
    }

    /// [`Event::from_admission_review`] of a review parsed into a [`Doc`] (what the webhook
    /// does: no `serde_json::Value` is built).
    pub fn from_admission_doc(review: Doc) -> Result<Event, InputError> {
        let body =
            admission_to_audit(review).map_err(|what| InputError::new("<value>", 0, what))?;
        Ok(Event {
            source: Source::K8sAdmission,
            time_ns: now_ns(),
            payload: Payload::Json(Arc::new(body)),
            session: None,
        })
    }

    /// A kernel event from the node enforcer.
    pub fn from_syscall(ev: SyscallEvent) -> Event {
        Event {
            source: Source::Syscall,
            time_ns: ev.time_ns,
            payload: Payload::Syscall(Arc::new(ev)),
            session: None,
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// Nanoseconds since the Unix epoch (0 when the event carried no usable time).
    pub fn time_ns(&self) -> i64 {
        self.time_ns
    }

    /// The audit body, or for admission events the audit-shaped view of the review.
    pub fn json(&self) -> Option<&Json> {
        match &self.payload {
            Payload::Json(j) => Some(j.full()),
            Payload::Syscall(_) => None,
        }
    }

    pub(crate) fn body(&self) -> Option<&Body> {
        match &self.payload {
            Payload::Json(j) => Some(j),
            Payload::Syscall(_) => None,
        }
    }

    /// The typed payload of a syscall event.
    pub fn syscall(&self) -> Option<&SyscallEvent> {
        match &self.payload {
            Payload::Syscall(s) => Some(s),
            Payload::Json(_) => None,
        }
    }

    /// The value of a resolved field (see [`crate::fields::resolve`]) on this event.
    pub fn field<'e>(&'e self, f: &'e crate::fields::FieldRef) -> crate::Value<'e> {
        f.extract(self)
    }

    /// Attaches the `session.*` fields.
    pub fn set_session(&mut self, s: SessionFields) {
        self.session = Some(Arc::new(s));
    }

    pub fn session(&self) -> Option<&SessionFields> {
        self.session.as_deref()
    }

    /// The namespace the event's target object lives in, if any (`ka.target.namespace` or
    /// `k8s.ns.name`).
    pub fn namespace(&self) -> Option<&str> {
        match &self.payload {
            Payload::Json(j) => j
                .get("objectRef")
                .and_then(|o| o.get("namespace"))
                .and_then(Ref::as_str),
            Payload::Syscall(s) => (!s.k8s.ns_name.is_empty()).then_some(s.k8s.ns_name.as_str()),
        }
    }

    /// The labels of the object the event is about: the request object's (admission/audit),
    /// or the old object's on DELETE, or the pod's (syscall).
    pub fn object_labels(&self) -> BTreeMap<String, String> {
        match &self.payload {
            Payload::Json(j) => {
                let labels = |o: Option<Ref<'_>>| {
                    o.and_then(|o| o.get("metadata"))
                        .and_then(|m| m.get("labels"))
                        .and_then(Ref::as_object)
                        .map(|m| {
                            m.filter_map(|(k, v)| v.as_str().map(|v| (k.to_owned(), v.to_owned())))
                                .collect::<BTreeMap<_, _>>()
                        })
                };
                labels(j.get("requestObject"))
                    .or_else(|| labels(j.get("oldObject")))
                    .unwrap_or_default()
            }
            Payload::Syscall(s) => s.k8s.pod_labels.clone(),
        }
    }

    pub(crate) fn payload(&self) -> &Payload {
        &self.payload
    }
}

pub(crate) fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Checks that an object is an audit `Event`; returns what is wrong.
pub(crate) fn check_audit_shape(obj: &Body) -> Result<(), String> {
    if let Some(kind) = obj.get("kind") {
        if kind.as_str() != Some("Event") {
            return Err(format!("expected kind \"Event\", found {kind}"));
        }
    }
    if let Some(av) = obj.get("apiVersion") {
        match av.as_str() {
            Some("audit.k8s.io/v1") | Some("audit.k8s.io/v1beta1") => {}
            _ => {
                return Err(format!(
                    "unsupported apiVersion {av}: expected audit.k8s.io/v1 or audit.k8s.io/v1beta1"
                ))
            }
        }
    }
    for key in ["verb", "stage", "auditID", "requestURI"] {
        match obj.get(key) {
            Some(v) if v.kind() == Kind::String => {}
            Some(other) => {
                return Err(format!(
                    "field \"{key}\" must be a string, found {}",
                    other.kind().described()
                ))
            }
            None if key == "verb" || key == "stage" => {
                return Err(format!("audit event has no \"{key}\""))
            }
            None => {}
        }
    }
    if let Some(o) = obj.get("objectRef") {
        if !o.is_object() {
            return Err(format!(
                "field \"objectRef\" must be an object, found {}",
                o.kind().described()
            ));
        }
    }
    if let Some(u) = obj.get("user") {
        if !u.is_object() {
            return Err(format!(
                "field \"user\" must be an object, found {}",
                u.kind().described()
            ));
        }
    }
    Ok(())
}

pub(crate) fn json_kind(v: &Json) -> &'static str {
    Kind::of(v).described()
}

/// Parses an RFC 3339 timestamp to nanoseconds since the epoch.
pub(crate) fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

fn audit_time_ns(v: &Body) -> i64 {
    ["stageTimestamp", "requestReceivedTimestamp"]
        .iter()
        .filter_map(|k| v.get(k).and_then(Ref::as_str))
        .find_map(parse_rfc3339_ns)
        .unwrap_or(0)
}

/// Rewrites an AdmissionReview into an audit-shaped body. The review's document is kept
/// whole: the request's `object`, `oldObject`, `options` and `userInfo` are named in place,
/// and the values the audit shape adds are appended to the same document, so that building
/// the event copies no object.
fn admission_to_audit(mut doc: Doc) -> Result<Body, String> {
    let top = doc.root();
    if !top.is_object() {
        return Err(format!(
            "expected an AdmissionReview object, found {}",
            top.kind().described()
        ));
    }
    // The review is read in one pass over its members; they are checked below in the order
    // they are read, so the first problem reported stays the same.
    let (mut kind, mut api_version, mut request) = (None, None, None);
    for (k, v) in top.as_object().into_iter().flatten() {
        match k {
            "kind" => kind = Some(v),
            "apiVersion" => api_version = Some(v),
            "request" => request = Some(v),
            _ => {}
        }
    }
    match kind.and_then(Ref::as_str) {
        Some("AdmissionReview") => {}
        Some(other) => {
            return Err(format!(
                "expected kind \"AdmissionReview\", found \"{other}\""
            ))
        }
        None => return Err("AdmissionReview has no \"kind\"".to_string()),
    }
    let api_version = match api_version.and_then(Ref::as_str) {
        Some("admission.k8s.io/v1") => "admission.k8s.io/v1",
        Some("admission.k8s.io/v1beta1") => "admission.k8s.io/v1beta1",
        Some(other) => {
            return Err(format!(
                "unsupported AdmissionReview apiVersion \"{other}\": expected admission.k8s.io/v1 or admission.k8s.io/v1beta1"
            ))
        }
        None => return Err("AdmissionReview has no \"apiVersion\"".to_string()),
    };
    let req = match request {
        None => return Err("AdmissionReview has no \"request\"".to_string()),
        Some(r) if r.is_object() => r,
        Some(_) => return Err("AdmissionReview \"request\" must be an object".to_string()),
    };
    let mut r = RequestParts::default();
    for (k, v) in req.as_object().into_iter().flatten() {
        let slot = match k {
            "uid" => &mut r.uid,
            "operation" => &mut r.operation,
            "resource" => &mut r.resource,
            "subResource" => &mut r.sub_resource,
            "namespace" => &mut r.namespace,
            "name" => &mut r.name,
            "dryRun" => &mut r.dry_run,
            "userInfo" => &mut r.user,
            "object" => &mut r.object,
            "options" => &mut r.options,
            "oldObject" => &mut r.old_object,
            _ => continue,
        };
        *slot = Some(v);
    }
    let RequestParts {
        uid,
        operation,
        resource,
        sub_resource,
        namespace,
        name,
        dry_run,
        user,
        object,
        options,
        old_object,
    } = r;
    let (object, options, old_object) = (
        object.filter(|o| !o.is_null()),
        options.filter(|o| !o.is_null()),
        old_object.filter(|o| !o.is_null()),
    );
    let uid = string_member("uid", uid)?
        .ok_or_else(|| "AdmissionReview request has no \"uid\"".to_string())?;
    let operation = string_member("operation", operation)?
        .and_then(Ref::as_str)
        .ok_or_else(|| "AdmissionReview request has no \"operation\"".to_string())?;
    let (operation, verb) = match operation {
        "CREATE" => ("CREATE", "create"),
        "UPDATE" => ("UPDATE", "update"),
        "DELETE" => ("DELETE", "delete"),
        "CONNECT" => ("CONNECT", "connect"),
        _ => {
            return Err(format!(
                "request.operation \"{operation}\" is not one of CREATE, UPDATE, DELETE, CONNECT"
            ))
        }
    };
    let resource = resource
        .filter(|r| r.is_object())
        .ok_or_else(|| "AdmissionReview request has no \"resource\" object".to_string())?;
    let res_name = resource
        .get("resource")
        .filter(|r| r.as_str().is_some())
        .ok_or_else(|| "request.resource has no \"resource\" string".to_string())?;
    let group = resource.get("group").filter(|g| g.as_str().is_some());
    let version = resource.get("version").filter(|v| v.as_str().is_some());
    let subresource = nonempty(string_member("subResource", sub_resource)?);
    let namespace = nonempty(string_member("namespace", namespace)?);
    let name = nonempty(string_member("name", name)?);
    let user = match user {
        Some(u) if u.is_object() => Some(u.node()),
        None => None,
        Some(u) if u.is_null() => None,
        Some(other) => {
            return Err(format!(
                "request.userInfo must be an object, found {}",
                other.kind().described()
            ))
        }
    };

    let name = name.or_else(|| {
        object
            .and_then(|o| o.get("metadata"))
            .and_then(|m| m.get("name"))
            .filter(|n| n.as_str().is_some())
    });
    let (group_text, version_text) = (text(group), text(version));
    let mut uri = String::with_capacity(
        64 + [namespace, Some(res_name), name, subresource]
            .iter()
            .map(|v| text(*v).len())
            .sum::<usize>(),
    );
    if group_text.is_empty() {
        uri.push_str("/api/");
    } else {
        uri.push_str("/apis/");
        uri.push_str(group_text);
        uri.push('/');
    }
    uri.push_str(version_text);
    if let Some(ns) = namespace {
        uri.push_str("/namespaces/");
        uri.push_str(text(Some(ns)));
    }
    uri.push('/');
    uri.push_str(text(Some(res_name)));
    if let Some(n) = name {
        uri.push('/');
        uri.push_str(text(Some(n)));
    }
    if let Some(sr) = subresource {
        uri.push('/');
        uri.push_str(text(Some(sr)));
    }
    if operation == "CONNECT" {
        // The API server sends the Pod*Options as `object`; older clients of this code path
        // (and some test doubles) put them in `options`.
        if let Some(opts) = object.or(options).and_then(Ref::as_object) {
            let mut q = Vec::new();
            for (k, v) in opts {
                if k == "kind" || k == "apiVersion" {
                    continue;
                }
                match v.kind() {
                    Kind::Array => {
                        for it in v.children() {
                            q.push(format!("{}={}", k, query_escape(&scalar_text(it))));
                        }
                    }
                    Kind::Null | Kind::Object => {}
                    _ => q.push(format!("{}={}", k, query_escape(&scalar_text(v)))),
                }
            }
            if !q.is_empty() {
                uri.push('?');
                uri.push_str(&q.join("&"));
            }
        }
    }
    // The values the audit shape adds are appended to the review's document; the strings it
    // repeats from the review are the review's own nodes (a node is never changed).
    let node = |v: Option<Ref<'_>>| v.map(Ref::node);
    let (request_object, old_object) = (node(object.or(options)), node(old_object));
    let (uid, dry_run, res_name) = (uid.node(), node(dry_run), res_name.node());
    let (namespace, name, subresource) = (node(namespace), node(name), node(subresource));
    let (group, version) = (node(group), node(version));
    let api_version = doc.push_string(api_version);
    let operation = doc.push_string(operation);
    let empty = doc.push_string("");
    let object_ref: [(&str, Option<u32>); 6] = [
        ("resource", Some(res_name)),
        ("namespace", namespace),
        ("name", name),
        ("apiGroup", Some(group.unwrap_or(empty))),
        ("apiVersion", Some(version.unwrap_or(empty))),
        ("subresource", subresource),
    ];
    let mut members = [("", 0u32); 6];
    let mut n = 0;
    for (k, v) in object_ref {
        if let Some(v) = v {
            members[n] = (k, v);
            n += 1;
        }
    }
    let object_ref = doc.push_object(&members[..n]);

    // The top-level values in the order an audit event has them (what `Event::json`
    // shows); looked up by key comparison, so no map is built or hashed here.
    let mut out: Vec<(&'static str, u32)> = Vec::with_capacity(12);
    out.push(("kind", doc.push_string("Event")));
    out.push(("apiVersion", doc.push_string("audit.k8s.io/v1")));
    out.push(("level", doc.push_string("RequestResponse")));
    out.push(("auditID", uid));
    out.push(("stage", doc.push_string("Admission")));
    out.push(("requestURI", doc.push_string(&uri)));
    out.push(("verb", doc.push_string(verb)));
    let user = match user {
        Some(at) => at,
        None => doc.push_object(&[]),
    };
    out.push(("user", user));
    out.push(("objectRef", object_ref));
    if let Some(at) = request_object {
        out.push(("requestObject", at));
    }
    if let Some(at) = old_object {
        out.push(("oldObject", at));
    }
    // Tether's own keys, outside audit.k8s.io's schema, for the webhook's answer.
    let adm = [
        ("apiVersion", api_version),
        ("uid", uid),
        ("operation", operation),
        ("dryRun", dry_run.unwrap_or(0)),
    ];
    let adm = doc.push_object(&adm[..if dry_run.is_some() { 4 } else { 3 }]);
    out.push(("tetherAdmission", adm));
    Ok(Body::entries(doc, out))
}

/// A string member of the request: its value (`None` when absent or null).
fn string_member<'a>(k: &str, v: Option<Ref<'a>>) -> Result<Option<Ref<'a>>, String> {
    match v {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) if v.as_str().is_some() => Ok(Some(v)),
        Some(v) => Err(format!(
            "request.{k} must be a string, found {}",
            v.kind().described()
        )),
    }
}

/// A string value that is not empty.
fn nonempty(v: Option<Ref<'_>>) -> Option<Ref<'_>> {
    v.filter(|x| x.as_str().is_some_and(|x| !x.is_empty()))
}

/// The text of a string value, or "".
fn text(v: Option<Ref<'_>>) -> &str {
    v.and_then(Ref::as_str).unwrap_or("")
}

/// The members of an AdmissionReview's `request` that its event reads.
#[derive(Default)]
struct RequestParts<'a> {
    uid: Option<Ref<'a>>,
    operation: Option<Ref<'a>>,
    resource: Option<Ref<'a>>,
    sub_resource: Option<Ref<'a>>,
    namespace: Option<Ref<'a>>,
    name: Option<Ref<'a>>,
    dry_run: Option<Ref<'a>>,
    user: Option<Ref<'a>>,
    object: Option<Ref<'a>>,
    options: Option<Ref<'a>>,
    old_object: Option<Ref<'a>>,
}

fn scalar_text(v: Ref<'_>) -> String {
    match v.as_str() {
        Some(s) => s.to_owned(),
        None => v.to_string(),
    }
}

/// Percent-encodes a query value the way Go's `url.QueryEscape` does.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(op: &str, object: Json, options: Json) -> Json {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": op,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "subResource": if op == "CONNECT" { json!("exec") } else { Json::Null },
                "namespace": "prod", "name": "web-0",
                "userInfo": {"username": "alice", "groups": ["dev"]},
                "object": object, "options": options
            }
        })
    }

    #[test]
    fn admission_create_reads_like_audit() {
        let ev = Event::from_admission_review(review(
            "CREATE",
            json!({"metadata": {"name": "web-0", "labels": {"app": "web"}}}),
            Json::Null,
        ))
        .unwrap();
        let j = ev.json().unwrap();
        assert_eq!(ev.source(), Source::K8sAdmission);
        assert_eq!(j["verb"], "create");
        assert_eq!(j["stage"], "Admission");
        assert_eq!(j["user"]["username"], "alice");
        assert_eq!(j["objectRef"]["namespace"], "prod");
        assert_eq!(j["requestURI"], "/api/v1/namespaces/prod/pods/web-0");
        assert_eq!(
            ev.object_labels().get("app").map(String::as_str),
            Some("web")
        );
    }

    #[test]
    fn admission_event_is_the_whole_audit_shape() {
        // A grouped resource, a dry run, no namespace, no userInfo, and the name only in the
        // object: every key the event adds, in order.
        let ev = Event::from_admission_review(json!({
            "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-2", "operation": "UPDATE",
                "resource": {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": "clusterroles"},
                "subResource": "", "namespace": "", "dryRun": true,
                "object": {"metadata": {"name": "admin"}},
                "oldObject": {"metadata": {"name": "admin", "labels": {"a": "b"}}}
            }
        }))
        .unwrap();
        let j = ev.json().unwrap();
        assert_eq!(
            serde_json::to_string(j).unwrap(),
            serde_json::to_string(&json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
                "auditID": "u-2", "stage": "Admission",
                "requestURI": "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
                "verb": "update", "user": {},
                "objectRef": {"resource": "clusterroles", "name": "admin",
                    "apiGroup": "rbac.authorization.k8s.io", "apiVersion": "v1"},
                "requestObject": {"metadata": {"name": "admin"}},
                "oldObject": {"metadata": {"name": "admin", "labels": {"a": "b"}}},
                "tetherAdmission": {"apiVersion": "admission.k8s.io/v1beta1", "uid": "u-2",
                    "operation": "UPDATE", "dryRun": true}
            }))
            .unwrap()
        );
        // Without a group or version: both empty in objectRef, the core API path.
        let mut r = review("DELETE", Json::Null, Json::Null);
        r["request"]["resource"] = json!({"resource": "pods"});
        let ev = Event::from_admission_review(r).unwrap();
        let j = ev.json().unwrap();
        assert_eq!(j["objectRef"]["apiGroup"], "");
        assert_eq!(j["objectRef"]["apiVersion"], "");
        assert_eq!(j["requestURI"], "/api//namespaces/prod/pods/web-0");
        assert!(j.get("requestObject").is_none());
        assert!(j["tetherAdmission"].get("dryRun").is_none());
    }

    #[test]
    fn admission_connect_exec_puts_command_in_uri() {
        let ev = Event::from_admission_review(review(
            "CONNECT",
            Json::Null,
            json!({"kind": "PodExecOptions", "command": ["sh", "-c", "id; ls"], "stdin": true}),
        ))
        .unwrap();
        let j = ev.json().unwrap();
        assert_eq!(j["verb"], "connect");
        assert_eq!(
            j["requestURI"],
            "/api/v1/namespaces/prod/pods/web-0/exec?command=sh&command=-c&command=id%3B+ls&stdin=true"
        );
        assert_eq!(j["requestObject"]["kind"], "PodExecOptions");
    }

    #[test]
    fn admission_errors_name_what_is_wrong() {
        let e = Event::from_admission_review(
            json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no \"request\""), "{e}");
        let e = Event::from_admission_review(
            json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v2", "request": {}}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported AdmissionReview apiVersion"),
            "{e}"
        );
        let mut r = review("PATCH", Json::Null, Json::Null);
        r["request"]["operation"] = json!("PATCH");
        let e = Event::from_admission_review(r).unwrap_err();
        assert!(e.to_string().contains("not one of CREATE"), "{e}");
    }

    #[test]
    fn audit_time_and_shape() {
        let ev = Event::from_audit_value(json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "verb": "get",
            "stageTimestamp": "2024-01-02T03:04:05.123456789Z"
        }))
        .unwrap();
        assert_eq!(ev.time_ns(), 1_704_164_645_123_456_789);
        let e = Event::from_audit_value(json!({"kind": "Event", "stage": 3, "verb": "get"}))
            .unwrap_err();
        assert!(e.to_string().contains("\"stage\" must be a string"), "{e}");
        let e = Event::from_audit_value(json!([1])).unwrap_err();
        assert!(e.to_string().contains("found an array"), "{e}");
    }
}
