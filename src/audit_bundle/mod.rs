//! `sallyport audit export`: a signed evidence bundle from the broker, unpacked into a
//! directory; `sallyport audit verify --bundle`: checks one offline, with no broker. The layout
//! and the pure checks: `sallyport_audit::bundle`; what each file proves: docs/audit.md.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use sallyport_audit::bundle::{self as layout, Manifest};
use sallyport_ca::clock::unix_ms;
use serde_json::json;

use crate::audit_cmd::Conn;
use crate::client::enc;

mod verify;

pub use verify::{parse_keys, verify};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A signed evidence bundle in a directory.
    Bundle,
    /// OCSF events, one per line (NDJSON), for a SIEM.
    Ocsf,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The events of this ticket (every source's).
    #[arg(long)]
    pub ticket: Option<String>,
    /// The events of this session.
    #[arg(long)]
    pub session: Option<String>,
    /// The events of every cluster of this customer.
    #[arg(long)]
    pub customer: Option<String>,
    /// With --format ocsf: only this engineer's events.
    #[arg(long)]
    pub engineer: Option<String>,
    /// With --format ocsf: only the events on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-23T10:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub since: Option<std::time::SystemTime>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub until: Option<std::time::SystemTime>,
    /// `bundle` (default): a signed evidence bundle of one ticket, session or customer.
    /// `ocsf`: the events the filters select (any of them, or none for every event) as OCSF
    /// events, one JSON object per line, to --out FILE or stdout.
    #[arg(long, value_enum, default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
    /// A bundle: the directory to write it into (created, or empty). OCSF: a new file
    /// (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What was written, as one JSON object (bundles).
    #[arg(long)]
    pub json: bool,
}

fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

pub async fn export(a: ExportArgs) -> anyhow::Result<i32> {
    if a.format == ExportFormat::Ocsf {
        let filters = crate::audit_stream::StreamFilters {
            engineer: a.engineer.clone(),
            ticket: a.ticket.clone(),
            cluster: a.cluster.clone(),
            session: a.session.clone(),
            ..Default::default()
        };
        return crate::audit_stream::export_ocsf(
            &a.conn,
            a.customer.as_deref(),
            &filters,
            (a.since.map(unix_ms), a.until.map(unix_ms)),
            a.out.as_ref(),
        )
        .await;
    }
    let named = [&a.ticket, &a.session, &a.customer]
        .iter()
        .filter(|v| v.is_some())
        .count();
    anyhow::ensure!(
        named == 1,
        "a bundle is of one ticket, one session or one customer: give exactly one of --ticket, \
         --session or --customer (or --format ocsf to export events by any filter)"
    );
    anyhow::ensure!(
        a.engineer.is_none() && a.cluster.is_none(),
        "--engineer and --cluster select events for --format ocsf; a bundle is of a ticket, a \
         session or a customer"
    );
    let out = a
        .out
        .clone()
        .context("a bundle needs a directory: add --out DIR")?;
    let client = a.conn.client()?;
    if out.exists() {
        let empty = std::fs::read_dir(&out)
            .with_context(|| format!("{} is not a directory", out.display()))?
            .next()
            .is_none();
        anyhow::ensure!(
            empty,
            "{} is not empty: give a new directory to --out",
            out.display()
        );
    }
    private_dir(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut q = Vec::new();
    for (k, v) in [
        ("ticket", &a.ticket),
        ("session", &a.session),
        ("customer", &a.customer),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(t) = a.since {
        q.push(format!("since={}", unix_ms(t)));
    }
    if let Some(t) = a.until {
        q.push(format!("until={}", unix_ms(t)));
    }
    let mut resp = client
        .download(
            &format!("/v1/audit/export?{}", q.join("&")),
            std::time::Duration::from_secs(3600),
        )
        .await?;
    let archive = out.join(".download.tar.gz");
    {
        let mut f = private_file(&archive)?;
        while let Some(chunk) = resp.chunk().await? {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    let (arch, dir) = (archive.clone(), out.clone());
    let unpacked = tokio::task::spawn_blocking(move || unpack(&arch, &dir)).await?;
    let _ = std::fs::remove_file(&archive);
    unpacked?;
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(out.join(layout::MANIFEST))?)
        .context("the broker's bundle has no readable manifest")?;
    let recordings = manifest
        .files
        .iter()
        .filter(|f| f.path.starts_with("recordings/"))
        .count();
    if a.json {
        println!(
            "{}",
            json!({
                "out": out.display().to_string(),
                "events": manifest.events,
                "links": manifest.links,
                "recordings": recordings,
                "missing_recordings": manifest.missing_recordings,
                "broker_key_fingerprint": manifest.broker_key_fingerprint,
            })
        );
    } else {
        println!(
            "wrote {}: {} events ({}), {} linking records, {} recordings; manifest signed by the \
             broker key {}",
            out.display(),
            manifest.events,
            manifest.selection.describe(),
            manifest.links,
            recordings,
            manifest.broker_key_fingerprint
        );
        for m in &manifest.missing_recordings {
            println!(
                "missing recording {}: {}",
                sallyport_audit::sanitize(&m.id),
                sallyport_audit::sanitize(&m.reason)
            );
        }
        println!(
            "check it with: sallyport audit verify --bundle {}",
            out.display()
        );
    }
    Ok(0)
}

/// Unpack the broker's .tar.gz into `out`: regular files only, all under one directory, at the
/// paths a bundle may hold (that directory is dropped).
fn unpack(archive: &Path, out: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(archive)?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut root: Option<std::ffi::OsString> = None;
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_path_buf();
        anyhow::ensure!(
            entry.header().entry_type() == tar::EntryType::Regular,
            "the archive holds {}, which is not a plain file",
            path.display()
        );
        let mut parts = path.components();
        let Some(Component::Normal(first)) = parts.next() else {
            anyhow::bail!("unexpected path in the archive: {}", path.display());
        };
        match &root {
            None => root = Some(first.to_os_string()),
            Some(r) if r == first => {}
            Some(_) => anyhow::bail!("the archive has more than one top directory"),
        }
        let rest = parts.as_path();
        let rel = rest
            .to_str()
            .filter(|p| layout::allowed_path(p))
            .with_context(|| format!("unexpected path in the archive: {}", path.display()))?;
        let dest = out.join(rel);
        if let Some(parent) = dest.parent() {
            private_dir(parent)?;
        }
        let mut file =
            private_file(&dest).with_context(|| format!("writing {}", dest.display()))?;
        std::io::copy(&mut entry, &mut file)?;
    }
    anyhow::ensure!(root.is_some(), "the archive is empty");
    Ok(())
}
