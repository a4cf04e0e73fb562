//! `tether-audit-bridge`: the audit bridge alone, for images that run only this role.
//! It takes exactly the arguments of `tether audit-bridge`.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "tether-audit-bridge", version, about)]
struct Cli {
    #[command(flatten)]
    args: audit_bridge::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether-audit-bridge")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether-audit-bridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(audit_bridge::run(cli.args)) {
        Ok(summary) => {
            let s = summary.pipeline;
            eprintln!(
                "tether-audit-bridge: {} events, {} rejected, {} alerts, {} sessions",
                s.events, s.rejected, s.alerts, s.sessions
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether-audit-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
