//! `tether webhook`: the validating admission webhook.
//!
//! A review goes: body (size limit, JSON) -> checked request ([`review`]; unusable bodies
//! are HTTP 400, wrong requests an `invalid` AdmissionResponse) -> `k8s_admission` event
//! evaluated against the rules under a budget ([`rules`], [`policy`]) -> decision per rule
//! mode, scope and the detect-only switch ([`decide`]) -> answer in the review's version.
//! Around it: exec sessions from CONNECT reviews handed to the engine's sink
//! ([`session`]), one JSON line per decision ([`decision_log`]), Prometheus metrics
//! ([`metrics`]), load shedding ([`layers`]). [`server`] is the routes and the handler,
//! [`serve`] serves them over rustls, with a certificate that reloads on change, on one
//! single-threaded runtime per core; [`cli`] is `tether webhook`; [`webhook_config`]
//! prints the ValidatingWebhookConfiguration that registers it; [`cluster`] is its view of
//! the Kubernetes API (`--kube auto|on|off`): a watch of namespace labels and GETs of the
//! pods CONNECT reviews target.
//!
//! Two facts rules authors rely on:
//! - A CONNECT review carries `PodExecOptions`, not the pod. The webhook remembers the
//!   labels of pods it saw created or updated, reads a pod it does not know from the API
//!   (when it has one; see [`cluster`]), and presents the labels as the CONNECT object's
//!   `metadata.labels`, so `jevt.value[/requestObject/metadata/labels/KEY]` and scope
//!   `object_labels` selectors work on exec, attach and port-forward.
//! - Scopes with `namespace_labels` apply only with the API: the webhook watches namespaces
//!   and keeps their labels. Without it, or for a namespace not yet in its store, the
//!   labels are unknown and such a rule only detects there.
//! - The session id is returned as the audit annotation `session`; the API server prefixes
//!   audit annotation keys with the webhook's name, so the audit event of an exec carries
//!   `exec.tether.io/session` (a key of the form `tether.io/session` would be refused by the
//!   API server, whose audit annotation keys allow one `/`).

pub mod cli;
pub mod cluster;
pub mod decide;
pub mod decision_log;
pub mod eval_pool;
pub mod layers;
pub mod metrics;
pub mod policy;
pub mod review;
pub mod rules;
pub mod serve;
pub mod server;
pub mod session;
pub mod webhook_config;

pub use decide::FailureMode;
pub use serve::{serve_tls, serve_tls_on};
pub use server::{router, HandlerOptions, WebhookState};

/// A file of `../shared/fixtures`, for the unit tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");
    std::fs::read(format!("{dir}/{name}")).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}
