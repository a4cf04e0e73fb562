//! The file source: tailing, rotation (while running and while stopped), truncation,
//! restart from the checkpoint, and malformed lines reported with FILE:LINE.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use audit_bridge::sources::file::{FileConfig, FileSource};
use audit_bridge::{AuditBatch, CancellationToken, CheckpointStore, Source};
use common::{collect, drain};
use tokio::sync::mpsc;

fn event(id: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}","stage":"ResponseComplete","verb":"get"}}"#
    )
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

struct Tail {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), audit_bridge::SourceError>>,
    rx: mpsc::Receiver<AuditBatch>,
}

fn start(path: &Path, state: &Path) -> Tail {
    let mut cfg = FileConfig::new(path);
    cfg.poll_millis = 20;
    cfg.max_batch_lines = 7;
    cfg.max_line_bytes = 4096;
    let (tx, rx) = mpsc::channel(8);
    let stop = CancellationToken::new();
    let cp = CheckpointStore::open(state).unwrap();
    let task = tokio::spawn(FileSource::new(cfg).run(tx, cp, stop.clone()));
    Tail { stop, task, rx }
}

impl Tail {
    async fn stop(self) {
        self.stop.cancel();
        drop(self.rx);
        self.task.await.unwrap().unwrap();
    }
}

fn ids(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["auditID"].as_str().unwrap().to_string())
        .collect()
}

fn range(prefix: &str, r: std::ops::Range<usize>) -> Vec<String> {
    r.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_rotates_truncates_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let state = dir.path().join("state");
    append(
        &log,
        &range("a", 0..20)
            .iter()
            .map(|i| event(i))
            .collect::<Vec<_>>(),
    );

    let mut t = start(&log, &state);
    let (r, _) = collect(&mut t.rx, 20, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), range("a", 0..20));

    // Live appends, including a line written in two pieces.
    append(
        &log,
        &range("b", 0..5)
            .iter()
            .map(|i| event(i))
            .collect::<Vec<_>>(),
    );
    let half = event("b5");
    let (x, y) = half.split_at(30);
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(x.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        f.write_all(y.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    let (r, _) = collect(&mut t.rx, 6, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), range("b", 0..6));

    // Rotation while running: the rest of the old file, then the new one.
    append(&log, &[event("c0")]);
    std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
    append(&dir.path().join("audit.log.1"), &[event("c1")]);
    append(
        &log,
        &range("d", 0..3)
            .iter()
            .map(|i| event(i))
            .collect::<Vec<_>>(),
    );
    let (r, _) = collect(&mut t.rx, 5, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), vec!["c0", "c1", "d0", "d1", "d2"]);

    // Truncation (copytruncate): reported, then read from the start.
    std::fs::write(&log, format!("{}\n", event("e0"))).unwrap();
    let (r, rej) = collect(&mut t.rx, 1, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), vec!["e0"]);
    assert!(
        rej.iter().any(|x| x.reason.contains("file truncated")),
        "{rej:?}"
    );
    t.stop().await;

    // Restart: nothing re-read, nothing skipped.
    append(
        &log,
        &range("f", 0..4)
            .iter()
            .map(|i| event(i))
            .collect::<Vec<_>>(),
    );
    let mut t = start(&log, &state);
    let (r, _) = collect(&mut t.rx, 4, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), range("f", 0..4));
    let (more, _) = drain(&mut t.rx, Duration::from_millis(300)).await;
    assert!(more.is_empty(), "re-read after restart: {:?}", ids(&more));
    t.stop().await;

    // Rotation while stopped: the rotated file's rest first, found by inode.
    append(&log, &[event("g0")]);
    std::fs::rename(&log, dir.path().join("audit.log.2")).unwrap();
    append(&log, &[event("h0")]);
    let mut t = start(&log, &state);
    let (r, _) = collect(&mut t.rx, 2, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), vec!["g0", "h0"]);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprocessed_batches_are_read_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let state = dir.path().join("state");
    append(
        &log,
        &range("a", 0..14)
            .iter()
            .map(|i| event(i))
            .collect::<Vec<_>>(),
    );
    let mut t = start(&log, &state);
    // Process the first batch (7 lines) only.
    let mut b = t.rx.recv().await.unwrap();
    assert_eq!(b.documents.len(), 7);
    b.on_processed.take().unwrap()();
    let _unprocessed = t.rx.recv().await.unwrap();
    t.stop().await;
    let mut t = start(&log, &state);
    let (r, _) = collect(&mut t.rx, 7, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), range("a", 7..14));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_reported_with_file_and_line_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let state = dir.path().join("state");
    let lines = vec![
        event("ok-1"),
        "{\"kind\":\"Event\",\"auditID\":".to_string(), // truncated line
        "this is not json".to_string(),
        "[1,2,3]".to_string(),
        "{\"kind\":\"Pod\",\"apiVersion\":\"v1\"}".to_string(),
        "{\"kind\":7}".to_string(),
        format!(
            "{{\"kind\":\"Event\",\"auditID\":\"huge\",\"pad\":\"{}\"}}",
            "x".repeat(5000)
        ),
        String::new(),
        "\"a string\"".to_string(),
        event("ok-2"),
    ];
    append(&log, &lines);
    let mut t = start(&log, &state);
    let (r, rej) = collect(&mut t.rx, 2, Duration::from_secs(10)).await;
    assert_eq!(ids(&r), vec!["ok-1", "ok-2"]);
    let got: Vec<String> = rej.iter().map(|x| x.to_string()).collect();
    let shown = log.display().to_string();
    let want = [
        (2, "truncated JSON value starting here"),
        (3, "malformed json"),
        (4, "expected an audit event object, found an array"),
        (5, "unsupported kind \"Pod\""),
        (6, "expected kind \"Event\", found 7"),
        (7, "line longer than 4096 bytes"),
        (9, "expected an audit event object, found a string"),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for ((line, reason), g) in want.iter().zip(&got) {
        assert!(
            g.starts_with(&format!("{shown}:{line}: ")) && g.contains(reason),
            "want {line}: {reason}, got {g}"
        );
    }
    t.stop().await;
}
