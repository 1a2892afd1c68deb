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

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use russh::keys::PrivateKey;
use sallyport_audit::AuditRecord;
use sallyport_audit::writers::{ChainKind, Writer};
use serde_json::Value;
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
    inner: Mutex<Inner>,
    /// Woken after each append, for the shipper.
    pub appended: Notify,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The segments in `dir`, oldest first: (first sequence number, path).
fn segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("audit-"))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((seq, e.path()));
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The broker's acknowledgement: the sequence number, and (since segments are deleted) the hash
/// of that record, which anchors the chain when no record is left in the spool.
fn read_acked(dir: &Path) -> (u64, Option<String>) {
    let text = std::fs::read_to_string(dir.join("acked")).unwrap_or_default();
    let mut words = text.split_whitespace();
    let seq = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (seq, words.next().map(str::to_string))
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
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io {
                path: path.clone(),
                source,
            }
        };
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

    /// Append one event and make it durable before returning.
    pub async fn append(&self, kind: K, data: Value) -> Result<AuditRecord, SpoolError> {
        let mut written = self.append_all(vec![(kind, data)]).await?;
        written.pop().ok_or_else(|| SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("nothing was written"),
        })
    }

    /// Append events in order and make them durable with one write and one fsync (a group
    /// commit): all of them or none.
    pub async fn append_all(
        &self,
        events: Vec<(K, Value)>,
    ) -> Result<Vec<AuditRecord>, SpoolError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut inner = self.inner.lock().await;
        let path = inner.path.clone();
        if inner.broken {
            return Err(SpoolError::Io {
                path,
                source: std::io::Error::other("an earlier write failed"),
            });
        }
        let mut records = Vec::with_capacity(events.len());
        let mut text = String::new();
        let mut closing_only = true;
        let now = now_ms();
        for (kind, data) in events {
            closing_only &= kind.closes();
            let data = sallyport_audit::writers::conform(&self.writer, data);
            let kind = kind.as_str();
            let prev = records
                .last()
                .map(|r: &AuditRecord| (r.seq, r.hash.as_str()))
                .or(inner.last.as_ref().map(|(s, h)| (*s, h.as_str())));
            let record = AuditRecord::next(&self.source, prev, now, kind, data);
            let line = serde_json::to_string(&record).map_err(|e| SpoolError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            text.push_str(&line);
            text.push('\n');
            records.push(record);
        }
        let reserve = self.reserve.load(Ordering::Relaxed);
        if reserve > 0 && !closing_only {
            // A full disk is found before the write, whatever slack the file's last block has.
            let free = rustix::fs::fstatvfs(&inner.file)
                .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
                .unwrap_or(0);
            if free < reserve.saturating_add(text.len() as u64) {
                return Err(SpoolError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("{free} bytes free, {reserve} kept for closing records"),
                    ),
                });
            }
        }
        if inner.len >= self.segment_bytes.load(Ordering::Relaxed) {
            self.next_segment(&mut inner, records[0].seq)?;
        }
        let path = inner.path.clone();
        let written = inner
            .file
            .write_all(text.as_bytes())
            .and_then(|_| inner.file.sync_data());
        if let Err(source) = written {
            // Cut off whatever part got written (a full disk), so that the chain stays whole
            // and a later append can succeed once there is room again. If even that fails,
            // nothing more is accepted.
            let len = inner.len;
            if inner
                .file
                .set_len(len)
                .and_then(|_| inner.file.sync_all())
                .is_err()
            {
                inner.broken = true;
            }
            return Err(SpoolError::Io { path, source });
        }
        inner.len += text.len() as u64;
        if let Some(last) = records.last() {
            inner.last = Some((last.seq, last.hash.clone()));
            self.head.store(last.seq, Ordering::Relaxed);
        }
        drop(inner);
        self.appended.notify_one();
        Ok(records)
    }

    /// Close the current segment and start one whose first record is `seq`.
    fn next_segment(&self, inner: &mut Inner, seq: u64) -> Result<(), SpoolError> {
        let path = self.dir.join(segment_name(seq));
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let file = crate::private::open_append(&path).map_err(io)?;
        sync_dir(&self.dir).map_err(io)?;
        inner.file = file;
        inner.path = path.clone();
        inner.len = 0;
        Ok(())
    }

    /// Records after `after_seq`, in order: as many as fit in `max_bytes` of JSON (at least one).
    pub fn pending(
        &self,
        after_seq: u64,
        max_bytes: usize,
    ) -> Result<Vec<AuditRecord>, SpoolError> {
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SpoolError::Io {
                path: path.clone(),
                source,
            }
        };
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

