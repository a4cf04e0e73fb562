//! GKE via Cloud Logging: polls `entries:list` with the configured filter, following
//! `nextPageToken`, oldest first.
//!
//! The cursor is the newest entry timestamp processed plus the `insertId`s seen within
//! the late window; each poll asks for `timestamp >= cursor - late_window` and drops ids
//! already seen, so entries indexed late are still read and nothing repeats. The cursor
//! is checkpointed after the pipeline has processed each page.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::gcp_auth::TokenSource;
use super::{sleep_or_shutdown, Backoff};
use crate::dedupe::SeenIds;
use crate::{gke, telemetry, AuditBatch, CheckpointStore, Rejected, Sender, Source, SourceError};

/// Configuration of the Cloud Logging poller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// The project whose logs are read (`resourceNames: ["projects/P"]`).
    pub project: String,
    /// A Cloud Logging filter selecting the cluster's audit entries, e.g.
    /// `resource.type="k8s_cluster" AND logName:"cloudaudit.googleapis.com"`.
    pub filter: String,
    #[serde(default = "LoggingConfig::default_endpoint")]
    pub endpoint: String,
    #[serde(default = "LoggingConfig::default_poll_secs")]
    pub poll_secs: u64,
    #[serde(default = "LoggingConfig::default_late_window_secs")]
    pub late_window_secs: u64,
    #[serde(default = "LoggingConfig::default_page_size")]
    pub page_size: u32,
    #[serde(default = "LoggingConfig::default_max_backoff_millis")]
    pub max_backoff_millis: u64,
    #[serde(default = "LoggingConfig::default_max_remembered_ids")]
    pub max_remembered_ids: usize,
}

impl LoggingConfig {
    pub fn default_endpoint() -> String {
        "https://logging.googleapis.com".into()
    }
    pub const fn default_poll_secs() -> u64 {
        10
    }
    pub const fn default_late_window_secs() -> u64 {
        300
    }
    pub const fn default_page_size() -> u32 {
        1000
    }
    pub const fn default_max_backoff_millis() -> u64 {
        60_000
    }
    pub const fn default_max_remembered_ids() -> usize {
        2_000_000
    }
    pub fn new(project: impl Into<String>, filter: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            filter: filter.into(),
            endpoint: Self::default_endpoint(),
            poll_secs: Self::default_poll_secs(),
            late_window_secs: Self::default_late_window_secs(),
            page_size: Self::default_page_size(),
            max_backoff_millis: Self::default_max_backoff_millis(),
            max_remembered_ids: Self::default_max_remembered_ids(),
        }
    }
}

/// The checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoggingCursor {
    /// Newest entry timestamp processed, nanoseconds since the epoch.
    pub timestamp_ns: i64,
    pub insert_id: String,
    pub seen: SeenIds,
}

