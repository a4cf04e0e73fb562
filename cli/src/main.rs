//! `tether`: the one binary. Each subcommand wires the crates for one role.

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc: evaluation allocates many small, short-lived values; glibc malloc halves the
/// webhook's throughput (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernetes admission-and-enforcement gateway: ties API identity to what happens inside containers.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    // Each component adds its variant here, dispatched in `main` below.
    /// Rule authoring: lint rules files, list fields, run test suites.
    Policy(commands::policy::PolicyArgs),
    /// Evaluate recorded audit events and AdmissionReviews; print alerts as JSON lines.
    Replay(commands::replay::ReplayArgs),
    /// Make and rotate the webhook's CA and serving certificate.
    Certs(commands::certs::CertsArgs),
    /// Serve the validating admission webhook over HTTPS.
    Webhook(commands::webhook::WebhookArgs),
    /// Print the ValidatingWebhookConfiguration that registers the webhook.
    WebhookConfig(commands::webhook::WebhookConfigArgs),
    /// Run every role on this host with embedded defaults (webhook, audit bridge, node enforcer).
    Up(commands::up::UpArgs),
    /// Read the cluster's audit trail (webhook backend, files, EKS, GKE); alert on k8s_audit rules.
    AuditBridge(Box<commands::audit_bridge::AuditBridgeArgs>),
    /// Evidence for switching rules to enforce: what enforcement did and would have done.
    Rollout(commands::rollout::RolloutArgs),
    /// Run the eBPF node enforcer (`status`: capabilities and per-rule posture; `unload`: remove the pins).
    Node(commands::node::NodeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // rustls' process-wide provider, used by the Kubernetes client: the build links both
    // `ring` and `aws-lc-rs` (the AWS SDK's), so rustls cannot choose one by itself.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    commands::init_tracing();
    match cli.command {
        Command::Policy(args) => commands::policy::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Certs(args) => commands::certs::run(args),
        Command::Webhook(args) => commands::webhook::run(args),
        Command::WebhookConfig(args) => commands::webhook::run_config(args),
        Command::Up(args) => commands::up::run(args),
        Command::AuditBridge(args) => commands::audit_bridge::run(*args),
        Command::Node(args) => commands::node::run(args),
        Command::Rollout(args) => commands::rollout::run(args),
    }
}
