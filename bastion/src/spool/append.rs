//! Appending to the spool: appends at once share one write and one fsync (group commit).
//!
//! An append queues its batch, then waits for its answer or for the writer's lock (`inner`),
//! whichever comes first. Whoever takes the lock while its own batch is still queued leads: it
//! takes everything queued, chains the batches in queue order (each batch's records together and
//! in its order, the chain running on from one batch to the next), writes them with one write
//! and one `fdatasync`, and answers each appender with its own records before it lets go of the
//! lock. Appenders that arrive during the write are queued for the next one. So an append still
//! returns only once its records are durable, and appends at once cost one fsync together.
//!
//! Each appender's batch is all or nothing, on its own:
//! - below the reserve ([`Spool::set_reserve`]), a batch with anything but closing records is
//!   refused, counting what the batches before it in the group take; the rest of the group is
//!   written without it (a closing batch is never refused because another one shares its write);
//! - a failed write or fsync fails the whole group: the segment is cut back to its length before
//!   the write, so nothing of the group stays and the chain is whole for the next append, and
//!   every appender of the group gets the error; if even the cut fails, the spool is broken and
//!   accepts nothing more (fail closed).
//!
//! An appender that stops waiting (its future dropped) takes its batch out of the queue if no
//! leader took it yet: nothing of it is written. Once a leader took it, it is written with its
//! group; only the answer is lost. The leader takes, writes and answers with no `.await` in
//! between, so dropping the leader's own future never cuts a group short.

use std::io::Write;
use std::sync::atomic::Ordering;

use sallyport_audit::AuditRecord;
use sallyport_audit::writers::ChainKind;
use serde_json::Value;
use tokio::sync::oneshot;

use super::segments::{segment_name, sync_dir};
use super::{Inner, Spool, SpoolError, now_ms};

type Answer = Result<Vec<AuditRecord>, SpoolError>;

/// An appender's batch waiting for a leader.
struct Pending<K> {
    id: u64,
    events: Vec<(K, Value)>,
    reply: oneshot::Sender<Answer>,
}

/// The batches waiting for the next write, in the order they came.
pub(super) struct Queue<K> {
    list: std::sync::Mutex<(u64, Vec<Pending<K>>)>,
}

impl<K> Queue<K> {
    pub(super) fn new() -> Queue<K> {
        Queue {
            list: std::sync::Mutex::new((0, Vec::new())),
        }
    }

    /// The queue's lock (a panic while it was held leaves a queue that is still whole).
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, Vec<Pending<K>>)> {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, events: Vec<(K, Value)>, reply: oneshot::Sender<Answer>) -> u64 {
        let mut list = self.lock();
        list.0 += 1;
        let id = list.0;
        list.1.push(Pending { id, events, reply });
        id
    }

    fn take(&self) -> Vec<Pending<K>> {
        std::mem::take(&mut self.lock().1)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().1.len()
    }
}

/// An appender's place in the queue: its batch is taken out again if the appender goes away
/// before a leader took it.
struct Queued<'a, K> {
    queue: &'a Queue<K>,
    id: u64,
}

impl<K> Drop for Queued<'_, K> {
    fn drop(&mut self) {
        self.queue.lock().1.retain(|p| p.id != self.id);
    }
}

/// Test-only: the group writes made, and failures to make.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Hooks {
    /// Writes (each with its fsync) made or tried.
    pub(super) writes: std::sync::atomic::AtomicU64,
    /// The next write writes half its bytes, then fails (a disk that filled up mid-write).
    pub(super) fail_write: std::sync::atomic::AtomicBool,
    /// ... and the cut after it fails too.
    pub(super) fail_cut: std::sync::atomic::AtomicBool,
}