/// Check one segment against the chain so far (`last`); the length of its whole, chained lines.
/// A torn last line is allowed in the last segment only.
fn check_segment(
    file: &std::fs::File,
    path: &Path,
    source: &str,
    first_seq: u64,
    last: &mut Option<(u64, String)>,
    is_last: bool,
) -> Result<u64, SpoolError> {
    let corrupt = |line: usize, problem: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut good_len = 0u64;
    let mut n = 0;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|source| SpoolError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            break;
        }
        n += 1;
        if !line.ends_with('\n') {
            if !is_last {
                return Err(corrupt(n, "a closed segment ends with a torn line".into()));
            }
            // Torn write of the last line: it was never acknowledged to anyone.
            tracing::warn!(line = n, "audit spool: cutting off a torn last line");
            break;
        }
        let r: AuditRecord = serde_json::from_str(&line).map_err(|e| corrupt(n, e.to_string()))?;
        let link = match last.as_ref() {
            Some((seq, hash)) => sallyport_audit::continues(Some((*seq, hash)), &r),
            None if r.seq <= 1 => sallyport_audit::continues(None, &r),
            // The oldest segment kept: the broker acknowledged what came before it.
            None if r.seq == first_seq => {
                sallyport_audit::continues(Some((r.seq - 1, r.prev_hash.as_str())), &r)
            }
            None => Err(format!("the segment starts at {first_seq}, not {}", r.seq)),
        };
        if r.source != source {
            return Err(corrupt(
                n,
                format!("the record is of another source ({})", r.source),
            ));
        }
        if let Err(problem) = link {
            return Err(corrupt(
                n,
                format!("the record does not continue the chain: {problem}"),
            ));
        }
        good_len += read as u64;
        *last = Some((r.seq, r.hash));
    }
    Ok(good_len)
}

/// Why a batch did not reach the broker.
#[derive(Debug)]
pub enum ShipError {
    /// 413: the batch is over the broker's limit; send a smaller one.
    TooLarge,
    /// The broker refused the batch (400, 403, 409): its records or its signature are not what
    /// this chain's writer may send. The data plane never writes such a record, so this is a
    /// bug or tampering (or a broker older than the data plane): said loudly, retried slowly,
    /// and the records stay spooled (nothing is dropped).
    Refused(String),
    Other(anyhow::Error),
}

