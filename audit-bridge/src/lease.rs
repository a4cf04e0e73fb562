//! Leader election with a Kubernetes `coordination.k8s.io/v1` Lease, so that of several
//! bridge replicas only one polls a source (CloudWatch, Pub/Sub, Cloud Logging) at a
//! time. The webhook backend and files need no lease (each replica serves its own
//! requests / node).
//!
//! The holder renews `spec.renewTime` every `renew_secs`; another replica takes the
//! lease only once `renewTime + leaseDurationSeconds` has passed. Every write carries the
//! `resourceVersion` read, so two replicas racing for an expired lease cannot both win:
//! the API server answers the second with 409. A holder that fails to renew before its
//! own lease runs out stops its work first (it cancels it at `renew_deadline_secs`,
//! shorter than the lease duration).

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Lease settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    #[serde(default = "LeaseConfig::default_lease_duration_secs")]
    pub lease_duration_secs: u32,
    /// How long the holder keeps working without a successful renewal.
    #[serde(default = "LeaseConfig::default_renew_deadline_secs")]
    pub renew_deadline_secs: u32,
    /// How often the holder renews and others retry.
    #[serde(default = "LeaseConfig::default_retry_millis")]
    pub retry_millis: u64,
}

impl LeaseConfig {
    pub const fn default_lease_duration_secs() -> u32 {
        15
    }
    pub const fn default_renew_deadline_secs() -> u32 {
        10
    }
    pub const fn default_retry_millis() -> u64 {
        2000
    }
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration_secs: Self::default_lease_duration_secs(),
            renew_deadline_secs: Self::default_renew_deadline_secs(),
            retry_millis: Self::default_retry_millis(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {namespace}/{name}: {error}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        error: kube::Error,
    },
}

/// One replica's view of one lease.
pub struct LeaderElector {
    api: Api<Lease>,
    cfg: LeaseConfig,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Outcome of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Held,
    /// Someone else holds it.
    HeldBy(String),
}

impl LeaderElector {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
        }
    }

    fn err(&self, error: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            error,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: i32::try_from(self.cfg.lease_duration_secs).ok(),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Tries once to acquire or renew the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaseError> {
        let existing = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?;
        let Some(lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Attempt::HeldBy("(another replica created it first)".into()))
                }
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() {
            let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
            let renewed_ms = spec.renew_time.as_ref().map_or(0, |t| t.0.as_millisecond());
            let now_ms = now().0.as_millisecond();
            if now_ms < renewed_ms + duration_ms {
                return Ok(Attempt::HeldBy(holder));
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = if ours {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut updated = lease.clone();
        updated.spec = Some(self.spec(transitions, acquired));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Attempt::HeldBy("(another replica updated it first)".into()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Gives the lease up (clears the holder) if we hold it.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(());
        }
        let mut updated = lease;
        updated.spec = Some(LeaseSpec {
            holder_identity: None,
            ..spec
        });
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Runs `work` whenever this replica holds the lease, until `shutdown`. `work` gets
    /// a token that is cancelled when the lease is lost; it is started again when the
    /// lease is regained.
    pub async fn run_while_leader<F, Fut>(self, shutdown: CancellationToken, mut work: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let retry = Duration::from_millis(self.cfg.retry_millis);
        let deadline = Duration::from_secs(u64::from(self.cfg.renew_deadline_secs));
        crate::telemetry::LeaseHeld { held: false }.emit();
        'outer: loop {
            // Follower: try until we hold it.
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(Attempt::Held) => break,
                    Ok(Attempt::HeldBy(h)) => {
                        tracing::debug!(lease = %self.cfg.name, holder = %h, "lease held by another replica");
                    }
                    Err(e) => tracing::warn!(error = %e, "lease: cannot read or take the lease"),
                }
                if !crate::sources::sleep_or_shutdown(retry, &shutdown).await {
                    break 'outer;
                }
            }
            tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "lease acquired: polling");
            crate::telemetry::LeaseHeld { held: true }.emit();
            let token = shutdown.child_token();
            let task = tokio::spawn(work(token.clone()));
            let mut last_ok = tokio::time::Instant::now();
            loop {
                if !crate::sources::sleep_or_shutdown(retry, &shutdown).await {
                    token.cancel();
                    let _ = task.await;
                    if let Err(e) = self.release().await {
                        tracing::warn!(error = %e, "lease: cannot release");
                    }
                    break 'outer;
                }
                if task.is_finished() {
                    // The work ended by itself; keep the lease until shutdown.
                    continue;
                }
                match self.try_acquire_or_renew().await {
                    Ok(Attempt::Held) => last_ok = tokio::time::Instant::now(),
                    Ok(Attempt::HeldBy(h)) => {
                        tracing::warn!(lease = %self.cfg.name, holder = %h, "lease lost: stopping polling");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "lease: renewal failed");
                        if last_ok.elapsed() >= deadline {
                            tracing::warn!(lease = %self.cfg.name, "lease not renewed within the deadline: stopping polling");
                            break;
                        }
                    }
                }
            }
            token.cancel();
            let _ = task.await;
            crate::telemetry::LeaseHeld { held: false }.emit();
        }
    }
}
