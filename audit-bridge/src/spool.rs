//! The write-ahead spool of the audit webhook backend.
//!
//! A request is answered 200 only after its batch is on disk: `append` hands the bytes
//! to one writer thread, which takes every request waiting at that moment, writes them
//! with one `write`, makes them durable with one `fdatasync` (group commit) and then
//! answers them all. A burst of POSTs therefore costs one sync, not one per request.
//!
//! On disk: numbered segment files `NNNNNNNNNNNNNNNNNNNN.spool`, each a sequence of
//! records `[len: u32 LE][crc32: u32 LE][payload]`. The reader follows the committed
//! position, and the consumer records how far it has processed in a checkpoint; segments
//! wholly before that position are deleted. At start-up a torn tail (a record whose
//! write never completed, so whose request was never answered 200) is cut off.
//!
//! Backpressure: the bytes appended but not yet released by the consumer are counted;
//! beyond `max_pending_bytes` `append` refuses with [`AppendError::Full`] and the
//! webhook answers 429, so the API server retries instead of the bridge running out of
//! disk or memory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

const HEADER: u64 = 8;
/// Largest record accepted (the webhook's own body limit is lower).
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// A position in the spool: a segment number and a byte offset in it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SpoolPos {
    pub segment: u64,
    pub offset: u64,
}

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// A new segment is started once the current one reaches this size.
    pub segment_max_bytes: u64,
    /// Appends beyond this many unreleased bytes are refused (backpressure).
    pub max_pending_bytes: u64,
    /// Requests waiting for the writer beyond this count are refused as busy.
    pub max_queued_requests: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("spool segment {path} is corrupt at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("spool full: {pending_bytes} bytes not yet processed (limit {limit_bytes})")]
    Full {
        pending_bytes: u64,
        limit_bytes: u64,
    },
    #[error("spool writer busy: {0} requests queued")]
    Busy(usize),
    #[error("spool write failed: {0}")]
    Write(String),
    #[error("spool writer stopped")]
    Stopped,
}

struct Request {
    payload: Bytes,
    done: oneshot::Sender<Result<SpoolPos, String>>,
}

struct Shared {
    dir: PathBuf,
    pending: AtomicU64,
    max_pending: u64,
}

/// The appending side; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    tx: std_mpsc::SyncSender<Request>,
    shared: Arc<Shared>,
    max_queued: usize,
}

