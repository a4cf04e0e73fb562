//! Concurrency limit with load shedding.
//!
//! At most `max_in_flight` requests run at once; one more is answered `503 Service
//! Unavailable` at once (with `Retry-After: 1`), so an overloaded webhook answers fast
//! and the API server applies the webhook's `failurePolicy` instead of queueing into its
//! own timeout. The permit is shared with the request (extension [`InFlight`]) so that
//! work that outlives the response (an evaluation past its budget) keeps holding it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use crate::metrics::{ErrorKind, Metrics};

/// The permit a request holds while in flight.
#[derive(Debug, Clone)]
pub struct InFlight(pub Arc<OwnedSemaphorePermit>);

#[derive(Debug, Clone)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
    max: usize,
    metrics: Arc<Metrics>,
}

impl ShedLayer {
    pub fn new(max_in_flight: usize, metrics: Arc<Metrics>) -> Self {
        let max = max_in_flight.max(1);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            metrics,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

fn overloaded(max: usize) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": "TooManyRequests",
        "code": 503,
        "message": format!("webhook overloaded: {max} reviews already in flight; request shed"),
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    resp
}

impl<S> Service<Request<Body>> for Shed<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        match self.layer.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let permit = InFlight(Arc::new(permit));
                req.extensions_mut().insert(permit.clone());
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let out = fut.await;
                    drop(permit);
                    out
                })
            }
            Err(_) => {
                self.layer.metrics.error(ErrorKind::Shed);
                tracing::warn!(max_in_flight = self.layer.max, "admission review shed");
                let max = self.layer.max;
                Box::pin(async move { Ok(overloaded(max)) })
            }
        }
    }
}
