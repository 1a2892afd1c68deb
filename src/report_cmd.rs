//! `sallyport report`: the access report of a period — who reached which node when, under
//! which ticket, and what they did there — for a customer approver's own clusters (reviewers
//! and the operator: every cluster), as a table, CSV or JSON (`GET /v1/report`).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::{Args, ValueEnum};
use sallyport_api::report::AccessReport;
use sallyport_audit::sanitize;

use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    conn: Conn,
    /// Only this cluster (default: every cluster the token may see).
    #[arg(long)]
    cluster: Option<String>,
    /// The last this many days (default 30).
    #[arg(long, conflicts_with = "since")]
    days: Option<u64>,
    /// From this time on (a UTC date, 2026-11-01, or RFC 3339, 2026-11-01T10:00:00Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<SystemTime>,
    /// Up to this time (a UTC date or RFC 3339; default: now).
    #[arg(long, value_parser = parse_time)]
    until: Option<SystemTime>,
    /// csv or json (default: a table for the terminal).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A UTC date (`2026-11-01`, its midnight) or an RFC 3339 time.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("{e}: write a date (2026-11-01) or a time (2026-11-01T10:00:00Z)"))
}

pub async fn run(a: ReportArgs) -> anyhow::Result<i32> {
    let format = if a.json { Some(Format::Json) } else { a.format };
    let mut q = vec![format!(
        "format={}",
        if format == Some(Format::Csv) {
            "csv"
        } else {
            "json"
        }
    )];
    if let Some(c) = &a.cluster {
        q.push(format!("cluster={}", enc(c)));
    }
    if let Some(d) = a.days {
        q.push(format!("days={d}"));
    }
    if let Some(t) = a.since {
        q.push(format!("since={}", sallyport_ca::clock::unix_secs(t)));
    }
    if let Some(t) = a.until {
        q.push(format!("until={}", sallyport_ca::clock::unix_secs(t)));
    }
    let path = format!("/v1/report?{}", q.join("&"));
    let client = a.conn.client()?;
    let text = match format {
        Some(Format::Csv) => client
            .download(&path, Duration::from_secs(300))
            .await?
            .text()
            .await
            .context("reading the report")?,
        Some(Format::Json) => {
            let r: AccessReport = client.get_as(&path).await?;
            serde_json::to_string_pretty(&r)? + "\n"
        }
        None => table(&client.get_as(&path).await?),
    };
    match &a.out {
        Some(p) => {
            std::fs::write(p, &text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote the report to {}", p.display());
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(0)
}

/// The report for a terminal: one line per session, its commands and files below it.
fn table(r: &AccessReport) -> String {
    let mut out = format!(
        "access report for {}, {} to {}: {} session(s)\n",
        sanitize(&r.cluster),
        sanitize(&r.since),
        sanitize(&r.until),
        r.sessions.len()
    );
    for s in &r.sessions {
        out.push_str(&format!(
            "\n{} {} engineer={} ticket={} node={}.{} login={} {}s refusals={}\n",
            sanitize(&s.started),
            sanitize(&s.session),
            sanitize(&s.engineer),
            sanitize(&s.ticket),
            sanitize(&s.node),
            sanitize(&s.cluster),
            sanitize(&s.login),
            s.duration_secs,
            s.refusals
        ));
        for (label, list) in [("$", &s.commands), ("file", &s.files)] {
            for c in list {
                out.push_str(&format!("    {label} {}\n", sanitize(c)));
            }
        }
    }
    out
}
