//! The node's namespace watch against the Kubernetes API server double, driven by kube-rs:
//! labels arrive, follow relabelling and deletion, and feed `namespace_labels` scopes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use node_enforcer::node::scope_miss;
use node_enforcer::pods::{watch_namespaces, PodCache};
use policies::{LabelSelector, Scope};
use tokio_util::sync::CancellationToken;

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn namespace_labels_follow_the_api_and_decide_scopes() {
    let api = apiserver_double::ApiServerDouble::start().await.unwrap();
    let client = api.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = |name: &str, labels: serde_json::Value| -> Namespace {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}
        }))
        .unwrap()
    };
    namespaces
        .create(
            &PostParams::default(),
            &ns("team-a", serde_json::json!({"tether.io/enforce": "true"})),
        )
        .await
        .unwrap();
    namespaces
        .create(&PostParams::default(), &ns("team-b", serde_json::json!({})))
        .await
        .unwrap();

    let cache = PodCache::new();
    assert!(cache
        .namespace_labels("team-a")
        .unwrap_err()
        .contains("no namespace watch"));
    let stop = CancellationToken::new();
    let watch = tokio::spawn(watch_namespaces(client, cache.clone(), stop.clone()));
    until("the first namespace list", || {
        cache.namespace_labels("team-a").is_ok()
    })
    .await;

    let scope = Scope {
        namespace_labels: Some(LabelSelector {
            match_labels: BTreeMap::from([("tether.io/enforce".into(), "true".into())]),
            match_expressions: Vec::new(),
        }),
        ..Scope::default()
    };
    let pod = BTreeMap::new();
    let miss = |name: &str| {
        let labels = cache.namespace_labels(name);
        scope_miss(
            &scope,
            name,
            &pod,
            labels.as_deref().map_err(String::as_str),
        )
    };
    assert_eq!(miss("team-a"), None);
    assert!(miss("team-b").unwrap().contains("do not match"));
    assert!(miss("team-z")
        .unwrap()
        .contains("not in the namespace store"));

    // Relabelling team-b brings it into the scope; team-a's deletion takes it out.
    namespaces
        .patch(
            "team-b",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"tether.io/enforce": "true"}}}),
            ),
        )
        .await
        .unwrap();
    until("team-b relabelled", || miss("team-b").is_none()).await;
    namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    until("team-a deleted", || miss("team-a").is_some()).await;
    assert!(miss("team-a")
        .unwrap()
        .contains("not in the namespace store"));

    stop.cancel();
    watch.await.unwrap();
    api.shutdown().await;
}
