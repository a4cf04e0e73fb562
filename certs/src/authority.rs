//! The certificate authority and the serving certificate: generation and rotation.
//!
//! A directory holds `ca.crt`, `ca.key` (the CA), `tls.crt`, `tls.key` (the serving
//! certificate, signed by the CA) and `ca-bundle.crt` (every CA the webhook's clients
//! should trust: the current one and, during an overlap after a CA renewal, the previous
//! one until it expires). The `caBundle` of the ValidatingWebhookConfiguration is
//! `ca-bundle.crt`.
//!
//! Rotation order, so that the API server never meets a certificate it does not trust:
//! `tether certs rotate` renews the CA ahead of its expiry (`ca_renew_before_days`),
//! puts old and new CA into `ca-bundle.crt`, and signs the new serving certificate with
//! the new CA; apply `tether webhook-config` (which reads `ca-bundle.crt`) before the
//! webhook picks the new serving certificate up, or rotate the CA early enough that the
//! bundle is applied in between (the bundle trusts both, so applying it first is always
//! safe).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::pem::{parse_certs, read, CertInfo};
use crate::CertError;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_BUNDLE: &str = "ca-bundle.crt";

/// Validity periods. Defaults: CA 3 years, serving certificate 90 days, renew the CA when
/// fewer than 180 days remain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca_days: u32,
    pub serving_days: u32,
    pub ca_renew_before_days: u32,
}

impl Lifetimes {
    pub const fn default_const() -> Self {
        Self {
            ca_days: 1095,
            serving_days: 90,
            ca_renew_before_days: 180,
        }
    }

    fn check(&self) -> Result<(), CertError> {
        if self.ca_days == 0 || self.serving_days == 0 {
            return Err(CertError::Lifetime(
                "ca_days and serving_days must be at least 1".into(),
            ));
        }
        if self.ca_renew_before_days >= self.ca_days {
            return Err(CertError::Lifetime(format!(
                "ca_renew_before_days ({}) must be less than ca_days ({})",
                self.ca_renew_before_days, self.ca_days
            )));
        }
        Ok(())
    }
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self::default_const()
    }
}

/// The names the serving certificate is valid for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServingNames {
    fn check(&self) -> Result<(), CertError> {
        if self.dns.is_empty() && self.ips.is_empty() {
            return Err(CertError::NoNames);
        }
        for name in &self.dns {
            let valid = !name.is_empty()
                && name.len() <= 253
                && name.split('.').enumerate().all(|(i, label)| {
                    (i == 0 && label == "*")
                        || (!label.is_empty()
                            && label.len() <= 63
                            && !label.starts_with('-')
                            && !label.ends_with('-')
                            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
                });
            if !valid {
                return Err(CertError::InvalidName {
                    name: name.clone(),
                    what: "not a DNS name (labels of letters, digits and '-', at most 63 characters each)".into(),
                });
            }
        }
        Ok(())
    }
}

/// The paths of one certificate directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub ca_bundle: PathBuf,
}

impl CertPaths {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            tls_cert: dir.join(TLS_CERT),
            tls_key: dir.join(TLS_KEY),
            ca_bundle: dir.join(CA_BUNDLE),
        }
    }
}

/// What `generate` or `rotate` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    pub paths: CertPaths,
    pub ca: CertInfo,
    pub serving: CertInfo,
    /// Whether a new CA was made (always true for `generate`).
    pub ca_renewed: bool,
    /// How many CAs `ca-bundle.crt` holds.
    pub bundle_len: usize,
}

fn new_ca(lifetimes: &Lifetimes, now: OffsetDateTime) -> Result<(String, KeyPair), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tether");
    dn.push(
        DnType::CommonName,
        format!("Tether webhook CA {}", now.unix_timestamp()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(i64::from(lifetimes.ca_days));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

fn new_serving(
    names: &ServingNames,
    lifetimes: &Lifetimes,
    now: OffsetDateTime,
    ca_not_after: OffsetDateTime,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, KeyPair), CertError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.dns.clone())?;
    for ip in &names.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Tether");
    let cn = names
        .dns
        .first()
        .cloned()
        .or_else(|| names.ips.first().map(ToString::to_string))
        .unwrap_or_default();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::minutes(5);
    let wanted = now + Duration::days(i64::from(lifetimes.serving_days));
    params.not_after = wanted.min(ca_not_after);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key))
}

/// Writes `contents` to `path` through a temporary file and a rename, so that a reader
/// never sees a half-written file. Keys get mode 0600.
fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp).map_err(|e| CertError::io(&tmp, e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CertError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| CertError::io(path, e))
}

/// Makes a new CA and a serving certificate for `names` in `out` (created if missing).
pub fn generate(
    names: &ServingNames,
    lifetimes: &Lifetimes,
    out: &Path,
) -> Result<Issued, CertError> {
    generate_at(names, lifetimes, out, OffsetDateTime::now_utc())
}

