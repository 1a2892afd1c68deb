//! Finished recordings handed to the broker, and retired once it has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Recordings uploaded at once. One at a time, each waited for its own round trip to the broker
/// (about 60 a second: a burst of 10,000 sessions left thousands waiting minutes later); 8 keeps
/// the broker's writes few and the gateway's memory bounded (see [`ALONE_ABOVE_BYTES`]).
const UPLOADS_IN_FLIGHT: u32 = 8;

/// A recording larger than this is uploaded alone (it takes every slot): the uploads in flight
/// hold at most `UPLOADS_IN_FLIGHT` times this in memory, or one larger recording, as before.
const ALONE_ABOVE_BYTES: u64 = 32 << 20;

/// Send finished recordings to the broker, retried until accepted; runs forever. A delivered
/// recording is kept as `<id>.cast.uploaded` for `retention` and then deleted (at once when
/// `retention` is zero): the broker holds the copy that counts.
pub async fn upload_forever(
    dir: PathBuf,
    broker: crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    loop {
        upload_pending(&dir, &broker, retention).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    }
}

/// One round: every finished recording (`<id>.cast`; never a `.cast.part` being written) sent,
/// up to [`UPLOADS_IN_FLIGHT`] at once, each retired only once the broker acknowledged it; a
/// failed one stays for the next round. Returns once every upload of the round is over.
async fn upload_pending(
    dir: &Path,
    broker: &crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let slots = Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT as usize));
    let mut uploads = JoinSet::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".cast.uploaded") {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age >= retention);
            if old && let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(error = %err, path = %path.display(), "cannot delete a delivered recording");
            }
            continue;
        }
        let Some(id) = name.strip_suffix(".cast").map(str::to_string) else {
            continue;
        };
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        let need = if size > ALONE_ABOVE_BYTES {
            UPLOADS_IN_FLIGHT
        } else {
            1
        };
        let Ok(slot) = slots.clone().acquire_many_owned(need).await else {
            break;
        };
        let broker = broker.clone();
        uploads.spawn(async move {
            let _slot = slot;
            upload_one(&path, &id, &broker, retention).await;
        });
        // Reap the finished ones as the round goes.
        while uploads.try_join_next().is_some() {}
    }
    while uploads.join_next().await.is_some() {}
}

async fn upload_one(
    path: &Path,
    id: &str,
    broker: &crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    let Ok(bytes) = tokio::fs::read(path).await else {
        return;
    };
    match broker.put_recording(id, bytes).await {
        Ok(()) => delivered(path, retention),
        Err(e) => {
            tracing::warn!(error = %e, recording = id, "recording not uploaded yet; will retry")
        }
    }
}

