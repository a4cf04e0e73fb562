//! Certificates for Tether's HTTPS endpoints.
//!
//! - [`generate`] makes a CA and a serving certificate (rcgen, ECDSA P-256);
//!   [`rotate`] renews the serving certificate, and the CA ahead of its expiry, keeping a
//!   CA bundle that trusts old and new during the overlap (see [`authority`]).
//! - [`ReloadingCertResolver`] serves the certificate files to rustls and follows them on
//!   change without dropping established connections.
//! - [`cli`] holds the `tether certs generate|rotate` arguments and their `run`.

pub mod authority;
pub mod cli;
mod error;
mod pem;
mod reload;

pub use authority::{
    generate, generate_at, rotate, rotate_at, CertPaths, Issued, Lifetimes, ServingNames,
    CA_BUNDLE, CA_CERT, CA_KEY, TLS_CERT, TLS_KEY,
};
pub use error::CertError;
pub use pem::{parse_certs, parse_key, rfc3339, CertInfo};
pub use reload::{crypto_provider, CertStatus, ReloadingCertResolver};
