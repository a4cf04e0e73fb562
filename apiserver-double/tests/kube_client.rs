//! The double driven by the real kube-rs client, over HTTP and HTTPS on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use apiserver_double::{ApiServerDouble, Running};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

fn pod(name: &str, labels: Value, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn http() -> (Running, Client) {
    let d = ApiServerDouble::start().await.unwrap();
    let c = d.client().unwrap();
    (d, c)
}

#[tokio::test]
async fn pods_create_get_list_with_selectors() {
    let (d, client) = http().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods
        .create(
            &PostParams::default(),
            &pod("web-1", json!({"app": "web", "tier": "front"}), "node-a"),
        )
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert_eq!(meta.uid.as_ref().unwrap().len(), 36);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(
        meta.resource_version
            .as_ref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    pods.create(
        &PostParams::default(),
        &pod("web-2", json!({"app": "web"}), "node-b"),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("db-1", json!({"app": "db"}), "node-a"),
    )
    .await
    .unwrap();

    let got = pods.get("web-1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let names = |l: kube::core::ObjectList<Pod>| {
        l.items
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(pods.list(&ListParams::default()).await.unwrap()),
        ["db-1", "web-1", "web-2"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["web-1", "web-2"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app in (db,cache)"))
                .await
                .unwrap()
        ),
        ["db-1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app notin (db),!tier"))
                .await
                .unwrap()
        ),
        ["web-2"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("app!=web"))
                .await
                .unwrap()
        ),
        ["db-1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().labels("tier"))
                .await
                .unwrap()
        ),
        ["web-1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("spec.nodeName=node-a"))
                .await
                .unwrap()
        ),
        ["db-1", "web-1"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("metadata.name=web-2,status.phase=Pending"))
                .await
                .unwrap()
        ),
        ["web-2"]
    );
    assert_eq!(
        names(
            pods.list(&ListParams::default().fields("status.phase!=Pending"))
                .await
                .unwrap()
        ),
        Vec::<String>::new()
    );

    // pagination
    let page = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["web-2"]);

    // all namespaces
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );

    // 404 and 409 AlreadyExists
    let e = api_error(pods.get("nope").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"nope\" not found");
    let e = api_error(
        pods.create(&PostParams::default(), &pod("web-1", json!({}), "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    // bad selector: 400
    let e = api_error(
        pods.list(&ListParams::default().labels("app in (web"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    let e = api_error(
        pods.list(&ListParams::default().fields("spec.hostname=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: spec.hostname")
    );
    // namespace must exist
    let elsewhere: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    let e = api_error(
        elsewhere
            .create(&PostParams::default(), &pod("p", json!({}), "n"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"team-a\" not found")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn pods_replace_conflict_patch_and_delete() {
    let (d, client) = http().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let p = pods
        .create(
            &PostParams::default(),
            &pod("app", json!({"app": "a"}), "n1"),
        )
        .await
        .unwrap();

    // replace with the current resourceVersion works; with a stale one: 409 Conflict
    let mut next = p.clone();
    next.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let replaced = pods
        .replace("app", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_ne!(
        replaced.metadata.resource_version,
        p.metadata.resource_version
    );
    assert_eq!(
        replaced.metadata.generation,
        Some(1),
        "label changes do not bump generation"
    );
    let mut stale = p.clone();
    stale
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "3".into());
    let e = api_error(
        pods.replace("app", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, "Operation cannot be fulfilled on pods \"app\": the object has been modified; please apply your changes to the latest version and try again");

    // merge patch: labels map, null deletes
    let merged = pods
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"v": null, "m": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap(),
        [
            ("app".to_string(), "a".to_string()),
            ("m".to_string(), "1".to_string())
        ]
        .into()
    );

    // strategic merge: containers merged by name, annotations added
    let smp = pods
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "metadata": {"annotations": {"tether.dev/seen": "yes"}},
                "spec": {"containers": [{"name": "app", "image": "busybox:1.37"}, {"name": "sidecar", "image": "envoy:1"}]}
            })),
        )
        .await
        .unwrap();
    let spec = smp.spec.unwrap();
    assert_eq!(spec.containers.len(), 2);
    assert_eq!(spec.containers[0].image.as_deref(), Some("busybox:1.37"));
    assert_eq!(spec.containers[1].name, "sidecar");
    assert_eq!(
        smp.metadata.generation,
        Some(2),
        "spec changes bump generation"
    );
    assert_eq!(smp.metadata.annotations.unwrap()["tether.dev/seen"], "yes");

    // JSON patch, including a failing test op (422)
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/labels/jp", "value": "x"},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "envoy:2"}
    ]))
    .unwrap();
    let patched = pods
        .patch("app", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["jp"], "x");
    assert_eq!(
        patched.spec.unwrap().containers[1].image.as_deref(),
        Some("envoy:2")
    );
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "other"}]))
            .unwrap();
    let e = api_error(
        pods.patch("app", &PatchParams::default(), &Patch::<()>::Json(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);

    // server-side apply: updates an existing pod and creates a missing one
    let applied = pods
        .patch(
            "app",
            &PatchParams::apply("tether").force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "labels": {"applied": "true"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.labels.unwrap()["applied"], "true");
    let fresh = pods
        .patch(
            "fresh",
            &PatchParams::apply("tether"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fresh"},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            ),
        )
        .await
        .unwrap();
    assert!(fresh.metadata.uid.is_some());

    // the request log shows the patch content types kube-rs sent
    let cts: Vec<String> = d
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.status == 200)
        .filter_map(|r| r.content_type)
        .collect();
    for want in [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(cts.iter().any(|c| c == want), "missing {want} in {cts:?}");
    }
    assert!(d
        .requests()
        .iter()
        .any(|r| r.method == "PATCH" && r.query.contains("fieldManager=tether")));

    // patch of a missing object: 404
    let e = api_error(
        pods.patch("ghost", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);

    // status only through the status subresource
    let st = pods
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase.as_deref(), Some("Running"));
    let ignored = pods
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(ignored.status.unwrap().phase.as_deref(), Some("Running"));

    // delete: pods answer with the object; a second delete is 404
    let gone = pods.delete("app", &DeleteParams::default()).await.unwrap();
    assert_eq!(gone.left().unwrap().metadata.name.as_deref(), Some("app"));
    assert!(pods.get_opt("app").await.unwrap().is_none());
    let e = api_error(
        pods.delete("app", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    // preconditions
    let f = pods.get("fresh").await.unwrap();
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = api_error(pods.delete("fresh", &dp).await.unwrap_err());
    assert_eq!(e.code, 409);
    let dp = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: f.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    pods.delete("fresh", &dp).await.unwrap();
    d.shutdown().await;
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted() {
    let (d, client) = http().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &pod("before", json!({"app": "w"}), "n"),
    )
    .await
    .unwrap();

    // the raw watch protocol from a resourceVersion
    let list = pods.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut raw = pods
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("w1", json!({"app": "w"}), "n"))
        .await
        .unwrap();
    pods.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    pods.delete("w1", &DeleteParams::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), raw.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(p) => seen.push(("ADDED", p.metadata.name.unwrap())),
            WatchEvent::Modified(p) => seen.push(("MODIFIED", p.metadata.name.unwrap())),
            WatchEvent::Deleted(p) => seen.push(("DELETED", p.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            ("ADDED", "w1".to_string()),
            ("MODIFIED", "w1".into()),
            ("DELETED", "w1".into())
        ]
    );

    // kube::runtime::watcher: initial list, then changes
    let stream = watcher(pods.clone(), watcher::Config::default().labels("app=w"));
    let mut stream = Box::pin(stream);
    let mut init = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) => init.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(init, ["before"]);
    pods.create(&PostParams::default(), &pod("w2", json!({"app": "w"}), "n"))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("other", json!({"app": "other"}), "n"),
    )
    .await
    .unwrap();
    pods.patch(
        "w2",
        &PatchParams::default(),
        &Patch::Strategic(json!({"metadata": {"annotations": {"a": "b"}}})),
    )
    .await
    .unwrap();
    // leaving the selection is a delete for this watcher
    pods.patch(
        "before",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "gone"}}})),
    )
    .await
    .unwrap();
    pods.delete("w2", &DeleteParams::default()).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(p) => events.push(format!(
                "apply {} {}",
                p.metadata.name.unwrap(),
                p.metadata.annotations.map(|a| a.len()).unwrap_or(0)
            )),
            watcher::Event::Delete(p) => {
                events.push(format!("delete {}", p.metadata.name.unwrap()))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        events,
        ["apply w2 0", "apply w2 1", "delete before", "delete w2"]
    );
    d.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410_and_watcher_relists() {
    let d = ApiServerDouble::builder()
        .bookmark_interval(Duration::from_millis(100))
        .spawn()
        .await
        .unwrap();
    let client = d.client().unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let p = pods
        .create(&PostParams::default(), &pod("old", json!({}), "n"))
        .await
        .unwrap();
    let old_rv = p.metadata.resource_version.unwrap();
    pods.create(&PostParams::default(), &pod("newer", json!({}), "n"))
        .await
        .unwrap();
    d.compact();
    let mut raw = pods
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    match raw.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // bookmarks arrive on an idle watch that allows them
    let now = d.resource_version().to_string();
    let mut raw = pods
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            }
            .timeout(5),
            &now,
        )
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), raw.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, now),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // streaming list (sendInitialEvents) as the watcher uses it
    let stream = watcher(pods.clone(), watcher::Config::default().streaming_lists());
    let mut stream = Box::pin(stream);
    let mut init = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) => init.push(p.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    init.sort();
    assert_eq!(init, ["newer", "old"]);
    d.shutdown().await;
}

