//! The field registry: every field a condition or output may name, its type, what it means,
//! which sources provide it, and whether Tether fills it.
//!
//! A field that Tether registers but cannot produce (e.g. `thread.cap_effective`, which needs
//! a capability capture the node enforcer does not make) is accepted in rules, so Falco's files
//! load, and evaluates as missing on every event — exactly how Falco treats an absent value: a
//! comparison with it is false, `exists` is false, outputs print `<NA>` (`null` in JSON).

mod jpath;
mod k8s;
mod sys;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::doc::KeySet;
use crate::event::Event;
use crate::source::Source;
use crate::value::Value;

/// Index of a field in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(pub(crate) u16);

impl FieldId {
    pub fn def(self) -> &'static FieldDef {
        &registry()[usize::from(self.0)]
    }
}

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Int,
    Bool,
    Port,
    IpAddr,
    IpNet,
    /// Nanoseconds since the Unix epoch.
    AbsTime,
    /// A duration in nanoseconds.
    RelTime,
}

impl FieldType {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            FieldType::Int | FieldType::Port | FieldType::AbsTime | FieldType::RelTime
        )
    }
}

/// What kind of `[argument]` a field takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    /// No argument.
    None,
    /// A non-negative index (`proc.aname[2]`).
    Index,
    /// A key or name (`ka.uri.param[command]`, `k8s.pod.label[app]`, `evt.arg.flags`).
    Key,
    /// A JSON pointer (`jevt.value[/spec/hostNetwork]`).
    JsonPointer,
    /// A JSONPath expression (`json[$.spec.containers[*].image]`).
    JsonPath,
}

/// One registered field.
#[derive(Clone, Serialize)]
pub struct FieldDef {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub ftype: FieldType,
    /// The field yields a list of values (e.g. one per container).
    pub list: bool,
    pub description: &'static str,
    /// The sources whose events can carry this field.
    pub sources: &'static [Source],
    /// Whether Tether fills this field; when false it evaluates as missing everywhere.
    pub produced: bool,
    /// The argument the field takes.
    pub arg: ArgKind,
    /// Whether the argument is required (else optional) when `arg` is not `None`.
    pub arg_required: bool,
    #[serde(skip)]
    pub(crate) extract: Extract,
}

impl fmt::Debug for FieldDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FieldDef")
            .field("name", &self.name)
            .field("type", &self.ftype)
            .field("sources", &self.sources)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

pub(crate) type Extract = for<'e> fn(&'e Event, &'e FieldArg) -> Value<'e>;

/// A resolved field argument.
#[derive(Debug, Clone)]
pub enum FieldArg {
    None,
    Index(usize),
    Key(String),
    /// A JSON pointer split into unescaped segments.
    Pointer(Vec<String>),
    JsonPath(Arc<jsonpath_rust::parser::model::JpQuery>),
}

/// A field with its argument, as named in a condition or output.
#[derive(Debug, Clone)]
pub struct FieldRef {
    pub id: FieldId,
    pub arg: FieldArg,
    /// The text the rule used, e.g. `ka.uri.param[command]`.
    pub text: String,
}

impl FieldRef {
    pub fn extract<'e>(&'e self, ev: &'e Event) -> Value<'e> {
        (self.id.def().extract)(ev, &self.arg)
    }

    /// Whether the event carries this field: `!self.extract(ev).is_missing()`, without
    /// building the value where that is costly (objects a `json[...]` query selects).
    pub(crate) fn present(&self, ev: &Event) -> bool {
        match &self.arg {
            FieldArg::JsonPath(q) if self.id.def().name == "json" => k8s::json_exists(q, ev),
            _ => !self.extract(ev).is_missing(),
        }
    }

    /// Object keys below the top level that the event must have for this field to have a
    /// value, and so for any comparison of it to hold (a missing value fails every one):
    /// the keys of a `jevt.value[...]` pointer and a `json[...]` query's
    /// ([`jpath::needed_keys`]). Empty for the other fields.
    pub(crate) fn needed_keys(&self) -> KeySet {
        match (self.id.def().name, &self.arg) {
            ("jevt.value", FieldArg::Pointer(segs)) => KeySet::of(
                segs.iter()
                    .skip(1)
                    // A number may be an array index.
                    .filter(|s| s.parse::<usize>().is_err())
                    .map(String::as_str),
            ),
            ("json", FieldArg::JsonPath(q)) => jpath::needed_keys(q),
            _ => KeySet::default(),
        }
    }

