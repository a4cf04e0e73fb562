//! `tether webhook` and `tether webhook-config`.

use std::process::ExitCode;

pub use ::webhook::cli::WebhookArgs;
pub use ::webhook::webhook_config::WebhookConfigArgs;

/// Serves the admission webhook until SIGINT/SIGTERM.
pub fn run(args: WebhookArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tether-webhook")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether webhook: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(::webhook::cli::run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether webhook: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the ValidatingWebhookConfiguration.
pub fn run_config(args: WebhookConfigArgs) -> ExitCode {
    match ::webhook::webhook_config::run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether webhook-config: {e}");
            ExitCode::FAILURE
        }
    }
}
