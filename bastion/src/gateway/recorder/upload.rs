//! Finished recordings handed to the broker, and retired once it has them.

use std::path::{Path, PathBuf};

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

async fn upload_pending(
    dir: &Path,
    broker: &crate::broker_client::BrokerClient,
    retention: std::time::Duration,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
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
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match broker.put_recording(&id, bytes).await {
            Ok(()) => delivered(&path, retention),
            Err(e) => {
                tracing::warn!(error = %e, recording = id, "recording not uploaded yet; will retry")
            }
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
