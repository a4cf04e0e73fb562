//! Kubernetes audit fields (`ka.*`, `jevt.*`, `json[...]`), read from the audit body (or the
//! audit-shaped view of an AdmissionReview). Names and meanings follow Falco's k8saudit plugin.

use std::borrow::Cow;

use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value as Json;

use super::{def, ArgKind, Extract, FieldArg, FieldDef, FieldType as T, KA};
use crate::body::{Body, Get};
use crate::doc::{Kind, Ref};
use crate::event::Event;
use crate::value::{from_json, from_ref, Value};

/// Defines an extraction function over the event's JSON body.
macro_rules! kx {
    (|$j:ident, $a:ident| $body:expr) => {{
        #[allow(unused_variables)]
        fn f<'e>(e: &'e Event, $a: &'e FieldArg) -> Value<'e> {
            match e.body() {
                Some($j) => $body,
                None => Value::Missing,
            }
        }
        Some(f as Extract)
    }};
    (|$e:ident, $j:ident, $a:ident| $body:expr) => {{
        #[allow(unused_variables)]
        fn f<'e>($e: &'e Event, $a: &'e FieldArg) -> Value<'e> {
            match $e.body() {
                Some($j) => $body,
                None => Value::Missing,
            }
        }
        Some(f as Extract)
    }};
}

/// Walks object keys.
fn at<'e>(j: impl Get<'e>, path: &[&str]) -> Option<Ref<'e>> {
    let (first, rest) = path.split_first()?;
    let mut cur = j.get_key(first)?;
    for k in rest {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// A scalar at a path, as a value (missing when absent or null).
fn sv<'e>(j: impl Get<'e>, path: &[&str]) -> Value<'e> {
    at(j, path).map_or(Value::Missing, from_ref)
}

/// The JSON text of whatever is at a path.
fn jtext<'e>(j: &'e Body, path: &[&str]) -> Value<'e> {
    match at(j, path) {
        None => Value::Missing,
        Some(v) if v.is_null() => Value::Missing,
        Some(v) => match v.as_str() {
            Some(s) => Value::Str(Cow::Borrowed(s)),
            None => Value::Str(Cow::Owned(v.to_string())),
        },
    }
}

fn list_of<'e>(items: impl Iterator<Item = Value<'e>>) -> Value<'e> {
    let v: Vec<Value<'e>> = items.filter(|x| !x.is_missing()).collect();
    if v.is_empty() {
        Value::Missing
    } else {
        Value::List(v)
    }
}

/// Walks a JSON pointer (already split and unescaped); arrays take numeric segments.
/// `None` for the empty pointer, which names the whole document.
pub(crate) fn pointer<'e>(j: &'e Body, segs: &[String]) -> Option<Option<Ref<'e>>> {
    let Some((first, rest)) = segs.split_first() else {
        return Some(None);
    };
    let mut cur = j.get(first)?;
    for s in rest {
        cur = match cur.kind() {
            Kind::Object => cur.get(s)?,
            Kind::Array => cur.index(s.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(Some(cur))
}

fn containers<'e>(j: &'e Body, which: &str) -> impl Iterator<Item = Ref<'e>> + Clone {
    at(j, &["requestObject", "spec", which])
        .and_then(Ref::as_array)
        .into_iter()
        .flatten()
}

/// Per-container values, or the one at `[index]` when an index is given.
fn per_container<'e>(
    j: &'e Body,
    which: &str,
    a: &FieldArg,
    f: impl Fn(Ref<'e>) -> Value<'e>,
) -> Value<'e> {
    let mut cs = containers(j, which);
    match a {
        FieldArg::Index(i) => cs.nth(*i).map_or(Value::Missing, f),
        _ => {
            if at(j, &["requestObject", "spec"]).is_none() {
                return Value::Missing;
            }
            list_of(cs.map(f))
        }
    }
}

/// Per container, the effective `securityContext.<key>` integer: the container's, else the
/// pod's, else 0 (root), as the kubelet resolves `runAsUser` / `runAsGroup`.
fn effective_security_context_int<'e>(j: &'e Body, a: &FieldArg, key: &str) -> Value<'e> {
    let pod = at(j, &["requestObject", "spec", "securityContext", key])
        .and_then(Ref::as_i64)
        .unwrap_or(0);
    per_container(j, "containers", a, move |c| {
        Value::Int(
            at(c, &["securityContext", key])
                .and_then(Ref::as_i64)
                .unwrap_or(pod),
        )
    })
}

fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let slash = no_digest.rfind('/').map_or(0, |i| i + 1);
    match no_digest[slash..].rfind(':') {
        Some(i) => &no_digest[..slash + i],
        None => no_digest,
    }
}

fn sec_bool<'e>(c: Ref<'e>, key: &str) -> Value<'e> {
    Value::Str(Cow::Borrowed(
        match at(c, &["securityContext", key]).and_then(Ref::as_bool) {
            Some(true) => "true",
            _ => "false",
        },
    ))
}

fn spec_bool<'e>(j: &'e Body, key: &str) -> Value<'e> {
    match at(j, &["requestObject", "spec"]) {
        None => Value::Missing,
        Some(spec) => Value::Str(Cow::Borrowed(
            if spec.get(key).and_then(Ref::as_bool) == Some(true) {
                "true"
            } else {
                "false"
            },
        )),
    }
}

fn uri_params<'e>(j: &'e Body, key: &str) -> Value<'e> {
    let Some(uri) = j.get("requestURI").and_then(Ref::as_str) else {
        return Value::Missing;
    };
    let Some((_, query)) = uri.split_once('?') else {
        return Value::Missing;
    };
    let mut vals = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k) == key {
            vals.push(Value::Str(percent_decode(v)));
        }
    }
    match vals.len() {
        0 => Value::Missing,
        1 => vals.pop().unwrap_or(Value::Missing),
        _ => Value::List(vals),
    }
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn glob_match(pattern: &str, text: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(text))
        .unwrap_or(false)
}

fn role_rules<'e>(j: &'e Body, key: &str) -> Value<'e> {
    let Some(rules) = at(j, &["requestObject", "rules"]).and_then(Ref::as_array) else {
        return Value::Missing;
    };
    list_of(
        rules
            .filter_map(|r| r.get(key).and_then(Ref::as_array))
            .flatten()
            .map(from_ref),
    )
}

fn event_time_text(e: &Event) -> Value<'static> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.time_ns()));
    match t.ok().and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    }) {
        Some(s) => Value::Str(Cow::Owned(s)),
        None => Value::Missing,
    }
}

