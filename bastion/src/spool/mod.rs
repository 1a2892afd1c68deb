//! The audit spool: a local, append-only, hash-chained log of AuditRecords, written durably
//! (fsync) before the caller goes on, shipped to the broker until acknowledged.
//!
//! Files in the spool directory: segments `audit-<first seq, 20 digits>.jsonl` (one AuditRecord
//! per line; a new segment starts when the current one passes [`SEGMENT_BYTES`]) and `acked`
//! (the highest sequence number the broker acknowledged, and that record's hash, which anchors
//! the chain once every segment before it is deleted). Segments whose every record is
//! acknowledged are deleted; the segment being written is always kept. A torn last line (a crash
//! mid-write) is cut off at start; anything else that does not chain — an edited record, a
//! missing segment with records the broker never acknowledged — is an error: the spool is never
//! rewritten. (A spool of an older version, one `audit.jsonl`, becomes the first segment.)
//!
//! Appends at once share one write and one fsync (a group commit): see `append`.
//!
//! Here, [`Spool`]; in `append`, its appends; in `segments`, the files and the check of their chain; in
//! `ship`, sending the records to the broker.

mod append;
mod segments;
mod ship;

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use russh::keys::PrivateKey;
use sallyport_audit::AuditRecord;
use sallyport_audit::writers::{ChainKind, Writer};
use sallyport_ca::clock::now_ms;
use segments::{check_segment, read_acked, segment_name, segments, sync_dir};
pub use ship::{ShipError, ship};
use tokio::sync::{Mutex, Notify};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the audit spool {path} cannot be written: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit spool {path} belongs to {found}, not {wanted}")]
    Writer {
        path: PathBuf,
        found: String,
        wanted: String,
    },
    #[error("the audit spool {path} is corrupt at line {line}: {problem}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The most bytes of records in one shipped batch (the broker takes up to `max_ingest_bytes`,
/// 8 MiB by default; a 413 halves the batch).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

struct Inner {
    file: std::fs::File,
    path: PathBuf,
    /// Length of the segment up to the last complete, synced record.
    len: u64,
    last: Option<(u64, String)>,
    /// Set after a failed write: nothing more is accepted (fail closed).
    broken: bool,
}

/// A spool of one writer's chain, whose records are of kind `K` only: an edge's spool takes
/// [`EdgeKind`](sallyport_audit::writers::EdgeKind)s, a gateway's
/// [`GatewayKind`](sallyport_audit::writers::GatewayKind)s, so neither can write a kind the
/// broker would refuse; every record's data is made to fit what its writer may say
/// ([`sallyport_audit::writers::conform`]) before it is written.
pub struct Spool<K: ChainKind> {
    dir: PathBuf,
    source: String,
    writer: Writer,
    /// Signs the chain's head with each shipped batch (see `sallyport_ca::chainsig`).
    key: PrivateKey,
    kinds: std::marker::PhantomData<K>,
    /// Free bytes kept on the spool's file system for records that close what was already
    /// allowed ([`ChainKind::closes`]); below it, every other record is refused (fail closed).
    reserve: AtomicU64,
    segment_bytes: AtomicU64,
    /// The highest sequence number written, for readers that must not wait on the writer.
    head: AtomicU64,
    /// The writer's lock: whoever holds it writes the queued appends.
    inner: Mutex<Inner>,
    /// Appends waiting to be written.
    queue: append::Queue<K>,
    #[cfg(test)]
    hooks: append::Hooks,
    /// Woken after each append, for the shipper.
    pub appended: Notify,
}

