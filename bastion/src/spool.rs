//! The audit spool: a local, append-only, hash-chained file of AuditRecords, written durably
//! (fsync) before the caller goes on, shipped to the broker until acknowledged.
//!
//! Files in the spool directory: `audit.jsonl` (one AuditRecord per line) and `acked` (the
//! highest sequence number the broker acknowledged). A torn last line (a crash mid-write) is cut
//! off at start; anything else that does not chain is an error: the spool is never rewritten.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sallyport_broker::audit::AuditRecord;
use serde_json::Value;
use tokio::sync::{Mutex, Notify};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the audit spool {path} cannot be written: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit spool {path} is corrupt at line {line}: {problem}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Records that close or account for what was already allowed: they may use the reserve.
pub const CLOSING_KINDS: [&str; 5] = [
    "session_ended",
    "session_terminated",
    "channel_exit",
    "recording_finished",
    "output_recorded",
];

struct Inner {
    file: std::fs::File,
    /// Length of the file up to the last complete, synced record.
    len: u64,
    last: Option<(u64, String)>,
    /// Set after a failed write: nothing more is accepted (fail closed).
    broken: bool,
}

pub struct Spool {
    dir: PathBuf,
    source: String,
    /// Free bytes kept on the spool's file system for records that close what was already
    /// allowed ([`CLOSING_KINDS`]); below it, every other record is refused (fail closed).
    reserve: std::sync::atomic::AtomicU64,
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

impl Spool {
    pub fn open(dir: &Path, source: &str) -> Result<Arc<Spool>, SpoolError> {
        let path = dir.join("audit.jsonl");
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        // Read back what is there, checking the chain.
        let mut last: Option<AuditRecord> = None;
        let mut good_len: u64 = 0;
        {
            let mut reader = BufReader::new(&file);
            let mut line = String::new();
            let mut n = 0;
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(io)?;
                if read == 0 {
                    break;
                }
                n += 1;
                if !line.ends_with('\n') {
                    // Torn write of the last line: it was never acknowledged to anyone.
                    tracing::warn!(line = n, "audit spool: cutting off a torn last line");
                    break;
                }
                let r: AuditRecord =
                    serde_json::from_str(&line).map_err(|e| SpoolError::Corrupt {
                        path: path.clone(),
                        line: n,
                        problem: e.to_string(),
                    })?;
                let (want_seq, want_prev) = match &last {
                    None => (1, sallyport_broker::audit::GENESIS),
                    Some(prev) => (prev.seq + 1, prev.hash.as_str()),
                };
                let ok =
                    r.seq == want_seq && r.prev_hash == want_prev && r.compute_hash() == r.hash;
                if !ok || r.source != source {
                    return Err(SpoolError::Corrupt {
                        path: path.clone(),
                        line: n,
                        problem: "the record does not continue the chain".into(),
                    });
                }
                good_len += read as u64;
                last = Some(r);
            }
        }
        let len = file.metadata().map_err(io)?.len();
        if len != good_len {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Arc::new(Spool {
            dir: dir.to_path_buf(),
            source: source.to_string(),
            reserve: std::sync::atomic::AtomicU64::new(0),
            inner: Mutex::new(Inner {
                file,
                len: good_len,
                last: last.map(|r| (r.seq, r.hash)),
                broken: false,
            }),
            appended: Notify::new(),
        }))
    }

