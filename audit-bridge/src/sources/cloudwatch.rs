//! EKS: the API server's audit log in CloudWatch Logs (`/aws/eks/<cluster>/cluster`,
//! streams `kube-apiserver-audit-*`), polled with `FilterLogEvents`.
//!
//! - The cursor is (timestamp, eventId) of the newest event processed, plus every
//!   eventId seen within the late window; it is checkpointed after the pipeline has
//!   processed each page. Each poll starts `late_window_secs` before the cursor, because
//!   CloudWatch ingests events late (an event can appear after newer ones were already
//!   returned); ids already seen are dropped, so nothing is lost on a millisecond
//!   boundary and nothing is repeated. An event that arrives later than the window is
//!   outside what the bridge re-reads: widen the window if the cluster's ingestion lags
//!   more.
//! - Pages that are empty but carry a `nextToken` are followed.
//! - Throttling and other failures are retried with exponential backoff, resuming at
//!   the same page.
//! - Stream prefix filtering is done client-side as well (some endpoints ignore
//!   `logStreamNamePrefix`).
//! - A message CloudWatch cut off (`[Truncated...]`) is reported, not dropped silently.
//! - Credentials come from the standard AWS chain (environment, profile, IRSA web
//!   identity, instance metadata); `endpoint` overrides the service URL.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{sleep_or_shutdown, Backoff};
use crate::dedupe::SeenIds;
use crate::{telemetry, AuditBatch, CheckpointStore, Rejected, Sender, Source, SourceError};

/// Configuration of the CloudWatch Logs poller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// `/aws/eks/<cluster>/cluster`.
    pub log_group: String,
    /// Only streams whose name starts with this are read.
    #[serde(default = "CloudWatchConfig::default_stream_prefix")]
    pub stream_prefix: String,
    /// Seconds between polls once caught up.
    #[serde(default = "CloudWatchConfig::default_poll_secs")]
    pub poll_secs: u64,
    /// How far before the cursor each poll starts again (late ingestion).
    #[serde(default = "CloudWatchConfig::default_late_window_secs")]
    pub late_window_secs: u64,
    /// Service endpoint override (tests, VPC endpoints).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// AWS region (else from the environment / profile).
    #[serde(default)]
    pub region: Option<String>,
    /// Events per page requested.
    #[serde(default = "CloudWatchConfig::default_page_limit")]
    pub page_limit: i32,
    /// First retry delay after a failure, doubled up to `max_backoff_millis`.
    #[serde(default = "CloudWatchConfig::default_initial_backoff_millis")]
    pub initial_backoff_millis: u64,
    #[serde(default = "CloudWatchConfig::default_max_backoff_millis")]
    pub max_backoff_millis: u64,
    /// Most event ids remembered for de-duplication.
    #[serde(default = "CloudWatchConfig::default_max_remembered_ids")]
    pub max_remembered_ids: usize,
}

impl CloudWatchConfig {
    pub fn default_stream_prefix() -> String {
        "kube-apiserver-audit".into()
    }
    pub const fn default_poll_secs() -> u64 {
        10
    }
    pub const fn default_late_window_secs() -> u64 {
        300
    }
    pub const fn default_page_limit() -> i32 {
        10_000
    }
    pub const fn default_initial_backoff_millis() -> u64 {
        500
    }
    pub const fn default_max_backoff_millis() -> u64 {
        60_000
    }
    pub const fn default_max_remembered_ids() -> usize {
        2_000_000
    }
    pub fn new(log_group: impl Into<String>) -> Self {
        Self {
            log_group: log_group.into(),
            stream_prefix: Self::default_stream_prefix(),
            poll_secs: Self::default_poll_secs(),
            late_window_secs: Self::default_late_window_secs(),
            endpoint: None,
            region: None,
            page_limit: Self::default_page_limit(),
            initial_backoff_millis: Self::default_initial_backoff_millis(),
            max_backoff_millis: Self::default_max_backoff_millis(),
            max_remembered_ids: Self::default_max_remembered_ids(),
        }
    }
}

/// The checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Timestamp (ms) of the newest event processed.
    pub timestamp_ms: i64,
    /// Its eventId.
    pub event_id: String,
    /// Ids seen within the late window before `timestamp_ms`.
    pub seen: SeenIds,
}

#[derive(Debug, Clone)]
pub struct CloudWatchSource {
    config: CloudWatchConfig,
}

/// Why one FilterLogEvents call failed.
struct CallError {
    throttled: bool,
    message: String,
}

pub(crate) const TRUNCATED_MARK: &str = "[Truncated...]";

impl CloudWatchSource {
    pub fn new(config: CloudWatchConfig) -> Self {
        Self { config }
    }

    fn key(&self) -> String {
        format!("cloudwatch:{}", self.config.log_group)
    }

    async fn client(&self) -> aws_sdk_cloudwatchlogs::Client {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(r) = &self.config.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &self.config.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        let shared = loader.load().await;
        aws_sdk_cloudwatchlogs::Client::new(&shared)
    }

