//! One module per subcommand.

pub mod audit_bridge;
pub mod certs;
pub mod node;
pub mod policy;
pub mod replay;
pub mod rollout;
pub mod suite;
pub mod up;
pub mod webhook;

/// Logs go to stderr as key/value lines; `RUST_LOG` filters them (default `info`).
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// One line per load problem, each `FILE:LINE:COL: rule "NAME": what is wrong`.
pub fn load_error_lines(errors: &policies::LoadErrors) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}