pub(super) fn register(d: &mut Vec<FieldDef>) {
    use ArgKind::{Index, JsonPath, JsonPointer, Key, None as NoArg};
    let s = T::String;
    d.push(def(
        "ka.auditid",
        s,
        false,
        KA,
        NoArg,
        false,
        "the audit ID (the admission request uid for admission events)",
        kx!(|j, a| sv(j, &["auditID"])),
    ));
    d.push(def("ka.stage", s, false, KA, NoArg, false, "the audit stage (RequestReceived, ResponseStarted, ResponseComplete, Panic; Admission for admission events)", kx!(|j, a| sv(j, &["stage"]))));
    d.push(def(
        "ka.auth.decision",
        s,
        false,
        KA,
        NoArg,
        false,
        "the authorization decision (allow, forbid)",
        kx!(|j, a| sv(j, &["annotations", "authorization.k8s.io/decision"])),
    ));
    d.push(def(
        "ka.auth.reason",
        s,
        false,
        KA,
        NoArg,
        false,
        "the authorization reason",
        kx!(|j, a| sv(j, &["annotations", "authorization.k8s.io/reason"])),
    ));
    d.push(def(
        "ka.auth.openshift.decision",
        s,
        false,
        KA,
        NoArg,
        false,
        "the OpenShift authorization decision",
        kx!(|j, a| sv(j, &["annotations", "authorization.openshift.io/decision"])),
    ));
    d.push(def(
        "ka.auth.openshift.username",
        s,
        false,
        KA,
        NoArg,
        false,
        "the OpenShift authorized user name",
        kx!(|j, a| sv(j, &["annotations", "authentication.openshift.io/username"])),
    ));
    d.push(def(
        "ka.validations.admission.policy.failure",
        s,
        false,
        KA,
        NoArg,
        false,
        "the ValidatingAdmissionPolicy failures annotation",
        kx!(|j, a| sv(
            j,
            &[
                "annotations",
                "validation.policy.admission.k8s.io/validation_failure"
            ]
        )),
    ));
    d.push(def(
        "ka.user.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the user name performing the request",
        kx!(|j, a| sv(j, &["user", "username"])),
    ));
    d.push(def(
        "ka.user.groups",
        s,
        true,
        KA,
        NoArg,
        false,
        "the groups of the user performing the request",
        kx!(|j, a| list_of(
            at(j, &["user", "groups"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .map(from_ref)
        )),
    ));
    d.push(def(
        "ka.impuser.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the impersonated user name",
        kx!(|j, a| sv(j, &["impersonatedUser", "username"])),
    ));
    d.push(def("ka.verb", s, false, KA, NoArg, false, "the action being performed (get, create, patch, ...; connect/create/update/delete for admission)", kx!(|j, a| sv(j, &["verb"]))));
    d.push(def(
        "ka.uri",
        s,
        false,
        KA,
        NoArg,
        false,
        "the request URI as sent from client to server",
        kx!(|j, a| sv(j, &["requestURI"])),
    ));
    d.push(def("ka.uri.param", s, false, KA, Key, true, "a query parameter of the request URI; a repeated parameter (exec command) yields every value", kx!(|j, a| match a { FieldArg::Key(k) => uri_params(j, k), _ => Value::Missing })));
    d.push(def(
        "ka.target.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the target object name",
        kx!(|j, a| sv(j, &["objectRef", "name"])),
    ));
    d.push(def(
        "ka.target.namespace",
        s,
        false,
        KA,
        NoArg,
        false,
        "the target object namespace",
        kx!(|j, a| sv(j, &["objectRef", "namespace"])),
    ));
    d.push(def(
        "ka.target.resource",
        s,
        false,
        KA,
        NoArg,
        false,
        "the target object resource",
        kx!(|j, a| sv(j, &["objectRef", "resource"])),
    ));
    d.push(def(
        "ka.target.subresource",
        s,
        false,
        KA,
        NoArg,
        false,
        "the target object subresource",
        kx!(|j, a| sv(j, &["objectRef", "subresource"])),
    ));
    d.push(def(
        "ka.target.pod.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the target pod name (when the target is a pod or one of its subresources)",
        kx!(
            |j, a| if at(j, &["objectRef", "resource"]).and_then(Ref::as_str) == Some("pods") {
                sv(j, &["objectRef", "name"])
            } else {
                Value::Missing
            }
        ),
    ));
    d.push(def(
        "ka.req.binding.subjects",
        s,
        true,
        KA,
        NoArg,
        false,
        "the subjects of a (cluster) role binding, as JSON",
        kx!(|j, a| list_of(
            at(j, &["requestObject", "subjects"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .map(|x| Value::Str(Cow::Owned(x.to_string())))
        )),
    ));
    d.push(def(
        "ka.req.binding.subject.has_name",
        s,
        false,
        KA,
        Key,
        true,
        "true when a binding subject has the given name (ka.req.binding.subject.has_name[NAME])",
        kx!(|j, a| match (
            a,
            at(j, &["requestObject", "subjects"]).and_then(Ref::as_array)
        ) {
            (FieldArg::Key(k), Some(subs)) => Value::Str(Cow::Borrowed(
                if subs
                    .clone()
                    .any(|x| x.get("name").and_then(Ref::as_str) == Some(k.as_str()))
                {
                    "true"
                } else {
                    "false"
                }
            )),
            _ => Value::Missing,
        }),
    ));
    d.push(def(
        "ka.req.binding.role",
        s,
        false,
        KA,
        NoArg,
        false,
        "the role a (cluster) role binding refers to",
        kx!(|j, a| sv(j, &["requestObject", "roleRef", "name"])),
    ));
    d.push(def(
        "ka.req.configmap.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the name of a configmap in the request",
        kx!(|j, a| sv(j, &["objectRef", "name"])),
    ));
    d.push(def(
        "ka.req.configmap.obj",
        s,
        false,
        KA,
        NoArg,
        false,
        "the data of a configmap in the request, as JSON",
        kx!(|j, a| jtext(j, &["requestObject", "data"])),
    ));
    d.push(def(
        "ka.req.pod.containers.image",
        s,
        true,
        KA,
        Index,
        false,
        "the images of the pod's containers ([N] for one)",
        kx!(|j, a| per_container(j, "containers", a, |c| sv(c, &["image"]))),
    ));
    d.push(def(
        "ka.req.container.image",
        s,
        false,
        KA,
        Index,
        false,
        "deprecated: the first container's image ([N] for another)",
        kx!(|j, a| {
            let i = match a {
                FieldArg::Index(i) => *i,
                _ => 0,
            };
            containers(j, "containers")
                .nth(i)
                .map_or(Value::Missing, |c| sv(c, &["image"]))
        }),
    ));
    d.push(def(
        "ka.req.pod.containers.image.repository",
        s,
        true,
        KA,
        Index,
        false,
        "the image repositories (without tag or digest) of the pod's containers",
        kx!(|j, a| per_container(j, "containers", a, |c| c
            .get("image")
            .and_then(Ref::as_str)
            .map_or(Value::Missing, |i| Value::Str(Cow::Borrowed(
                image_repository(i)
            ))))),
    ));
    d.push(def(
        "ka.req.container.image.repository",
        s,
        false,
        KA,
        Index,
        false,
        "deprecated: the first container's image repository",
        kx!(|j, a| {
            let i = match a {
                FieldArg::Index(i) => *i,
                _ => 0,
            };
            containers(j, "containers")
                .nth(i)
                .and_then(|c| c.get("image"))
                .and_then(Ref::as_str)
                .map_or(Value::Missing, |i| {
                    Value::Str(Cow::Borrowed(image_repository(i)))
                })
        }),
    ));
    d.push(def(
        "ka.req.pod.initContainers.image",
        s,
        true,
        KA,
        Index,
        false,
        "the images of the pod's init containers",
        kx!(|j, a| per_container(j, "initContainers", a, |c| sv(c, &["image"]))),
    ));
    d.push(def(
        "ka.req.pod.ephemeralContainers.image",
        s,
        true,
        KA,
        Index,
        false,
        "the images of the pod's ephemeral containers",
        kx!(|j, a| per_container(j, "ephemeralContainers", a, |c| sv(c, &["image"]))),
    ));
    d.push(def(
        "ka.req.pod.host_ipc",
        s,
        false,
        KA,
        NoArg,
        false,
        "the pod's hostIPC (true/false)",
        kx!(|j, a| spec_bool(j, "hostIPC")),
    ));
    d.push(def(
        "ka.req.pod.host_network",
        s,
        false,
        KA,
        NoArg,
        false,
        "the pod's hostNetwork (true/false)",
        kx!(|j, a| spec_bool(j, "hostNetwork")),
    ));
    d.push(def(
        "ka.req.container.host_network",
        s,
        false,
        KA,
        NoArg,
        false,
        "deprecated alias of ka.req.pod.host_network",
        kx!(|j, a| spec_bool(j, "hostNetwork")),
    ));
    d.push(def(
        "ka.req.pod.host_pid",
        s,
        false,
        KA,
        NoArg,
        false,
        "the pod's hostPID (true/false)",
        kx!(|j, a| spec_bool(j, "hostPID")),
    ));
    d.push(def(
        "ka.req.pod.containers.host_port",
        s,
        true,
        KA,
        Index,
        false,
        "the host ports of the pod's containers",
        kx!(|j, a| {
            let cs = containers(j, "containers");
            list_of(
                cs.filter_map(|c| c.get("ports").and_then(Ref::as_array))
                    .flatten()
                    .filter_map(|p| p.get("hostPort"))
                    .map(from_ref),
            )
        }),
    ));
    d.push(def(
        "ka.req.pod.containers.privileged",
        s,
        true,
        KA,
        Index,
        false,
        "per container, whether it runs privileged (true/false)",
        kx!(|j, a| per_container(j, "containers", a, |c| sec_bool(c, "privileged"))),
    ));
    d.push(def(
        "ka.req.container.privileged",
        s,
        true,
        KA,
        Index,
        false,
        "deprecated alias of ka.req.pod.containers.privileged",
        kx!(|j, a| per_container(j, "containers", a, |c| sec_bool(c, "privileged"))),
    ));
    d.push(def(
        "ka.req.pod.initContainers.privileged",
        s,
        true,
        KA,
        Index,
        false,
        "per init container, whether it runs privileged",
        kx!(|j, a| per_container(j, "initContainers", a, |c| sec_bool(c, "privileged"))),
    ));
    d.push(def(
        "ka.req.pod.ephemeralContainers.privileged",
        s,
        true,
        KA,
        Index,
        false,
        "per ephemeral container, whether it runs privileged",
        kx!(|j, a| per_container(j, "ephemeralContainers", a, |c| sec_bool(c, "privileged"))),
    ));
    d.push(def(
        "ka.req.pod.containers.allow_privilege_escalation",
        s,
        true,
        KA,
        Index,
        false,
        "per container, allowPrivilegeEscalation (true/false)",
        kx!(|j, a| per_container(j, "containers", a, |c| sec_bool(
            c,
            "allowPrivilegeEscalation"
        ))),
    ));
    d.push(def(
        "ka.req.pod.containers.read_only_fs",
        s,
        true,
        KA,
        Index,
        false,
        "per container, readOnlyRootFilesystem (true/false)",
        kx!(|j, a| per_container(j, "containers", a, |c| sec_bool(
            c,
            "readOnlyRootFilesystem"
        ))),
    ));
    d.push(def(
        "ka.req.pod.run_as_user",
        T::Int,
        false,
        KA,
        NoArg,
        false,
        "the pod's securityContext.runAsUser",
        kx!(|j, a| sv(
            j,
            &["requestObject", "spec", "securityContext", "runAsUser"]
        )),
    ));
    d.push(def(
        "ka.req.pod.containers.run_as_user",
        T::Int,
        true,
        KA,
        Index,
        false,
        "per container, securityContext.runAsUser",
        kx!(|j, a| per_container(j, "containers", a, |c| sv(
            c,
            &["securityContext", "runAsUser"]
        ))),
    ));
    d.push(def(
        "ka.req.pod.containers.eff_run_as_user",
        T::Int,
        true,
        KA,
        Index,
        false,
        "per container, the effective runAsUser (container's, else the pod's, else 0)",
        kx!(|j, a| effective_security_context_int(j, a, "runAsUser")),
    ));
    d.push(def(
        "ka.req.pod.run_as_group",
        T::Int,
        false,
        KA,
        NoArg,
        false,
        "the pod's securityContext.runAsGroup",
        kx!(|j, a| sv(
            j,
            &["requestObject", "spec", "securityContext", "runAsGroup"]
        )),
    ));
    d.push(def(
        "ka.req.pod.containers.run_as_group",
        T::Int,
        true,
        KA,
        Index,
        false,
        "per container, securityContext.runAsGroup",
        kx!(|j, a| per_container(j, "containers", a, |c| sv(
            c,
            &["securityContext", "runAsGroup"]
        ))),
    ));
    d.push(def(
        "ka.req.pod.containers.eff_run_as_group",
        T::Int,
        true,
        KA,
        Index,
        false,
        "per container, the effective runAsGroup (container's, else the pod's, else 0)",
        kx!(|j, a| effective_security_context_int(j, a, "runAsGroup")),
    ));
    d.push(def(
        "ka.req.pod.containers.proc_mount",
        s,
        true,
        KA,
        Index,
        false,
        "per container, securityContext.procMount",
        kx!(|j, a| per_container(j, "containers", a, |c| sv(
            c,
            &["securityContext", "procMount"]
        ))),
    ));
    d.push(def(
        "ka.req.pod.containers.add_capabilities",
        s,
        true,
        KA,
        Index,
        false,
        "the capabilities added by the pod's containers",
        kx!(|j, a| list_of(
            containers(j, "containers")
                .filter_map(
                    |c| at(c, &["securityContext", "capabilities", "add"]).and_then(Ref::as_array)
                )
                .flatten()
                .map(from_ref)
        )),
    ));
    d.push(def(
        "ka.req.pod.fs_group",
        T::Int,
        false,
        KA,
        NoArg,
        false,
        "the pod's securityContext.fsGroup",
        kx!(|j, a| sv(j, &["requestObject", "spec", "securityContext", "fsGroup"])),
    ));
    d.push(def(
        "ka.req.pod.supplemental_groups",
        T::Int,
        true,
        KA,
        NoArg,
        false,
        "the pod's securityContext.supplementalGroups",
        kx!(|j, a| list_of(
            at(
                j,
                &[
                    "requestObject",
                    "spec",
                    "securityContext",
                    "supplementalGroups"
                ]
            )
            .and_then(Ref::as_array)
            .into_iter()
            .flatten()
            .map(from_ref)
        )),
    ));
    d.push(def(
        "ka.req.role.rules",
        s,
        true,
        KA,
        NoArg,
        false,
        "the rules of a (cluster) role, as JSON",
        kx!(|j, a| list_of(
            at(j, &["requestObject", "rules"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .map(|x| Value::Str(Cow::Owned(x.to_string())))
        )),
    ));
    d.push(def(
        "ka.req.role.rules.apiGroups",
        s,
        true,
        KA,
        NoArg,
        false,
        "the apiGroups of a role's rules",
        kx!(|j, a| role_rules(j, "apiGroups")),
    ));
    d.push(def(
        "ka.req.role.rules.nonResourceURLs",
        s,
        true,
        KA,
        NoArg,
        false,
        "the nonResourceURLs of a role's rules",
        kx!(|j, a| role_rules(j, "nonResourceURLs")),
    ));
    d.push(def(
        "ka.req.role.rules.verbs",
        s,
        true,
        KA,
        NoArg,
        false,
        "the verbs of a role's rules",
        kx!(|j, a| role_rules(j, "verbs")),
    ));
    d.push(def(
        "ka.req.role.rules.resources",
        s,
        true,
        KA,
        NoArg,
        false,
        "the resources of a role's rules",
        kx!(|j, a| role_rules(j, "resources")),
    ));
    d.push(def(
        "ka.req.service.type",
        s,
        false,
        KA,
        NoArg,
        false,
        "the type of a service",
        kx!(|j, a| sv(j, &["requestObject", "spec", "type"])),
    ));
    d.push(def(
        "ka.req.service.ports",
        s,
        true,
        KA,
        NoArg,
        false,
        "the ports of a service, as JSON",
        kx!(|j, a| list_of(
            at(j, &["requestObject", "spec", "ports"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .map(|x| Value::Str(Cow::Owned(x.to_string())))
        )),
    ));
    d.push(def(
        "ka.req.pod.volumes.hostpath",
        s,
        true,
        KA,
        NoArg,
        false,
        "the hostPath paths of the pod's volumes",
        kx!(|j, a| {
            if at(j, &["requestObject", "spec"]).is_none() {
                return Value::Missing;
            }
            list_of(
                at(j, &["requestObject", "spec", "volumes"])
                    .and_then(Ref::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| at(v, &["hostPath", "path"]))
                    .map(from_ref),
            )
        }),
    ));
    d.push(def("ka.req.volume.hostpath", s, false, KA, Key, true, "deprecated: true when a hostPath volume's path matches the glob argument (ka.req.volume.hostpath[/etc*])", kx!(|j, a| { let FieldArg::Key(k) = a else { return Value::Missing; }; if at(j, &["requestObject", "spec"]).is_none() { return Value::Missing; } let hit = at(j, &["requestObject", "spec", "volumes"]).and_then(Ref::as_array).is_some_and(|vs| vs.filter_map(|v| at(v, &["hostPath", "path"]).and_then(Ref::as_str)).any(|p| glob_match(k, p))); Value::Str(Cow::Borrowed(if hit { "true" } else { "false" })) })));
    d.push(def(
        "ka.req.pod.volumes.flexvolume_driver",
        s,
        true,
        KA,
        NoArg,
        false,
        "the flexVolume drivers of the pod's volumes",
        kx!(|j, a| list_of(
            at(j, &["requestObject", "spec", "volumes"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| at(v, &["flexVolume", "driver"]))
                .map(from_ref)
        )),
    ));
    d.push(def(
        "ka.req.pod.volumes.volume_type",
        s,
        true,
        KA,
        NoArg,
        false,
        "the types of the pod's volumes (hostPath, secret, ...)",
        kx!(|j, a| list_of(
            at(j, &["requestObject", "spec", "volumes"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_object())
                .filter_map(|mut m| m.find(|(k, _)| *k != "name"))
                .map(|(k, _)| Value::Str(Cow::Borrowed(k)))
        )),
    ));
    d.push(def(
        "ka.resp.name",
        s,
        false,
        KA,
        NoArg,
        false,
        "the name of the object in the response",
        kx!(|j, a| sv(j, &["responseObject", "metadata", "name"])),
    ));
    d.push(def(
        "ka.response.code",
        s,
        false,
        KA,
        NoArg,
        false,
        "the response code (missing for admission events: there is no response yet)",
        kx!(|j, a| sv(j, &["responseStatus", "code"])),
    ));
    d.push(def(
        "ka.response.reason",
        s,
        false,
        KA,
        NoArg,
        false,
        "the response reason",
        kx!(|j, a| sv(j, &["responseStatus", "reason"])),
    ));
    d.push(def(
        "ka.useragent",
        s,
        false,
        KA,
        NoArg,
        false,
        "the user agent of the client",
        kx!(|j, a| sv(j, &["userAgent"])),
    ));
    d.push(def(
        "ka.sourceips",
        s,
        true,
        KA,
        Index,
        false,
        "the client IP addresses ([N] for one)",
        kx!(|j, a| {
            let mut ips = at(j, &["sourceIPs"])
                .and_then(Ref::as_array)
                .into_iter()
                .flatten();
            match a {
                FieldArg::Index(i) => ips.nth(*i).map_or(Value::Missing, from_ref),
                _ => list_of(ips.map(from_ref)),
            }
        }),
    ));
    d.push(def(
        "jevt.time",
        s,
        false,
        KA,
        NoArg,
        false,
        "the event time as RFC 3339 text",
        kx!(|e, j, a| event_time_text(e)),
    ));
    d.push(def(
        "jevt.time.iso8601",
        s,
        false,
        KA,
        NoArg,
        false,
        "the event time as ISO 8601 text",
        kx!(|e, j, a| event_time_text(e)),
    ));
    d.push(def(
        "jevt.rawtime",
        T::AbsTime,
        false,
        KA,
        NoArg,
        false,
        "the event time in nanoseconds since the epoch",
        kx!(|e, j, a| Value::Int(e.time_ns())),
    ));
    d.push(def(
        "jevt.value",
        s,
        false,
        KA,
        JsonPointer,
        true,
        "the value at a JSON pointer in the event (objects and arrays as JSON text)",
        kx!(|j, a| match a {
            FieldArg::Pointer(p) => match pointer(j, p) {
                None => Value::Missing,
                Some(None) => json_text(j.full()),
                Some(Some(v)) => match v.kind() {
                    Kind::Object | Kind::Array => Value::Str(Cow::Owned(v.to_string())),
                    _ => from_ref(v),
                },
            },
            _ => Value::Missing,
        }),
    ));
    d.push(def(
        "jevt.obj",
        s,
        false,
        KA,
        NoArg,
        false,
        "the whole event as JSON text",
        kx!(|j, a| Value::Str(Cow::Owned(j.full().to_string()))),
    ));
    d.push(def(
        "json",
        s,
        true,
        KA,
        JsonPath,
        true,
        "the values a JSONPath selects in the event (json[$.spec.containers[*].image])",
        kx!(|j, a| match a {
            FieldArg::JsonPath(q) => match json_select(q, j) {
                Ok(Found::Refs(found)) => list_of(found.into_iter().map(|v| match v.kind() {
                    Kind::Object | Kind::Array => Value::Str(Cow::Owned(v.to_string())),
                    _ => from_ref(v),
                })),
                Ok(Found::Values(found)) => list_of(found.into_iter().map(json_text)),
                Err(()) => Value::Missing,
            },
            _ => Value::Missing,
        }),
    ));
}

/// The values a JSONPath selects in the body: the direct evaluator, or `jsonpath_rust` for
/// queries that call functions. `Err` where the query yields no nodes but a value.
fn json_select<'e>(q: &'e JpQuery, j: &'e Body) -> Result<Found<'e>, ()> {
    match super::jpath::select(q, j) {
        Some(r) => r.map(Found::Refs),
        None => jsonpath_rust::query::js_path_process(q, j.full())
            .map(|f| Found::Values(f.into_iter().map(|r| r.val()).collect()))
            .map_err(|_| ()),
    }
}

/// What a JSONPath query selected: nodes of the event's documents (the direct evaluator) or
/// of its whole document as a `serde_json::Value` (`jsonpath_rust`).
enum Found<'e> {
    Refs(Vec<Ref<'e>>),
    Values(Vec<&'e Json>),
}

impl Found<'_> {
    fn any_not_null(&self) -> bool {
        match self {
            Found::Refs(v) => v.iter().any(|r| !r.is_null()),
            Found::Values(v) => v.iter().any(|j| !j.is_null()),
        }
    }
}

/// A value of the whole document as a field value: objects and arrays as JSON text.
fn json_text(v: &Json) -> Value<'_> {
    match v {
        Json::Object(_) | Json::Array(_) => Value::Str(Cow::Owned(v.to_string())),
        v => from_json(v),
    }
}

/// Whether `json[q]` is present on the event (what `json[q] exists` tests) without rendering
/// the selected objects as text: some selected value is not `null`.
pub(crate) fn json_exists(q: &JpQuery, ev: &Event) -> bool {
    match ev.body() {
        Some(j) => super::jpath::exists(q, j)
            .unwrap_or_else(|| json_select(q, j).is_ok_and(|found| found.any_not_null())),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::resolve;
    use serde_json::json;

    fn ev() -> Event {
        Event::from_audit_value(json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "verb": "create",
            "auditID": "a-1",
            "requestURI": "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=id%3B+ls&container=c",
            "user": {"username": "bob", "groups": ["system:masters", "dev"]},
            "objectRef": {"resource": "pods", "namespace": "default", "name": "p", "subresource": "exec"},
            "annotations": {"authorization.k8s.io/decision": "allow"},
            "responseStatus": {"code": 201},
            "requestObject": {"spec": {
                "hostNetwork": true,
                "containers": [
                    {"image": "docker.io/library/nginx:1.25", "securityContext": {"privileged": true}},
                    {"image": "registry:5000/app@sha256:abc"}
                ],
                "volumes": [{"name": "v", "hostPath": {"path": "/etc/kubernetes"}}]
            }}
        }))
        .unwrap()
    }

    fn get(e: &Event, name: &str, arg: Option<&str>) -> String {
        resolve(name, arg).unwrap().extract(e).to_string()
    }

    #[test]
    fn ka_fields() {
        let e = ev();
        assert_eq!(get(&e, "ka.user.name", None), "bob");
        assert_eq!(get(&e, "ka.user.groups", None), "(system:masters,dev)");
        assert_eq!(get(&e, "ka.uri.param", Some("command")), "(sh,-c,id; ls)");
        assert_eq!(get(&e, "ka.uri.param", Some("container")), "c");
        assert_eq!(get(&e, "ka.uri.param", Some("nope")), "<NA>");
        assert_eq!(get(&e, "ka.auth.decision", None), "allow");
        assert_eq!(get(&e, "ka.response.code", None), "201");
        assert_eq!(
            get(&e, "ka.req.pod.containers.image.repository", None),
            "(docker.io/library/nginx,registry:5000/app)"
        );
        assert_eq!(
            get(&e, "ka.req.pod.containers.privileged", None),
            "(true,false)"
        );
        assert_eq!(
            get(&e, "ka.req.pod.containers.privileged", Some("1")),
            "false"
        );
        assert_eq!(
            get(&e, "ka.req.container.image", None),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(get(&e, "ka.req.pod.host_network", None), "true");
        assert_eq!(get(&e, "ka.req.pod.host_pid", None), "false");
        assert_eq!(get(&e, "ka.req.volume.hostpath", Some("/etc*")), "true");
        assert_eq!(get(&e, "ka.req.volume.hostpath", Some("/proc*")), "false");
        assert_eq!(get(&e, "jevt.value", Some("/objectRef/resource")), "pods");
        assert_eq!(
            get(
                &e,
                "jevt.value",
                Some("/requestObject/spec/containers/1/image")
            ),
            "registry:5000/app@sha256:abc"
        );
        assert_eq!(
            get(
                &e,
                "jevt.value",
                Some("/annotations/authorization.k8s.io~1decision")
            ),
            "allow"
        );
        assert_eq!(
            get(&e, "json", Some("$.requestObject.spec.containers[*].image")),
            "(docker.io/library/nginx:1.25,registry:5000/app@sha256:abc)"
        );
        assert_eq!(get(&e, "ka.response.reason", None), "<NA>");
    }

    #[test]
    fn image_repositories() {
        assert_eq!(image_repository("nginx"), "nginx");
        assert_eq!(image_repository("nginx:1"), "nginx");
        assert_eq!(image_repository("host:5000/a/b:2"), "host:5000/a/b");
        assert_eq!(image_repository("host:5000/a/b"), "host:5000/a/b");
        assert_eq!(image_repository("a/b@sha256:00"), "a/b");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Bb+c"), "a;b c");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
    }
}