impl<K: ChainKind> Spool<K> {
    /// Append one event and make it durable before returning.
    pub async fn append(&self, kind: K, data: Value) -> Result<AuditRecord, SpoolError> {
        let mut written = self.append_all(vec![(kind, data)]).await?;
        written.pop().ok_or_else(|| SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("nothing was written"),
        })
    }

    /// Append events in order and make them durable before returning: all of them or none,
    /// together (one after the other in the chain). Written with one write and one fsync, shared
    /// with the appends waiting at the same time (see the module's documentation).
    pub async fn append_all(
        &self,
        events: Vec<(K, Value)>,
    ) -> Result<Vec<AuditRecord>, SpoolError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, mut answer) = oneshot::channel();
        let id = self.queue.push(events, reply);
        let _queued = Queued {
            queue: &self.queue,
            id,
        };
        let mut inner = tokio::select! {
            biased;
            answered = &mut answer => return answered.unwrap_or_else(|_| Err(self.abandoned())),
            inner = self.inner.lock() => inner,
        };
        // A leader answers before it lets go of the lock: no answer yet means that this
        // appender's batch is still queued, and this appender leads.
        match answer.try_recv() {
            Ok(answered) => return answered,
            Err(oneshot::error::TryRecvError::Closed) => return Err(self.abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let group = self.queue.take();
        self.write_group(&mut inner, group);
        drop(inner);
        answer.try_recv().unwrap_or_else(|_| Err(self.abandoned()))
    }

    fn abandoned(&self) -> SpoolError {
        SpoolError::Io {
            path: self.dir.clone(),
            source: std::io::Error::other("the append was abandoned by its writer"),
        }
    }

    /// Write `group` with one write and one fsync, and answer each of its appenders.
    fn write_group(&self, inner: &mut Inner, group: Vec<Pending<K>>) {
        if inner.broken {
            for p in group {
                let _ = p.reply.send(Err(SpoolError::Io {
                    path: inner.path.clone(),
                    source: std::io::Error::other("an earlier write failed"),
                }));
            }
            return;
        }
        let now = now_ms();
        let reserve = self.reserve.load(Ordering::Relaxed);
        let mut free = None;
        let mut text = String::new();
        let mut last = inner.last.clone();
        let mut accepted = Vec::with_capacity(group.len());
        for p in group {
            let prev = last.as_ref().map(|(s, h)| (*s, h.as_str()));
            let (records, lines, closing_only) = match self.lines(prev, p.events, now, inner) {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = p.reply.send(Err(e));
                    continue;
                }
            };
            if reserve > 0 && !closing_only {
                // A full disk is found before the write, whatever slack the file's last block
                // has.
                let free = *free.get_or_insert_with(|| {
                    rustix::fs::fstatvfs(&inner.file)
                        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
                        .unwrap_or(0)
                });
                let need = (text.len() + lines.len()) as u64;
                if free < reserve.saturating_add(need) {
                    let _ = p.reply.send(Err(SpoolError::Io {
                        path: inner.path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            format!("{free} bytes free, {reserve} kept for closing records"),
                        ),
                    }));
                    continue;
                }
            }
            text.push_str(&lines);
            if let Some(r) = records.last() {
                last = Some((r.seq, r.hash.clone()));
            }
            accepted.push((p.reply, records));
        }
        let Some(first) = accepted.first().and_then(|(_, records)| records.first()) else {
            return;
        };
        let first = first.seq;
        if let Err(e) = self.write(inner, first, text.as_bytes()) {
            for (reply, _) in accepted {
                let _ = reply.send(Err(again(&e)));
            }
            return;
        }
        inner.len += text.len() as u64;
        if let Some((seq, _)) = &last {
            self.head.store(*seq, Ordering::Relaxed);
        }
        inner.last = last;
        for (reply, records) in accepted {
            let _ = reply.send(Ok(records));
        }
        self.appended.notify_one();
    }

    /// The records of one batch after `prev`, their lines, and whether they only close.
    fn lines(
        &self,
        prev: Option<(u64, &str)>,
        events: Vec<(K, Value)>,
        now: u64,
        inner: &Inner,
    ) -> Result<(Vec<AuditRecord>, String, bool), SpoolError> {
        let mut records: Vec<AuditRecord> = Vec::with_capacity(events.len());
        let mut text = String::new();
        let mut closing_only = true;
        for (kind, data) in events {
            closing_only &= kind.closes();
            let data = sallyport_audit::writers::conform(&self.writer, data);
            let after = records.last().map(|r| (r.seq, r.hash.as_str())).or(prev);
            let record = AuditRecord::next(&self.source, after, now, kind.as_str(), data);
            let line = serde_json::to_string(&record).map_err(|e| SpoolError::Io {
                path: inner.path.clone(),
                source: std::io::Error::other(e),
            })?;
            text.push_str(&line);
            text.push('\n');
            records.push(record);
        }
        Ok((records, text, closing_only))
    }

    /// Write `bytes` (whose first record is `first`) at the end of the segment, in a new one past
    /// the segment's size, and fsync them; on failure, cut off whatever part got written, so
    /// that the chain stays whole and a later append can succeed once there is room again. If
    /// even that fails, nothing more is accepted.
    fn write(&self, inner: &mut Inner, first: u64, bytes: &[u8]) -> Result<(), SpoolError> {
        if inner.len >= self.segment_bytes.load(Ordering::Relaxed) {
            self.next_segment(inner, first)?;
        }
        let Err(source) = self.write_sync(&mut inner.file, bytes) else {
            return Ok(());
        };
        if self
            .cut(&inner.file, inner.len)
            .and_then(|_| inner.file.sync_all())
            .is_err()
        {
            inner.broken = true;
        }
        Err(SpoolError::Io {
            path: inner.path.clone(),
            source,
        })
    }

    fn write_sync(&self, file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        {
            self.hooks.writes.fetch_add(1, Ordering::SeqCst);
            if self.hooks.fail_write.swap(false, Ordering::SeqCst) {
                file.write_all(&bytes[..bytes.len() / 2])?;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "the disk filled up (a test)",
                ));
            }
        }
        file.write_all(bytes)?;
        file.sync_data()
    }

    fn cut(&self, file: &std::fs::File, len: u64) -> std::io::Result<()> {
        #[cfg(test)]
        if self.hooks.fail_cut.swap(false, Ordering::SeqCst) {
            return Err(std::io::Error::other("the cut failed (a test)"));
        }
        file.set_len(len)
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
}

/// The same error again, for each appender of a group.
fn again(e: &SpoolError) -> SpoolError {
    match e {
        SpoolError::Io { path, source } => SpoolError::Io {
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        SpoolError::Writer {
            path,
            found,
            wanted,
        } => SpoolError::Writer {
            path: path.clone(),
            found: found.clone(),
            wanted: wanted.clone(),
        },
        SpoolError::Corrupt {
            path,
            line,
            problem,
        } => SpoolError::Corrupt {
            path: path.clone(),
            line: *line,
            problem: problem.clone(),
        },
    }
}