    /// Whether the field may read an object's `metadata.managedFields` (of `requestObject`,
    /// `oldObject` or `responseObject`), or a value that contains it. The `ka.*` fields read
    /// fixed places that never do; `jevt.obj` always does; `jevt.value[...]` and
    /// `json[...]` do when their pointer or query can reach it (a query that calls a
    /// function is assumed to). A reader of admission reviews may leave `managedFields` out
    /// when no rule's field reads it: it is the largest part of most objects the API server
    /// sends, and no rule of the bundled library reads it.
    pub fn reads_managed_fields(&self) -> bool {
        const PATHS: [[&str; 3]; 3] = [
            ["requestObject", "metadata", "managedFields"],
            ["oldObject", "metadata", "managedFields"],
            ["responseObject", "metadata", "managedFields"],
        ];
        match (self.id.def().name, &self.arg) {
            ("jevt.obj", _) => true,
            ("jevt.value", FieldArg::Pointer(segs)) => PATHS
                .iter()
                .any(|p| segs.iter().zip(p).all(|(a, b)| a == b)),
            ("json", FieldArg::JsonPath(q)) => PATHS.iter().any(|p| jpath::may_read(q, p)),
            _ => false,
        }
    }
}

/// Why a field reference could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("unknown field \"{0}\"")]
    Unknown(String),
    #[error("field \"{0}\" requires an argument in brackets")]
    ArgRequired(String),
    #[error("field \"{0}\" takes no argument")]
    ArgNotAllowed(String),
    #[error("field \"{field}\": argument \"{arg}\" is not a valid index")]
    BadIndex { field: String, arg: String },
    #[error(
        "field \"{field}\": argument \"{arg}\" is not a JSON pointer (it must start with '/')"
    )]
    BadPointer { field: String, arg: String },
    #[error("field \"{field}\": invalid JSONPath \"{arg}\": {why}")]
    BadJsonPath {
        field: String,
        arg: String,
        why: String,
    },
}

pub(crate) const SYS: &[Source] = &[Source::Syscall];
pub(crate) const KA: &[Source] = &[Source::K8sAudit, Source::K8sAdmission];

struct Registry {
    defs: Vec<FieldDef>,
    by_name: HashMap<&'static str, FieldId>,
}

fn reg() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        let mut defs = Vec::new();
        sys::register(&mut defs);
        k8s::register(&mut defs);
        let by_name = defs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| u16::try_from(i).ok().map(|i| (d.name, FieldId(i))))
            .collect();
        Registry { defs, by_name }
    })
}

/// Every registered field, sorted by source group then name.
pub fn registry() -> &'static [FieldDef] {
    &reg().defs
}

/// Looks a field up by its exact name.
pub fn lookup(name: &str) -> Option<FieldId> {
    reg().by_name.get(name).copied()
}

/// Fields whose argument may follow a dot instead of brackets (`evt.arg.flags`,
/// `k8s.pod.label.app`).
const DOT_ARG_PREFIXES: &[&str] = &[
    "evt.arg",
    "evt.rawarg",
    "k8s.pod.label",
    "k8s.ns.label",
    "container.label",
];

