//! Reading PEM files: certificate chains, private keys, X.509 facts.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::CertError;

/// Reads a file, naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|e| CertError::io(path, e))
}

/// Every CERTIFICATE block of a PEM text; at least one.
pub fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let mut reader = pem;
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM text.
pub fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    let mut reader = pem;
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| CertError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?
        .ok_or_else(|| CertError::NoPrivateKey {
            path: path.to_path_buf(),
        })
}

/// A time as RFC 3339 (`2029-11-22T11:38:29Z`).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// What Tether needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Hex serial number.
    pub serial: String,
}

impl CertInfo {
    /// Parses one DER certificate.
    pub fn from_der(path: &Path, der: &[u8]) -> Result<Self, CertError> {
        let x509_err = |what: String| CertError::X509 {
            path: path.to_path_buf(),
            what,
        };
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| x509_err(e.to_string()))?;
        let validity = cert.validity();
        let not_before = OffsetDateTime::from_unix_timestamp(validity.not_before.timestamp())
            .map_err(|e| x509_err(format!("notBefore: {e}")))?;
        let not_after = OffsetDateTime::from_unix_timestamp(validity.not_after.timestamp())
            .map_err(|e| x509_err(format!("notAfter: {e}")))?;
        let is_ca = cert.is_ca();
        let mut dns_names = Vec::new();
        let mut ip_addresses = Vec::new();
        if let Some(san) = cert
            .subject_alternative_name()
            .map_err(|e| x509_err(format!("subjectAltName: {e}")))?
        {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        dns_names.push((*d).to_string());
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Ok(octets) = <[u8; 4]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(octets));
                        } else if let Ok(octets) = <[u8; 16]>::try_from(*bytes) {
                            ip_addresses.push(IpAddr::from(octets));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            subject: cert.subject().to_string(),
            not_before,
            not_after,
            is_ca,
            dns_names,
            ip_addresses,
            serial: cert.raw_serial_as_string(),
        })
    }

    /// Parses every certificate of a PEM file.
    pub fn read_all(path: &Path) -> Result<Vec<Self>, CertError> {
        let bytes = read(path)?;
        parse_certs(path, &bytes)?
            .iter()
            .map(|der| Self::from_der(path, der))
            .collect()
    }

    /// Parses the first certificate of a PEM file.
    pub fn read_first(path: &Path) -> Result<Self, CertError> {
        let bytes = read(path)?;
        let certs = parse_certs(path, &bytes)?;
        match certs.first() {
            Some(der) => Self::from_der(path, der),
            None => Err(CertError::NoCertificate {
                path: path.to_path_buf(),
            }),
        }
    }
}
