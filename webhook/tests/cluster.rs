//! The webhook's view of the cluster (`--kube`), against the Kubernetes API server double
//! driven by the real kube-rs client: namespace labels in rule scopes, the pods CONNECT
//! reviews target, and what happens when the API is missing, broken or slow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver_double::{ApiServerDouble, Running};
use common::*;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use webhook::cli::{start, WebhookArgs};
use webhook::cluster::{ClusterArgs, KubeMode};
use webhook::policy::PolicyLoader;

const RULES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cluster.yaml");

/// How long a condition that depends on the namespace watch may take to hold.
const WATCH_DEADLINE: Duration = Duration::from_secs(20);

/// A double on HTTPS and a kubeconfig file for it.
async fn double() -> (Running, tempfile::TempDir, PathBuf) {
    let api = ApiServerDouble::start_tls().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    (api, dir, kubeconfig)
}

fn cluster_args(pki: &Pki, kube: KubeMode, kubeconfig: &Path) -> WebhookArgs {
    let mut a = args(pki);
    a.rules = vec![RULES.into()];
    a.cluster = ClusterArgs {
        kube,
        kubeconfig: Some(kubeconfig.to_path_buf()),
        pod_lookup_timeout_ms: 2000,
        pod_labels_max_age_secs: 30,
    };
    a
}

async fn start_hook(a: &WebhookArgs) -> Hook {
    start_with(a, Arc::new(PolicyLoader::new(a.rules.clone()))).await
}

async fn metrics_text(c: &reqwest::Client, url: &str) -> String {
    c.get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn lookups(text: &str, kind: &str, result: &str) -> f64 {
    metric(
        text,
        &format!("tether_webhook_cluster_lookups_total{{kind=\"{kind}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Polls `check` until it holds, failing after `WATCH_DEADLINE`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WATCH_DEADLINE;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WATCH_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn namespace(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}
    }))
    .unwrap()
}