#[tokio::test]
async fn leases_optimistic_concurrency_between_two_clients() {
    let (d, c1) = http().await;
    let c2 = d.client().unwrap();
    let l1: Api<Lease> = Api::namespaced(c1, "kube-system");
    let l2: Api<Lease> = Api::namespaced(c2, "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "tether-leader"},
        "spec": {"holderIdentity": "replica-0", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    l1.create(&PostParams::default(), &lease).await.unwrap();
    let e = api_error(l2.create(&PostParams::default(), &lease).await.unwrap_err());
    assert_eq!(
        e.message,
        "leases.coordination.k8s.io \"tether-leader\" already exists"
    );

    let a = l1.get("tether-leader").await.unwrap();
    let b = l2.get("tether-leader").await.unwrap();
    let mut a2 = a.clone();
    a2.spec.as_mut().unwrap().holder_identity = Some("replica-1".into());
    let mut b2 = b.clone();
    b2.spec.as_mut().unwrap().holder_identity = Some("replica-2".into());
    let pp = PostParams::default();
    let (ra, rb) = tokio::join!(
        l1.replace("tether-leader", &pp, &a2),
        l2.replace("tether-leader", &pp, &b2)
    );
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one replace must win: {other:?}"),
    };
    let lost = api_error(lost);
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    let now = l1.get("tether-leader").await.unwrap();
    assert_eq!(
        now.spec.unwrap().holder_identity,
        won.spec.unwrap().holder_identity
    );

    // leases may be created by PUT; invalid durations are 422
    let put: Lease = serde_json::from_value(
        json!({"metadata": {"name": "by-put"}, "spec": {"holderIdentity": "x"}}),
    )
    .unwrap();
    l1.replace("by-put", &PostParams::default(), &put)
        .await
        .unwrap();
    let bad: Lease = serde_json::from_value(
        json!({"metadata": {"name": "bad"}, "spec": {"leaseDurationSeconds": 0}}),
    )
    .unwrap();
    let e = api_error(l1.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert_eq!(e.message, "Lease.coordination.k8s.io \"bad\" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0");
    d.shutdown().await;
}

#[tokio::test]
async fn nodes_taints_by_patch() {
    let (d, client) = http().await;
    let nodes: Api<Node> = Api::all(client);
    let n: Node = serde_json::from_value(
        json!({"metadata": {"name": "worker-1", "labels": {"kubernetes.io/hostname": "worker-1"}}}),
    )
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let taint = json!({"spec": {"taints": [{"key": "tether.dev/quarantine", "value": "true", "effect": "NoSchedule"}]}});
    let t = nodes
        .patch(
            "worker-1",
            &PatchParams::default(),
            &Patch::Strategic(taint),
        )
        .await
        .unwrap();
    let taints = t.spec.unwrap().taints.unwrap();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0].key, "tether.dev/quarantine");
    // the request log keeps what was sent
    let sent = d
        .requests()
        .into_iter()
        .find(|r| {
            r.method == "PATCH"
                && r.content_type.as_deref() == Some("application/strategic-merge-patch+json")
        })
        .unwrap();
    assert_eq!(sent.path, "/api/v1/nodes/worker-1");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["spec"]["taints"][0]["effect"], "NoSchedule");
    let two = json!({"spec": {"taints": [{"key": "tether.dev/quarantine", "value": "true", "effect": "NoSchedule"}, {"key": "tether.dev/evict", "effect": "NoExecute"}]}});
    let t = nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(two))
        .await
        .unwrap();
    assert_eq!(t.spec.unwrap().taints.unwrap().len(), 2);
    let bad = json!({"spec": {"taints": [{"key": "x", "effect": "Never"}]}});
    let e = api_error(
        nodes
            .patch("worker-1", &PatchParams::default(), &Patch::Merge(bad))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("spec.taints[0].effect: Unsupported value: \"Never\""),
        "{}",
        e.message
    );
    let untaint = json!({"spec": {"taints": null}});
    let t = nodes
        .patch("worker-1", &PatchParams::default(), &Patch::Merge(untaint))
        .await
        .unwrap();
    assert!(t.spec.unwrap().taints.is_none());
    // nodes answer DELETE with a Status
    let st = nodes
        .delete("worker-1", &DeleteParams::default())
        .await
        .unwrap();
    assert!(st.right().unwrap().is_success());
    assert!(d.get("nodes", None, "worker-1").unwrap().is_none());
    d.shutdown().await;
}

