//! `tether webhook-config`: the ValidatingWebhookConfiguration that registers Tether.
//!
//! Two webhooks, one per concern, both with `failurePolicy: Ignore` by default (a webhook
//! that fails closed can brick a cluster), `sideEffects: None`, both review versions, and
//! a namespaceSelector that leaves out `kube-system` and Tether's own namespace:
//!
//! - `admission.tether.io`: CREATE/UPDATE of pods and workloads (and RBAC objects, for the
//!   ClusterRole-wildcard and cluster-admin-binding rules; cluster-scoped objects are not
//!   subject to the namespaceSelector).
//! - `exec.tether.io`: CONNECT on `pods/exec`, `pods/attach`, `pods/portforward`. The API
//!   server prefixes the webhook's audit annotations with the webhook name, so the audit
//!   event of an exec carries `exec.tether.io/session: <session id>`.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::ByteString;

/// The webhook that reviews pods and workloads.
pub const ADMISSION_WEBHOOK: &str = "admission.tether.io";
/// The webhook that reviews exec/attach/port-forward (its name prefixes the `session`
/// audit annotation).
pub const EXEC_WEBHOOK: &str = "exec.tether.io";

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("ca bundle {path}: {source}")]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ca bundle {path}: {what}")]
    BadBundle { path: PathBuf, what: String },
    #[error("--timeout-seconds {0} is out of range: Kubernetes accepts 1 to 30")]
    Timeout(i32),
    #[error("--url {0:?} must be an https:// URL")]
    Url(String),
    #[error("encoding the configuration failed: {0}")]
    Encode(String),
    #[error("writing the configuration failed: {0}")]
    Write(#[source] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailurePolicy {
    Ignore,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Yaml,
}

/// Print a ValidatingWebhookConfiguration for Tether.
#[derive(Debug, Clone, Args)]
pub struct WebhookConfigArgs {
    /// PEM file of the CAs the API server should trust (ca-bundle.crt from `tether certs`).
    #[arg(long, value_name = "FILE")]
    pub ca_bundle: PathBuf,
    /// Name of the ValidatingWebhookConfiguration object.
    #[arg(long, default_value = "tether")]
    pub name: String,
    /// Service in front of `tether webhook`.
    #[arg(long, default_value = "tether-webhook")]
    pub service: String,
    /// Tether's own namespace (the Service's; excluded from review).
    #[arg(long, default_value = "tether-system")]
    pub namespace: String,
    /// Service port.
    #[arg(long, default_value_t = 443)]
    pub port: i32,
    /// Call this https:// URL instead of the Service (webhook outside the cluster); the
    /// path /validate is appended.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// What the API server does when the webhook cannot answer.
    #[arg(long, value_enum, default_value_t = FailurePolicy::Ignore)]
    pub failure_policy: FailurePolicy,
    /// How long the API server waits for an answer (1..=30).
    #[arg(long, default_value_t = 5)]
    pub timeout_seconds: i32,
    /// Further namespaces to leave out (kube-system and --namespace always are).
    #[arg(long = "exclude-namespace", value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

fn rule(ops: &[&str], group: &str, resources: &[&str], scope: &str) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![group.to_string()]),
        api_versions: Some(vec!["*".to_string()]),
        operations: Some(ops.iter().map(|s| (*s).to_string()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_string()).collect()),
        scope: Some(scope.to_string()),
    }
}

/// Builds the configuration.
pub fn build(
    args: &WebhookConfigArgs,
) -> Result<ValidatingWebhookConfiguration, WebhookConfigError> {
    if !(1..=30).contains(&args.timeout_seconds) {
        return Err(WebhookConfigError::Timeout(args.timeout_seconds));
    }
    let bundle =
        std::fs::read(&args.ca_bundle).map_err(|source| WebhookConfigError::ReadBundle {
            path: args.ca_bundle.clone(),
            source,
        })?;
    let certs = certs::parse_certs(&args.ca_bundle, &bundle).map_err(|e| {
        WebhookConfigError::BadBundle {
            path: args.ca_bundle.clone(),
            what: e.to_string(),
        }
    })?;
    for der in &certs {
        let info = certs::CertInfo::from_der(&args.ca_bundle, der).map_err(|e| {
            WebhookConfigError::BadBundle {
                path: args.ca_bundle.clone(),
                what: e.to_string(),
            }
        })?;
        if !info.is_ca {
            return Err(WebhookConfigError::BadBundle {
                path: args.ca_bundle.clone(),
                what: format!("certificate {:?} is not a CA", info.subject),
            });
        }
    }
    let client_config = |_: &str| -> Result<WebhookClientConfig, WebhookConfigError> {
        Ok(match &args.url {
            Some(url) => {
                if !url.starts_with("https://") {
                    return Err(WebhookConfigError::Url(url.clone()));
                }
                WebhookClientConfig {
                    ca_bundle: Some(ByteString(bundle.clone())),
                    service: None,
                    url: Some(format!("{}/validate", url.trim_end_matches('/'))),
                }
            }
            None => WebhookClientConfig {
                ca_bundle: Some(ByteString(bundle.clone())),
                service: Some(ServiceReference {
                    name: args.service.clone(),
                    namespace: args.namespace.clone(),
                    path: Some("/validate".to_string()),
                    port: Some(args.port),
                }),
                url: None,
            },
        })
    };
    let mut excluded = vec!["kube-system".to_string(), args.namespace.clone()];
    for ns in &args.exclude_namespaces {
        if !excluded.contains(ns) {
            excluded.push(ns.clone());
        }
    }
    let namespace_selector = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".to_string(),
            operator: "NotIn".to_string(),
            values: Some(excluded),
        }]),
        match_labels: None,
    };
    let failure_policy = match args.failure_policy {
        FailurePolicy::Ignore => "Ignore",
        FailurePolicy::Fail => "Fail",
    };
    let webhook = |name: &str,
                   rules: Vec<RuleWithOperations>|
     -> Result<ValidatingWebhook, WebhookConfigError> {
        Ok(ValidatingWebhook {
            name: name.to_string(),
            admission_review_versions: vec!["v1".to_string(), "v1beta1".to_string()],
            client_config: client_config(name)?,
            failure_policy: Some(failure_policy.to_string()),
            match_policy: Some("Equivalent".to_string()),
            namespace_selector: Some(namespace_selector.clone()),
            side_effects: "None".to_string(),
            timeout_seconds: Some(args.timeout_seconds),
            rules: Some(rules),
            ..Default::default()
        })
    };
    let cu = ["CREATE", "UPDATE"];
    let admission = webhook(
        ADMISSION_WEBHOOK,
        vec![
            rule(
                &cu,
                "",
                &["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
                "Namespaced",
            ),
            rule(
                &cu,
                "apps",
                &["deployments", "replicasets", "statefulsets", "daemonsets"],
                "Namespaced",
            ),
            rule(&cu, "batch", &["jobs", "cronjobs"], "Namespaced"),
            rule(
                &cu,
                "rbac.authorization.k8s.io",
                &[
                    "clusterroles",
                    "clusterrolebindings",
                    "roles",
                    "rolebindings",
                ],
                "*",
            ),
        ],
    )?;
    let exec = webhook(
        EXEC_WEBHOOK,
        vec![rule(
            &["CONNECT"],
            "",
            &["pods/exec", "pods/attach", "pods/portforward"],
            "Namespaced",
        )],
    )?;
    Ok(ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(args.name.clone()),
            labels: Some(
                [
                    ("app.kubernetes.io/name".to_string(), "tether".to_string()),
                    (
                        "app.kubernetes.io/component".to_string(),
                        "webhook".to_string(),
                    ),
                ]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        },
        webhooks: Some(vec![admission, exec]),
    })
}

