//! A field that says it does not read `metadata.managedFields`
//! (`FieldRef::reads_managed_fields`, which lets the webhook parse reviews without them)
//! answers the same with and without them, on every fixture event: every `k8s_audit` field of
//! the registry (a field added later is checked too), with sample arguments, every JSONPath of
//! the bundled library and a set of JSON pointers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture_events, library_queries};
use policies::fields::{resolve, ArgKind};
use policies::{registry, Event, Source};
use serde_json::{json, Value as Json};

/// The audit-shaped bodies of the fixture events (admission reviews as their audit view).
fn bodies() -> Vec<Json> {
    fixture_events()
        .iter()
        .map(|ev| ev.json().unwrap().clone())
        .collect()
}

/// The body with every object's `metadata.managedFields` set to `to` (`None`: removed).
fn with_managed_fields(mut body: Json, to: Option<&Json>) -> Json {
    for o in ["requestObject", "oldObject", "responseObject"] {
        if let Some(Json::Object(m)) = body.pointer_mut(&format!("/{o}/metadata")) {
            match to {
                Some(v) => {
                    m.insert("managedFields".into(), v.clone());
                }
                None => {
                    m.shift_remove("managedFields");
                }
            }
        }
    }
    body
}

#[test]
fn fields_that_do_not_read_managed_fields_answer_alike_without_them() {
    let mut args: Vec<(&'static str, Option<String>)> = Vec::new();
    for def in registry() {
        if !def.sources.contains(&Source::K8sAudit) {
            continue;
        }
        let samples: Vec<String> = match def.arg {
            ArgKind::None => vec![],
            ArgKind::Index => vec!["0".into(), "1".into()],
            ArgKind::Key => ["command", "container", "app", "stdin", "x"]
                .map(String::from)
                .to_vec(),
            ArgKind::JsonPointer => [
                "/requestObject/spec",
                "/requestObject/metadata/name",
                "/requestObject/metadata/labels",
                "/oldObject/spec",
                "/responseObject/metadata/name",
                "/objectRef/resource",
                "/user/username",
                "/requestObject",
                "/requestObject/metadata",
                "/requestObject/metadata/managedFields",
            ]
            .map(String::from)
            .to_vec(),
            ArgKind::JsonPath => {
                let mut q = library_queries();
                q.extend(
                    [
                        "$.requestObject",
                        "$.requestObject.metadata",
                        "$.requestObject.metadata.managedFields[*].manager",
                        "$..manager",
                        "$.requestObject.metadata.labels",
                        "$.responseObject.metadata.name",
                    ]
                    .map(String::from),
                );
                q
            }
        };
        if def.arg == ArgKind::None || !def.arg_required {
            args.push((def.name, None));
        }
        args.extend(samples.into_iter().map(|a| (def.name, Some(a))));
    }
    let fields: Vec<_> = args
        .iter()
        .map(|(n, a)| resolve(n, a.as_deref()).unwrap_or_else(|e| panic!("{n}[{a:?}]: {e}")))
        .collect();
    assert!(fields.iter().any(|f| f.reads_managed_fields()));
    assert!(fields.len() > 100, "{} fields", fields.len());

    let other = json!([{"manager": "other", "operation": "Update", "apiVersion": "v1",
        "fieldsV1": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}}}}}}]);
    let bodies = bodies();
    assert!(bodies.len() > 40, "{} fixture events", bodies.len());
    let mut compared = 0usize;
    let mut differed = 0usize;
    for body in bodies {
        let a = Event::from_audit_value(with_managed_fields(body.clone(), None)).unwrap();
        let b = Event::from_audit_value(with_managed_fields(body, Some(&other))).unwrap();
        for (f, (name, arg)) in fields.iter().zip(&args) {
            let (va, vb) = (f.extract(&a), f.extract(&b));
            if f.reads_managed_fields() {
                differed += usize::from(va != vb);
                continue;
            }
            assert_eq!(
                va, vb,
                "{name}[{arg:?}] reads managedFields but says it does not"
            );
            compared += 1;
        }
    }
    assert!(compared > 10_000, "{compared} comparisons");
    // The two variants really differ where a field reads them.
    assert!(differed > 10, "{differed} answers differed");
}