/// [`generate`] at a given time (tests).
pub fn generate_at(
    names: &ServingNames,
    lifetimes: &Lifetimes,
    out: &Path,
    now: OffsetDateTime,
) -> Result<Issued, CertError> {
    names.check()?;
    lifetimes.check()?;
    fs::create_dir_all(out).map_err(|e| CertError::io(out, e))?;
    let paths = CertPaths::in_dir(out);
    let (ca_pem, ca_key) = new_ca(lifetimes, now)?;
    let ca_not_after = now + Duration::days(i64::from(lifetimes.ca_days));
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let (tls_pem, tls_key) = new_serving(names, lifetimes, now, ca_not_after, &issuer)?;
    write_atomic(&paths.ca_bundle, ca_pem.as_bytes(), false)?;
    write_atomic(&paths.ca_key, issuer.key().serialize_pem().as_bytes(), true)?;
    write_atomic(&paths.ca_cert, ca_pem.as_bytes(), false)?;
    write_atomic(&paths.tls_key, tls_key.serialize_pem().as_bytes(), true)?;
    write_atomic(&paths.tls_cert, tls_pem.as_bytes(), false)?;
    let issued = Issued {
        ca: CertInfo::read_first(&paths.ca_cert)?,
        serving: CertInfo::read_first(&paths.tls_cert)?,
        paths,
        ca_renewed: true,
        bundle_len: 1,
    };
    tracing::info!(
        dir = %out.display(),
        ca_not_after = %crate::rfc3339(issued.ca.not_after),
        serving_not_after = %crate::rfc3339(issued.serving.not_after),
        dns = ?names.dns,
        ips = ?names.ips,
        "certificates generated"
    );
    Ok(issued)
}

/// Splits a PEM text into its CERTIFICATE blocks, each kept as text.
fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start..];
        let Some(end) = after.find(END) else { break };
        let block_end = end + END.len();
        blocks.push(format!("{}\n", &after[..block_end]));
        rest = &after[block_end..];
    }
    blocks
}

/// Renews the serving certificate in `dir` (same names as the current one unless `names`
/// is given), and the CA too when it expires within `ca_renew_before_days`. The bundle
/// keeps every CA that is still valid, newest first.
pub fn rotate(
    dir: &Path,
    names: Option<&ServingNames>,
    lifetimes: &Lifetimes,
) -> Result<Issued, CertError> {
    rotate_at(dir, names, lifetimes, OffsetDateTime::now_utc())
}

