//! `--kube` on a host with no Kubernetes client configuration at all (no KUBECONFIG, no
//! ~/.kube/config, not in a cluster). Its own test binary: it changes the process
//! environment, which no other test may see.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use tokio_util::sync::CancellationToken;
use webhook::cli::start;
use webhook::cluster::{ClusterArgs, KubeMode};
use webhook::policy::PolicyLoader;

#[tokio::test]
async fn without_any_configuration_on_refuses_and_auto_serves() {
    let home = tempfile::tempdir().unwrap();
    // The only test of this binary: nothing else reads the environment meanwhile.
    std::env::set_var("HOME", home.path());
    for var in [
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ] {
        std::env::remove_var(var);
    }

    let pki = Pki::new();
    let mut a = args(&pki);
    a.cluster = ClusterArgs {
        kube: KubeMode::On,
        ..ClusterArgs::default()
    };
    let err = start(
        &a,
        Arc::new(PolicyLoader::new(vec![])),
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--kube on: no Kubernetes client configuration found")
            && err.contains("KUBECONFIG"),
        "{err}"
    );

    a.cluster.kube = KubeMode::Auto;
    let hook = start_with(&a, Arc::new(PolicyLoader::new(vec![]))).await;
    let c = client(&pki.ca_pem());
    ready(&hook.url, &c).await;
    let (_, r) = readyz(&c, &hook.url).await;
    assert_eq!(r["cluster"]["in_use"], false, "{r}");
    assert!(
        r["cluster"]["reason"]
            .as_str()
            .unwrap()
            .contains("no Kubernetes client configuration found"),
        "{r}"
    );
    hook.running.stop().await.unwrap();
}
