//! The routes and the `/validate` handler ([`crate::serve`] serves them over TLS).
//!
//! `/validate` runs: body limit -> parse -> (invalid | evaluate under budget) -> decide
//! -> sessions, sink, decision log, metrics -> AdmissionReview in the request's version.
//! The concurrency limit is the [`ShedLayer`](crate::layers::ShedLayer) around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use engine::Sink;
use http_body_util::BodyExt;

use crate::cluster::ClusterAccess;
use crate::decide::{decide, failed, Decided, FailureMode};
use crate::decision_log::{DecisionLog, DecisionRecord};
use crate::layers::{InFlight, ShedLayer};
use crate::metrics::{ErrorKind, Metrics};
use crate::review::{self, AdmissionResponse, ReviewRequest};
use crate::rules::{ReviewContext, RuleHit, Rules, RulesHandle, Started};
use crate::session::{exec_session, session_kind, PodLabelCache};

/// Tunables of the admission handler.
#[derive(Debug, Clone)]
pub struct HandlerOptions {
    /// Force every rule to detect mode.
    pub detect_only: bool,
    /// Answer for reviews that cannot be evaluated.
    pub failure_mode: FailureMode,
    /// Wall-clock budget of one evaluation; zero evaluates inline without a budget.
    pub eval_budget: Duration,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Reviews evaluated at once before shedding.
    pub max_in_flight: usize,
    /// Pods whose labels are remembered for CONNECT reviews.
    pub pod_label_cache: usize,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self {
            detect_only: false,
            failure_mode: FailureMode::Allow,
            eval_budget: Duration::from_millis(100),
            max_body_bytes: 3 * 1024 * 1024,
            max_in_flight: 1024,
            pod_label_cache: 100_000,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the handlers share.
pub struct WebhookState {
    pub rules: Arc<RulesHandle>,
    /// Where evaluations under a budget run.
    pub eval_pool: Arc<crate::eval_pool::EvalPool>,
    pub certs: Option<Arc<certs::ReloadingCertResolver>>,
    pub metrics: Arc<Metrics>,
    pub sink: Option<Arc<dyn Sink>>,
    pub decision_log: Option<DecisionLog>,
    pub labels: PodLabelCache,
    /// The Kubernetes API, when the webhook uses it (namespace labels, CONNECT target pods).
    pub cluster: ClusterAccess,
    pub options: HandlerOptions,
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("rules", &self.rules)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn now_ns() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(now).unwrap_or(i64::MAX)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An HTTP error answer shaped as a Kubernetes `Status`.
fn status_error(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code.as_u16(),
        "message": message,
    });
    json_response(code, body.to_string().into_bytes())
}

/// The router of the webhook.
pub fn router(state: Arc<WebhookState>) -> Router {
    let shed = ShedLayer::new(state.options.max_in_flight, state.metrics.clone());
    Router::new()
        .route("/validate", post(validate).route_layer(shed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<WebhookState>>) -> Response<Body> {
    let rules = state.rules.status();
    let cert = state.certs.as_ref().map(|c| c.status());
    let mut reasons = Vec::new();
    if !rules.loaded {
        reasons.push(match &rules.last_error {
            Some(e) => format!("rules not loaded: {e}"),
            None => "rules not loaded yet".to_string(),
        });
    }
    if let Some(why) = state.cluster.not_ready_reason() {
        reasons.push(why);
    }
    let ready = reasons.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "reasons": reasons,
        "rules": {
            "loaded": rules.loaded,
            "generation": rules.generation,
            "count": rules.rules,
            "source": rules.source,
            "last_reload_error": rules.last_error,
        },
        "certificate": cert.map(|c| serde_json::json!({
            "generation": c.generation,
            "serial": c.serial,
            "not_after": certs::rfc3339(c.not_after),
            "last_reload_error": c.last_error,
        })),
        "cluster": state.cluster.status_json(),
    });
    json_response(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        body.to_string().into_bytes(),
    )
}

async fn metrics(State(state): State<Arc<WebhookState>>) -> Response<Body> {
    match state.metrics.encode() {
        Ok(text) => {
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(e) => status_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &format!("metrics encoding failed: {e}"),
        ),
    }
}

fn resource_label(req: &ReviewRequest) -> String {
    match &req.subresource {
        Some(sub) => format!("{}/{}", req.resource, sub),
        None => req.resource.clone(),
    }
}

/// Outcome of evaluation under the budget.
enum Evaluated {
    Hits(Vec<RuleHit>, Duration),
    Failed(String, ErrorKind),
}

/// Reviews whose body is at most this large start their evaluation on the I/O thread.
const INLINE_START_MAX_BODY: usize = 64 * 1024;
/// How long an evaluation runs on the I/O thread (at most half the budget) before what is
/// left moves to the evaluation threads.
const INLINE_SLICE: Duration = Duration::from_micros(500);

/// Evaluates a review: inline without a budget; with one, starting inline for a slice
/// (small reviews) and going on on the evaluation threads, answered when the budget runs
/// out.
async fn evaluate(
    state: &Arc<WebhookState>,
    rules: Option<Arc<dyn Rules>>,
    body: policies::Doc,
    body_len: usize,
    req: &ReviewRequest,
    in_flight: Option<InFlight>,
) -> Evaluated {
    let Some(rules) = rules else {
        let why = match state.rules.status().last_error {
            Some(e) => format!("rules not loaded: {e}"),
            None => "rules not loaded yet".to_string(),
        };
        return Evaluated::Failed(why, ErrorKind::NotReady);
    };
    let budget = state.options.eval_budget;
    // Time spent reading the target pod from the API comes out of the budget.
    let mut lookup_spent = Duration::ZERO;
    let labels = if session_kind(req).is_some() {
        match (&req.namespace, &req.name) {
            (Some(ns), Some(name)) => {
                let cluster = state.cluster.cluster.as_ref();
                let max_age = cluster.map(|c| c.pod_labels_max_age());
                match (state.labels.labels(ns, name, max_age), cluster) {
                    (Some(l), _) => Some(l),
                    // Not cached, or cached too long ago: read the pod, within part of the
                    // budget; when that fails, what the cache has, however old.
                    (None, Some(cluster)) => {
                        let start = Instant::now();
                        let timeout = cluster.lookup_timeout(budget);
                        let found = cluster.pod_labels(ns, name, timeout, &state.labels).await;
                        lookup_spent = start.elapsed();
                        found.or_else(|| state.labels.labels(ns, name, None))
                    }
                    (None, None) => None,
                }
            }
            _ => None,
        }
    } else {
        None
    };
    let namespace_labels = state.cluster.namespace_labels(req.namespace.as_deref());
    if budget.is_zero() {
        let start = Instant::now();
        // A rule engine bug must not take the connection down: a panic is an internal
        // error, answered per the failure mode.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let context = ReviewContext {
                pod_labels: labels.as_ref(),
                namespace_labels: namespace_labels.as_labels(),
            };
            rules.evaluate_in(body, req, &context)
        }));
        return match outcome {
            Ok(Ok(hits)) => Evaluated::Hits(hits, start.elapsed()),
            Ok(Err(e)) => Evaluated::Failed(format!("evaluation failed: {e}"), ErrorKind::Internal),
            Err(_) => Evaluated::Failed("evaluation panicked".to_string(), ErrorKind::Internal),
        };
    }
    // A small review starts on this thread: most finish within the slice, which spares
    // them the hand-off to an evaluation thread and back (a context switch each way, the
    // larger part of their cost). What is left after the slice, and every large review
    // (whose single rules may take long), runs on the evaluation threads under the budget.
    let started = Instant::now();
    let mut inline_took = Duration::ZERO;
    let rest = if body_len <= INLINE_START_MAX_BODY {
        let slice = INLINE_SLICE.min(budget / 2);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let context = ReviewContext {
                pod_labels: labels.as_ref(),
                namespace_labels: namespace_labels.as_labels(),
            };
            rules
                .clone()
                .evaluate_started(body, req, &context, started + slice)
        }));
        inline_took = started.elapsed();
        match outcome {
            Ok(Started::Done(Ok(hits))) => return Evaluated::Hits(hits, inline_took),
            Ok(Started::Done(Err(e))) => {
                return Evaluated::Failed(format!("evaluation failed: {e}"), ErrorKind::Internal)
            }
            Err(_) => {
                return Evaluated::Failed("evaluation panicked".to_string(), ErrorKind::Internal)
            }
            Ok(Started::Rest(rest)) => rest,
        }
    } else {
        let req_owned = req.clone();
        Box::new(move |context: &ReviewContext<'_>| rules.evaluate_in(body, &req_owned, context))
    };
    let task = state.eval_pool.run(move || {
        // The in-flight permit stays held until the evaluation really ends.
        let _permit = in_flight;
        let start = Instant::now();
        let context = ReviewContext {
            pod_labels: labels.as_ref(),
            namespace_labels: namespace_labels.as_labels(),
        };
        let out = rest(&context);
        (out, start.elapsed())
    });
    let left = budget
        .saturating_sub(lookup_spent)
        .saturating_sub(started.elapsed());
    match tokio::time::timeout(left, task).await {
        Ok(Ok(Ok((Ok(hits), took)))) => Evaluated::Hits(hits, inline_took + took),
        Ok(Ok(Ok((Err(e), _)))) => {
            Evaluated::Failed(format!("evaluation failed: {e}"), ErrorKind::Internal)
        }
        Ok(Ok(Err(e))) => Evaluated::Failed(e.to_string(), ErrorKind::Internal),
        Ok(Err(_)) => Evaluated::Failed(
            "evaluation ended without a result".to_string(),
            ErrorKind::Internal,
        ),
        Err(_) => Evaluated::Failed(
            format!(
                "evaluation exceeded its budget of {} ms",
                budget.as_millis()
            ),
            ErrorKind::Budget,
        ),
    }
}

