//! GKE via Pub/Sub: pulls the subscription of a Log Router sink that routes the
//! cluster's audit `LogEntry`s to a topic (REST: `:pull`, `:acknowledge`).
//!
//! - A message is acknowledged only after its event has been processed (alerts out)
//!   and the `insertId` recorded in the checkpoint. A crash before that makes Pub/Sub
//!   redeliver it; a redelivered message whose `insertId` was already processed is
//!   dropped (and acknowledged), so redelivery does not duplicate alerts.
//! - Each entry is converted by [`crate::gke`]; entries of other services or malformed
//!   messages are reported, and acknowledged so they do not come back forever.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::gcp_auth::TokenSource;
use super::{sleep_or_shutdown, Backoff};
use crate::dedupe::SeenIds;
use crate::{gke, telemetry, AuditBatch, CheckpointStore, Rejected, Sender, Source, SourceError};

/// Configuration of the Pub/Sub puller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubSubConfig {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// Service endpoint (the emulator's `http://127.0.0.1:8085` in tests).
    #[serde(default = "PubSubConfig::default_endpoint")]
    pub endpoint: String,
    /// Messages per pull.
    #[serde(default = "PubSubConfig::default_max_messages")]
    pub max_messages: u32,
    /// Wait after an empty pull.
    #[serde(default = "PubSubConfig::default_idle_millis")]
    pub idle_millis: u64,
    /// How long processed `insertId`s are remembered against redelivery.
    #[serde(default = "PubSubConfig::default_dedupe_window_secs")]
    pub dedupe_window_secs: u64,
    #[serde(default = "PubSubConfig::default_max_remembered_ids")]
    pub max_remembered_ids: usize,
    #[serde(default = "PubSubConfig::default_max_backoff_millis")]
    pub max_backoff_millis: u64,
}

impl PubSubConfig {
    pub fn default_endpoint() -> String {
        "https://pubsub.googleapis.com".into()
    }
    pub const fn default_max_messages() -> u32 {
        1000
    }
    pub const fn default_idle_millis() -> u64 {
        500
    }
    pub const fn default_dedupe_window_secs() -> u64 {
        3600
    }
    pub const fn default_max_remembered_ids() -> usize {
        1_000_000
    }
    pub const fn default_max_backoff_millis() -> u64 {
        30_000
    }
    pub fn new(subscription: impl Into<String>) -> Self {
        Self {
            subscription: subscription.into(),
            endpoint: Self::default_endpoint(),
            max_messages: Self::default_max_messages(),
            idle_millis: Self::default_idle_millis(),
            dedupe_window_secs: Self::default_dedupe_window_secs(),
            max_remembered_ids: Self::default_max_remembered_ids(),
            max_backoff_millis: Self::default_max_backoff_millis(),
        }
    }
}

/// Checks `projects/P/subscriptions/S`.
pub fn check_subscription(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "subscriptions", sub] if !p.is_empty() && !sub.is_empty() => Ok(()),
        _ => Err(format!(
            "subscription {s:?} is not of the form projects/PROJECT/subscriptions/NAME"
        )),
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Seen {
    seen: SeenIds,
}

#[derive(Deserialize)]
struct PullResponse {
    #[serde(default, rename = "receivedMessages")]
    received_messages: Vec<Received>,
}

#[derive(Deserialize)]
struct Received {
    #[serde(rename = "ackId")]
    ack_id: String,
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PubSubSource {
    config: PubSubConfig,
}

impl PubSubSource {
    pub fn new(config: PubSubConfig) -> Self {
        Self { config }
    }
    fn key(&self) -> String {
        format!("pubsub:{}", self.config.subscription)
    }
}

/// Turns one message into an audit event (and its insertId), or says why not.
pub fn message_to_audit(data_b64: Option<&str>) -> Result<(Value, Option<String>), String> {
    let data = data_b64.ok_or("message has no data")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("message data is not base64: {e}"))?;
    let entry: Value = serde_json::from_slice(&bytes).map_err(|e| {
        if e.is_eof() {
            format!("message is truncated json: {e}")
        } else {
            format!("message is not a json log entry: {e}")
        }
    })?;
    let insert_id = entry
        .get("insertId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let ev = gke::log_entry_to_audit(&entry).map_err(|e| e.to_string())?;
    Ok((ev, insert_id))
}

impl Source for PubSubSource {
    fn name(&self) -> String {
        self.key()
    }