/// The reading side, one per spool.
pub struct SpoolReader {
    shared: Arc<Shared>,
    committed: watch::Receiver<SpoolPos>,
    pos: SpoolPos,
    file: Option<(u64, BufReader<File>, u64)>,
    deleted_before: u64,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.spool"))
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let io = |error| SpoolError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name.strip_suffix(".spool") {
            if let Ok(n) = num.parse::<u64>() {
                out.push(n);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Length of the valid prefix of a segment: records whose header and checksum are
/// intact.
fn valid_length(path: &Path) -> Result<u64, SpoolError> {
    let io = |error| SpoolError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut off = 0u64;
    let mut header = [0u8; 8];
    let mut buf = Vec::new();
    while off + HEADER <= len {
        r.read_exact(&mut header).map_err(io)?;
        let (l, c) = split_header(&header);
        if off + HEADER + l > len || l > MAX_RECORD_BYTES {
            break;
        }
        buf.resize(usize::try_from(l).unwrap_or(usize::MAX), 0);
        r.read_exact(&mut buf).map_err(io)?;
        if crc32fast::hash(&buf) != c {
            break;
        }
        off += HEADER + l;
    }
    Ok(off)
}

fn split_header(h: &[u8; 8]) -> (u64, u32) {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    (u64::from(len), crc)
}

impl Spool {
    /// Opens the spool in `cfg.dir`, cutting off any torn tail, and starts the writer.
    /// The reader starts at `start` (the consumer's checkpoint).
    pub fn open(cfg: &SpoolConfig, start: SpoolPos) -> Result<(Spool, SpoolReader), SpoolError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(|error| SpoolError::Io {
            path: dir.clone(),
            error,
        })?;
        let mut segments = list_segments(&dir)?;
        if segments.is_empty() {
            let first = start.segment;
            let p = segment_path(&dir, first);
            File::create(&p).map_err(|error| SpoolError::Io { path: p, error })?;
            segments.push(first);
        }
        let last = segments.last().copied().unwrap_or(start.segment);
        let last_path = segment_path(&dir, last);
        let valid = valid_length(&last_path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&last_path)
            .map_err(|error| SpoolError::Io {
                path: last_path.clone(),
                error,
            })?;
        let on_disk = file
            .metadata()
            .map_err(|error| SpoolError::Io {
                path: last_path.clone(),
                error,
            })?
            .len();
        if on_disk != valid {
            tracing::warn!(
                segment = %last_path.display(),
                torn_bytes = on_disk - valid,
                "spool: cutting off a record whose write never completed (never acknowledged)"
            );
            file.set_len(valid).map_err(|error| SpoolError::Io {
                path: last_path.clone(),
                error,
            })?;
        }

        // Where the reader starts: the checkpoint, or the first segment still present.
        let first = segments.first().copied().unwrap_or(0);
        let mut pos = start;
        if pos.segment < first || !segments.contains(&pos.segment) {
            pos = SpoolPos {
                segment: segments
                    .iter()
                    .copied()
                    .find(|s| *s >= pos.segment)
                    .unwrap_or(last),
                offset: 0,
            };
        }
        // Bytes from the reader position to the end are pending.
        let mut pending = 0u64;
        for s in segments.iter().copied().filter(|s| *s >= pos.segment) {
            let len = if s == last {
                valid
            } else {
                let p = segment_path(&dir, s);
                fs::metadata(&p)
                    .map_err(|error| SpoolError::Io { path: p, error })?
                    .len()
            };
            pending += if s == pos.segment {
                len.saturating_sub(pos.offset)
            } else {
                len
            };
        }

        let committed = SpoolPos {
            segment: last,
            offset: valid,
        };
        let (committed_tx, committed_rx) = watch::channel(committed);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            pending: AtomicU64::new(pending),
            max_pending: cfg.max_pending_bytes,
        });
        let (tx, rx) = std_mpsc::sync_channel::<Request>(cfg.max_queued_requests.max(1));
        let writer = Writer {
            dir,
            segment: last,
            size: valid,
            file,
            segment_max: cfg.segment_max_bytes,
            committed: committed_tx,
        };
        std::thread::Builder::new()
            .name("audit-spool-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|error| SpoolError::Io {
                path: cfg.dir.clone(),
                error,
            })?;
        Ok((
            Spool {
                tx,
                shared: shared.clone(),
                max_queued: cfg.max_queued_requests.max(1),
            },
            SpoolReader {
                shared,
                committed: committed_rx,
                pos,
                file: None,
                deleted_before: first,
            },
        ))
    }

    /// Bytes appended and not yet released by the consumer.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Appends one record and returns once it is durable.
    pub async fn append(&self, payload: Bytes) -> Result<SpoolPos, AppendError> {
        let size = payload.len() as u64 + HEADER;
        let before = self.shared.pending.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > self.shared.max_pending {
            self.shared.pending.fetch_sub(size, Ordering::AcqRel);
            return Err(AppendError::Full {
                pending_bytes: before,
                limit_bytes: self.shared.max_pending,
            });
        }
        let (done, wait) = oneshot::channel();
        let sent = self.tx.try_send(Request { payload, done });
        let result = match sent {
            Ok(()) => match wait.await {
                Ok(Ok(pos)) => return Ok(pos),
                Ok(Err(e)) => Err(AppendError::Write(e)),
                Err(_) => Err(AppendError::Stopped),
            },
            Err(std_mpsc::TrySendError::Full(_)) => Err(AppendError::Busy(self.max_queued)),
            Err(std_mpsc::TrySendError::Disconnected(_)) => Err(AppendError::Stopped),
        };
        self.shared.pending.fetch_sub(size, Ordering::AcqRel);
        result
    }
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    size: u64,
    file: File,
    segment_max: u64,
    committed: watch::Sender<SpoolPos>,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let mut bytes = batch[0].payload.len();
            while bytes < (16 << 20) {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += r.payload.len();
                        batch.push(r);
                    }
                    Err(_) => break,
                }
            }
            if self.size >= self.segment_max {
                if let Err(e) = self.rotate() {
                    let msg = e.to_string();
                    tracing::error!(error = %msg, "spool: cannot start a new segment");
                    for r in batch {
                        let _ = r.done.send(Err(msg.clone()));
                    }
                    continue;
                }
            }
            buf.clear();
            let mut ends = Vec::with_capacity(batch.len());
            let mut off = self.size;
            for r in &batch {
                let len = u32::try_from(r.payload.len()).unwrap_or(u32::MAX);
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(&r.payload).to_le_bytes());
                buf.extend_from_slice(&r.payload);
                off += HEADER + r.payload.len() as u64;
                ends.push(off);
            }
            let written = self
                .file
                .seek(SeekFrom::Start(self.size))
                .and_then(|_| self.file.write_all(&buf))
                .and_then(|()| self.file.sync_data());
            match written {
                Ok(()) => {
                    self.size = off;
                    self.committed.send_replace(SpoolPos {
                        segment: self.segment,
                        offset: off,
                    });
                    crate::telemetry::SpoolGroupCommit {
                        requests: batch.len(),
                        bytes: buf.len(),
                    }
                    .emit();
                    for (r, end) in batch.into_iter().zip(ends) {
                        let _ = r.done.send(Ok(SpoolPos {
                            segment: self.segment,
                            offset: end,
                        }));
                    }
                }
                Err(e) => {
                    let msg = format!("{}: {e}", segment_path(&self.dir, self.segment).display());
                    tracing::error!(error = %msg, "spool: write failed; requests answered with an error");
                    // Cut back whatever part was written so the segment stays valid.
                    let _ = self.file.set_len(self.size);
                    for r in batch {
                        let _ = r.done.send(Err(msg.clone()));
                    }
                }
            }
        }
    }

    fn rotate(&mut self) -> Result<(), SpoolError> {
        let next = self.segment + 1;
        let path = segment_path(&self.dir, next);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|error| SpoolError::Io {
                path: path.clone(),
                error,
            })?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = file;
        self.segment = next;
        self.size = 0;
        Ok(())
    }
}