/// The configuration as `tether webhook-config` prints it.
pub fn render(args: &WebhookConfigArgs) -> Result<String, WebhookConfigError> {
    let config = build(args)?;
    match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&config)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| WebhookConfigError::Encode(e.to_string())),
        OutputFormat::Yaml => {
            serde_yaml::to_string(&config).map_err(|e| WebhookConfigError::Encode(e.to_string()))
        }
    }
}

/// Runs `tether webhook-config`: prints the configuration on stdout.
pub fn run(args: &WebhookConfigArgs) -> Result<(), WebhookConfigError> {
    let text = render(args)?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(WebhookConfigError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: WebhookConfigArgs,
    }

    fn args(dir: &std::path::Path, extra: &[&str]) -> WebhookConfigArgs {
        let bundle = dir.join("ca-bundle.crt");
        let mut argv = vec!["t", "--ca-bundle", bundle.to_str().unwrap()];
        argv.extend_from_slice(extra);
        T::parse_from(argv).a
    }

    #[test]
    fn defaults_are_safe_and_complete() {
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
        let c = build(&args(dir.path(), &[])).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(v["kind"], "ValidatingWebhookConfiguration");
        let hooks = v["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 2);
        for h in hooks {
            assert_eq!(h["failurePolicy"], "Ignore");
            assert_eq!(h["sideEffects"], "None");
            assert_eq!(h["timeoutSeconds"], 5);
            assert_eq!(
                h["admissionReviewVersions"],
                serde_json::json!(["v1", "v1beta1"])
            );
            let excluded = &h["namespaceSelector"]["matchExpressions"][0]["values"];
            assert_eq!(
                *excluded,
                serde_json::json!(["kube-system", "tether-system"])
            );
            let bundle = h["clientConfig"]["caBundle"].as_str().unwrap();
            assert!(!bundle.is_empty());
            assert_eq!(h["clientConfig"]["service"]["path"], "/validate");
        }
        // Every resource whose object carries a pod spec for the bundled library's Pod
        // Security rules (its `tether_pod_resources` list) is sent to the webhook.
        let sent: Vec<&str> = hooks[0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["resources"].as_array().unwrap())
            .filter_map(|r| r.as_str())
            .collect();
        let (_, macros) = policies::rules::bundled_files()
            .iter()
            .find(|(name, _)| name.ends_with("00-tether-macros.yaml"))
            .unwrap();
        let line = macros
            .lines()
            .skip_while(|l| !l.starts_with("- list: tether_pod_resources"))
            .find(|l| l.trim_start().starts_with("items:"))
            .unwrap();
        let wanted: Vec<&str> = line
            .trim_start()
            .trim_start_matches("items:")
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(str::trim)
            .collect();
        assert!(wanted.len() >= 8, "{wanted:?}");
        for r in wanted.iter().chain(&["pods/ephemeralcontainers"]) {
            assert!(sent.contains(r), "{r} is not sent to the webhook: {sent:?}");
        }
        assert_eq!(
            hooks[1]["rules"][0]["resources"],
            serde_json::json!(["pods/exec", "pods/attach", "pods/portforward"])
        );
        assert_eq!(
            hooks[1]["rules"][0]["operations"],
            serde_json::json!(["CONNECT"])
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = build(&args(dir.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("ca-bundle.crt"), "{err}");
        std::fs::write(dir.path().join("ca-bundle.crt"), "junk").unwrap();
        let err = build(&args(dir.path(), &[])).unwrap_err();
        assert!(err.to_string().contains("no PEM CERTIFICATE"), "{err}");
        let err = build(&args(dir.path(), &["--timeout-seconds", "31"])).unwrap_err();
        assert!(matches!(err, WebhookConfigError::Timeout(31)));
    }
}