/// How much of a body over the limit is still read, and discarded, before the answer: a
/// client that is still sending when the connection closes gets a reset, not the answer.
const DISCARD_MAX: u64 = 16 * 1024 * 1024;

/// A request body as `/validate` reads it.
enum ReadBody {
    Whole(bytes::Bytes),
    /// Over the limit. What followed the limit was read and discarded, up to
    /// [`DISCARD_MAX`] more; `drained` when that reached the body's end.
    TooLarge {
        drained: bool,
    },
}

/// Reads a request body of at most `max` bytes.
async fn read_body(mut body: Body, max: usize) -> Result<ReadBody, axum::Error> {
    let mut first: Option<bytes::Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut len = 0u64;
    let limit = max as u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        len = len.saturating_add(data.len() as u64);
        if len > limit {
            first = None;
            joined = Vec::new();
            if len > limit.saturating_add(DISCARD_MAX) {
                return Ok(ReadBody::TooLarge { drained: false });
            }
            continue;
        }
        match first.take() {
            // Most bodies arrive in one piece: kept without a copy.
            None if joined.is_empty() => first = Some(data),
            Some(f) => {
                joined.reserve(f.len() + data.len());
                joined.extend_from_slice(&f);
                joined.extend_from_slice(&data);
            }
            None => joined.extend_from_slice(&data),
        }
    }
    if len > limit {
        return Ok(ReadBody::TooLarge { drained: true });
    }
    Ok(ReadBody::Whole(first.unwrap_or_else(|| joined.into())))
}

