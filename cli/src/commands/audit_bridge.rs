//! `tether audit-bridge`.

use std::process::ExitCode;

pub use ::audit_bridge::Args as AuditBridgeArgs;

/// Runs the audit bridge until SIGINT/SIGTERM.
pub fn run(args: AuditBridgeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether-audit-bridge")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether audit-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(::audit_bridge::run(args)) {
        Ok(summary) => {
            let s = summary.pipeline;
            eprintln!(
                "tether audit-bridge: {} events, {} rejected, {} alerts, {} sessions",
                s.events, s.rejected, s.alerts, s.sessions
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether audit-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
