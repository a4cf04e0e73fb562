//! The decision log: one JSON line per admission decision, appended to a file by a
//! writer thread so that the request path never waits on the disk.
//!
//! The channel is unbounded: nothing handed to the log is dropped; it is flushed when the
//! writer has drained the queue and when the log is closed.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use engine::AdmissionDecision;
use serde::Serialize;

use crate::metrics::{ErrorKind, Metrics};
use crate::review::AdmissionResponse;

#[derive(Debug, thiserror::Error)]
#[error("decision log {path}: {source}")]
pub struct DecisionLogError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// One line of the decision log.
#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    #[serde(flatten)]
    pub decision: &'a AdmissionDecision,
    pub groups: &'a [String],
    pub detect_only: bool,
    /// The AdmissionResponse that was sent.
    pub response: &'a AdmissionResponse,
    /// The AdmissionResponse enforcement of every matching rule would have sent.
    pub would_response: &'a AdmissionResponse,
}

/// A handle to the log's writer thread.
#[derive(Debug)]
pub struct DecisionLog {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl DecisionLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Self, DecisionLogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| DecisionLogError {
                path: path.to_path_buf(),
                source,
            })?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let path_buf = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                let mut out = BufWriter::with_capacity(1 << 16, file);
                while let Ok(line) = rx.recv() {
                    let mut result = out.write_all(&line);
                    while let Ok(more) = rx.try_recv() {
                        result = result.and_then(|()| out.write_all(&more));
                    }
                    result = result.and_then(|()| out.flush());
                    if let Err(e) = result {
                        metrics.error(ErrorKind::DecisionLog);
                        tracing::error!(path = %path_buf.display(), error = %e, "decision log write failed");
                    }
                }
                let _ = out.flush();
            })
            .map_err(|source| DecisionLogError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Queues one record.
    pub fn write(&self, record: &DecisionRecord<'_>) -> Result<(), String> {
        let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        match &self.tx {
            Some(tx) => tx
                .send(line)
                .map_err(|_| "decision log writer stopped".to_string()),
            None => Err("decision log closed".into()),
        }
    }
}

impl Drop for DecisionLog {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{DecisionOutcome, RuleVerdict};

    #[test]
    fn every_record_is_one_json_line_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let log = DecisionLog::open(&path, Arc::new(Metrics::new())).unwrap();
        let decision = AdmissionDecision {
            time_ns: 1,
            request_uid: "u".into(),
            user: "alice".into(),
            operation: "CREATE".into(),
            resource: "pods".into(),
            subresource: None,
            namespace: Some("prod".into()),
            name: Some("p".into()),
            outcome: DecisionOutcome::Allow,
            would_outcome: DecisionOutcome::Deny,
            rules: vec![RuleVerdict {
                rule: "R".into(),
                mode: "detect".into(),
                output: "o".into(),
                reason: Some("the rule's mode is detect".into()),
            }],
            message: None,
        };
        let response = AdmissionResponse::allow("u");
        let would = AdmissionResponse::deny("u", 403, "Forbidden", "denied".into());
        for _ in 0..1000 {
            log.write(&DecisionRecord {
                decision: &decision,
                groups: &[],
                detect_only: false,
                response: &response,
                would_response: &would,
            })
            .unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        let v: serde_json::Value = serde_json::from_str(lines[999]).unwrap();
        assert_eq!(v["request_uid"], "u");
        assert_eq!(v["rules"][0]["rule"], "R");
        assert_eq!(v["would_outcome"], "deny");
        assert_eq!(v["would_response"]["allowed"], false);
    }

    #[test]
    fn unopenable_path_is_named() {
        let err = DecisionLog::open(
            Path::new("/nonexistent/dir/d.jsonl"),
            Arc::new(Metrics::new()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/d.jsonl"));
    }
}