/// An I/O error on `path`, as a [`SpoolError::Io`].
fn io_at(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + use<> {
    let path = path.to_path_buf();
    move |source| SpoolError::Io {
        path: path.clone(),
        source,
    }
}

impl<K: ChainKind> Spool<K> {
    /// Open (or start) the spool of `writer`'s chain in `dir`; `key` signs its heads.
    pub fn open(dir: &Path, writer: Writer, key: PrivateKey) -> Result<Arc<Spool<K>>, SpoolError> {
        if writer.role() != K::ROLE {
            return Err(SpoolError::Writer {
                path: dir.to_path_buf(),
                found: writer.source(),
                wanted: K::ROLE.as_str().into(),
            });
        }
        let source = writer.source();
        let source = source.as_str();
        crate::private::create_dir(dir).map_err(io_at(dir))?;
        let legacy = dir.join("audit.jsonl");
        if legacy.exists() {
            std::fs::rename(&legacy, dir.join(segment_name(1))).map_err(io_at(&legacy))?;
            sync_dir(dir).map_err(io_at(dir))?;
        }
        let mut found = segments(dir).map_err(io_at(dir))?;
        if found.is_empty() {
            found.push((1, dir.join(segment_name(1))));
        }
        let (acked, acked_hash) = read_acked(dir);
        if let Some((first, path)) = found.first()
            && *first > acked + 1
        {
            return Err(SpoolError::Corrupt {
                path: path.clone(),
                line: 1,
                problem: format!(
                    "records {}..{} were never acknowledged by the broker and are missing",
                    acked + 1,
                    first - 1
                ),
            });
        }
        // Read back what is there, checking the chain across segments.
        let mut last: Option<(u64, String)> = None;
        let count = found.len();
        let mut current = None;
        for (i, (first_seq, path)) in found.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let mut file = crate::private::open_append(&path).map_err(io_at(&path))?;
            let good_len = check_segment(&file, &path, source, first_seq, &mut last, is_last)?;
            if is_last {
                let len = file.metadata().map_err(io_at(&path))?.len();
                if len != good_len {
                    file.set_len(good_len).map_err(io_at(&path))?;
                    file.sync_all().map_err(io_at(&path))?;
                }
                file.seek(SeekFrom::End(0)).map_err(io_at(&path))?;
                current = Some((file, path, good_len));
            }
        }
        if last.is_none()
            && acked > 0
            && let Some(hash) = acked_hash
        {
            // Every record was acknowledged and its segment deleted: the chain goes on from the
            // acknowledged one.
            last = Some((acked, hash));
        }
        let Some((file, path, len)) = current else {
            return Err(SpoolError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other("no segment"),
            });
        };
        let head = last.as_ref().map(|(s, _)| *s).unwrap_or(0);
        Ok(Arc::new(Spool {
            dir: dir.to_path_buf(),
            source: source.to_string(),
            writer,
            key,
            kinds: std::marker::PhantomData,
            reserve: AtomicU64::new(0),
            segment_bytes: AtomicU64::new(SEGMENT_BYTES),
            head: AtomicU64::new(head),
            inner: Mutex::new(Inner {
                file,
                path,
                len,
                last,
                broken: false,
            }),
            queue: append::Queue::new(),
            #[cfg(test)]
            hooks: append::Hooks::default(),
            appended: Notify::new(),
        }))
    }

    /// Keep `bytes` free on the spool's file system for closing records.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Start a new segment past `bytes` (tests use small segments).
    pub fn set_segment_bytes(&self, bytes: u64) {
        self.segment_bytes.store(bytes.max(1), Ordering::Relaxed);
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The public key that signs this chain's heads.
    pub fn public_key(&self) -> &russh::keys::PublicKey {
        self.key.public_key()
    }

    /// The signature of this chain's head at record `seq` (whose hash is `hash`).
    pub fn sign_head(&self, seq: u64, hash: &str) -> Result<String, sallyport_ca::CaError> {
        sallyport_ca::chainsig::sign_head(&self.key, &self.source, seq, hash)
    }

    /// The highest sequence number written (0: none yet).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Relaxed)
    }

    /// Records after `after_seq`, in order: as many as fit in `max_bytes` of JSON (at least one).
    pub fn pending(
        &self,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<AuditRecord>, SpoolError> {
        let all = segments(&self.dir).map_err(io_at(&self.dir))?;
        // The segment holding `after_seq + 1`, then the ones after it.
        let from = all
            .iter()
            .rposition(|(first, _)| *first <= after_seq + 1)
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (_, path) in &all[from..] {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                // Deleted after an acknowledgement in the meantime.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_at(path)(e)),
            };
            for line in BufReader::new(file).lines() {
                let line = line.map_err(io_at(path))?;
                // A line being written right now is not whole yet.
                let Ok(r) = serde_json::from_str::<AuditRecord>(&line) else {
                    return Ok(out);
                };
                if r.seq <= after_seq {
                    continue;
                }
                if !out.is_empty() && bytes + line.len() > max_bytes {
                    return Ok(out);
                }
                bytes += line.len();
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn acked(&self) -> u64 {
        read_acked(&self.dir).0
    }

    /// Record the broker's acknowledgement of record `seq` (whose hash is `hash`), then delete
    /// the segments it covers whole.
    pub fn set_acked(&self, seq: u64, hash: &str) -> std::io::Result<()> {
        let tmp = self.dir.join("acked.tmp");
        let mut f = crate::private::create_file(&tmp)?;
        f.write_all(format!("{seq} {hash}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("acked"))?;
        let all = segments(&self.dir)?;
        for pair in all.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if next_first.saturating_sub(1) <= seq {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