    async fn page(
        &self,
        client: &aws_sdk_cloudwatchlogs::Client,
        start_ms: i64,
        token: Option<String>,
    ) -> Result<
        aws_sdk_cloudwatchlogs::operation::filter_log_events::FilterLogEventsOutput,
        CallError,
    > {
        client
            .filter_log_events()
            .log_group_name(&self.config.log_group)
            .log_stream_name_prefix(&self.config.stream_prefix)
            .start_time(start_ms)
            .limit(self.config.page_limit)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or_default().to_owned();
                let throttled = code.contains("Throttl")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 429);
                let msg = e.message().map(str::to_owned).unwrap_or_else(|| {
                    format!("{}", aws_sdk_cloudwatchlogs::error::DisplayErrorContext(&e))
                });
                CallError {
                    throttled,
                    message: if code.is_empty() {
                        msg
                    } else {
                        format!("{code}: {msg}")
                    },
                }
            })
    }
}

impl Source for CloudWatchSource {
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
        if self.config.log_group.is_empty() {
            return Err(SourceError::Config {
                source_name: key,
                reason: "log group name is empty".into(),
            });
        }
        let mut cursor: Cursor = checkpoints.load(&key)?.unwrap_or_default();
        cursor.seen.reindex();
        let client = self.client().await;
        let window_ms =
            i64::try_from(self.config.late_window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut backoff = Backoff::new(
            self.config.initial_backoff_millis,
            self.config.max_backoff_millis,
        );
        tracing::info!(log_group = %self.config.log_group, cursor_ms = cursor.timestamp_ms, remembered_ids = cursor.seen.len(), "cloudwatch poller started");
        'poll: loop {
            let start_ms = cursor.timestamp_ms.saturating_sub(window_ms).max(0);
            let mut token: Option<String> = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let page = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    p = self.page(&client, start_ms, token.clone()) => p,
                };
                let page = match page {
                    Ok(p) => {
                        backoff.reset();
                        p
                    }
                    Err(e) => {
                        let error = format!(
                            "{}{}",
                            if e.throttled { "throttled: " } else { "" },
                            e.message
                        );
                        if !backoff.fail_and_wait(&name, &error, &shutdown).await {
                            return Ok(());
                        }
                        continue;
                    }
                };
                let mut batch = AuditBatch::new(name.clone(), format!("{key} page"));
                let before = (
                    cursor.timestamp_ms,
                    cursor.event_id.clone(),
                    cursor.seen.len(),
                );
                for ev in page.events() {
                    let stream = ev.log_stream_name().unwrap_or_default();
                    if !stream.starts_with(&self.config.stream_prefix) {
                        continue;
                    }
                    let Some(id) = ev.event_id() else { continue };
                    let ts = ev.timestamp().unwrap_or(0);
                    // CloudWatch's ids are unique per group; the stream is part of the key
                    // as well so that an endpoint numbering per stream cannot collide.
                    let seen_key = format!("{stream}/{id}");
                    if !cursor.seen.insert(&seen_key, ts) {
                        telemetry::DuplicateDropped {
                            source: &name,
                            id: &seen_key,
                        }
                        .emit();
                        continue;
                    }
                    if ts > cursor.timestamp_ms
                        || (ts == cursor.timestamp_ms && id > cursor.event_id.as_str())
                    {
                        cursor.timestamp_ms = ts;
                        cursor.event_id = id.to_owned();
                    }
                    let location = format!("{key}:{stream}:{id}");
                    let msg = ev.message().unwrap_or_default();
                    if msg.trim_end().ends_with(TRUNCATED_MARK) {
                        batch.rejected.push(Rejected {
                            location,
                            reason: format!(
                                "message truncated by cloudwatch logs ({} bytes ending in {TRUNCATED_MARK}): the event is incomplete",
                                msg.len()
                            ),
                        });
                        continue;
                    }
                    match super::parse_audit_json(msg.as_bytes()) {
                        Ok(v) => batch.records.push(v),
                        Err(reason) => batch.rejected.push(Rejected { location, reason }),
                    }
                }
                cursor.seen.prune(
                    cursor.timestamp_ms.saturating_sub(window_ms),
                    self.config.max_remembered_ids,
                );
                let changed = batch.records.len() + batch.rejected.len() > 0
                    || before
                        != (
                            cursor.timestamp_ms,
                            cursor.event_id.clone(),
                            cursor.seen.len(),
                        );
                if changed {
                    let snapshot = cursor.clone();
                    let cp = checkpoints.clone();
                    let k = key.clone();
                    batch.on_processed = Some(Box::new(move || cp.save_logged(&k, &snapshot)));
                    if out.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
                token = page.next_token().map(str::to_owned);
                if token.is_none() {
                    break;
                }
            }
            if !sleep_or_shutdown(Duration::from_secs(self.config.poll_secs), &shutdown).await {
                break 'poll;
            }
        }
        Ok(())
    }
}