    async fn run(
        self,
        out: Sender<AuditBatch>,
        checkpoints: CheckpointStore,
        shutdown: CancellationToken,
    ) -> Result<(), SourceError> {
        let key = self.key();
        let name: Arc<str> = Arc::from(key.as_str());
        check_subscription(&self.config.subscription).map_err(|reason| SourceError::Config {
            source_name: key.clone(),
            reason,
        })?;
        let mut state: Seen = checkpoints.load(&key)?.unwrap_or_default();
        state.seen.reindex();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| SourceError::Failed {
                source_name: key.clone(),
                reason: format!("http client: {e}"),
            })?;
        let auth = Arc::new(TokenSource::for_endpoint(&self.config.endpoint));
        let base = self.config.endpoint.trim_end_matches('/').to_owned();
        let pull_url = format!("{base}/v1/{}:pull", self.config.subscription);
        let ack_url = format!("{base}/v1/{}:acknowledge", self.config.subscription);

        // Acknowledgements run on their own task, in the order batches were processed.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Vec<String>>();
        let ack_task = {
            let http = http.clone();
            let auth = auth.clone();
            let name = name.clone();
            tokio::spawn(async move {
                while let Some(ids) = ack_rx.recv().await {
                    let mut backoff = Backoff::new(200, 10_000);
                    for _attempt in 0..8 {
                        let mut req = http.post(&ack_url).json(&json!({ "ackIds": ids }));
                        match auth.header(&http).await {
                            Ok(Some(h)) => req = req.header("authorization", h),
                            Ok(None) => {}
                            Err(e) => tracing::warn!(error = %e, "pubsub: no access token"),
                        }
                        match req.send().await {
                            Ok(r) if r.status().is_success() => break,
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                telemetry::SourceAttemptFailed {
                                    source: &name,
                                    error: &format!("acknowledge answered {status}: {body}"),
                                    retry_in_ms: 0,
                                }
                                .emit();
                            }
                            Err(e) => telemetry::SourceAttemptFailed {
                                source: &name,
                                error: &format!("acknowledge failed: {e}"),
                                retry_in_ms: 0,
                            }
                            .emit(),
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            })
        };

        let window_ms =
            i64::try_from(self.config.dedupe_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut backoff = Backoff::new(500, self.config.max_backoff_millis);
        tracing::info!(subscription = %self.config.subscription, endpoint = %base, "pubsub puller started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let mut req = http
                .post(&pull_url)
                .json(&json!({ "maxMessages": self.config.max_messages }));
            let header = match auth.header(&http).await {
                Ok(h) => h,
                Err(e) => {
                    if !backoff.fail_and_wait(&name, &e, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if let Some(h) = header {
                req = req.header("authorization", h);
            }
            let resp = tokio::select! {
                () = shutdown.cancelled() => break,
                r = req.send() => r,
            };
            let parsed: Result<PullResponse, String> = match resp {
                Ok(r) if r.status().is_success() => r
                    .json::<PullResponse>()
                    .await
                    .map_err(|e| format!("pull response is not valid: {e}")),
                Ok(r) => {
                    let status = r.status();
                    Err(format!(
                        "pull answered {status}: {}",
                        r.text().await.unwrap_or_default()
                    ))
                }
                Err(e) => Err(format!("pull failed: {e}")),
            };
            let pulled = match parsed {
                Ok(p) => {
                    backoff.reset();
                    p
                }
                Err(e) => {
                    if !backoff.fail_and_wait(&name, &e, &shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            if pulled.received_messages.is_empty() {
                if !sleep_or_shutdown(Duration::from_millis(self.config.idle_millis), &shutdown)
                    .await
                {
                    break;
                }
                continue;
            }
            let now_ms = crate::now_ns() / 1_000_000;
            let mut batch = AuditBatch::new(name.clone(), format!("{key} pull"));
            let mut ack_ids = Vec::with_capacity(pulled.received_messages.len());
            for m in pulled.received_messages {
                ack_ids.push(m.ack_id);
                let mid = m.message.message_id.unwrap_or_default();
                match message_to_audit(m.message.data.as_deref()) {
                    Ok((ev, insert_id)) => {
                        let id = insert_id.unwrap_or_else(|| format!("message:{mid}"));
                        if !state.seen.insert(&id, now_ms) {
                            telemetry::DuplicateDropped {
                                source: &name,
                                id: &id,
                            }
                            .emit();
                            continue;
                        }
                        batch.records.push(ev);
                    }
                    Err(reason) => batch.rejected.push(Rejected {
                        location: format!("{key}:message {mid}"),
                        reason,
                    }),
                }
            }
            state.seen.prune(
                now_ms.saturating_sub(window_ms),
                self.config.max_remembered_ids,
            );
            let snapshot = state.clone();
            let cp = checkpoints.clone();
            let k = key.clone();
            let acks = ack_tx.clone();
            batch.on_processed = Some(Box::new(move || {
                cp.save_logged(&k, &snapshot);
                let _ = acks.send(ack_ids);
            }));
            if out.send(batch).await.is_err() {
                break;
            }
        }
        drop(ack_tx);
        let _ = ack_task.await;
        Ok(())
    }
}
