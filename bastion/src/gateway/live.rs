//! Live watching: while a reviewer or a customer approver watches one of this gateway's
//! sessions, the session's recordings are sent to the broker as they grow. The broker says which
//! sessions are watched (read every second); every quarter second the new whole lines of each
//! of their `.cast.part` files go to `POST /v1/gateway/live`, in order. A watch that begins
//! late starts from the recording's last `START_BYTES` (the screen is rebuilt from there).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sallyport_api::sessions::{LiveAck, LiveChunk, Watches};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Gateway;

/// A watch that begins late starts this far from a recording's end, at most.
const START_BYTES: u64 = 1 << 20;
/// One chunk is at most this long (the broker takes up to 256 KiB).
const CHUNK_BYTES: u64 = 192 << 10;
/// Chunks sent for one recording per round, at most (the rest follows in the next round).
const CHUNKS_PER_ROUND: usize = 8;

/// Start reading the watched sessions and sending their recordings.
pub fn spawn(gw: Arc<Gateway>) {
    let g = gw.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match g.broker.get_as::<Watches>("/v1/gateway/watches").await {
                Ok(v) => {
                    if let Ok(mut w) = g.watched.lock() {
                        *w = v.sessions.into_iter().collect();
                    }
                    if let Ok(mut o) = g.observed.lock() {
                        *o = v.observed.into_iter().collect();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read watched sessions"),
            }
        }
    });
    tokio::spawn(async move {
        let dir = gw.cfg.data_dir.join("recordings");
        // Recording -> where its next chunk starts.
        let mut sent: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let watched = gw.watched.lock().map(|w| w.clone()).unwrap_or_default();
            sent.retain(|rec, _| session_of(rec).is_some_and(|s| watched.contains(s)));
            if watched.is_empty() {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let Some(rec) = name.strip_suffix(".cast.part") else {
                    continue;
                };
                let Some(sid) = session_of(rec).filter(|s| watched.contains(*s)) else {
                    continue;
                };
                if let Err(e) = send(&gw, &e.path(), sid, rec, &mut sent).await {
                    tracing::debug!(error = %e, recording = rec, "cannot send a live recording");
                }
            }
        }
    });
}

/// The session a recording id (`<session>-c<n>`) belongs to.
fn session_of(rec: &str) -> Option<&str> {
    rec.rsplit_once("-c").map(|(s, _)| s)
}

/// Send what `path` holds past what was sent, in whole lines.
async fn send(
    gw: &Gateway,
    path: &Path,
    sid: &str,
    rec: &str,
    sent: &mut HashMap<String, u64>,
) -> anyhow::Result<()> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let mut first = vec![0u8; 4096.min(len as usize)];
    f.read_exact(&mut first).await?;
    let Some(header_end) = first.iter().position(|&b| b == b'\n') else {
        return Ok(());
    };
    let header = String::from_utf8_lossy(&first[..header_end]).to_string();
    for _ in 0..CHUNKS_PER_ROUND {
        let at = match sent.get(rec) {
            Some(&at) => at,
            None => start_at(&mut f, header_end as u64 + 1, len).await?,
        };
        if at > len {
            sent.remove(rec);
            return Ok(());
        }
        let want = (len - at).min(CHUNK_BYTES);
        let mut buf = vec![0u8; want as usize];
        f.seek(std::io::SeekFrom::Start(at)).await?;
        f.read_exact(&mut buf).await?;
        let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole == 0 && sent.contains_key(rec) {
            return Ok(());
        }
        buf.truncate(whole);
        let data = String::from_utf8(buf)?;
        let body = LiveChunk {
            session: sid.to_string(),
            recording: rec.to_string(),
            header: header.clone(),
            at,
            data,
        };
        let (status, v) = gw
            .broker
            .post_json_status("/v1/gateway/live", &body)
            .await?;
        let ack = serde_json::from_value::<LiveAck>(v.clone()).ok();
        match (status.as_u16(), ack) {
            (
                200 | 409,
                Some(LiveAck {
                    next: Some(Some(next)),
                    ..
                }),
            ) => {
                sent.insert(rec.to_string(), next);
            }
            (409, Some(LiveAck { watched: false, .. })) => return Ok(()),
            (409, _) => {
                sent.remove(rec);
            }
            _ => anyhow::bail!("the broker answered {status}: {v}"),
        }
        if whole == 0 || sent.get(rec).is_some_and(|&n| n >= len) {
            return Ok(());
        }
    }
    Ok(())
}

/// Where a watch that begins now starts in a recording of `len` bytes whose events begin at
/// `events`: the start of a line, at most `START_BYTES` before the end.
async fn start_at(f: &mut tokio::fs::File, events: u64, len: u64) -> anyhow::Result<u64> {
    let from = len.saturating_sub(START_BYTES).max(events);
    if from == events {
        return Ok(events);
    }
    // The line `from` falls in is skipped: the next one starts whole.
    let mut buf = vec![0u8; (len - from).min(64 << 10) as usize];
    f.seek(std::io::SeekFrom::Start(from)).await?;
    f.read_exact(&mut buf).await?;
    Ok(buf
        .iter()
        .position(|&b| b == b'\n')
        .map_or(len, |i| from + i as u64 + 1))
}
