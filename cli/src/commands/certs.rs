//! `tether certs generate|rotate`.

use std::process::ExitCode;

pub use ::certs::cli::CertsArgs;

pub fn run(args: CertsArgs) -> ExitCode {
    match ::certs::cli::run(&args) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether certs: {e}");
            ExitCode::FAILURE
        }
    }
}
