//! SIGHUP: the broker, the edge and the gateway read their config file again, check it whole
//! (`preflight`), and apply what can change while they run. What cannot (listen addresses,
//! data directories, keys, the store) is named in the log as needing a restart and keeps its
//! running value; a config that does not load or check is refused and changes nothing. Each
//! process audits the outcome on its own chain (`config_reloaded` / `config_reload_refused`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The top-level keys (tables count as one key) whose values differ between two config texts.
pub fn changed_keys(old: &str, new: &str) -> anyhow::Result<Vec<String>> {
    let old: toml::Table = toml::from_str(old).context("the running config")?;
    let new: toml::Table = toml::from_str(new)?;
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect())
}

/// Changed keys split into those applied now and those that need a restart.
#[derive(Debug, Default, PartialEq)]
pub struct Split {
    pub applied: Vec<String>,
    pub restart: Vec<String>,
}

pub fn split(changed: Vec<String>, reloadable: &[&str]) -> Split {
    let (applied, restart) = changed
        .into_iter()
        .partition(|k| reloadable.contains(&k.as_str()));
    Split { applied, restart }
}

/// The config file's text now, for the next comparison.
pub fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// On every SIGHUP (one at a time, until the process ends): read `path` again, find the keys
/// that changed since the running config, and hand them to `apply` (split by `reloadable`), or
/// the reason the file cannot be read. `apply` checks the whole config, applies, audits; its
/// error leaves the running config as it was. Installed before the process announces itself,
/// so a SIGHUP never ends it (the signal's default action).
pub fn watch<A, Fut>(
    path: PathBuf,
    reloadable: &'static [&'static str],
    apply: A,
) -> anyhow::Result<()>
where
    A: Fn(Result<Split, String>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut running = read(&path)?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reading the config again");
            let new = read(&path);
            let changes = new
                .as_ref()
                .map_err(|e| format!("{e:#}"))
                .and_then(|new| {
                    changed_keys(&running, new)
                        .map_err(|e| format!("parsing {}: {e:#}", path.display()))
                })
                .map(|changed| split(changed, reloadable));
            let keys = changes
                .as_ref()
                .ok()
                .map(|s| (s.applied.clone(), s.restart.clone()));
            match (apply(changes).await, new, keys) {
                (Ok(()), Ok(new), Some((applied, restart))) => {
                    running = new;
                    tracing::info!(?applied, "config reloaded");
                    if !restart.is_empty() {
                        tracing::warn!(
                            keys = ?restart,
                            "changed in the config but only taken at the next restart"
                        );
                    }
                }
                (Err(e), _, _) => {
                    tracing::error!("config not reloaded, the running one stays: {e:#}");
                }
                _ => {}
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_name_top_level_keys_and_tables_that_differ() {
        let old = "a = 1\nb = \"x\"\n[t]\nk = 1\n";
        let cases: Vec<(&str, Vec<&str>)> = vec![
            (old, vec![]),
            ("b = \"x\"\na = 1\n[t]\nk = 1\n", vec![]),
            ("a = 2\nb = \"x\"\n[t]\nk = 1\n", vec!["a"]),
            ("a = 1\n[t]\nk = 1\n", vec!["b"]),
            ("a = 1\nb = \"x\"\nc = []\n[t]\nk = 2\n", vec!["c", "t"]),
        ];
        for (new, want) in cases {
            assert_eq!(changed_keys(old, new).unwrap(), want, "{new}");
        }
        assert!(changed_keys(old, "a = ").is_err());
    }

    #[test]
    fn split_keeps_what_needs_a_restart_apart() {
        let s = split(
            vec!["listen".into(), "max_sessions".into()],
            &["max_sessions"],
        );
        assert_eq!(s.applied, vec!["max_sessions"]);
        assert_eq!(s.restart, vec!["listen"]);
    }
}
