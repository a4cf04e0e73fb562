//! `json[...]` answers exactly what `jsonpath_rust` answers: every JSONPath of the bundled
//! library and a set of edge forms, over the fixture audit events and over pods built to hit
//! each branch (missing values, mixed types, empty lists, nested filters).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::borrow::Cow;

use policies::fields::resolve;
use policies::{parse_document, Event, RuleSet, Source, Value};
use serde_json::{json, Value as Json};

mod common;

use common::{fixture_events, library_queries};

/// What `json[q]` yielded before the direct evaluator: `jsonpath_rust` over the whole body.
fn reference<'e>(q: &str, ev: &'e Event) -> Value<'e> {
    let parsed = jsonpath_rust::parser::parse_json_path(q).unwrap();
    let Some(j) = ev.json() else {
        return Value::Missing;
    };
    match jsonpath_rust::query::js_path_process(&parsed, j) {
        Ok(found) => {
            let v: Vec<Value<'e>> = found
                .into_iter()
                .map(|r| match r.val() {
                    v @ (Json::Object(_) | Json::Array(_)) => Value::Str(Cow::Owned(v.to_string())),
                    Json::String(s) => Value::Str(Cow::Borrowed(s)),
                    Json::Bool(b) => Value::Str(Cow::Borrowed(if *b { "true" } else { "false" })),
                    Json::Null => Value::Missing,
                    Json::Number(n) => match n.as_i64() {
                        Some(i) => Value::Int(i),
                        None => Value::Str(Cow::Owned(n.to_string())),
                    },
                })
                .filter(|v| !v.is_missing())
                .collect();
            if v.is_empty() {
                Value::Missing
            } else {
                Value::List(v)
            }
        }
        Err(_) => Value::Missing,
    }
}

fn pods() -> Vec<Json> {
    let scs = [
        json!(null),
        json!({}),
        json!({"privileged": true, "runAsUser": 0, "allowPrivilegeEscalation": true}),
        json!({"privileged": false, "runAsUser": 1000, "allowPrivilegeEscalation": false,
               "runAsNonRoot": true, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        json!({"privileged": "true", "runAsUser": 0.0, "capabilities": {"drop": ["NET_RAW"], "add": ["SYS_ADMIN", "CHOWN"]},
               "seccompProfile": {"type": "Unconfined"}, "procMount": "Unmasked"}),
        json!({"privileged": 1, "runAsUser": "0", "capabilities": {"drop": "ALL", "add": []},
               "seccompProfile": {"type": "RuntimeDefault"}, "procMount": "Default",
               "seLinuxOptions": {"user": "u", "type": "spc_t"}, "appArmorProfile": {"type": "Unconfined"},
               "windowsOptions": {"hostProcess": true}}),
        json!({"capabilities": {"drop": [], "add": ["AUDIT_WRITE"]}, "seLinuxOptions": {"role": "r", "type": "container_t"},
               "seccompProfile": {"type": "Localhost"}, "allowPrivilegeEscalation": null}),
    ];
    let ports = [
        json!(null),
        json!([]),
        json!([{"containerPort": 80}]),
        json!([{"containerPort": 80, "hostPort": 0}, {"hostPort": 5500}]),
        json!([{"hostPort": 80}, {"hostPort": "6001"}, {"hostPort": 7000.5}]),
    ];
    let volumes = [
        json!(null),
        json!([]),
        json!([{"name": "a", "hostPath": {"path": "/etc"}}, {"name": "b", "emptyDir": {}}]),
        json!([{"name": "c", "configMap": {"name": "x"}}, {"name": "d", "nfs": {"server": "s"}}]),
        json!({"name": "not-a-list", "hostPath": {}}),
    ];
    let sysctls = [
        json!(null),
        json!([{"name": "kernel.shm_rmid_forced", "value": "0"}]),
        json!([{"name": "net.core.somaxconn", "value": "1"}, {"name": "net.ipv4.tcp_syncookies"}]),
    ];
    let mut out = Vec::new();
    let mut n = 0usize;
    for (i, sc) in scs.iter().enumerate() {
        for (j, p) in ports.iter().enumerate() {
            let v = &volumes[(i + j) % volumes.len()];
            let s = &sysctls[(i * 3 + j) % sysctls.len()];
            let other = &scs[(i + j + 1) % scs.len()];
            let mut c1 = json!({"name": "c1", "image": "nginx"});
            if !sc.is_null() {
                c1["securityContext"] = sc.clone();
            }
            if !p.is_null() {
                c1["ports"] = p.clone();
            }
            let mut c2 = json!({"name": "c2", "image": "busybox"});
            if !other.is_null() {
                c2["securityContext"] = other.clone();
            }
            let mut spec = json!({"containers": [c1]});
            match n % 4 {
                0 => spec["initContainers"] = json!([c2]),
                1 => spec["ephemeralContainers"] = json!([c2, {"name": "e", "image": "debug"}]),
                2 => spec["containers"] = json!({"c": c2}),
                _ => spec["initContainers"] = json!([]),
            }
            if !v.is_null() {
                spec["volumes"] = v.clone();
            }
            if !s.is_null() {
                spec["securityContext"] = json!({"sysctls": s, "runAsNonRoot": n % 2 == 0});
            }
            let pod =
                json!({"kind": "Pod", "metadata": {"name": format!("p{n}")}, "spec": spec.clone()});
            out.push(pod);
            out.push(json!({"kind": "Deployment", "spec": {"template": {"spec": spec.clone()}}}));
            out.push(json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}));
            n += 1;
        }
    }
    out.push(json!({"command": ["sh", "-c", "id"], "container": "c"}));
    out.push(json!({"command": "sh"}));
    out.push(json!([1, 2, 3]));
    out.push(json!("text"));
    out
}

