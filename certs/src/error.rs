//! Errors of certificate generation, rotation and loading.

use std::path::PathBuf;

/// Everything that can go wrong while making, reading or serving certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM CERTIFICATE block found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key block found (expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: malformed PEM: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{path}: malformed X.509 certificate: {what}")]
    X509 { path: PathBuf, what: String },
    #[error("{path}: private key is not usable for TLS: {what}")]
    UnusableKey { path: PathBuf, what: String },
    #[error("{key} does not match the certificate in {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid subject name {name:?}: {what}")]
    InvalidName { name: String, what: String },
    #[error("no subject names given: pass at least one --dns or --ip")]
    NoNames,
    #[error("invalid lifetime: {0}")]
    Lifetime(String),
    #[error("certificate reload failed: {0}")]
    Reload(String),
    #[error("tls configuration failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl CertError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
