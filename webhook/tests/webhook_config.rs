//! The printed ValidatingWebhookConfiguration is valid Kubernetes JSON and is accepted by
//! the API server double through kube-rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use webhook::webhook_config::{render, WebhookConfigArgs};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: WebhookConfigArgs,
}

fn printed(dir: &std::path::Path, extra: &[&str]) -> String {
    let bundle = dir.join("ca-bundle.crt");
    let mut argv = vec!["webhook-config", "--ca-bundle", bundle.to_str().unwrap()];
    argv.extend_from_slice(extra);
    render(&Cli::parse_from(argv).args).unwrap()
}

#[tokio::test]
async fn printed_configuration_is_accepted_by_the_api_server_double() {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(
        &certs::ServingNames {
            dns: vec!["tether-webhook.tether-system.svc".into()],
            ips: vec![],
        },
        &certs::Lifetimes::default(),
        dir.path(),
    )
    .unwrap();
    let api = apiserver_double::ApiServerDouble::start_tls()
        .await
        .unwrap();
    let client = api.client().unwrap();
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client);

    for (name, extra) in [
        ("tether", vec![]),
        (
            "tether-url",
            vec![
                "--name",
                "tether-url",
                "--url",
                "https://tether.example.com:8443",
                "--failure-policy",
                "fail",
                "--timeout-seconds",
                "10",
                "--exclude-namespace",
                "monitoring",
            ],
        ),
        (
            "tether-yaml",
            vec!["--name", "tether-yaml", "--output", "yaml"],
        ),
    ] {
        let text = printed(dir.path(), &extra);
        // Valid Kubernetes JSON (or YAML): it deserializes into the typed object.
        let parsed: ValidatingWebhookConfiguration = if extra.contains(&"yaml") {
            serde_yaml::from_str(&text).unwrap()
        } else {
            serde_json::from_str(&text).unwrap()
        };
        let created = configs
            .create(&PostParams::default(), &parsed)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(created.metadata.name.as_deref(), Some(name));
        let fetched = configs.get(name).await.unwrap();
        let hooks = fetched.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
        assert_eq!(hooks[0].name, "admission.tether.io");
        assert_eq!(hooks[1].name, "exec.tether.io");
        let bundle = std::fs::read(dir.path().join("ca-bundle.crt")).unwrap();
        assert_eq!(hooks[1].client_config.ca_bundle.as_ref().unwrap().0, bundle);
        let expected_policy = if extra.contains(&"fail") {
            "Fail"
        } else {
            "Ignore"
        };
        assert_eq!(hooks[0].failure_policy.as_deref(), Some(expected_policy));
        let excluded = hooks[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0]
            .values
            .clone()
            .unwrap();
        assert!(
            excluded.contains(&"kube-system".to_string())
                && excluded.contains(&"tether-system".to_string())
        );
        if extra.contains(&"monitoring") {
            assert!(excluded.contains(&"monitoring".to_string()));
            assert_eq!(
                hooks[0].client_config.url.as_deref(),
                Some("https://tether.example.com:8443/validate")
            );
        }
    }

    // The double does validate: the same configuration with a two-segment webhook name is
    // refused with the API server's message.
    let text = printed(dir.path(), &["--name", "broken"]);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["webhooks"][0]["name"] = serde_json::json!("tether.io");
    let broken: ValidatingWebhookConfiguration = serde_json::from_value(v).unwrap();
    let err = configs
        .create(&PostParams::default(), &broken)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at least three segments"), "{err}");
    api.shutdown().await;
}