#[tokio::test]
async fn network_policy_create_and_namespace_lifecycle() {
    let (d, client) = http().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let e = api_error(
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "Team.A"}})).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(e.message.starts_with("Namespace \"Team.A\" is invalid: metadata.name: Invalid value: \"Team.A\": a lowercase RFC 1123 label"), "{}", e.message);

    let np: Api<NetworkPolicy> = Api::namespaced(client.clone(), "team-a");
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "tether-isolate-web", "labels": {"tether.dev/action": "isolate"}},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"]}
    }))
    .unwrap();
    let made = np.create(&PostParams::default(), &policy).await.unwrap();
    assert_eq!(
        made.spec.unwrap().policy_types.unwrap(),
        ["Ingress", "Egress"]
    );
    let listed = np
        .list(&ListParams::default().labels("tether.dev/action=isolate"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    let bad: NetworkPolicy = serde_json::from_value(json!({"metadata": {"name": "bad"}, "spec": {"podSelector": {}, "policyTypes": ["Sideways"]}})).unwrap();
    let e = api_error(np.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.message, "NetworkPolicy.networking.k8s.io \"bad\" is invalid: spec.policyTypes[0]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\"");

    // deleting the namespace removes what is in it
    nss.delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(d
        .list("networkpolicies", Some("team-a"))
        .unwrap()
        .is_empty());
    d.shutdown().await;
}

fn vwc(webhook: Value) -> ValidatingWebhookConfiguration {
    serde_json::from_value(json!({"metadata": {"name": "tether"}, "webhooks": [webhook]})).unwrap()
}

fn good_webhook() -> Value {
    json!({
        "name": "admission.tether.dev",
        "admissionReviewVersions": ["v1", "v1beta1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "tether", "name": "tether-webhook", "path": "/validate"}, "caBundle": "Y2E="},
        "rules": [{"operations": ["CREATE", "UPDATE", "CONNECT"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods", "pods/exec"]}],
        "failurePolicy": "Ignore",
        "timeoutSeconds": 5
    })
}

#[tokio::test]
async fn validating_webhook_configuration_validation() {
    let (d, client) = http().await;
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let made = api
        .create(&PostParams::default(), &vwc(good_webhook()))
        .await
        .unwrap();
    let w = &made.webhooks.unwrap()[0];
    assert_eq!(
        w.match_policy.as_deref(),
        Some("Equivalent"),
        "defaults are applied"
    );
    assert_eq!(w.client_config.service.as_ref().unwrap().port, Some(443));

    let cases = [
        (json!({"name": "tether.dev"}), "webhooks[0].name: Invalid value: \"tether.dev\": should be a domain with at least three segments separated by dots"),
        (json!({"admissionReviewVersions": []}), "webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1"),
        (json!({"admissionReviewVersions": ["v2"]}), "webhooks[0].admissionReviewVersions[0]: Unsupported value: \"v2\": supported values: \"v1\", \"v1beta1\""),
        (json!({"sideEffects": "Unknown"}), "webhooks[0].sideEffects: Unsupported value: \"Unknown\": supported values: \"None\", \"NoneOnDryRun\""),
        (json!({"clientConfig": {"url": "https://tether.example:8443/validate"}}), "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
        (json!({"failurePolicy": "Sometimes"}), "webhooks[0].failurePolicy: Unsupported value: \"Sometimes\": supported values: \"Fail\", \"Ignore\""),
        (json!({"timeoutSeconds": 45}), "webhooks[0].timeoutSeconds: Invalid value: 45: the timeout value must be between 1 and 30 seconds"),
        (json!({"rules": [{"operations": ["EXEC"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}),
         "webhooks[0].rules[0].operations[0]: Unsupported value: \"EXEC\": supported values: \"*\", \"CONNECT\", \"CREATE\", \"DELETE\", \"UPDATE\""),
    ];
    for (overlay, want) in cases {
        let mut w = good_webhook();
        json_patch::merge(&mut w, &overlay);
        let mut obj = vwc(w);
        obj.metadata.name = Some("bad".into());
        let e = api_error(api.create(&PostParams::default(), &obj).await.unwrap_err());
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
        assert_eq!(
            e.message,
            format!("ValidatingWebhookConfiguration.admissionregistration.k8s.io \"bad\" is invalid: {want}")
        );
        let causes = e.details.unwrap().causes;
        assert_eq!(causes.len(), 1);
        assert!(want.starts_with(&causes[0].field));
    }
    assert!(d
        .get("validatingwebhookconfigurations", None, "bad")
        .unwrap()
        .is_none());
    d.shutdown().await;
}

#[tokio::test]
async fn https_client_and_kubeconfig_for_a_spawned_process() {
    let d = ApiServerDouble::start_tls().await.unwrap();
    assert!(d.url().starts_with("https://127.0.0.1:"));
    assert!(d
        .ca_pem()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    let pods: Api<Pod> = Api::namespaced(d.client().unwrap(), "default");
    pods.create(&PostParams::default(), &pod("tls", json!({}), "n"))
        .await
        .unwrap();

    // a client built from the kubeconfig, as a spawned `tether` would via KUBECONFIG
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    d.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, "default");
    apiserver_double::install_crypto_provider();
    let from_file: Api<Pod> = Api::default_namespaced(Client::try_from(cfg).unwrap());
    assert_eq!(
        from_file.get("tls").await.unwrap().metadata.name.as_deref(),
        Some("tls")
    );

    // a client that does not trust the CA is refused
    let mut untrusting = kube::Config::new(d.url().parse().unwrap());
    untrusting.connect_timeout = Some(Duration::from_secs(5));
    let plain: Api<Pod> = Api::namespaced(Client::try_from(untrusting).unwrap(), "default");
    assert!(plain.get("tls").await.is_err());
    d.shutdown().await;
}

#[tokio::test]
async fn discovery_and_version() {
    let (d, client) = http().await;
    let info = client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            found.push(format!("{}/{} {:?}", ar.api_version, ar.plural, caps.scope));
        }
    }
    for want in [
        "v1/pods Namespaced",
        "v1/nodes Cluster",
        "v1/namespaces Cluster",
        "v1/events Namespaced",
        "coordination.k8s.io/v1/leases Namespaced",
        "networking.k8s.io/v1/networkpolicies Namespaced",
        "events.k8s.io/v1/events Namespaced",
        "admissionregistration.k8s.io/v1/validatingwebhookconfigurations Cluster",
    ] {
        assert!(found.iter().any(|f| f == want), "{want} not in {found:?}");
    }
    // a dynamic API from discovery works too
    let (ar, _) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk(
            "coordination.k8s.io",
            "v1",
            "Lease",
        ))
        .unwrap();
    let dynamic: Api<kube::core::DynamicObject> = Api::namespaced_with(client, "kube-system", &ar);
    assert!(dynamic
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    d.shutdown().await;
}

#[tokio::test]
async fn seeding_helpers_are_visible_to_clients_and_watchers() {
    let (d, client) = http().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut w = pods
        .watch(
            &WatchParams::default().timeout(5),
            &d.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let seeded = d
        .insert(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seeded"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}))
        .unwrap();
    assert_eq!(seeded["metadata"]["namespace"], "default");
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Added(p) => assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    assert_eq!(
        pods.get("seeded").await.unwrap().metadata.uid.as_deref(),
        seeded["metadata"]["uid"].as_str()
    );
    assert!(d.get("Pod", Some("default"), "seeded").unwrap().is_some());
    assert!(d.remove("pods", None, "seeded").unwrap());
    assert!(!d.remove("pods", None, "seeded").unwrap());
    assert!(matches!(
        d.get("widgets", None, "x"),
        Err(apiserver_double::Error::UnknownKind(_))
    ));
    assert!(d
        .insert(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}))
        .is_err());
    d.shutdown().await;
}

#[tokio::test]
async fn a_spawned_process_reaches_the_double_through_kubeconfig() {
    let d = ApiServerDouble::start_tls().await.unwrap();
    d.insert(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "from-parent"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    d.write_kubeconfig(&path).unwrap();
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_uses_kubeconfig_from_env",
            "--ignored",
            "--test-threads=1",
        ])
        .env("KUBECONFIG", &path)
        .env("DOUBLE_CHILD_EXPECT", "from-parent")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    assert!(d.get("pods", None, "from-child").unwrap().is_some());
    d.shutdown().await;
}

/// Runs in a child process started by `a_spawned_process_reaches_the_double_through_kubeconfig`,
/// with `KUBECONFIG` pointing at the double, like a spawned `tether` would.
#[tokio::test]
#[ignore = "run as a child process by a_spawned_process_reaches_the_double_through_kubeconfig"]
async fn child_uses_kubeconfig_from_env() {
    let want = std::env::var("DOUBLE_CHILD_EXPECT")
        .expect("DOUBLE_CHILD_EXPECT unset: this test is started by a_spawned_process_reaches_the_double_through_kubeconfig");
    assert!(std::env::var_os("KUBECONFIG").is_some(), "KUBECONFIG unset");
    apiserver_double::install_crypto_provider();
    let client = Client::try_default().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.get(&want).await.unwrap();
    pods.create(&PostParams::default(), &pod("from-child", json!({}), "n"))
        .await
        .unwrap();
}

#[tokio::test]
async fn wait_for_sees_changes_made_by_clients() {
    let (d, client) = http().await;
    let nodes: Api<Node> = Api::all(client);
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "w"}})).unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let writer = nodes.clone();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let taint =
            json!({"spec": {"taints": [{"key": "tether.dev/quarantine", "effect": "NoExecute"}]}});
        writer
            .patch("w", &PatchParams::default(), &Patch::Merge(taint))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.delete("w", &DeleteParams::default()).await.unwrap();
    });
    let tainted = d
        .wait_for("nodes", None, "w", Duration::from_secs(10), |n| {
            n.is_some_and(|n| n.pointer("/spec/taints/0/key").is_some())
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tainted["spec"]["taints"][0]["effect"], "NoExecute");
    let gone = d
        .wait_for("Node", None, "w", Duration::from_secs(10), |n| n.is_none())
        .await
        .unwrap();
    assert!(gone.is_none());
    task.await.unwrap();
    let e = d
        .wait_for("nodes", None, "never", Duration::from_millis(100), |n| {
            n.is_some()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("waited "), "{e}");
    assert!(
        e.to_string()
            .ends_with("for nodes never; last state: absent"),
        "{e}"
    );
    d.shutdown().await;
}

/// The fully populated Pod from kubernetes/api's testdata survives seeding and a GET through
/// kube-rs unchanged, apart from the resourceVersion the double assigns.
#[tokio::test]
async fn a_fully_populated_pod_round_trips() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/kubernetes-api/testdata/HEAD/core.v1.Pod.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (d, client) = http().await;
    d.insert(fixture.clone()).unwrap();
    let ar = kube::core::ApiResource::erase::<Pod>(&());
    let api: Api<kube::core::DynamicObject> =
        Api::namespaced_with(client.clone(), "namespaceValue", &ar);
    let got = serde_json::to_value(api.get("nameValue").await.unwrap()).unwrap();
    let mut want = fixture.clone();
    want["metadata"]["resourceVersion"] = got["metadata"]["resourceVersion"].clone();
    assert_eq!(got, want);
    // and typed: k8s-openapi reads it
    let typed: Api<Pod> = Api::namespaced(client, "namespaceValue");
    let pod = typed.get("nameValue").await.unwrap();
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("imageValue")
    );
    d.shutdown().await;
}

#[tokio::test]
async fn delete_collection_by_label() {
    let (d, client) = http().await;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    for (n, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        pods.create(&PostParams::default(), &pod(n, json!({"app": app}), "n"))
            .await
            .unwrap();
    }
    let gone = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=x"),
        )
        .await
        .unwrap();
    let names: Vec<String> = gone
        .left()
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let left: Vec<String> = d
        .list("pods", Some("default"))
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["c"]);
    d.shutdown().await;
}