/// One record read back from the spool.
#[derive(Debug, Clone)]
pub struct SpoolRecord {
    pub payload: Bytes,
    /// The position just after this record (what to checkpoint once it is processed).
    pub end: SpoolPos,
    /// Bytes it occupies on disk (what to release once it is processed).
    pub size: u64,
}

impl SpoolReader {
    /// The position of the next record to be read.
    pub fn position(&self) -> SpoolPos {
        self.pos
    }

    /// The next committed record, waiting for one; `None` on shutdown.
    pub async fn next(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<SpoolRecord>, SpoolError> {
        loop {
            let committed = *self.committed.borrow_and_update();
            if self.pos < committed {
                if let Some(rec) = self.read_one(committed)? {
                    return Ok(Some(rec));
                }
                continue;
            }
            tokio::select! {
                changed = self.committed.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                () = shutdown.cancelled() => return Ok(None),
            }
        }
    }

    /// Skips the rest of the current segment (after a corrupt record was reported).
    pub fn skip_segment(&mut self) {
        self.pos = SpoolPos {
            segment: self.pos.segment + 1,
            offset: 0,
        };
        self.file = None;
    }

    fn read_one(&mut self, committed: SpoolPos) -> Result<Option<SpoolRecord>, SpoolError> {
        let path = segment_path(&self.shared.dir, self.pos.segment);
        let io = |error| SpoolError::Io {
            path: path.clone(),
            error,
        };
        let need_open = !matches!(&self.file, Some((s, _, _)) if *s == self.pos.segment);
        if need_open {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Segments are numbered contiguously; a missing one was never written.
                    self.skip_segment();
                    return Ok(None);
                }
                Err(e) => return Err(io(e)),
            };
            f.seek(SeekFrom::Start(self.pos.offset)).map_err(io)?;
            self.file = Some((
                self.pos.segment,
                BufReader::with_capacity(1 << 20, f),
                self.pos.offset,
            ));
        }
        let limit = if self.pos.segment < committed.segment {
            u64::MAX
        } else {
            committed.offset
        };
        let Some((_, reader, at)) = self.file.as_mut() else {
            return Ok(None);
        };
        debug_assert_eq!(*at, self.pos.offset);
        let mut header = [0u8; 8];
        match reader.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                if self.pos.segment < committed.segment {
                    self.skip_segment();
                    return Ok(None);
                }
                return Err(SpoolError::Corrupt {
                    path,
                    offset: self.pos.offset,
                    reason: "committed record missing".into(),
                });
            }
            Err(e) => return Err(io(e)),
        }
        let (len, crc) = split_header(&header);
        if self.pos.offset + HEADER + len > limit || len > MAX_RECORD_BYTES {
            return Err(SpoolError::Corrupt {
                path,
                offset: self.pos.offset,
                reason: format!("record length {len} runs past the committed end"),
            });
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
        reader.read_exact(&mut payload).map_err(io)?;
        if crc32fast::hash(&payload) != crc {
            return Err(SpoolError::Corrupt {
                path,
                offset: self.pos.offset,
                reason: "checksum mismatch".into(),
            });
        }
        let size = HEADER + len;
        self.pos.offset += size;
        *at = self.pos.offset;
        Ok(Some(SpoolRecord {
            payload: Bytes::from(payload),
            end: self.pos,
            size,
        }))
    }

    /// A handle the consumer uses to release processed records.
    pub fn releaser(&self) -> SpoolReleaser {
        SpoolReleaser {
            shared: self.shared.clone(),
            deleted_before: Arc::new(AtomicU64::new(self.deleted_before)),
        }
    }
}

