//! Audit log files (JSON lines, as `--audit-log-path` writes them), tailed.
//!
//! - The position (device, inode, byte offset, line number) is checkpointed after the
//!   pipeline has processed each batch, so a restart neither re-reads nor skips.
//! - Rotation (the path now names a new file): the old file is read to its end first,
//!   then the new one from its start. If the bridge was down across a rotation, the
//!   rotated file is found by its inode in the same directory and its remainder read
//!   first.
//! - Truncation (`copytruncate`: same inode, shorter than the offset): reported, and the
//!   file is read again from its start.
//! - Each line holding a JSON object goes to the pipeline as a document of its own, parsed
//!   there (on the evaluation workers) with `policies::parse_document`, which reads only
//!   the parts rules look at; a line is thus parsed alone, and one bad line never affects
//!   the next. As on the webhook, a line may also hold an `EventList` (its items are read).
//! - A line that is not an audit event, or longer than `max_line_bytes`, or cut off at
//!   the end of a rotated file, is reported with `FILE:LINE` and skipped.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{AuditBatch, CheckpointStore, Document, Rejected, Sender, Source, SourceError};

/// Configuration of one tailed file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    /// How often to look for new data, rotation and truncation at end of file.
    #[serde(default = "FileConfig::default_poll_millis")]
    pub poll_millis: u64,
    /// Lines per batch at most.
    #[serde(default = "FileConfig::default_max_batch_lines")]
    pub max_batch_lines: usize,
    /// Longest line accepted; longer lines are reported and skipped.
    #[serde(default = "FileConfig::default_max_line_bytes")]
    pub max_line_bytes: usize,
}

impl FileConfig {
    pub const fn default_poll_millis() -> u64 {
        200
    }
    pub const fn default_max_batch_lines() -> usize {
        1000
    }
    pub const fn default_max_line_bytes() -> usize {
        4 << 20
    }
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            poll_millis: Self::default_poll_millis(),
            max_batch_lines: Self::default_max_batch_lines(),
            max_line_bytes: Self::default_max_line_bytes(),
        }
    }
}

/// The checkpoint of one file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of complete lines processed.
    pub offset: u64,
    /// Lines processed (for `FILE:LINE` reports).
    pub line: u64,
}

#[derive(Debug, Clone)]
pub struct FileSource {
    config: FileConfig,
}

impl FileSource {
    pub fn new(config: FileConfig) -> Self {
        Self { config }
    }

    fn key(&self) -> String {
        format!("file:{}", self.config.path.display())
    }
}

struct Tail {
    cfg: FileConfig,
    name: Arc<str>,
    key: String,
    out: Sender<AuditBatch>,
    checkpoints: CheckpointStore,
    shutdown: CancellationToken,
}

/// An open file being read.
struct Open {
    file: File,
    /// Display name for reports (the rotated file's own path when reading one).
    shown: String,
    pos: FilePos,
    /// Bytes read past `pos.offset` that do not yet end in a newline.
    partial: Vec<u8>,
    /// Discarding the rest of an over-long line.
    skipping: bool,
}

enum Step {
    Continue,
    Stop,
}

fn stat_id(path: &Path) -> Option<(u64, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len()))
}

fn open_at(path: &Path, shown: String, pos: FilePos) -> std::io::Result<Open> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(pos.offset))?;
    Ok(Open {
        file,
        shown,
        pos,
        partial: Vec::new(),
        skipping: false,
    })
}

/// A file in `dir` with this device and inode (a rotated audit log).
fn find_by_inode(dir: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(m) = entry.metadata() {
            if m.is_file() && m.dev() == dev && m.ino() == ino {
                return Some(entry.path());
            }
        }
    }
    None
}

