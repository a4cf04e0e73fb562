//! Access tokens for Google APIs: `GOOGLE_OAUTH_ACCESS_TOKEN` when set, else the GKE /
//! GCE metadata server (workload identity). Emulators and test doubles need none.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

#[derive(Debug)]
pub(crate) enum TokenSource {
    /// No authorization header (emulator, loopback double).
    None,
    Static(String),
    Metadata(Mutex<Option<(String, Instant)>>),
}

#[derive(Deserialize)]
struct MetadataToken {
    access_token: String,
    expires_in: u64,
}

impl TokenSource {
    /// Chooses how to authenticate to `endpoint`.
    pub(crate) fn for_endpoint(endpoint: &str) -> Self {
        if let Ok(t) = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN") {
            if !t.trim().is_empty() {
                return Self::Static(t.trim().to_owned());
            }
        }
        if endpoint.contains(".googleapis.com") {
            Self::Metadata(Mutex::new(None))
        } else {
            Self::None
        }
    }

    /// The `Authorization` header value, if any.
    pub(crate) async fn header(&self, http: &reqwest::Client) -> Result<Option<String>, String> {
        match self {
            Self::None => Ok(None),
            Self::Static(t) => Ok(Some(format!("Bearer {t}"))),
            Self::Metadata(cache) => {
                let mut cache = cache.lock().await;
                if let Some((t, until)) = cache.as_ref() {
                    if Instant::now() < *until {
                        return Ok(Some(format!("Bearer {t}")));
                    }
                }
                let resp = http
                    .get(METADATA_TOKEN_URL)
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .map_err(|e| format!("metadata server token request failed: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!(
                        "metadata server answered {} to the token request",
                        resp.status()
                    ));
                }
                let tok: MetadataToken = resp
                    .json()
                    .await
                    .map_err(|e| format!("metadata server token is not valid json: {e}"))?;
                let until = Instant::now() + Duration::from_secs(tok.expires_in.saturating_sub(60));
                let header = format!("Bearer {}", tok.access_token);
                *cache = Some((tok.access_token, until));
                Ok(Some(header))
            }
        }
    }
}