/// Releases processed records: lowers the pending count and deletes segments that lie
/// wholly before the processed position.
#[derive(Clone)]
pub struct SpoolReleaser {
    shared: Arc<Shared>,
    deleted_before: Arc<AtomicU64>,
}

impl SpoolReleaser {
    pub fn release(&self, upto: SpoolPos, bytes: u64) {
        self.shared.pending.fetch_sub(
            bytes.min(self.shared.pending.load(Ordering::Acquire)),
            Ordering::AcqRel,
        );
        let from = self.deleted_before.load(Ordering::Acquire);
        for s in from..upto.segment {
            let p = segment_path(&self.shared.dir, s);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(segment = %p.display(), %error, "spool: cannot delete a processed segment");
                    return;
                }
            }
        }
        if upto.segment > from {
            self.deleted_before.store(upto.segment, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            segment_max_bytes: 64,
            max_pending_bytes: 1 << 20,
            max_queued_requests: 64,
        }
    }

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let (spool, mut reader) = Spool::open(&cfg(dir.path()), SpoolPos::default()).unwrap();
        for i in 0..10 {
            spool
                .append(Bytes::from(format!("record-{i:02}-padding-padding")))
                .await
                .unwrap();
        }
        let releaser = reader.releaser();
        let mut last = SpoolPos::default();
        for i in 0..4 {
            let r = reader.next(&stop).await.unwrap().unwrap();
            assert_eq!(r.payload, format!("record-{i:02}-padding-padding"));
            releaser.release(r.end, r.size);
            last = r.end;
        }
        assert!(last.segment > 0, "small segments rotate: {last:?}");
        drop((spool, reader));
        // Restart from the checkpoint: the rest, nothing before it.
        let (_spool, mut reader) = Spool::open(&cfg(dir.path()), last).unwrap();
        for i in 4..10 {
            let r = reader.next(&stop).await.unwrap().unwrap();
            assert_eq!(r.payload, format!("record-{i:02}-padding-padding"));
        }
        stop.cancel();
        assert!(reader.next(&stop).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn torn_tail_is_cut_off_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.segment_max_bytes = 1 << 20;
        let (spool, _reader) = Spool::open(&c, SpoolPos::default()).unwrap();
        spool.append(Bytes::from_static(b"one")).await.unwrap();
        drop(spool);
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (spool, mut reader) = Spool::open(&c, SpoolPos::default()).unwrap();
        assert_eq!(fs::metadata(&seg).unwrap().len(), 11);
        spool.append(Bytes::from_static(b"two")).await.unwrap();
        let stop = CancellationToken::new();
        assert_eq!(reader.next(&stop).await.unwrap().unwrap().payload, "one");
        assert_eq!(reader.next(&stop).await.unwrap().unwrap().payload, "two");
    }

    #[tokio::test]
    async fn refuses_beyond_the_pending_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.max_pending_bytes = 30;
        c.segment_max_bytes = 1 << 20;
        let (spool, mut reader) = Spool::open(&c, SpoolPos::default()).unwrap();
        spool
            .append(Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let err = spool
            .append(Bytes::from_static(b"0123456789abcdef"))
            .await
            .unwrap_err();
        assert!(matches!(err, AppendError::Full { .. }), "{err}");
        let stop = CancellationToken::new();
        let r = reader.next(&stop).await.unwrap().unwrap();
        reader.releaser().release(r.end, r.size);
        spool
            .append(Bytes::from_static(b"0123456789abcdef"))
            .await
            .unwrap();
    }
}