impl Tail {
    fn sleep(&self) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_millis(self.cfg.poll_millis);
        while std::time::Instant::now() < deadline {
            if self.shutdown.is_cancelled() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(self.cfg.poll_millis.clamp(1, 50)));
        }
        !self.shutdown.is_cancelled()
    }

    fn send(&self, batch: AuditBatch) -> Step {
        if self.out.blocking_send(batch).is_err() {
            Step::Stop
        } else {
            Step::Continue
        }
    }

    /// Sends a batch with only rejections, committing `pos` after it.
    fn report(&self, open: &Open, reason: String) -> Step {
        let mut b = AuditBatch::new(self.name.clone(), open.shown.clone());
        b.rejected.push(Rejected {
            location: format!("{}:{}", open.shown, open.pos.line + 1),
            reason,
        });
        self.with_commit(&mut b, open.pos);
        self.send(b)
    }

    fn with_commit(&self, b: &mut AuditBatch, pos: FilePos) {
        let cp = self.checkpoints.clone();
        let key = self.key.clone();
        b.on_processed = Some(Box::new(move || cp.save_logged(&key, &pos)));
    }

    /// Opens the file to read first, from the checkpoint. Returns `None` on shutdown.
    fn open_initial(&self) -> Result<Option<Open>, SourceError> {
        let path = &self.cfg.path;
        let saved: Option<FilePos> = self.checkpoints.load(&self.key)?;
        loop {
            if let Some((dev, ino, len)) = stat_id(path) {
                let shown = path.display().to_string();
                let context = format!("open {shown}");
                let io = |error| SourceError::Io {
                    source_name: self.name.to_string(),
                    context: context.clone(),
                    error,
                };
                let fresh = FilePos {
                    dev,
                    ino,
                    offset: 0,
                    line: 0,
                };
                return match saved {
                    Some(cp) if cp.dev == dev && cp.ino == ino => {
                        if len < cp.offset {
                            tracing::warn!(file = %shown, checkpoint = cp.offset, size = len, "file shorter than its checkpoint (truncated while stopped): reading from the start");
                            open_at(path, shown, fresh).map(Some).map_err(io)
                        } else {
                            open_at(path, shown, cp).map(Some).map_err(io)
                        }
                    }
                    Some(cp) => {
                        // Rotated while stopped: finish the old file first when it is still there.
                        let dir = path.parent().unwrap_or_else(|| Path::new("."));
                        match find_by_inode(dir, cp.dev, cp.ino) {
                            Some(old) => {
                                tracing::info!(file = %shown, rotated = %old.display(), offset = cp.offset, "file rotated while stopped: reading the rest of the rotated file first");
                                open_at(&old, old.display().to_string(), cp)
                                    .map(Some)
                                    .map_err(io)
                            }
                            None => {
                                tracing::warn!(file = %shown, inode = cp.ino, offset = cp.offset, "file rotated while stopped and the rotated file is gone: events written to it after the checkpoint cannot be read");
                                open_at(path, shown, fresh).map(Some).map_err(io)
                            }
                        }
                    }
                    None => open_at(path, shown, fresh).map(Some).map_err(io),
                };
            }
            if !self.sleep() {
                return Ok(None);
            }
        }
    }

    fn run(self) -> Result<(), SourceError> {
        let Some(mut open) = self.open_initial()? else {
            return Ok(());
        };
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            let n = match open.file.read(&mut chunk) {
                Ok(n) => n,
                Err(error) => {
                    return Err(SourceError::Io {
                        source_name: self.name.to_string(),
                        context: format!("read {}", open.shown),
                        error,
                    })
                }
            };
            if n > 0 {
                if let Step::Stop = self.consume(&mut open, &chunk[..n]) {
                    return Ok(());
                }
                continue;
            }
            // End of file: has the path moved on to a new file, or been truncated?
            let current = stat_id(&self.cfg.path);
            let same = current.is_some_and(|(d, i, _)| d == open.pos.dev && i == open.pos.ino);
            match current {
                Some((dev, ino, _)) if !same => {
                    // Rotated: the old file is complete (we read to its end just now).
                    if !open.partial.is_empty() || open.skipping {
                        let cut = open.partial.len();
                        open.pos.offset += cut as u64;
                        open.partial.clear();
                        open.skipping = false;
                        if let Step::Stop = self.report(
                            &open,
                            format!("truncated line at the end of a rotated file ({cut} bytes without a newline)"),
                        ) {
                            return Ok(());
                        }
                    }
                    let shown = self.cfg.path.display().to_string();
                    tracing::info!(file = %shown, old_inode = open.pos.ino, new_inode = ino, "file rotated: reading the new file");
                    let fresh = FilePos {
                        dev,
                        ino,
                        offset: 0,
                        line: 0,
                    };
                    match open_at(&self.cfg.path, shown, fresh) {
                        Ok(o) => {
                            open = o;
                            // Commit the switch, so a restart starts in the new file.
                            let mut b = AuditBatch::new(self.name.clone(), open.shown.clone());
                            self.with_commit(&mut b, fresh);
                            if let Step::Stop = self.send(b) {
                                return Ok(());
                            }
                        }
                        Err(error) => {
                            tracing::warn!(file = %self.cfg.path.display(), %error, "cannot open the new file yet");
                        }
                    }
                    continue;
                }
                Some((_, _, len)) if len < open.pos.offset + open.partial.len() as u64 => {
                    let was = open.pos.offset;
                    open.pos.offset = 0;
                    open.pos.line = 0;
                    open.partial.clear();
                    open.skipping = false;
                    if let Err(error) = open.file.seek(SeekFrom::Start(0)) {
                        return Err(SourceError::Io {
                            source_name: self.name.to_string(),
                            context: format!("seek {}", open.shown),
                            error,
                        });
                    }
                    if let Step::Stop = self.report(
                        &open,
                        format!("file truncated from {was} to {len} bytes: reading again from the start"),
                    ) {
                        return Ok(());
                    }
                    continue;
                }
                _ => {}
            }
            if !self.sleep() {
                return Ok(());
            }
        }
    }

    /// Sends what `p` holds (committing `pos` after it) and starts a new batch.
    fn flush(&self, p: &mut Pending, open: &Open, pos: FilePos) -> Step {
        let full = std::mem::replace(p, Pending::new(self.name.clone(), &open.shown));
        let mut b = full.finish(&open.shown);
        self.with_commit(&mut b, pos);
        self.send(b)
    }

    /// Adds a rejection found while reading, after what `p` already holds: the pipeline
    /// reports a batch's rejections before its documents, so a batch holding documents is
    /// sent first (committing `before`, the position ahead of the rejected line).
    fn reject(&self, p: &mut Pending, open: &Open, before: FilePos, r: Rejected) -> Step {
        if p.has_events() {
            if let Step::Stop = self.flush(p, open, before) {
                return Step::Stop;
            }
        }
        p.batch.rejected.push(r);
        Step::Continue
    }

    /// Splits `data` into lines and sends them in batches. Lines holding a JSON object
    /// go to the pipeline as one document each (parsed there with
    /// `policies::parse_document`); anything else is rejected here.
    fn consume(&self, open: &mut Open, mut data: &[u8]) -> Step {
        let mut p = Pending::new(self.name.clone(), &open.shown);
        let mut lines = 0usize;
        while !data.is_empty() {
            let nl = data.iter().position(|b| *b == b'\n');
            let (piece, complete) = match nl {
                Some(i) => (&data[..i], true),
                None => (data, false),
            };
            data = match nl {
                Some(i) => &data[i + 1..],
                None => &[],
            };
            if open.skipping {
                open.pos.offset += piece.len() as u64 + u64::from(complete);
                if complete {
                    open.skipping = false;
                    open.pos.line += 1;
                }
                continue;
            }
            if !complete {
                open.partial.extend_from_slice(piece);
                if open.partial.len() > self.cfg.max_line_bytes {
                    let len = open.partial.len();
                    let r = Rejected {
                        location: format!("{}:{}", open.shown, open.pos.line + 1),
                        reason: format!(
                            "line longer than {} bytes (at least {len}): skipped",
                            self.cfg.max_line_bytes
                        ),
                    };
                    if let Step::Stop = self.reject(&mut p, open, open.pos, r) {
                        return Step::Stop;
                    }
                    open.pos.offset += len as u64;
                    open.partial.clear();
                    open.skipping = true;
                }
                break;
            }
            let before = open.pos;
            let line_no = open.pos.line + 1;
            let owned;
            let line: &[u8] = if open.partial.is_empty() {
                piece
            } else {
                open.partial.extend_from_slice(piece);
                owned = std::mem::take(&mut open.partial);
                &owned
            };
            open.pos.offset += line.len() as u64 + 1;
            open.pos.line = line_no;
            let trimmed = line.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            let step = if line.len() > self.cfg.max_line_bytes {
                let r = Rejected {
                    location: format!("{}:{line_no}", open.shown),
                    reason: format!(
                        "line longer than {} bytes ({}): skipped",
                        self.cfg.max_line_bytes,
                        line.len()
                    ),
                };
                self.reject(&mut p, open, before, r)
            } else if trimmed.first() == Some(&b'{') {
                p.push_line(trimmed, line_no);
                Step::Continue
            } else {
                // Not an object: not an audit event. Parsed here only to say why.
                let reason = match super::parse_audit_json(trimmed) {
                    Err(reason) => reason,
                    Ok(_) => "expected an audit event object".to_string(),
                };
                let r = Rejected {
                    location: format!("{}:{line_no}", open.shown),
                    reason,
                };
                self.reject(&mut p, open, before, r)
            };
            if let Step::Stop = step {
                return Step::Stop;
            }
            lines += 1;
            if lines >= self.cfg.max_batch_lines {
                if let Step::Stop = self.flush(&mut p, open, open.pos) {
                    return Step::Stop;
                }
                lines = 0;
            }
        }
        if !p.is_empty() {
            return self.flush(&mut p, open, open.pos);
        }
        Step::Continue
    }
}

