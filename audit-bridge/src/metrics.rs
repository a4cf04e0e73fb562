//! The Prometheus endpoint: `GET /metrics` (every counter of [`crate::telemetry`], per
//! source where it applies, and the registered gauges) and `GET /healthz`, over plain HTTP
//! on `--metrics-addr`, as Prometheus scrapes a pod's metrics port.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of Prometheus' text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, CONTENT_TYPE_TEXT)],
        crate::telemetry::render_prometheus(),
    )
}

/// The endpoint's routes.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves the endpoint on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{AuditEventsReceived, SourceAttemptFailed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_counters_per_source_in_text_format() {
        AuditEventsReceived {
            source: "file:/var/log/\"odd\"\\name.log",
            count: 3,
        }
        .emit();
        SourceAttemptFailed {
            source: "cloudwatch:/aws/eks/metrics-test/cluster",
            error: "refused",
            retry_in_ms: 10,
        }
        .emit();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, stop.clone()));
        let text = get_text(addr, "/metrics").await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains("content-type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(
            text.contains(
                "audit_events_received_total{source=\"file:/var/log/\\\"odd\\\"\\\\name.log\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "audit_source_errors_total{source=\"cloudwatch:/aws/eks/metrics-test/cluster\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE audit_alerts_emitted_total counter"),
            "{text}"
        );
        // every sample line is `name[{labels}] value`
        for line in text.lines().skip_while(|l| !l.is_empty()).skip(1) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
        assert!(get_text(addr, "/healthz").await.ends_with("ok"));
        assert!(get_text(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
