//! Process shutdown, shared by every long-running role.

/// Resolves on SIGINT or SIGTERM (Ctrl-C only where SIGTERM cannot be watched), so a
/// role stops the same way under a terminal, `tether up` and a Kubernetes pod.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