/// A batch being filled: rejections, then one document per JSON-object line, all in one
/// buffer (each document is a slice of it).
struct Pending {
    batch: AuditBatch,
    buf: Vec<u8>,
    /// (start, end, line number) of each line in `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl Pending {
    fn new(name: Arc<str>, shown: &str) -> Self {
        Self {
            batch: AuditBatch::new(name, shown.to_string()),
            buf: Vec::new(),
            spans: Vec::new(),
        }
    }

    fn push_line(&mut self, line: &[u8], line_no: u64) {
        let start = self.buf.len();
        self.buf.extend_from_slice(line);
        let first_line = usize::try_from(line_no).unwrap_or(usize::MAX);
        self.spans.push((start, self.buf.len(), first_line));
    }

    fn has_events(&self) -> bool {
        !self.spans.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.spans.is_empty() && self.batch.rejected.is_empty()
    }

    fn finish(self, shown: &str) -> AuditBatch {
        let Pending {
            mut batch,
            buf,
            spans,
        } = self;
        let bytes = bytes::Bytes::from(buf);
        batch.documents = spans
            .into_iter()
            .map(|(start, end, first_line)| Document {
                name: shown.to_string(),
                first_line,
                bytes: bytes.slice(start..end),
            })
            .collect();
        batch
    }
}

impl Source for FileSource {
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
        let tail = Tail {
            name: Arc::from(key.as_str()),
            key,
            cfg: self.config,
            out,
            checkpoints,
            shutdown,
        };
        let name = tail.name.to_string();
        tokio::task::spawn_blocking(move || tail.run())
            .await
            .map_err(|e| SourceError::Failed {
                source_name: name,
                reason: format!("file reader stopped: {e}"),
            })?
    }
}