/// Resolves a field name (possibly with a dotted argument) and its bracket argument.
pub fn resolve(name: &str, arg: Option<&str>) -> Result<FieldRef, FieldError> {
    let text = match arg {
        Some(a) => format!("{name}[{a}]"),
        None => name.to_string(),
    };
    let (id, arg) = match lookup(name) {
        Some(id) => (id, arg.map(str::to_string)),
        None => {
            let found = DOT_ARG_PREFIXES.iter().find_map(|p| {
                name.strip_prefix(p)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .filter(|rest| !rest.is_empty() && arg.is_none())
                    .and_then(|rest| lookup(p).map(|id| (id, Some(rest.to_string()))))
            });
            found.ok_or_else(|| FieldError::Unknown(name.to_string()))?
        }
    };
    let def = id.def();
    let arg = match (def.arg, arg) {
        (ArgKind::None, None) => FieldArg::None,
        (ArgKind::None, Some(_)) => return Err(FieldError::ArgNotAllowed(name.to_string())),
        (_, None) if def.arg_required => return Err(FieldError::ArgRequired(name.to_string())),
        (_, None) => FieldArg::None,
        (ArgKind::Index, Some(a)) => {
            FieldArg::Index(a.trim().parse().map_err(|_| FieldError::BadIndex {
                field: name.to_string(),
                arg: a.clone(),
            })?)
        }
        (ArgKind::Key, Some(a)) => FieldArg::Key(a),
        (ArgKind::JsonPointer, Some(a)) => {
            if !a.starts_with('/') {
                return Err(FieldError::BadPointer {
                    field: name.to_string(),
                    arg: a,
                });
            }
            FieldArg::Pointer(
                a[1..]
                    .split('/')
                    .map(|s| s.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            )
        }
        (ArgKind::JsonPath, Some(a)) => {
            let q = jsonpath_rust::parser::parse_json_path(&a).map_err(|e| {
                FieldError::BadJsonPath {
                    field: name.to_string(),
                    arg: a.clone(),
                    why: e.to_string(),
                }
            })?;
            FieldArg::JsonPath(Arc::new(q))
        }
    };
    Ok(FieldRef { id, arg, text })
}

/// Builder shorthand used by the per-source registration functions.
#[allow(clippy::too_many_arguments)]
pub(crate) fn def(
    name: &'static str,
    ftype: FieldType,
    list: bool,
    sources: &'static [Source],
    arg: ArgKind,
    arg_required: bool,
    description: &'static str,
    extract: Option<Extract>,
) -> FieldDef {
    FieldDef {
        name,
        ftype,
        list,
        description,
        sources,
        produced: extract.is_some(),
        arg,
        arg_required,
        extract: extract.unwrap_or(missing),
    }
}

fn missing<'e>(_: &'e Event, _: &'e FieldArg) -> Value<'e> {
    Value::Missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn needs(query: &str) -> KeySet {
        resolve("json", Some(query)).unwrap().needed_keys()
    }

    #[test]
    fn a_query_needs_the_names_on_its_path_and_in_its_filters() {
        let of = |keys: &[&str]| KeySet::of(keys.iter().copied());
        // The top-level name is not a key of the event's objects.
        assert_eq!(
            needs("$.requestObject.spec.containers[?@.securityContext.privileged == true]"),
            of(&["spec", "containers", "securityContext", "privileged"])
        );
        assert_eq!(
            needs("$.requestObject.spec['containers','initContainers'][*].image"),
            of(&["spec", "image"])
        );
        assert_eq!(
            needs("$.requestObject.spec.volumes[?@.hostPath]"),
            of(&["spec", "volumes", "hostPath"])
        );
        assert_eq!(
            needs("$.requestObject.spec.containers[?@.a == 1 && @.b > 2]"),
            of(&["spec", "containers", "a", "b"])
        );
        // What a filter can keep without: `!=`, `!`, one side of `||`, two queries.
        for filter in [
            "@.a != true",
            "!@.a",
            "@.a == 1 || @.b == 1",
            "@.a == @.b",
            "$.requestObject.x == 1",
        ] {
            assert_eq!(
                needs(&format!("$.requestObject.spec.containers[?{filter}]")),
                of(&["spec", "containers"]),
                "{filter}"
            );
        }
        // Not said: from the root, or with a function anywhere.
        assert_eq!(needs("$..hostPath"), KeySet::default());
        assert_eq!(
            needs("$.requestObject.spec.containers[?length(@.name) > 3].image"),
            KeySet::default()
        );
    }

    #[test]
    fn a_pointer_needs_its_keys_but_not_its_indices() {
        assert_eq!(
            resolve("jevt.value", Some("/requestObject/spec/containers/0/image"))
                .unwrap()
                .needed_keys(),
            KeySet::of(["spec", "containers", "image"])
        );
        assert_eq!(
            resolve("ka.target.name", None).unwrap().needed_keys(),
            KeySet::default()
        );
    }

    #[test]
    fn names_are_unique_and_sourced() {
        let mut seen = HashSet::new();
        for d in registry() {
            assert!(seen.insert(d.name), "duplicate field {}", d.name);
            assert!(!d.sources.is_empty(), "{} has no source", d.name);
            assert!(!d.description.is_empty(), "{} has no description", d.name);
        }
    }

    #[test]
    fn design_fields_are_registered_and_produced() {
        for name in [
            "evt.type",
            "evt.time",
            "evt.res",
            "proc.pid",
            "proc.ppid",
            "proc.name",
            "proc.exepath",
            "proc.cmdline",
            "proc.args",
            "proc.pname",
            "proc.pcmdline",
            "proc.aname",
            "proc.tty",
            "user.uid",
            "user.name",
            "user.loginuid",
            "fd.name",
            "fd.directory",
            "fd.typechar",
            "fd.sip",
            "fd.sport",
            "fd.dip",
            "fd.dport",
            "fd.l4proto",
            "container.id",
            "container.name",
            "container.image.repository",
            "container.image.tag",
            "k8s.ns.name",
            "k8s.pod.name",
            "k8s.pod.uid",
            "k8s.pod.labels",
            "k8s.pod.label",
            "k8s.node.name",
            "ka.auditid",
            "ka.stage",
            "ka.verb",
            "ka.uri",
            "ka.uri.param",
            "ka.user.name",
            "ka.user.groups",
            "ka.impuser.name",
            "ka.useragent",
            "ka.sourceips",
            "ka.target.resource",
            "ka.target.subresource",
            "ka.target.namespace",
            "ka.target.name",
            "ka.response.code",
            "ka.response.reason",
            "ka.auth.decision",
            "ka.auth.reason",
            "ka.resp.name",
            "jevt.value",
            "jevt.time",
            "jevt.rawtime",
            "session.id",
            "session.kind",
            "session.user",
            "session.groups",
            "session.uid",
            "session.auditid",
            "session.command",
            "session.sourceips",
            "session.started",
            "session.confidence",
            "json",
        ] {
            let id = lookup(name).unwrap_or_else(|| panic!("{name} not registered"));
            assert!(id.def().produced, "{name} not produced");
        }
    }

    #[test]
    fn resolve_arguments() {
        assert!(
            matches!(resolve("evt.arg.flags", None).unwrap().arg, FieldArg::Key(ref k) if k == "flags")
        );
        assert!(matches!(
            resolve("proc.aname", Some("2")).unwrap().arg,
            FieldArg::Index(2)
        ));
        assert_eq!(
            resolve("proc.aname", Some("x")).unwrap_err().to_string(),
            "field \"proc.aname\": argument \"x\" is not a valid index"
        );
        assert_eq!(
            resolve("proc.nope", None).unwrap_err().to_string(),
            "unknown field \"proc.nope\""
        );
        assert!(matches!(
            resolve("ka.uri.param", None),
            Err(FieldError::ArgRequired(_))
        ));
        assert!(matches!(
            resolve("ka.verb", Some("x")),
            Err(FieldError::ArgNotAllowed(_))
        ));
        assert!(matches!(
            resolve("jevt.value", Some("a/b")),
            Err(FieldError::BadPointer { .. })
        ));
        match resolve("jevt.value", Some("/a~1b/c~0")).unwrap().arg {
            FieldArg::Pointer(p) => assert_eq!(p, vec!["a/b".to_string(), "c~".to_string()]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve("json", Some("$.[")),
            Err(FieldError::BadJsonPath { .. })
        ));
    }

    #[test]
    fn which_fields_read_managed_fields() {
        let reads = |name: &str, arg: Option<&str>| {
            resolve(name, arg)
                .unwrap_or_else(|e| panic!("{name}[{arg:?}]: {e}"))
                .reads_managed_fields()
        };
        for (q, want) in [
            ("$", true),
            ("$.requestObject", true),
            ("$.requestObject.metadata", true),
            ("$.requestObject.metadata.managedFields[*].manager", true),
            ("$.oldObject.metadata.managedFields", true),
            ("$..manager", true),
            ("$.requestObject..manager", true),
            ("$.requestObject.metadata[*]", true),
            ("$.requestObject.metadata[?@.manager]", true),
            ("$.requestObject.*.managedFields", true),
            ("$['requestObject','oldObject'].metadata", true),
            ("$.requestObject.spec.containers[?@.name == $.requestObject.metadata.managedFields[0].manager]", true),
            ("$.requestObject.spec.containers[?$.requestObject.metadata]", true),
            ("$.requestObject.spec.containers[?length(@.ports) > 1]", true),
            ("$.requestObject.spec.containers[*].image", false),
            ("$.requestObject.metadata.name", false),
            ("$.requestObject.metadata.labels", false),
            ("$['requestObject','oldObject'].metadata.name", false),
            ("$.requestObject.spec..image", false),
            ("$.requestObject.metadata.managedFieldsX", false),
            ("$.requestObject.spec.containers[?@.securityContext.privileged == true]", false),
            ("$.requestObject.spec.containers[?@.name == $.requestObject.metadata.name]", false),
            ("$.objectRef.resource", false),
            ("$.user.groups[?@ == 'system:masters']", false),
        ] {
            assert_eq!(reads("json", Some(q)), want, "json[{q}]");
        }
        for (p, want) in [
            ("/requestObject", true),
            ("/requestObject/metadata", true),
            ("/requestObject/metadata/managedFields", true),
            ("/oldObject/metadata/managedFields/0/manager", true),
            ("/requestObject/spec", false),
            ("/requestObject/metadata/labels", false),
            ("/objectRef", false),
        ] {
            assert_eq!(reads("jevt.value", Some(p)), want, "jevt.value[{p}]");
        }
        assert!(reads("jevt.obj", None));
        assert!(!reads("ka.target.name", None));
        assert!(!reads("ka.req.pod.containers.image", None));
    }
}