/// The answer, with `Connection: close`: sent before the request's body was read to its
/// end, after which the connection cannot carry another request.
fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v
            .to_str()
            .map(|s| {
                let media = s.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false),
    }
}

async fn validate(
    State(state): State<Arc<WebhookState>>,
    in_flight: Option<Extension<InFlight>>,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let max = state.options.max_body_bytes;
    if !is_json_content_type(&headers) {
        state.metrics.error(ErrorKind::UnsupportedMediaType);
        let got = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return status_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("content type {got:?} is not supported: send application/json"),
        );
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `drained`: the body was read to its end, so the connection can serve the next request;
    // otherwise the answer closes it (a client must not send its next request on it).
    let too_large = |state: &WebhookState, drained: bool| {
        state.metrics.error(ErrorKind::Oversize);
        let message = match declared {
            Some(n) => format!("body of {n} bytes exceeds the limit of {max} bytes"),
            None => format!("body exceeds the limit of {max} bytes"),
        };
        let resp = status_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        );
        if drained {
            resp
        } else {
            closing(resp)
        }
    };
    if declared.is_some_and(|n| n > (max as u64).saturating_add(DISCARD_MAX)) {
        return too_large(&state, false);
    }
    let body_timeout = state.options.body_timeout;
    let bytes = match tokio::time::timeout(body_timeout, read_body(body, max)).await {
        Ok(Ok(ReadBody::Whole(bytes))) => bytes,
        Ok(Ok(ReadBody::TooLarge { drained })) => return too_large(&state, drained),
        Ok(Err(e)) => {
            state.metrics.error(ErrorKind::Malformed);
            return closing(status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("body could not be read: {e}"),
            ));
        }
        Err(_) => {
            state.metrics.error(ErrorKind::Malformed);
            return closing(status_error(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                &format!("body not received within {} ms", body_timeout.as_millis()),
            ));
        }
    };
    // One generation of the rules for the whole review: the parse keeps what they read.
    let rules = state.rules.current();
    let options = review::ParseOptions {
        keep_managed_fields: rules.as_ref().is_none_or(|r| r.reads_managed_fields()),
    };
    let parsed = match review::parse_with(&bytes, options) {
        Ok(p) => p,
        Err(e) => {
            state.metrics.error(ErrorKind::Malformed);
            tracing::warn!(error = %e.0, bytes = bytes.len(), "malformed admission review");
            return status_error(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string());
        }
    };
    let version = parsed.version;
    let req = match parsed.request {
        Ok(r) => r,
        Err(invalid) => {
            state
                .metrics
                .review_answered("unknown", "unknown", None, "invalid");
            tracing::warn!(uid = %parsed.uid, error = %invalid.0, "invalid admission request");
            let resp = AdmissionResponse::invalid(&parsed.uid, &invalid);
            record_invalid(&state, &parsed.body, &parsed.uid, &resp);
            return json_response(StatusCode::OK, review::encode(version, &resp));
        }
    };
    let body = parsed.body;
    state.labels.observe(&req, &body);
    let started = now_ns();
    let session = exec_session(&req, &body, started);
    let in_flight = in_flight.map(|Extension(p)| p);

    let decided: Decided = match evaluate(&state, rules, body, bytes.len(), &req, in_flight).await {
        Evaluated::Hits(hits, took) => {
            state.metrics.evaluation_seconds.observe(took.as_secs_f64());
            let d = decide(&req, hits, state.options.detect_only, started);
            for v in &d.decision.rules {
                let mode = if v.mode == "enforce" {
                    "enforce"
                } else {
                    "detect"
                };
                state.metrics.rule_hit(&v.rule, mode);
            }
            d
        }
        Evaluated::Failed(why, kind) => {
            state.metrics.error(kind);
            tracing::error!(
                uid = %req.uid,
                error = %why,
                failure_mode = state.options.failure_mode.as_str(),
                "admission review not evaluated; answered per failure mode"
            );
            failed(&req, &why, state.options.failure_mode, started)
        }
    };
    let Decided {
        mut response,
        would_response,
        decision,
    } = decided;

    if let Some(session) = session {
        if response.allowed {
            // The API server prefixes the key with the webhook's name, so the audit event
            // carries `<webhook name>/session` (`exec.tether.io/session` with the
            // configuration `tether webhook-config` prints).
            response
                .audit_annotations
                .insert("session".to_string(), session.id.clone());
            state.metrics.session_recorded(session.kind.as_str());
            tracing::info!(
                session = %session.id,
                kind = session.kind.as_str(),
                user = %session.user,
                namespace = %session.namespace,
                pod = %session.pod,
                command = ?session.command,
                "exec session recorded"
            );
            if let Some(sink) = &state.sink {
                if let Err(e) = sink.session(session) {
                    state.metrics.error(ErrorKind::Sink);
                    tracing::error!(error = %e, "exec session not delivered to the sink");
                }
            }
        }
    }

    let decision_label = match decision.outcome {
        engine::DecisionOutcome::Allow => "allow",
        engine::DecisionOutcome::Deny => "deny",
        engine::DecisionOutcome::Error => "error",
    };
    state.metrics.review_answered(
        req.operation.as_str(),
        &req.resource,
        req.subresource.as_deref(),
        decision_label,
    );
    if !decision.rules.is_empty() {
        tracing::info!(
            uid = %req.uid,
            user = %req.username,
            operation = req.operation.as_str(),
            resource = %resource_label(&req),
            namespace = req.namespace.as_deref().unwrap_or(""),
            name = req.name.as_deref().unwrap_or(""),
            decision = decision_label,
            rules = ?decision.rules.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>(),
            "admission decision"
        );
    }
    if let Some(log) = &state.decision_log {
        let record = DecisionRecord {
            decision: &decision,
            groups: &req.groups,
            detect_only: state.options.detect_only,
            response: &response,
            would_response: &would_response,
        };
        if let Err(e) = log.write(&record) {
            state.metrics.error(ErrorKind::DecisionLog);
            tracing::error!(error = %e, uid = %req.uid, "decision not written to the decision log");
        }
    }
    if let Some(sink) = &state.sink {
        if let Err(e) = sink.decision(decision) {
            state.metrics.error(ErrorKind::Sink);
            tracing::error!(error = %e, uid = %req.uid, "decision not delivered to the sink");
        }
    }
    json_response(StatusCode::OK, review::encode(version, &response))
}