/// [`rotate`] at a given time (tests).
pub fn rotate_at(
    dir: &Path,
    names: Option<&ServingNames>,
    lifetimes: &Lifetimes,
    now: OffsetDateTime,
) -> Result<Issued, CertError> {
    lifetimes.check()?;
    let paths = CertPaths::in_dir(dir);
    let old_ca_bytes = read(&paths.ca_cert)?;
    let old_ca_pem = String::from_utf8(old_ca_bytes.clone()).map_err(|_| CertError::Pem {
        path: paths.ca_cert.clone(),
        what: "not UTF-8 text".into(),
    })?;
    let old_ca_der = parse_certs(&paths.ca_cert, &old_ca_bytes)?;
    let old_ca = match old_ca_der.first() {
        Some(der) => CertInfo::from_der(&paths.ca_cert, der)?,
        None => {
            return Err(CertError::NoCertificate {
                path: paths.ca_cert.clone(),
            })
        }
    };
    let names = match names {
        Some(n) => n.clone(),
        None => {
            let current = CertInfo::read_first(&paths.tls_cert)?;
            ServingNames {
                dns: current.dns_names,
                ips: current.ip_addresses,
            }
        }
    };
    names.check()?;

    let renew_ca =
        old_ca.not_after - now < Duration::days(i64::from(lifetimes.ca_renew_before_days));
    let (ca_pem, ca_key, ca_not_after) = if renew_ca {
        let (pem, key) = new_ca(lifetimes, now)?;
        (pem, key, now + Duration::days(i64::from(lifetimes.ca_days)))
    } else {
        let key_bytes = read(&paths.ca_key)?;
        let key_text = String::from_utf8(key_bytes).map_err(|_| CertError::Pem {
            path: paths.ca_key.clone(),
            what: "not UTF-8 text".into(),
        })?;
        let key = KeyPair::from_pem(&key_text).map_err(|e| CertError::UnusableKey {
            path: paths.ca_key.clone(),
            what: e.to_string(),
        })?;
        (old_ca_pem.clone(), key, old_ca.not_after)
    };

    // The bundle: the current CA first, then every other CA still valid, no duplicates.
    let mut bundle_blocks: Vec<String> = pem_blocks(&ca_pem);
    let previous_bundle = match fs::read_to_string(&paths.ca_bundle) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(CertError::io(&paths.ca_bundle, e)),
    };
    let mut candidates = pem_blocks(&old_ca_pem);
    candidates.extend(pem_blocks(&previous_bundle));
    for block in candidates {
        if bundle_blocks.contains(&block) {
            continue;
        }
        let ders = parse_certs(&paths.ca_bundle, block.as_bytes())?;
        let still_valid = match ders.first() {
            Some(der) => CertInfo::from_der(&paths.ca_bundle, der)?.not_after > now,
            None => false,
        };
        if still_valid {
            bundle_blocks.push(block);
        }
    }
    let bundle = bundle_blocks.concat();

    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let (tls_pem, tls_key) = new_serving(&names, lifetimes, now, ca_not_after, &issuer)?;
    write_atomic(&paths.ca_bundle, bundle.as_bytes(), false)?;
    if renew_ca {
        write_atomic(&paths.ca_key, issuer.key().serialize_pem().as_bytes(), true)?;
        write_atomic(&paths.ca_cert, ca_pem.as_bytes(), false)?;
    }
    write_atomic(&paths.tls_key, tls_key.serialize_pem().as_bytes(), true)?;
    write_atomic(&paths.tls_cert, tls_pem.as_bytes(), false)?;
    let issued = Issued {
        ca: CertInfo::read_first(&paths.ca_cert)?,
        serving: CertInfo::read_first(&paths.tls_cert)?,
        paths,
        ca_renewed: renew_ca,
        bundle_len: bundle_blocks.len(),
    };
    tracing::info!(
        dir = %dir.display(),
        ca_renewed = renew_ca,
        bundle_len = issued.bundle_len,
        ca_not_after = %crate::rfc3339(issued.ca.not_after),
        serving_not_after = %crate::rfc3339(issued.serving.not_after),
        "certificates rotated"
    );
    Ok(issued)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServingNames {
        ServingNames {
            dns: vec!["tether.tether-system.svc".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        }
    }

    #[test]
    fn generate_writes_a_ca_and_a_serving_cert_for_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let issued = generate(&names(), &Lifetimes::default(), dir.path()).unwrap();
        assert!(issued.ca.is_ca);
        assert!(!issued.serving.is_ca);
        assert_eq!(issued.serving.dns_names, vec!["tether.tether-system.svc"]);
        assert_eq!(
            issued.serving.ip_addresses,
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let days = (issued.serving.not_after - issued.serving.not_before).whole_days();
        assert_eq!(days, 90);
        for f in [CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, CA_BUNDLE] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(TLS_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn generate_rejects_bad_names_and_lifetimes() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate(&ServingNames::default(), &Lifetimes::default(), dir.path());
        assert!(matches!(err, Err(CertError::NoNames)));
        let bad = ServingNames {
            dns: vec!["bad name".into()],
            ips: vec![],
        };
        let err = generate(&bad, &Lifetimes::default(), dir.path()).unwrap_err();
        assert!(err.to_string().contains("\"bad name\""), "{err}");
        let lifetimes = Lifetimes {
            ca_days: 10,
            serving_days: 5,
            ca_renew_before_days: 10,
        };
        assert!(matches!(
            generate(&names(), &lifetimes, dir.path()),
            Err(CertError::Lifetime(_))
        ));
    }

    #[test]
    fn rotate_keeps_the_ca_until_near_expiry_then_overlaps_old_and_new() {
        let dir = tempfile::tempdir().unwrap();
        let lifetimes = Lifetimes::default();
        let t0 = OffsetDateTime::now_utc();
        let first = generate_at(&names(), &lifetimes, dir.path(), t0).unwrap();

        // Early rotation: same CA, new serving certificate with the same names.
        let second = rotate_at(dir.path(), None, &lifetimes, t0 + Duration::days(30)).unwrap();
        assert!(!second.ca_renewed);
        assert_eq!(second.ca.serial, first.ca.serial);
        assert_ne!(second.serving.serial, first.serving.serial);
        assert_eq!(second.serving.dns_names, first.serving.dns_names);
        assert_eq!(second.bundle_len, 1);

        // Near the CA's expiry: new CA, bundle trusts both.
        let late = t0 + Duration::days(1000);
        let third = rotate_at(dir.path(), None, &lifetimes, late).unwrap();
        assert!(third.ca_renewed);
        assert_ne!(third.ca.serial, first.ca.serial);
        assert_eq!(third.bundle_len, 2);
        let bundle = CertInfo::read_all(&third.paths.ca_bundle).unwrap();
        assert_eq!(bundle[0].serial, third.ca.serial);
        assert_eq!(bundle[1].serial, first.ca.serial);

        // After the old CA expired it leaves the bundle.
        let much_later = t0 + Duration::days(1200);
        let fourth = rotate_at(dir.path(), None, &lifetimes, much_later).unwrap();
        assert!(!fourth.ca_renewed);
        assert_eq!(fourth.bundle_len, 1);
    }

    #[test]
    fn serving_cert_never_outlives_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let lifetimes = Lifetimes {
            ca_days: 30,
            serving_days: 90,
            ca_renew_before_days: 1,
        };
        let issued = generate(&names(), &lifetimes, dir.path()).unwrap();
        assert!(issued.serving.not_after <= issued.ca.not_after);
    }

    #[test]
    fn rotate_without_a_directory_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = rotate(&dir.path().join("nope"), None, &Lifetimes::default()).unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }
}
