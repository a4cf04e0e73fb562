//! A rustls certificate resolver that follows the serving certificate files.
//!
//! The resolver hands out the current [`CertifiedKey`] to every new TLS handshake.
//! [`ReloadingCertResolver::reload_if_changed`] re-reads the files and swaps the key in
//! one step when their contents changed and form a valid pair; connections already
//! established keep the session they negotiated, so nothing is dropped. A change that does
//! not load (half-written pair, key of another certificate) keeps the previous
//! certificate serving and is reported through [`ReloadingCertResolver::status`] until a
//! later change loads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::pem::{parse_certs, parse_key, read, CertInfo};
use crate::CertError;

/// The state of the served certificate.
#[derive(Debug, Clone)]
pub struct CertStatus {
    /// Increments on every successful load (the first load is 1).
    pub generation: u64,
    pub not_after: OffsetDateTime,
    pub serial: String,
    /// The error of the last attempt to load changed files, if it failed.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

/// A [`ResolvesServerCert`] reading `tls.crt` / `tls.key`, reloadable.
#[derive(Debug)]
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
    last_bytes: Mutex<(Vec<u8>, Vec<u8>)>,
    last_error: Mutex<Option<String>>,
    generation: AtomicU64,
}

fn load_pair(
    provider: &CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
    cert_bytes: &[u8],
    key_bytes: &[u8],
) -> Result<Loaded, CertError> {
    let chain = parse_certs(cert_path, cert_bytes)?;
    let info = match chain.first() {
        Some(der) => CertInfo::from_der(cert_path, der)?,
        None => {
            return Err(CertError::NoCertificate {
                path: cert_path.to_path_buf(),
            })
        }
    };
    let key_der = parse_key(key_path, key_bytes)?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CertError::UnusableKey {
            path: key_path.to_path_buf(),
            what: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| CertError::KeyMismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

/// The crypto provider Tether uses for TLS (ring).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ReloadingCertResolver {
    /// Loads the pair; fails when it does not form a usable certificate and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, CertError> {
        let provider = crypto_provider();
        let cert_bytes = read(cert_path)?;
        let key_bytes = read(key_path)?;
        let loaded = load_pair(&provider, cert_path, key_path, &cert_bytes, &key_bytes)?;
        tracing::info!(
            cert = %cert_path.display(),
            serial = %loaded.info.serial,
            not_after = %crate::rfc3339(loaded.info.not_after),
            "serving certificate loaded"
        );
        Ok(Arc::new(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(loaded)),
            last_bytes: Mutex::new((cert_bytes, key_bytes)),
            last_error: Mutex::new(None),
            generation: AtomicU64::new(1),
        }))
    }

    /// Re-reads the files; swaps the served certificate when they changed and load.
    /// `Ok(true)`: a new certificate is now served; `Ok(false)`: nothing changed.
    /// On error the previous certificate keeps serving.
    pub fn reload_if_changed(&self) -> Result<bool, CertError> {
        let result = self.try_reload();
        if let Ok(mut last_error) = self.last_error.lock() {
            match &result {
                Ok(true) => *last_error = None,
                Ok(false) => {}
                Err(e) => *last_error = Some(e.to_string()),
            }
        }
        result
    }

    fn try_reload(&self) -> Result<bool, CertError> {
        let cert_bytes = read(&self.cert_path)?;
        let key_bytes = read(&self.key_path)?;
        {
            let last = self
                .last_bytes
                .lock()
                .map_err(|_| CertError::Reload("certificate state lock poisoned".into()))?;
            if last.0 == cert_bytes && last.1 == key_bytes {
                return Ok(false);
            }
        }
        let loaded = load_pair(
            &self.provider,
            &self.cert_path,
            &self.key_path,
            &cert_bytes,
            &key_bytes,
        )?;
        tracing::info!(
            cert = %self.cert_path.display(),
            serial = %loaded.info.serial,
            not_after = %crate::rfc3339(loaded.info.not_after),
            "serving certificate reloaded"
        );
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(loaded);
        }
        if let Ok(mut last) = self.last_bytes.lock() {
            *last = (cert_bytes, key_bytes);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// The served certificate and the outcome of the last reload attempt.
    pub fn status(&self) -> CertStatus {
        let (not_after, serial) = match self.current.read() {
            Ok(c) => (c.info.not_after, c.info.serial.clone()),
            Err(p) => {
                let c = p.into_inner();
                (c.info.not_after, c.info.serial.clone())
            }
        };
        CertStatus {
            generation: self.generation.load(Ordering::SeqCst),
            not_after,
            serial,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// A rustls server configuration serving through this resolver, offering the given
    /// ALPN protocols (e.g. `h2`, `http/1.1`).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, CertError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Polls the files every `interval` until `shutdown`, reloading on change. The
    /// callback sees each outcome that is not "unchanged" (for metrics and logs).
    pub fn spawn_watcher<F>(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
        on_outcome: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: Fn(&Result<bool, CertError>) + Send + 'static,
    {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let this = self.clone();
                let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed())
                    .await
                    .unwrap_or_else(|e| Err(CertError::Reload(format!("reload task failed: {e}"))));
                match &outcome {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(e) => tracing::warn!(
                        cert = %self.cert_path.display(),
                        error = %e,
                        "serving certificate reload failed; previous certificate keeps serving"
                    ),
                }
                on_outcome(&outcome);
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.current.read() {
            Ok(c) => Some(c.key.clone()),
            Err(p) => Some(p.into_inner().key.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, Lifetimes, ServingNames};

    fn names() -> ServingNames {
        ServingNames {
            dns: vec!["localhost".into()],
            ips: vec![],
        }
    }

    #[test]
    fn reload_swaps_on_change_and_keeps_serving_on_a_bad_pair() {
        let dir = tempfile::tempdir().unwrap();
        let issued = generate(&names(), &Lifetimes::default(), dir.path()).unwrap();
        let resolver =
            ReloadingCertResolver::load(&issued.paths.tls_cert, &issued.paths.tls_key).unwrap();
        assert_eq!(resolver.status().generation, 1);
        assert!(!resolver.reload_if_changed().unwrap());

        let key_of_first = std::fs::read(&issued.paths.tls_key).unwrap();
        let again = crate::rotate(dir.path(), None, &Lifetimes::default()).unwrap();
        assert!(resolver.reload_if_changed().unwrap());
        let status = resolver.status();
        assert_eq!(status.generation, 2);
        assert_eq!(status.serial, again.serving.serial);

        // The old key with the new certificate: a mismatch, reported, old pair kept.
        std::fs::write(&issued.paths.tls_key, key_of_first).unwrap();
        let err = resolver.reload_if_changed().unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        let status = resolver.status();
        assert_eq!(status.generation, 2);
        assert_eq!(status.serial, again.serving.serial);
        assert!(status.last_error.unwrap().contains("does not match"));

        // Garbage certificate: reported with the path.
        std::fs::write(&issued.paths.tls_cert, b"not pem").unwrap();
        let err = resolver.reload_if_changed().unwrap_err();
        assert!(err.to_string().contains("tls.crt"), "{err}");
    }

    #[test]
    fn load_names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let issued = generate(&names(), &Lifetimes::default(), dir.path()).unwrap();
        std::fs::write(dir.path().join("empty.key"), b"").unwrap();
        let err =
            ReloadingCertResolver::load(&issued.paths.tls_cert, &dir.path().join("empty.key"))
                .unwrap_err();
        assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
        let err =
            ReloadingCertResolver::load(&dir.path().join("missing.crt"), &issued.paths.tls_key)
                .unwrap_err();
        assert!(err.to_string().contains("missing.crt"), "{err}");
    }
}