/// Creates pod `default/name` with `labels` in the double, through the kube-rs client.
async fn create_pod(pods: &Api<Pod>, name: &str, labels: Value) {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

fn host_network_review(uid: &str, ns: &str) -> Value {
    let mut r = pod_review(uid, ns, "web", json!({"app": "web"}));
    r["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    r
}

/// The answer's `allowed`, and the denial message or the warnings.
async fn answer(c: &reqwest::Client, url: &str, review: &Value) -> (bool, String) {
    let (status, v) = post(c, url, review.to_string()).await;
    assert_eq!(status, 200, "{v}");
    let allowed = v["response"]["allowed"].as_bool().unwrap();
    let text = if allowed {
        v["response"]["warnings"].to_string()
    } else {
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    (allowed, text)
}

#[tokio::test]
async fn namespace_label_scopes_follow_the_namespace_watch() {
    let (api, _dir, kubeconfig) = double().await;
    let client = api.client().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PostParams::default();
    namespaces
        .create(
            &pp,
            &namespace("team-enforced", json!({"tether.io/enforce": "true"})),
        )
        .await
        .unwrap();
    namespaces
        .create(&pp, &namespace("team-open", json!({"team": "open"})))
        .await
        .unwrap();

    let pki = Pki::new();
    let hook = start_hook(&cluster_args(&pki, KubeMode::On, &kubeconfig)).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;
    let (_, r) = readyz(&c, &hook.url).await;
    assert_eq!(r["cluster"]["in_use"], true, "{r}");
    assert_eq!(r["cluster"]["namespaces_synced"], true, "{r}");
    let expected = namespaces
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .len();
    assert_eq!(r["cluster"]["namespaces"], expected, "{r}");

    // CREATE: enforced in the labelled namespace, detected elsewhere.
    let (allowed, msg) = answer(&c, &hook.url, &host_network_review("h-1", "team-enforced")).await;
    assert!(!allowed);
    assert!(
        msg.contains("Host Network In Enforced Namespace") && msg.contains("team-enforced/web"),
        "{msg}"
    );
    let (allowed, warnings) = answer(&c, &hook.url, &host_network_review("h-2", "team-open")).await;
    assert!(allowed);
    assert!(
        warnings.contains("Host Network In Enforced Namespace"),
        "{warnings}"
    );

    // CONNECT: the same scope on an exec rule.
    let (allowed, msg) = answer(
        &c,
        &hook.url,
        &exec_review("e-1", "team-enforced", "web", "alice", &["bash"]),
    )
    .await;
    assert!(!allowed);
    assert!(msg.contains("Shell Exec In Enforced Namespace"), "{msg}");
    let (allowed, warnings) = answer(
        &c,
        &hook.url,
        &exec_review("e-2", "team-open", "web", "alice", &["bash"]),
    )
    .await;
    assert!(allowed);
    assert!(
        warnings.contains("Shell Exec In Enforced Namespace"),
        "{warnings}"
    );

    // A namespace the store does not know: labels unknown, out of scope.
    let (allowed, _) = answer(&c, &hook.url, &host_network_review("h-3", "no-such-ns")).await;
    assert!(allowed);

    // Relabelling changes the verdict once the watch has seen it.
    namespaces
        .patch(
            "team-open",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tether.io/enforce": "true"}}})),
        )
        .await
        .unwrap();
    let (cr, url) = (&c, hook.url.as_str());
    eventually("team-open enforced after labelling", move || async move {
        !answer(cr, url, &host_network_review("h-4", "team-open"))
            .await
            .0
    })
    .await;
    namespaces
        .patch(
            "team-enforced",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tether.io/enforce": null}}})),
        )
        .await
        .unwrap();
    eventually(
        "team-enforced detect-only after unlabelling",
        move || async move {
            answer(cr, url, &host_network_review("h-5", "team-enforced"))
                .await
                .0
        },
    )
    .await;

    // A namespace created after start enters the store; a deleted one leaves it.
    namespaces
        .create(
            &pp,
            &namespace("team-new", json!({"tether.io/enforce": "true"})),
        )
        .await
        .unwrap();
    eventually("team-new enforced once created", move || async move {
        !answer(cr, url, &host_network_review("h-6", "team-new"))
            .await
            .0
    })
    .await;
    namespaces
        .delete("team-new", &DeleteParams::default())
        .await
        .unwrap();
    eventually("team-new out of scope once deleted", move || async move {
        answer(cr, url, &host_network_review("h-7", "team-new"))
            .await
            .0
    })
    .await;

    let text = metrics_text(&c, &hook.url).await;
    assert!(lookups(&text, "namespace", "known") >= 6.0, "{text}");
    assert!(lookups(&text, "namespace", "not_in_store") >= 2.0, "{text}");
    assert_eq!(
        metric(&text, "tether_webhook_cluster_namespaces "),
        Some(expected as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, "tether_webhook_cluster_watch_errors_total"),
        Some(0.0),
        "{text}"
    );
    hook.running.stop().await.unwrap();
    api.shutdown().await;
}

#[tokio::test]
async fn exec_into_a_pod_created_before_start_sees_its_labels() {
    let (api, _dir, kubeconfig) = double().await;
    let pods: Api<Pod> = Api::namespaced(api.client().unwrap(), "default");
    create_pod(&pods, "vault-0", json!({"protected": "true"})).await;

    let pki = Pki::new();
    let hook = start_hook(&cluster_args(&pki, KubeMode::On, &kubeconfig)).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;
    api.clear_requests();

    for uid in ["x-1", "x-2"] {
        let (allowed, msg) = answer(
            &c,
            &hook.url,
            &exec_review(uid, "default", "vault-0", "alice", &["sh"]),
        )
        .await;
        assert!(!allowed, "{uid}");
        assert!(
            msg.contains("Exec Into Protected Pod") && msg.contains("default/vault-0"),
            "{msg}"
        );
    }
    // The first exec read the pod; the second used the cached labels.
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/namespaces/default/pods/vault-0")
        .count();
    assert_eq!(gets, 1);

    // A pod that does not exist: no labels, allowed.
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &exec_review("x-3", "default", "ghost-0", "alice", &["sh"]),
    )
    .await;
    assert!(allowed);

    let text = metrics_text(&c, &hook.url).await;
    assert_eq!(lookups(&text, "pod", "found"), 1.0, "{text}");
    assert_eq!(lookups(&text, "pod", "not_found"), 1.0, "{text}");
    assert_eq!(lookups(&text, "pod", "error"), 0.0, "{text}");
    hook.running.stop().await.unwrap();
    api.shutdown().await;
}

/// The bundled library (no `--rules`) refuses a session into a pod labelled
/// `tether.io/protected=true`: the review carries no labels, the webhook looks the pod up.
#[tokio::test]
async fn bundled_library_refuses_execs_into_labelled_protected_pods() {
    let (api, _dir, kubeconfig) = double().await;
    let pods: Api<Pod> = Api::namespaced(api.client().unwrap(), "default");
    for (name, labels) in [
        (
            "vault-0",
            json!({"app": "vault", "tether.io/protected": "true"}),
        ),
        ("web-0", json!({"app": "web"})),
    ] {
        create_pod(&pods, name, labels).await;
    }
    let pki = Pki::new();
    let mut a = cluster_args(&pki, KubeMode::On, &kubeconfig);
    a.rules = vec![];
    let hook = start_hook(&a).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;

    let (allowed, msg) = answer(
        &c,
        &hook.url,
        &exec_review("l-1", "default", "vault-0", "alice", &["sh"]),
    )
    .await;
    assert!(!allowed, "{msg}");
    assert!(
        msg.contains("Exec Into Labelled Protected Pod") && msg.contains("pod=vault-0"),
        "{msg}"
    );
    let (allowed, msg) = answer(
        &c,
        &hook.url,
        &exec_review("l-2", "default", "web-0", "alice", &["sh"]),
    )
    .await;
    assert!(allowed, "{msg}");
    hook.running.stop().await.unwrap();
    api.shutdown().await;
}

/// A label put on a running pod (no UPDATE review reached the webhook) is seen once the
/// cached labels are older than `--pod-labels-max-age-secs`; a pod that is gone is forgotten.
#[tokio::test]
async fn labels_put_on_a_running_pod_are_read_again_after_the_max_age() {
    let (api, _dir, kubeconfig) = double().await;
    let pods: Api<Pod> = Api::namespaced(api.client().unwrap(), "default");
    create_pod(&pods, "db-0", json!({"app": "db"})).await;
    let pki = Pki::new();
    let mut a = cluster_args(&pki, KubeMode::On, &kubeconfig);
    a.cluster.pod_labels_max_age_secs = 0;
    let hook = start_hook(&a).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;

    let exec = |uid: &str| exec_review(uid, "default", "db-0", "alice", &["sh"]);
    let (allowed, msg) = answer(&c, &hook.url, &exec("m-1")).await;
    assert!(allowed, "{msg}");
    // Labelled protected behind the webhook's back (no admission review for it).
    pods.patch(
        "db-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"protected": "true"}}})),
    )
    .await
    .unwrap();
    let (allowed, msg) = answer(&c, &hook.url, &exec("m-2")).await;
    assert!(!allowed, "the new label was not read: {msg}");
    assert!(msg.contains("Exec Into Protected Pod"), "{msg}");

    pods.delete("db-0", &DeleteParams::default()).await.unwrap();
    let (allowed, msg) = answer(&c, &hook.url, &exec("m-3")).await;
    assert!(allowed, "a deleted pod's labels were still used: {msg}");
    hook.running.stop().await.unwrap();
    api.shutdown().await;
}

/// A Kubernetes API that answers `/version`, fails namespace lists with 500, never answers
/// for pod `default/slow`, and fails every other pod with 500.
async fn broken_api() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let status = |code: u16, message: &str| {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": "InternalError", "code": code})
        .to_string()
    };
    let failing = status(500, "etcd is on fire");
    let failing_pods = failing.clone();
    let app = axum::Router::new()
        .route(
            "/version",
            get(|| async {
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "0",
                       "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                       "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"})
                .to_string()
            }),
        )
        .route(
            "/api/v1/namespaces",
            get(move || {
                let body = failing.clone();
                async move { (StatusCode::INTERNAL_SERVER_ERROR, body) }
            }),
        )
        .route(
            "/api/v1/namespaces/default/pods/{name}",
            get(
                move |axum::extract::Path(name): axum::extract::Path<String>| {
                    let body = failing_pods.clone();
                    async move {
                        if name == "slow" {
                            std::future::pending::<()>().await;
                        }
                        (StatusCode::INTERNAL_SERVER_ERROR, body)
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

fn write_kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_broken_api_keeps_the_webhook_serving_but_not_ready() {
    let (addr, server) = broken_api().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &format!("http://{addr}"));
    let pki = Pki::new();
    let mut a = cluster_args(&pki, KubeMode::On, &kubeconfig);
    // Long enough for the failing GET to fail rather than time out on a loaded machine.
    a.cluster.pod_lookup_timeout_ms = 500;
    // Cached labels are always read again (and then, the API failing, used anyway).
    a.cluster.pod_labels_max_age_secs = 0;
    let hook = start_hook(&a).await;
    let c = client_for(&pki);

    // Not ready, and /readyz says why, with the watch's error.
    let (cr, url) = (&c, hook.url.as_str());
    eventually(
        "readyz names the failing namespace list",
        move || async move {
            let (status, r) = readyz(cr, url).await;
            let reasons = r["reasons"].to_string();
            status == 503
                && r["rules"]["loaded"] == true
                && reasons.contains("namespace list not synced yet")
                && reasons.contains("etcd is on fire")
        },
    )
    .await;

    // Reviews are still answered: a pod that cannot be read, or that the API never
    // returns, leaves the exec without pod labels.
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &exec_review("b-1", "default", "broken", "alice", &["sh"]),
    )
    .await;
    assert!(allowed);
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &exec_review("b-2", "default", "slow", "alice", &["sh"]),
    )
    .await;
    assert!(allowed);
    // Namespace labels not synced: the scoped rule only detects.
    let (allowed, warnings) = answer(&c, &hook.url, &host_network_review("b-3", "default")).await;
    assert!(allowed);
    assert!(
        warnings.contains("Host Network In Enforced Namespace"),
        "{warnings}"
    );

    let text = metrics_text(&c, &hook.url).await;
    assert_eq!(lookups(&text, "pod", "error"), 1.0, "{text}");
    assert_eq!(lookups(&text, "pod", "timeout"), 1.0, "{text}");
    assert!(lookups(&text, "namespace", "not_synced") >= 3.0, "{text}");
    assert!(
        metric(&text, "tether_webhook_cluster_watch_errors_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // Labels the webhook learnt from the pod's CREATE review, older than the maximum age:
    // the pod cannot be read again, so they are used however old.
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &pod_review("b-4", "default", "broken", json!({"protected": "true"})),
    )
    .await;
    assert!(allowed);
    let (allowed, msg) = answer(
        &c,
        &hook.url,
        &exec_review("b-5", "default", "broken", "alice", &["sh"]),
    )
    .await;
    assert!(!allowed, "the cached labels were not used: {msg}");
    assert!(msg.contains("Exec Into Protected Pod"), "{msg}");
    let text = metrics_text(&c, &hook.url).await;
    assert_eq!(
        lookups(&text, "pod", "error"),
        2.0,
        "the pod was read again: {text}"
    );
    hook.running.stop().await.unwrap();
    server.abort();
}

/// A loopback address nothing listens on.
async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn an_unreachable_api_is_left_out_with_auto_and_refused_with_on() {
    let addr = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write_kubeconfig(dir.path(), &format!("https://{addr}"));

    // auto: serves without the cluster, ready, and says why.
    let pki = Pki::new();
    let hook = start_hook(&cluster_args(&pki, KubeMode::Auto, &kubeconfig)).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;
    let (_, r) = readyz(&c, &hook.url).await;
    assert_eq!(r["cluster"]["mode"], "auto", "{r}");
    assert_eq!(r["cluster"]["in_use"], false, "{r}");
    let reason = r["cluster"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("does not answer") && reason.contains(&addr.to_string()),
        "{reason}"
    );
    let (allowed, warnings) = answer(&c, &hook.url, &host_network_review("u-1", "default")).await;
    assert!(allowed);
    assert!(
        warnings.contains("Host Network In Enforced Namespace"),
        "{warnings}"
    );
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &exec_review("u-2", "default", "web-0", "alice", &["sh"]),
    )
    .await;
    assert!(allowed);
    let text = metrics_text(&c, &hook.url).await;
    assert!(
        !text.contains("tether_webhook_cluster_lookups_total{"),
        "{text}"
    );
    hook.running.stop().await.unwrap();

    // on: refuses to start, naming the API and the flag.
    let pki = Pki::new();
    let a = cluster_args(&pki, KubeMode::On, &kubeconfig);
    let err = start(
        &a,
        Arc::new(PolicyLoader::new(a.rules.clone())),
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--kube on")
            && err.contains("does not answer")
            && err.contains(&addr.to_string()),
        "{err}"
    );

    // A --kubeconfig that does not load is an error whatever the mode.
    for kube in [KubeMode::On, KubeMode::Auto] {
        let missing = dir.path().join("missing-kubeconfig");
        let a = cluster_args(&pki, kube, &missing);
        let err = start(
            &a,
            Arc::new(PolicyLoader::new(a.rules.clone())),
            None,
            CancellationToken::new(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--kubeconfig") && err.contains("missing-kubeconfig"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn kube_off_never_calls_the_api() {
    let (api, _dir, kubeconfig) = double().await;
    let pki = Pki::new();
    let hook = start_hook(&cluster_args(&pki, KubeMode::Off, &kubeconfig)).await;
    let c = client_for(&pki);
    ready(&hook.url, &c).await;
    let (allowed, _) = answer(
        &c,
        &hook.url,
        &exec_review("o-1", "default", "vault-0", "alice", &["sh"]),
    )
    .await;
    assert!(allowed);
    let (allowed, _) = answer(&c, &hook.url, &host_network_review("o-2", "default")).await;
    assert!(allowed);
    let (_, r) = readyz(&c, &hook.url).await;
    assert_eq!(r["cluster"]["mode"], "off", "{r}");
    assert_eq!(r["cluster"]["in_use"], false, "{r}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    hook.running.stop().await.unwrap();
    api.shutdown().await;
}

fn client_for(pki: &Pki) -> reqwest::Client {
    client(&pki.ca_pem())
}