fn events() -> Vec<Event> {
    let mut evs = fixture_events();
    for (i, obj) in pods().into_iter().enumerate() {
        let body = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
            "verb": "create", "auditID": format!("a{i}"), "objectRef": {"resource": "pods"},
            "requestObject": obj});
        let text = body.to_string();
        evs.extend(parse_document("p", text.as_bytes()).into_iter().flatten());
        evs.push(Event::from_audit_value(body).unwrap());
    }
    evs
}

#[test]
fn json_field_answers_as_jsonpath_rust_does() {
    let mut qs = library_queries();
    let library = qs.len();
    assert!(library >= 40, "library queries found: {library}");
    for q in [
        "$",
        "$.requestObject",
        "$.requestObject.spec.containers[*].image",
        "$.requestObject.spec.containers[0].securityContext",
        "$.requestObject.spec.containers[-1].name",
        "$.requestObject.spec.containers[-9].name",
        "$.requestObject.spec.containers[5]",
        "$.requestObject.spec.containers[0:2].name",
        "$.requestObject.spec.containers[::-1].name",
        "$.requestObject.spec.containers[1:]",
        "$.requestObject.spec.*",
        "$.requestObject.spec.volumes[*]",
        "$.requestObject..image",
        "$..hostPort",
        "$..[?@.hostPort]",
        "$.requestObject..securityContext[?@ == true]",
        "$['requestObject','objectRef'].kind",
        "$['objectRef','nothing','requestObject']",
        "$.requestObject.command[*]",
        "$.requestObject.command[0]",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser == 0].name",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser != 0].name",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser >= 0].name",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser < 1000].name",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser <= '0'].name",
        "$.requestObject.spec.containers[?@.securityContext.privileged == 'true'].name",
        "$.requestObject.spec.containers[?@.securityContext.privileged > false].name",
        "$.requestObject.spec.containers[?@.securityContext.allowPrivilegeEscalation == null].name",
        "$.requestObject.spec.containers[?@.securityContext.nope == @.securityContext.nada].name",
        "$.requestObject.spec.containers[?@.securityContext.runAsUser == 0.0].name",
        "$.requestObject.spec.containers[?@.name == $.requestObject.metadata.name]",
        "$.requestObject.spec.containers[?$.requestObject.metadata].name",
        "$.requestObject.spec.containers[?!$.nothing].name",
        "$.requestObject.spec.containers[?@[?@ == 'nginx']].name",
        "$.requestObject.spec.containers[?@]",
        "$.requestObject.spec.containers[?!(@.securityContext && @.ports)].name",
        "$.requestObject.spec.containers[?@.ports[?@.hostPort > 100 || @.hostPort == 0]].name",
        "$.requestObject.spec.containers[?length(@.ports) > 1].name",
        "$.requestObject.spec.containers[?match(@.image, 'ng.*')].name",
        "$.requestObject.spec.containers[?@.ports[0].hostPort].name",
        "$.requestObject.spec.containers[?@.ports[-1].hostPort == 5500].name",
        "$.user.groups[?@ == 'system:masters']",
        "$.annotations.*",
        "$.objectRef",
        "$[0]",
        "$[*]",
    ] {
        qs.push(q.to_string());
    }
    let evs = events();
    let mut checked = 0usize;
    let mut non_empty = 0usize;
    for q in &qs {
        let f = resolve("json", Some(q)).unwrap_or_else(|e| panic!("{q}: {e}"));
        for (i, ev) in evs.iter().enumerate() {
            let got = f.extract(ev);
            let want = reference(q, ev);
            assert_eq!(got, want, "query {q} on event {i}");
            checked += 1;
            non_empty += usize::from(!got.is_missing());
        }
    }
    // The set really exercises matches, not only empty answers.
    assert!(
        non_empty > checked / 20,
        "{non_empty} of {checked} answers were non-empty"
    );

    // `json[q] exists` (which skips rendering the selected values) agrees with the value.
    let mut yaml = String::new();
    for (i, q) in qs.iter().enumerate() {
        yaml.push_str(&format!(
            "- rule: q{i}\n  desc: d\n  condition: |\n    json[{q}] exists\n  output: o\n  priority: NOTICE\n  source: k8s_audit\n"
        ));
    }
    let rs = RuleSet::from_texts(&[("q.yaml".to_string(), yaml)]).unwrap_or_else(|e| panic!("{e}"));
    let fields: Vec<_> = qs
        .iter()
        .map(|q| resolve("json", Some(q)).unwrap())
        .collect();
    let mut fired = 0usize;
    for (i, ev) in evs.iter().enumerate() {
        // These rules run on audit events (admission captures need the opt-in).
        if ev.source() != Source::K8sAudit {
            continue;
        }
        let mut got: Vec<String> = rs
            .evaluate(ev)
            .into_iter()
            .map(|m| m.rule.name.clone())
            .collect();
        got.sort();
        let mut want: Vec<String> = fields
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.extract(ev).is_missing())
            .map(|(k, _)| format!("q{k}"))
            .collect();
        want.sort();
        assert_eq!(got, want, "json[...] exists on event {i}");
        fired += got.len();
    }
    assert!(fired > 1000, "{fired} rules fired");
}