/// Records the answer to an invalid review (decision log and sink) with whatever the
/// review says about itself.
fn record_invalid(state: &WebhookState, body: &policies::Doc, uid: &str, resp: &AdmissionResponse) {
    let text = |ptr: &str| {
        body.root()
            .pointer(ptr)
            .and_then(policies::Ref::as_str)
            .map(str::to_string)
    };
    let decision = engine::AdmissionDecision {
        time_ns: now_ns(),
        request_uid: uid.to_string(),
        user: text("/request/userInfo/username").unwrap_or_default(),
        operation: text("/request/operation").unwrap_or_default().into(),
        resource: text("/request/resource/resource").unwrap_or_default(),
        subresource: text("/request/subResource"),
        namespace: text("/request/namespace"),
        name: text("/request/name"),
        outcome: engine::DecisionOutcome::Deny,
        would_outcome: engine::DecisionOutcome::Deny,
        rules: Vec::new(),
        message: resp.status.as_ref().map(|s| s.message.clone()),
    };
    if let Some(log) = &state.decision_log {
        let record = DecisionRecord {
            decision: &decision,
            groups: &[],
            detect_only: state.options.detect_only,
            response: resp,
            would_response: resp,
        };
        if let Err(e) = log.write(&record) {
            state.metrics.error(ErrorKind::DecisionLog);
            tracing::error!(error = %e, uid = %uid, "decision not written to the decision log");
        }
    }
    if let Some(sink) = &state.sink {
        if let Err(e) = sink.decision(decision) {
            state.metrics.error(ErrorKind::Sink);
            tracing::error!(error = %e, uid = %uid, "decision not delivered to the sink");
        }
    }
}
