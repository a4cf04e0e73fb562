//! `tether node`, `tether node status`, `tether node unload`.

use std::process::ExitCode;

pub use ::node_enforcer::cli::NodeArgs;

/// Runs the node enforcer (until SIGINT/SIGTERM), or its `status` / `unload` subcommand.
pub fn run(args: NodeArgs) -> ExitCode {
    ::node_enforcer::cli::run(args)
}
