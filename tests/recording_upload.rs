//! The gateway's upload of finished recordings to the real broker: many recordings, put in the
//! gateway's `recordings/` at once, all reach the broker exactly once (read back through its
//! API, one `recording_stored` each) and leave the gateway; a `.cast.part` still being written
//! is not sent. Prints the upload rate (`--nocapture`; `UPLOAD_RECORDINGS=N` for more).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::bastion::{self, world_with_edge, write_0600};

fn waiting(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cast"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_recordings_reach_the_broker_once_each() {
    let n: usize = std::env::var("UPLOAD_RECORDINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let data = b.dir.path().join("gateway/data");
    let dir = data.join("recordings");
    std::fs::create_dir_all(&dir).unwrap();

    // Written aside, then moved in at once, as finished recordings.
    let aside = data.join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let text = |i: usize| format!("{{\"version\": 2}}\n[0.1, \"o\", \"recording {i}\"]\n");
    for i in 0..n {
        write_0600(&aside.join(format!("up-{i:05}.cast")), &text(i));
    }
    write_0600(&dir.join("up-writing.cast.part"), "still being written");
    for i in 0..n {
        let name = format!("up-{i:05}.cast");
        std::fs::rename(aside.join(&name), dir.join(&name)).unwrap();
    }

    // The rate: from the first recording gone to the last.
    let start = Instant::now();
    let mut first: Option<(Instant, usize)> = None;
    loop {
        let left = waiting(&dir);
        if first.is_none() && left < n {
            first = Some((Instant::now(), left));
        }
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{left} of {n} recordings still waiting\n{}",
            b.gateway.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, left0) = first.unwrap();
    let secs = t0.elapsed().as_secs_f64().max(0.001);
    println!(
        "recording upload: {n} recordings in {:.2} s after the first: {:.0}/s",
        secs,
        left0 as f64 / secs
    );

    // Each once at the broker, with its bytes; the one being written is not there.
    let stored = w
        .wait_events(&format!("kind=recording_stored&limit={}", n + 100), n)
        .await;
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for e in &stored {
        let s = e["session"].as_str().unwrap_or_default();
        if s.starts_with("up-") {
            *times.entry(s.to_string()).or_default() += 1;
        }
    }
    assert_eq!(times.len(), n, "{times:?}");
    assert!(times.values().all(|t| *t == 1), "{times:?}");
    for i in (0..n).step_by((n / 20).max(1)) {
        assert_eq!(w.fetch_recording(&format!("up-{i:05}")).await, text(i));
    }
    let (s, _) = w.reviewer.get("/v1/recordings/up-writing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(dir.join("up-writing.cast.part").exists());
}
