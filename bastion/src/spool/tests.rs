//! Appends, segments, acknowledgements, recovery from torn writes, and shipping.
use super::*;
use sallyport_audit::writers::GatewayKind;
use serde_json::{Value, json};

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
    let batch: Vec<(GatewayKind, Value)> = (1..=50).map(|i| (COMMAND, json!({"i": i}))).collect();
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

/// Until `n` batches are queued (a test holding the writer's lock meanwhile has them written as
/// one group).
async fn queued(s: &Spool<GatewayKind>, n: usize) {
    while s.queue.len() < n {
        tokio::task::yield_now().await;
    }
}

/// The group writes made so far.
fn writes(s: &Spool<GatewayKind>) -> u64 {
    s.hooks.writes.load(std::sync::atomic::Ordering::SeqCst)
}

async fn answered<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await);
    }
    out
}

/// Many appenders at once: each is answered with its own records, together and in its order;
/// the chain holds every record once, intact; appenders that waited together shared a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appenders_at_once_share_writes_and_keep_their_batches_whole() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    s.set_segment_bytes(20_000);
    // The first round of all 64 waits for one group.
    let gate = s.inner.lock().await;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let s = s.clone();
        tasks.spawn(async move {
            let mut answers = Vec::new();
            for round in 0..ROUNDS {
                // Batches of 1 to 3.
                let events = (0..1 + (t + round) % 3)
                    .map(|k| (COMMAND, json!({"t": t, "round": round, "k": k})))
                    .collect();
                answers.push(s.append_all(events).await.unwrap());
            }
            (t, answers)
        });
    }
    queued(&s, TASKS).await;
    drop(gate);
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        let (t, answers) = r.unwrap();
        for (round, records) in answers.iter().enumerate() {
            assert_eq!(records.len(), 1 + (t + round) % 3);
            for (k, r) in records.iter().enumerate() {
                assert_eq!(r.data["t"], t);
                assert_eq!(r.data["round"], round);
                assert_eq!(r.data["k"], k);
                assert_eq!(r.seq, records[0].seq + k as u64, "a batch is not together");
            }
            total += records.len();
        }
        let firsts: Vec<u64> = answers.iter().map(|a| a[0].seq).collect();
        assert!(firsts.is_sorted(), "{t}'s batches out of order: {firsts:?}");
    }
    let all = s.pending(0, usize::MAX).unwrap();
    assert_eq!(all.len(), total);
    assert_eq!(sallyport_audit::verify_chain(&all), Ok(total as u64));
    assert_eq!(s.head(), total as u64);
    assert!(segments(dir.path()).unwrap().len() > 1);
    let batches = (TASKS * ROUNDS) as u64;
    assert!(
        writes(&s) < batches,
        "{} writes for {batches} batches",
        writes(&s)
    );
    drop(s);
    let s = open(dir.path()).unwrap();
    assert_eq!(s.head(), total as u64);
}

/// Below the reserve, the batches of a group that do more than close are refused, each on its
/// own; the closing batch that waited with them is written, with one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_leaves_the_rest_of_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    s.append(COMMAND, json!({"command": "a"})).await.unwrap();
    s.set_reserve(u64::MAX / 4);
    let before = writes(&s);
    let gate = s.inner.lock().await;
    let mut answers = Vec::new();
    let batches = [
        vec![(COMMAND, json!({"command": "b"})), (X, json!({}))],
        vec![
            (GatewayKind::ChannelExit, json!({})),
            (GatewayKind::SessionEnded, json!({})),
        ],
        vec![(GatewayKind::ChannelExit, json!({})), (COMMAND, json!({}))],
    ];
    for (i, batch) in batches.into_iter().enumerate() {
        let spool = s.clone();
        answers.push(tokio::spawn(async move { spool.append_all(batch).await }));
        queued(&s, i + 1).await;
    }
    drop(gate);
    let mut answers = answered(answers).await.into_iter();
    let mut next = || answers.next().unwrap().unwrap();
    let refused = next().unwrap_err();
    assert!(
        refused.to_string().contains("kept for closing records"),
        "{refused}"
    );
    let closed = next().unwrap();
    assert_eq!(closed.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert!(next().is_err());
    assert_eq!(writes(&s), before + 1);
    let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
    assert_eq!(sallyport_audit::verify_chain(&all), Ok(3));
    assert_eq!(all[1..], closed[..]);
}

/// A write that fails fails its whole group: nothing of it stays, every appender hears, and
/// the chain goes on whole. If even cutting the torn write off fails, the spool takes nothing
/// more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_the_whole_group_and_the_chain_stays_whole() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    s.append(X, json!({"i": 0})).await.unwrap();
    let segment = dir.path().join(segment_name(1));
    let len = std::fs::metadata(&segment).unwrap().len();
    let group = |n: usize| {
        let s = s.clone();
        async move {
            let gate = s.inner.lock().await;
            let mut answers = Vec::new();
            for i in 0..n {
                let s = s.clone();
                answers.push(tokio::spawn(async move {
                    s.append_all(vec![(X, json!({"i": i})), (COMMAND, json!({"i": i}))])
                        .await
                }));
            }
            queued(&s, n).await;
            drop(gate);
            answered(answers).await
        }
    };
    s.hooks.fail_write.store(true, Ordering::SeqCst);
    for answer in group(5).await {
        let err = answer.unwrap().unwrap_err();
        assert!(err.to_string().contains("filled up"), "{err}");
    }
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), len);
    assert_eq!(s.head(), 1);
    let r = s.append(X, json!({"i": 1})).await.unwrap();
    assert_eq!(r.seq, 2);
    for answer in group(3).await {
        answer.unwrap().unwrap();
    }
    let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
    assert_eq!(sallyport_audit::verify_chain(&all), Ok(8));
    // The torn write cannot be cut off: broken.
    s.hooks.fail_write.store(true, Ordering::SeqCst);
    s.hooks.fail_cut.store(true, Ordering::SeqCst);
    assert!(s.append(X, json!({})).await.is_err());
    let err = s.append(X, json!({})).await.unwrap_err();
    assert!(err.to_string().contains("an earlier write failed"), "{err}");
    assert_eq!(s.head(), 8);
}

/// An appender that stops waiting before its batch is written takes it out of the queue; the
/// others of its group are written, the chain whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_appender_leaves_nothing_and_breaks_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path()).unwrap();
    s.append(X, json!({"n": 0})).await.unwrap();
    let gate = s.inner.lock().await;
    let spawn = |n: u64| {
        let s = s.clone();
        tokio::spawn(async move { s.append(X, json!({"n": n})).await })
    };
    let first = spawn(1);
    queued(&s, 1).await;
    let cancelled = spawn(2);
    queued(&s, 2).await;
    let last = spawn(3);
    queued(&s, 3).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    assert_eq!(s.queue.len(), 2);
    drop(gate);
    assert_eq!(first.await.unwrap().unwrap().seq, 2);
    assert_eq!(last.await.unwrap().unwrap().seq, 3);
    let all = s.pending(0, MAX_BATCH_BYTES).unwrap();
    assert_eq!(sallyport_audit::verify_chain(&all), Ok(3));
    assert!(all.iter().all(|r| r.data["n"] != 2));
    assert_eq!(s.append(X, json!({"n": 4})).await.unwrap().seq, 4);
}