fn delivered(path: &Path, retention: std::time::Duration) {
    let done = if retention.is_zero() {
        std::fs::remove_file(path)
    } else {
        std::fs::rename(path, path.with_extension("cast.uploaded"))
    };
    if let Err(err) = done {
        tracing::warn!(error = %err, path = %path.display(), "cannot retire a delivered recording");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// What a stand-in broker saw: each recording it acknowledged with its bytes and how many
    /// times, the most uploads it had at once.
    #[derive(Default)]
    struct Seen {
        stored: Mutex<HashMap<String, (Vec<u8>, usize)>>,
        refused: Mutex<Vec<String>>,
        now: AtomicUsize,
        most: AtomicUsize,
    }

    /// A broker on 127.0.0.1 answering `PUT /v1/recordings/{id}` (HTTP/1.1, keep-alive): 503 for
    /// the ids in `fail`, 201 otherwise, each after `latency`.
    async fn broker(fail: HashSet<String>, latency: Duration) -> (String, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let (fail, s) = (Arc::new(fail), seen.clone());
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (fail, seen) = (fail.clone(), s.clone());
                tokio::spawn(async move {
                    let mut conn = BufReader::new(conn);
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            conn.read_line(&mut h).await.unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        conn.read_exact(&mut body).await.unwrap();
                        let id = path.strip_prefix("/v1/recordings/").unwrap().to_string();
                        let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
                        seen.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(latency).await;
                        seen.now.fetch_sub(1, Ordering::SeqCst);
                        let status = if fail.contains(&id) {
                            seen.refused.lock().unwrap().push(id);
                            "503 Service Unavailable"
                        } else {
                            let mut stored = seen.stored.lock().unwrap();
                            let e = stored.entry(id).or_insert((body.clone(), 0));
                            assert_eq!(e.0, body);
                            e.1 += 1;
                            "201 Created"
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                        );
                        conn.get_mut().write_all(answer.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, seen)
    }

    fn recordings(dir: &Path, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let id = format!("s{i:04}");
                std::fs::write(dir.join(format!("{id}.cast")), format!("recording {i}\n")).unwrap();
                id
            })
            .collect()
    }

    fn left(dir: &Path, suffix: &str) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
            .count()
    }

    /// 200 recordings all reach the broker exactly once, several at a time but never more than
    /// `UPLOADS_IN_FLIGHT`; one being written is not sent; the ones the broker refused stay for
    /// the next round, which delivers them and nothing twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_recording_reaches_the_broker_once_and_a_refused_one_waits_for_the_next_round() {
        let dir = tempfile::tempdir().unwrap();
        let ids = recordings(dir.path(), 200);
        std::fs::write(dir.path().join("s9999.cast.part"), "being written").unwrap();
        let fail: HashSet<String> = ids.iter().step_by(17).cloned().collect();
        let (url, seen) = broker(fail.clone(), Duration::from_millis(5)).await;
        let client = crate::broker_client::BrokerClient::new(&url, None, None).unwrap();
        let keep = Duration::from_secs(3600);

        upload_pending(dir.path(), &client, keep).await;
        {
            let stored = seen.stored.lock().unwrap();
            assert_eq!(stored.len(), 200 - fail.len());
            assert!(stored.values().all(|(_, n)| *n == 1));
            assert!(fail.iter().all(|id| !stored.contains_key(id)));
            assert!(!stored.contains_key("s9999"));
        }
        let most = seen.most.load(Ordering::SeqCst);
        assert!(
            (2..=UPLOADS_IN_FLIGHT as usize).contains(&most),
            "{most} at once"
        );
        assert_eq!(left(dir.path(), ".cast"), fail.len());
        assert_eq!(left(dir.path(), ".cast.uploaded"), 200 - fail.len());
        assert_eq!(left(dir.path(), ".cast.part"), 1);

        // The broker takes them now: the next round sends only those.
        let (url, again) = broker(HashSet::new(), Duration::ZERO).await;
        let client = crate::broker_client::BrokerClient::new(&url, None, None).unwrap();
        upload_pending(dir.path(), &client, keep).await;
        let stored = again.stored.lock().unwrap();
        let got: HashSet<String> = stored.keys().cloned().collect();
        assert_eq!(got, fail);
        assert_eq!(left(dir.path(), ".cast"), 0);
        assert_eq!(left(dir.path(), ".cast.uploaded"), 200);
        assert_eq!(left(dir.path(), ".cast.part"), 1);
    }

    /// With no retention a delivered recording is deleted; a refused one is kept as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_retention_a_delivered_recording_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        recordings(dir.path(), 20);
        let fail: HashSet<String> = ["s0003".to_string()].into();
        let (url, seen) = broker(fail, Duration::ZERO).await;
        let client = crate::broker_client::BrokerClient::new(&url, None, None).unwrap();
        upload_pending(dir.path(), &client, Duration::ZERO).await;
        assert_eq!(seen.stored.lock().unwrap().len(), 19);
        assert_eq!(*seen.refused.lock().unwrap(), vec!["s0003".to_string()]);
        assert_eq!(left(dir.path(), ".cast.uploaded"), 0);
        assert!(dir.path().join("s0003.cast").exists());
        assert_eq!(left(dir.path(), ".cast"), 1);
    }

    /// How fast a round goes against a broker that takes `latency` per recording, one at a time
    /// and `UPLOADS_IN_FLIGHT` at once (printed; `--nocapture` shows it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_rate() {
        for latency in [Duration::from_millis(2), Duration::from_millis(15)] {
            let dir = tempfile::tempdir().unwrap();
            recordings(dir.path(), 400);
            let (url, seen) = broker(HashSet::new(), latency).await;
            let client = crate::broker_client::BrokerClient::new(&url, None, None).unwrap();
            let t = std::time::Instant::now();
            upload_pending(dir.path(), &client, Duration::ZERO).await;
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(seen.stored.lock().unwrap().len(), 400);
            println!(
                "upload rate: 400 recordings, broker latency {latency:?}, {} at once: {:.0}/s",
                seen.most.load(Ordering::SeqCst),
                400.0 / secs
            );
        }
    }
}