#[derive(Deserialize)]
struct ListResponse {
    #[serde(default)]
    entries: Vec<Value>,
    #[serde(default, rename = "nextPageToken")]
    next_page_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LoggingSource {
    config: LoggingConfig,
}

/// RFC 3339 with nanoseconds, UTC.
fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

impl LoggingSource {
    pub fn new(config: LoggingConfig) -> Self {
        Self { config }
    }
    fn key(&self) -> String {
        format!("logging:{}:{}", self.config.project, self.config.filter)
    }
}

impl Source for LoggingSource {
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
        let name: Arc<str> = Arc::from(format!("logging:{}", self.config.project).as_str());
        if self.config.project.is_empty() || self.config.filter.trim().is_empty() {
            return Err(SourceError::Config {
                source_name: key,
                reason: "cloud logging needs a project and a filter".into(),
            });
        }
        let mut cursor: LoggingCursor = checkpoints.load(&key)?.unwrap_or_default();
        cursor.seen.reindex();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| SourceError::Failed {
                source_name: key.clone(),
                reason: format!("http client: {e}"),
            })?;
        let auth = TokenSource::for_endpoint(&self.config.endpoint);
        let url = format!(
            "{}/v2/entries:list",
            self.config.endpoint.trim_end_matches('/')
        );
        let window_ns = i64::try_from(self.config.late_window_secs)
            .unwrap_or(i64::MAX / 1_000_000_000)
            .saturating_mul(1_000_000_000);
        let mut backoff = Backoff::new(500, self.config.max_backoff_millis);
        tracing::info!(project = %self.config.project, filter = %self.config.filter, "cloud logging poller started");
        loop {
            let since = rfc3339(cursor.timestamp_ns.saturating_sub(window_ns).max(0));
            let filter = format!("({}) AND timestamp>=\"{since}\"", self.config.filter);
            let mut token: Option<String> = None;
            loop {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let mut body = json!({
                    "resourceNames": [format!("projects/{}", self.config.project)],
                    "filter": filter,
                    "orderBy": "timestamp asc",
                    "pageSize": self.config.page_size,
                });
                if let Some(t) = &token {
                    body["pageToken"] = json!(t);
                }
                let mut req = http.post(&url).json(&body);
                let result: Result<ListResponse, String> = async {
                    if let Some(h) = auth.header(&http).await? {
                        req = req.header("authorization", h);
                    }
                    let r = req
                        .send()
                        .await
                        .map_err(|e| format!("entries:list failed: {e}"))?;
                    let status = r.status();
                    if !status.is_success() {
                        return Err(format!(
                            "entries:list answered {status}: {}",
                            r.text().await.unwrap_or_default()
                        ));
                    }
                    r.json::<ListResponse>()
                        .await
                        .map_err(|e| format!("entries:list response is not valid: {e}"))
                }
                .await;
                let page = match result {
                    Ok(p) => {
                        backoff.reset();
                        p
                    }
                    Err(e) => {
                        if !backoff.fail_and_wait(&name, &e, &shutdown).await {
                            return Ok(());
                        }
                        continue;
                    }
                };
                let mut batch = AuditBatch::new(name.clone(), format!("{name} page"));
                let before = (cursor.timestamp_ns, cursor.seen.len());
                for entry in &page.entries {
                    let insert_id = entry.get("insertId").and_then(Value::as_str);
                    let ts_ns = entry
                        .get("timestamp")
                        .and_then(Value::as_str)
                        .and_then(crate::session::rfc3339_ns);
                    let location = format!("{name}:{}", insert_id.unwrap_or("(no insertId)"));
                    let (Some(id), Some(ts)) = (insert_id, ts_ns) else {
                        batch.rejected.push(Rejected {
                            location,
                            reason: "log entry lacks insertId or a valid timestamp".into(),
                        });
                        continue;
                    };
                    if !cursor.seen.insert(id, ts / 1_000_000) {
                        telemetry::DuplicateDropped { source: &name, id }.emit();
                        continue;
                    }
                    if ts > cursor.timestamp_ns {
                        cursor.timestamp_ns = ts;
                        cursor.insert_id = id.to_owned();
                    }
                    match gke::log_entry_to_audit(entry) {
                        Ok(v) => batch.records.push(v),
                        Err(e) => batch.rejected.push(Rejected {
                            location,
                            reason: e.to_string(),
                        }),
                    }
                }
                cursor.seen.prune(
                    cursor.timestamp_ns.saturating_sub(window_ns) / 1_000_000,
                    self.config.max_remembered_ids,
                );
                let changed = batch.records.len() + batch.rejected.len() > 0
                    || before != (cursor.timestamp_ns, cursor.seen.len());
                if changed {
                    let snapshot = cursor.clone();
                    let cp = checkpoints.clone();
                    let k = key.clone();
                    batch.on_processed = Some(Box::new(move || cp.save_logged(&k, &snapshot)));
                    if out.send(batch).await.is_err() {
                        return Ok(());
                    }
                }
                token = page.next_page_token.filter(|t| !t.is_empty());
                if token.is_none() {
                    break;
                }
            }
            if !sleep_or_shutdown(Duration::from_secs(self.config.poll_secs), &shutdown).await {
                return Ok(());
            }
        }
    }
}
