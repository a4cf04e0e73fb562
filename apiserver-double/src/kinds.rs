//! The table of kinds the double serves. Adding a kind is one entry in [`KINDS`].

/// How `metadata.name` is validated for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// A lowercase RFC 1123 subdomain (most kinds).
    Subdomain,
    /// A lowercase RFC 1123 label (namespaces).
    Label,
}

/// One served resource.
#[derive(Debug)]
pub struct KindSpec {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version inside the group.
    pub version: &'static str,
    /// Resource name in paths, e.g. `pods`.
    pub plural: &'static str,
    /// Singular resource name, e.g. `pod`.
    pub singular: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names advertised by discovery.
    pub short_names: &'static [&'static str],
    /// Whether PUT on a missing object creates it (as for leases and events).
    pub create_on_update: bool,
    /// Whether DELETE answers with the deleted object rather than a `Status`.
    pub delete_returns_object: bool,
    /// Whether the kind has a `/status` subresource.
    pub status_subresource: bool,
    /// How names are validated.
    pub name_rule: NameRule,
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
}

impl KindSpec {
    /// `apiVersion` as written in objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind qualified with its group, as kube-apiserver writes it in messages
    /// (`Pod`, `Lease.coordination.k8s.io`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The resource qualified with its group (`pods`, `leases.coordination.k8s.io`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `List` kind name, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];
const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
const EVENTS_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "reason",
    "reportingController",
    "type",
];

/// Every kind the double serves.
pub static KINDS: &[KindSpec] = &[
    KindSpec {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        create_on_update: false,
        delete_returns_object: true,
        status_subresource: true,
        name_rule: NameRule::Label,
        field_labels: &["status.phase"],
    },
    KindSpec {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        create_on_update: false,
        delete_returns_object: false,
        status_subresource: true,
        name_rule: NameRule::Subdomain,
        field_labels: &["spec.unschedulable"],
    },
    KindSpec {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        create_on_update: false,
        delete_returns_object: true,
        status_subresource: true,
        name_rule: NameRule::Subdomain,
        field_labels: POD_FIELDS,
    },
    KindSpec {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        create_on_update: false,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    },
    KindSpec {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        create_on_update: true,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: CORE_EVENT_FIELDS,
    },
    KindSpec {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        short_names: &["netpol"],
        create_on_update: false,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    },
    KindSpec {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        create_on_update: true,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    },
    KindSpec {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        create_on_update: true,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: EVENTS_V1_FIELDS,
    },
    KindSpec {
        group: "admissionregistration.k8s.io",
        version: "v1",
        plural: "validatingwebhookconfigurations",
        singular: "validatingwebhookconfiguration",
        kind: "ValidatingWebhookConfiguration",
        namespaced: false,
        short_names: &[],
        create_on_update: false,
        delete_returns_object: false,
        status_subresource: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[],
    },
];

/// Index into [`KINDS`].
pub type KindId = usize;

/// The kind served at `group/version/plural`.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<KindId> {
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind named by `apiVersion` and `kind` in an object.
pub fn by_type(api_version: &str, kind: &str) -> Option<KindId> {
    let (group, version) = split_api_version(api_version);
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Resolve a loose name used by the seeding helpers: a plural (`pods`), a kind (`Pod`), or
/// either qualified by its group (`leases.coordination.k8s.io`, `Event.events.k8s.io`).
/// An unqualified name picks the core group first.
pub fn by_name(name: &str) -> Option<KindId> {
    let (base, group) = match name.split_once('.') {
        Some((b, g)) => (b, Some(g)),
        None => (name, None),
    };
    let matches = |k: &KindSpec| {
        (k.plural == base || k.kind == base || k.singular == base)
            && group.is_none_or(|g| k.group == g)
    };
    KINDS
        .iter()
        .position(|k| matches(k) && (group.is_some() || k.group.is_empty()))
        .or_else(|| KINDS.iter().position(matches))
}

/// Split `group/version` (or `v1`) into its parts.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The distinct groups (other than core) with their versions, in table order.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, versions)) => {
                if !versions.contains(&k.version) {
                    versions.push(k.version);
                }
            }
            None => out.push((k.group, vec![k.version])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_types_and_names() {
        let pods = by_path("", "v1", "pods").unwrap();
        assert_eq!(KINDS[pods].kind, "Pod");
        assert_eq!(by_type("v1", "Pod"), Some(pods));
        assert_eq!(by_name("pods"), Some(pods));
        assert_eq!(by_name("Pod"), Some(pods));
        let core_ev = by_name("events").unwrap();
        assert_eq!(KINDS[core_ev].group, "");
        let ev1 = by_name("events.events.k8s.io").unwrap();
        assert_eq!(KINDS[ev1].group, "events.k8s.io");
        let lease = by_name("Lease").unwrap();
        assert_eq!(KINDS[lease].qualified_kind(), "Lease.coordination.k8s.io");
        assert_eq!(by_name("widgets"), None);
        assert_eq!(by_type("apps/v1", "Deployment"), None);
    }

    #[test]
    fn every_kind_is_unique_by_path_and_type() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(by_path(k.group, k.version, k.plural), Some(i));
            assert_eq!(by_type(&k.api_version(), k.kind), Some(i));
        }
        assert!(groups().iter().any(|(g, _)| *g == "coordination.k8s.io"));
    }
}
