//! `tether webhook`: the validating admission webhook.
//!
//! A review goes: body (size limit, JSON) -> checked request ([`review`]; unusable bodies
//! are HTTP 400, wrong requests an `invalid` AdmissionResponse) -> `k8s_admission` event
//! evaluated against the rules under a budget ([`rules`], [`policy`]) -> decision per rule
//! mode, scope and the detect-only switch ([`decide`]) -> answer in the review's version.
//! Around it: exec sessions from CONNECT reviews handed to the engine's sink
//! ([`session`]), one JSON line per decision ([`decision_log`]), Prometheus metrics
//! ([`metrics`]), load shedding ([`layers`]). [`server`] serves it over rustls with a
//! certificate that reloads on change; [`cli`] is `tether webhook`; [`webhook_config`]
//! prints the ValidatingWebhookConfiguration that registers it.
//!
//! Two facts rules authors rely on:
//! - A CONNECT review carries `PodExecOptions`, not the pod. The webhook remembers the
//!   labels of pods it saw created or updated and presents them as the CONNECT object's
//!   `metadata.labels`, so `jevt.value[/requestObject/metadata/labels/KEY]` and scope
//!   `object_labels` selectors work on exec, attach and port-forward.
//! - The session id is returned as the audit annotation `session`; the API server prefixes
//!   audit annotation keys with the webhook's name, so the audit event of an exec carries
//!   `exec.tether.io/session` (a key of the form `tether.io/session` would be refused by the
//!   API server, whose audit annotation keys allow one `/`).

pub mod cli;
pub mod decide;
pub mod decision_log;
pub mod eval_pool;
pub mod layers;
pub mod metrics;
pub mod policy;
pub mod review;
pub mod rules;
pub mod server;
pub mod session;
pub mod webhook_config;

pub use decide::FailureMode;
pub use server::{router, serve_tls, HandlerOptions, WebhookState};