/// The longest wait between two tries of a batch the broker refused.
const REFUSED_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// Ship spooled records to the broker until acknowledged; runs forever. Batches are sized in
/// bytes ([`MAX_BATCH_BYTES`]) and halved when the broker says one is too large (down to a
/// single record), so no record and no backlog can wedge shipping. Each batch carries the
/// signature of its last record's hash (the chain's head as of that batch, which covers every
/// earlier record) and the spool's head; when a batch cannot be sent, the head alone is
/// reported, so the broker knows how far behind it is. A batch the broker refuses is never
/// dropped: it is logged as an error (with the broker's reason) and tried again, and the head
/// report makes `sallyport audit verify` show the chain as INCOMPLETE meanwhile.
pub async fn ship<K: ChainKind>(spool: Arc<Spool<K>>, broker: crate::broker_client::BrokerClient) {
    let mut backoff = std::time::Duration::from_millis(200);
    let mut budget = MAX_BATCH_BYTES;
    let mut reported = None;
    let public_key = match spool.public_key().to_openssh() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the audit key: nothing is shipped");
            return;
        }
    };
    // What the broker acknowledged in this run: when the `acked` file cannot be written (a full
    // disk), shipping goes on from here rather than sending the same batch again and again.
    let mut acked_here = 0;
    loop {
        let acked = spool.acked().max(acked_here);
        let head = spool.head();
        let batch = match spool.pending(acked, budget) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "audit spool unreadable");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                reported = Some(head);
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), spool.appended.notified())
                    .await;
            continue;
        }
        let (last, last_hash) = batch
            .last()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or_default();
        let signature = match spool.sign_head(last, &last_hash) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the audit chain's head: records stay spooled");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        match broker
            .post_records(&batch, head, Some((&signature, &public_key)))
            .await
        {
            Ok(()) => {
                reported = Some(head);
                acked_here = last;
                budget = (budget * 2).min(MAX_BATCH_BYTES);
                if let Err(e) = spool.set_acked(last, &last_hash) {
                    // The records are safe at the broker (a restart sends them again, and the
                    // broker takes a record it has once); their segments stay until the
                    // acknowledgement can be written. Not a loop: wait before the next batch.
                    tracing::error!(error = %e, "cannot record the broker's acknowledgement");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                } else {
                    backoff = std::time::Duration::from_millis(200);
                }
            }
            Err(ShipError::TooLarge) if batch.len() > 1 => {
                budget = (budget / 2).max(1);
                tracing::warn!(
                    records = batch.len(),
                    budget,
                    "the broker refused a batch as too large: sending smaller ones"
                );
            }
            Err(ShipError::Refused(reason)) => {
                tracing::error!(
                    source = spool.source(),
                    first = batch[0].seq,
                    last,
                    reason,
                    "the broker REFUSED audit records of this chain: they stay spooled and are \
                     tried again; this is a bug or tampering (or a broker older than this \
                     gateway or edge): tell the operator"
                );
                if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                    reported = Some(head);
                }
                backoff = REFUSED_BACKOFF.min(backoff.max(std::time::Duration::from_secs(5)) * 2);
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                let e = match e {
                    ShipError::TooLarge => anyhow::anyhow!(
                        "record {} alone is larger than the broker's max_ingest_bytes",
                        batch[0].seq
                    ),
                    ShipError::Refused(reason) => anyhow::anyhow!(reason),
                    ShipError::Other(e) => e,
                };
                tracing::warn!(error = %e, pending = head.saturating_sub(acked), "audit records not shipped yet: they stay spooled");
                if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                    reported = Some(head);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_audit::writers::GatewayKind;
    use serde_json::json;

    const X: GatewayKind = GatewayKind::Shell;
    const COMMAND: GatewayKind = GatewayKind::Command;

    /// A broker on 127.0.0.1 that takes every batch (`200 {}`), counting those with records.
    async fn counting_broker() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        // One request: headers, then content-length bytes of body.
                        let request = loop {
                            let text = String::from_utf8_lossy(&buf).to_string();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let len = text[..end]
                                    .lines()
                                    .find_map(|l| {
                                        let (k, v) = l.split_once(':')?;
                                        k.eq_ignore_ascii_case("content-length")
                                            .then(|| v.trim().parse::<usize>().ok())?
                                    })
                                    .unwrap_or(0);
                                if buf.len() >= end + 4 + len {
                                    let request: Vec<u8> = buf.drain(..end + 4 + len).collect();
                                    break Some(request);
                                }
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let Some(request) = request else { return };
                        if String::from_utf8_lossy(&request).contains("\"records\":[{") {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, batches)
    }

    #[tokio::test]
    async fn an_acknowledgement_that_cannot_be_written_does_not_send_the_batch_again() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        s.append(X, json!({"n": 1})).await.unwrap();
        // `acked` cannot be written (as on a full disk): its temporary file is taken by a directory.
        std::fs::create_dir(dir.path().join("acked.tmp")).unwrap();
        let (url, batches) = counting_broker().await;
        let broker = crate::broker_client::BrokerClient::new(&url, None, Some("t".into())).unwrap();
        let shipping = tokio::spawn(ship(s.clone(), broker));
        for _ in 0..100 {
            if batches.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Time for the loop to send it again, as it did (hundreds of times a second) before.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        shipping.abort();
        assert_eq!(
            s.acked(),
            0,
            "the acknowledgement could not have been written"
        );
        assert_eq!(
            batches.load(Ordering::SeqCst),
            1,
            "the batch the broker took was sent again"
        );
    }

    fn open(dir: &Path) -> Result<Arc<Spool<GatewayKind>>, SpoolError> {
        let writer = Writer::Gateway {
            id: "g1".into(),
            cluster: "c1".into(),
        };
        Spool::open(
            dir,
            writer,
            sallyport_ca::keys::generate_ed25519("t").unwrap(),
        )
    }

    fn closing() -> Vec<GatewayKind> {
        GatewayKind::ALL
            .iter()
            .copied()
            .filter(|k| k.closes())
            .collect()
    }

    #[tokio::test]
    async fn appends_chain_and_survive_reopen_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        for i in 0..3 {
            s.append(X, json!({"i": i})).await.unwrap();
        }
        drop(s);
        // A torn write at the end.
        let path = dir.path().join(segment_name(1));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"source\":\"gateway:g1\",\"se").unwrap();
        drop(f);
        let s = open(dir.path()).unwrap();
        assert_eq!(s.head(), 3);
        let r = s.append(X, json!({"i": 3})).await.unwrap();
        assert_eq!(r.seq, 4);
        let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
        assert_eq!(sallyport_audit::verify_chain(&all), Ok(4));
        assert_eq!(s.pending(2, MAX_BATCH_BYTES).unwrap().len(), 2);
        let second = s.pending(1, 1).unwrap()[0].hash.clone();
        s.set_acked(2, &second).unwrap();
        assert_eq!(s.acked(), 2);
    }

    #[tokio::test]
    async fn an_edited_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        for i in 0..3 {
            s.append(X, json!({"i": i})).await.unwrap();
        }
        drop(s);
        let path = dir.path().join(segment_name(1));
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"i\":1", "\"i\":7");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(SpoolError::Corrupt { line: 2, .. })
        ));
    }

    #[tokio::test]
    async fn below_the_reserve_only_closing_records_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        s.append(COMMAND, json!({"command": "a"})).await.unwrap();
        // More than any file system has free: as if the disk were down to its reserve.
        s.set_reserve(u64::MAX / 4);
        let err = s
            .append(COMMAND, json!({"command": "b"}))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("kept for closing records"),
            "{err}"
        );
        for kind in closing() {
            s.append(kind, json!({})).await.unwrap();
        }
        // The refused record left no trace; the chain goes on.
        let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
        assert_eq!(all.len(), 1 + closing().len());
        assert!(all.iter().all(|r| r.data["command"] != "b"));
        assert_eq!(sallyport_audit::verify_chain(&all), Ok(all.len() as u64));
        s.set_reserve(0);
        s.append(COMMAND, json!({"command": "c"})).await.unwrap();
    }

    #[tokio::test]
    async fn segments_rotate_acknowledged_ones_go_and_the_chain_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        s.set_segment_bytes(1000);
        for i in 0..40 {
            s.append(X, json!({"i": i, "pad": "p".repeat(100)}))
                .await
                .unwrap();
        }
        let count = || segments(dir.path()).unwrap().len();
        let before = count();
        assert!(before > 5, "{before} segments");
        // Batches are bounded by bytes, never empty, and continue across segments.
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let batch = s.pending(after, 700).unwrap();
            if batch.is_empty() {
                break;
            }
            let bytes: usize = batch
                .iter()
                .map(|r| serde_json::to_string(r).unwrap().len())
                .sum();
            assert!(batch.len() == 1 || bytes <= 700, "{bytes}");
            after = batch.last().unwrap().seq;
            seen.extend(batch);
        }
        assert_eq!(sallyport_audit::verify_chain(&seen), Ok(40));
        // Acknowledging half deletes the segments it covers whole, and nothing unacknowledged.
        s.set_acked(20, &seen[19].hash).unwrap();
        assert!(count() < before);
        assert!(s.pending(0, MAX_BATCH_BYTES).unwrap()[0].seq <= 21);
        assert_eq!(s.pending(20, MAX_BATCH_BYTES).unwrap().len(), 20);
        // Everything acknowledged: only the segment being written stays; reopening goes on
        // with the chain (no second genesis).
        s.set_acked(40, &seen[39].hash).unwrap();
        assert_eq!(count(), 1);
        drop(s);
        let s = open(dir.path()).unwrap();
        s.set_segment_bytes(1000);
        let r = s.append(X, json!({"i": 40})).await.unwrap();
        assert_eq!((r.seq, r.prev_hash.as_str()), (41, seen[39].hash.as_str()));
        // A segment of records the broker never acknowledged, deleted: refused.
        for i in 0..20 {
            s.append(X, json!({"i": i, "pad": "p".repeat(100)}))
                .await
                .unwrap();
        }
        drop(s);
        let first = segments(dir.path()).unwrap()[0].1.clone();
        std::fs::remove_file(first).unwrap();
        let err = open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("never acknowledged"), "{err}");
    }

    #[tokio::test]
    async fn a_spool_of_an_older_version_becomes_the_first_segment() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        s.append(X, json!({})).await.unwrap();
        drop(s);
        std::fs::rename(
            dir.path().join(segment_name(1)),
            dir.path().join("audit.jsonl"),
        )
        .unwrap();
        let s = open(dir.path()).unwrap();
        assert_eq!(s.append(X, json!({})).await.unwrap().seq, 2);
        assert!(!dir.path().join("audit.jsonl").exists());
    }

    #[tokio::test]
    async fn a_group_commit_chains_like_single_appends_and_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        s.append(X, json!({"i": 0})).await.unwrap();
        let batch: Vec<(GatewayKind, Value)> =
            (1..=50).map(|i| (COMMAND, json!({"i": i}))).collect();
        let written = s.append_all(batch).await.unwrap();
        assert_eq!(written.len(), 50);
        assert_eq!(s.head(), 51);
        let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
        assert_eq!(sallyport_audit::verify_chain(&all), Ok(51));
        // Below the reserve, a batch with anything but closing records is refused whole.
        s.set_reserve(u64::MAX / 4);
        let mixed = vec![(GatewayKind::ChannelExit, json!({})), (COMMAND, json!({}))];
        assert!(s.append_all(mixed).await.is_err());
        assert_eq!(s.head(), 51);
        s.append_all(vec![
            (GatewayKind::ChannelExit, json!({})),
            (GatewayKind::SessionEnded, json!({})),
        ])
        .await
        .unwrap();
        assert_eq!(s.head(), 53);
    }

    /// Every kind the data plane can write is on its writer's allowlist (by type: the spools
    /// take only `EdgeKind`s or `GatewayKind`s), and whatever data it carries, the record that
    /// reaches the spool is one the broker's ingest takes.
    #[tokio::test]
    async fn every_kind_the_edge_and_the_gateway_write_passes_the_brokers_check() {
        use sallyport_audit::writers::{EdgeKind, check};
        let nasty = json!({"engineer": "a\u{1b}[2Jb", "ticket": "T 1", "cluster": "other",
                           "node": "n1", "session": "s/1", "edge": "someone", "command": "ls"});
        let dir = tempfile::tempdir().unwrap();
        let g = open(dir.path()).unwrap();
        let gw = Writer::Gateway {
            id: "g1".into(),
            cluster: "c1".into(),
        };
        for kind in GatewayKind::ALL {
            let r = g.append(*kind, nasty.clone()).await.unwrap();
            assert_eq!(check(&gw, &r.kind, &r.data), Ok(()), "{kind:?}: {}", r.data);
        }
        let dir = tempfile::tempdir().unwrap();
        let edge = Writer::Edge { name: "e1".into() };
        let e: Arc<Spool<EdgeKind>> = Spool::open(
            dir.path(),
            edge.clone(),
            sallyport_ca::keys::generate_ed25519("t").unwrap(),
        )
        .unwrap();
        for kind in EdgeKind::ALL {
            let r = e.append(*kind, nasty.clone()).await.unwrap();
            assert_eq!(
                check(&edge, &r.kind, &r.data),
                Ok(()),
                "{kind:?}: {}",
                r.data
            );
            assert_eq!(r.data["edge"], "e1");
        }
        // A spool of one role cannot be opened for the other's chain.
        let dir = tempfile::tempdir().unwrap();
        assert!(
            Spool::<EdgeKind>::open(
                dir.path(),
                gw,
                sallyport_ca::keys::generate_ed25519("t").unwrap()
            )
            .is_err()
        );
    }

    #[test]
    fn a_head_signature_is_made_with_the_spools_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path()).unwrap();
        let sig = s.sign_head(3, "ab").unwrap();
        assert_eq!(
            sallyport_ca::chainsig::verify_head(s.public_key(), "gateway:g1", 3, "ab", &sig),
            Ok(())
        );
    }
}