    /// Keep `bytes` free on the spool's file system for closing records.
    pub fn set_reserve(&self, bytes: u64) {
        self.reserve
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Append one event and make it durable before returning.
    pub async fn append(&self, kind: &str, data: Value) -> Result<AuditRecord, SpoolError> {
        let path = self.dir.join("audit.jsonl");
        let mut inner = self.inner.lock().await;
        if inner.broken {
            return Err(SpoolError::Io {
                path,
                source: std::io::Error::other("an earlier write failed"),
            });
        }
        let record = AuditRecord::next(
            &self.source,
            inner.last.as_ref().map(|(s, h)| (*s, h.as_str())),
            now_ms(),
            kind,
            data,
        );
        let mut line = serde_json::to_string(&record).map_err(|e| SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push('\n');
        let reserve = self.reserve.load(std::sync::atomic::Ordering::Relaxed);
        if reserve > 0 && !CLOSING_KINDS.contains(&kind) {
            // A full disk is found before the write, whatever slack the file's last block has.
            let free = rustix::fs::fstatvfs(&inner.file)
                .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
                .unwrap_or(0);
            if free < reserve.saturating_add(line.len() as u64) {
                return Err(SpoolError::Io {
                    path,
                    source: std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        format!("{free} bytes free, {reserve} kept for closing records"),
                    ),
                });
            }
        }
        let written = inner
            .file
            .write_all(line.as_bytes())
            .and_then(|_| inner.file.sync_data());
        if let Err(source) = written {
            // Cut off whatever part of the line got written (a full disk), so that the chain
            // stays whole and a later append can succeed once there is room again. If even that
            // fails, nothing more is accepted.
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
        inner.len += line.len() as u64;
        inner.last = Some((record.seq, record.hash.clone()));
        drop(inner);
        self.appended.notify_one();
        Ok(record)
    }

    /// Records after `after_seq`, at most `limit`.
    pub fn pending(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, SpoolError> {
        let path = self.dir.join("audit.jsonl");
        let io = |source| SpoolError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io)?;
            let Ok(r) = serde_json::from_str::<AuditRecord>(&line) else {
                break;
            };
            if r.seq > after_seq {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub fn acked(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("acked"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn set_acked(&self, seq: u64) -> std::io::Result<()> {
        let tmp = self.dir.join("acked.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(seq.to_string().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("acked"))
    }

    pub async fn last_seq(&self) -> u64 {
        self.inner
            .lock()
            .await
            .last
            .as_ref()
            .map(|(s, _)| *s)
            .unwrap_or(0)
    }
}

/// Ship spooled records to the broker until acknowledged; runs forever.
pub async fn ship(spool: Arc<Spool>, broker: crate::broker_client::BrokerClient) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let acked = spool.acked();
        let batch = match spool.pending(acked, 500) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "audit spool unreadable");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), spool.appended.notified())
                    .await;
            continue;
        }
        let last = batch.last().map(|r| r.seq).unwrap_or(acked);
        match broker.post_records(&batch).await {
            Ok(()) => {
                if let Err(e) = spool.set_acked(last) {
                    tracing::error!(error = %e, "cannot record the broker's acknowledgement");
                }
                backoff = std::time::Duration::from_millis(200);
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = batch.len(), "broker unreachable: audit records stay spooled");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn appends_chain_and_survive_reopen_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "gateway:g1").unwrap();
        for i in 0..3 {
            s.append("x", json!({"i": i})).await.unwrap();
        }
        drop(s);
        // A torn write at the end.
        let path = dir.path().join("audit.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"source\":\"gateway:g1\",\"se").unwrap();
        drop(f);
        let s = Spool::open(dir.path(), "gateway:g1").unwrap();
        assert_eq!(s.last_seq().await, 3);
        let r = s.append("x", json!({"i": 3})).await.unwrap();
        assert_eq!(r.seq, 4);
        let all = s.pending(0, 100).unwrap();
        assert_eq!(sallyport_broker::audit::verify_chain(&all), Ok(4));
        assert_eq!(s.pending(2, 100).unwrap().len(), 2);
        s.set_acked(2).unwrap();
        assert_eq!(s.acked(), 2);
    }

    #[tokio::test]
    async fn an_edited_spool_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "gateway:g1").unwrap();
        for i in 0..3 {
            s.append("x", json!({"i": i})).await.unwrap();
        }
        drop(s);
        let path = dir.path().join("audit.jsonl");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"i\":1", "\"i\":7");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), "gateway:g1"),
            Err(SpoolError::Corrupt { line: 2, .. })
        ));
    }

    #[tokio::test]
    async fn below_the_reserve_only_closing_records_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), "gateway:g1").unwrap();
        s.append("command", json!({"command": "a"})).await.unwrap();
        // More than any file system has free: as if the disk were down to its reserve.
        s.set_reserve(u64::MAX / 4);
        let err = s
            .append("command", json!({"command": "b"}))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("kept for closing records"),
            "{err}"
        );
        for kind in CLOSING_KINDS {
            s.append(kind, json!({})).await.unwrap();
        }
        // The refused record left no trace; the chain goes on.
        let all = s.pending(0, 100).unwrap();
        assert_eq!(all.len(), 1 + CLOSING_KINDS.len());
        assert!(all.iter().all(|r| r.data["command"] != "b"));
        assert_eq!(
            sallyport_broker::audit::verify_chain(&all),
            Ok(all.len() as u64)
        );
        s.set_reserve(0);
        s.append("command", json!({"command": "c"})).await.unwrap();
    }
}
