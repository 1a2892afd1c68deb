//! Profiling only (feature `alloc-stats`): on SIGUSR1 a service logs jemalloc's statistics — the
//! bytes the program has allocated against the bytes the allocator keeps resident — so that a
//! memory bench can tell what a session holds from what fragmentation costs
//! (`bench/session_memory.sh`, docs/performance.md).

use tikv_jemalloc_ctl::{epoch, stats};

/// One line of statistics, in bytes.
pub fn line() -> anyhow::Result<String> {
    epoch::advance().map_err(|e| anyhow::anyhow!("jemalloc epoch: {e}"))?;
    let read = |what: &str, r: tikv_jemalloc_ctl::Result<usize>| {
        r.map_err(|e| anyhow::anyhow!("jemalloc {what}: {e}"))
    };
    Ok(format!(
        "alloc-stats allocated={} active={} metadata={} resident={} mapped={} retained={}",
        read("allocated", stats::allocated::read())?,
        read("active", stats::active::read())?,
        read("metadata", stats::metadata::read())?,
        read("resident", stats::resident::read())?,
        read("mapped", stats::mapped::read())?,
        read("retained", stats::retained::read())?,
    ))
}

/// Log [`line`] at every SIGUSR1, for as long as the runtime runs.
pub fn on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("alloc-stats: cannot listen for SIGUSR1");
        return;
    };
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            match line() {
                Ok(l) => tracing::info!("{l}"),
                Err(e) => tracing::warn!("alloc-stats: {e:#}"),
            }
        }
    });
}
