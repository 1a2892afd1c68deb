//! `sallyport audit stream` (the audit log as NDJSON, live, resumable) and `sallyport audit
//! export --format ocsf` (the events a filter selects as OCSF NDJSON): both read
//! `GET /v1/audit/stream`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use sallyport_api::audit::StreamLine;

use crate::audit_cmd::Conn;
use crate::client::{ApiFailure, Client, enc};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// OCSF 1.x events (SSH Activity, Authentication, Account Change, API Activity).
    Ocsf,
    /// The events as `audit search --json` prints them.
    Native,
}

impl LineFormat {
    fn as_str(self) -> &'static str {
        match self {
            LineFormat::Ocsf => "ocsf",
            LineFormat::Native => "native",
        }
    }
}

/// Filters of a stream or an OCSF export, as query parameters.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct StreamFilters {
    /// Only this engineer's events.
    #[arg(long)]
    pub engineer: Option<String>,
    /// Only this ticket's events.
    #[arg(long)]
    pub ticket: Option<String>,
    /// Only events on this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only events on this node.
    #[arg(long)]
    pub node: Option<String>,
    /// Only this session's events.
    #[arg(long)]
    pub session: Option<String>,
    /// Only events of this kind (e.g. command).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this source's chain (broker, edge:NAME, gateway:ID).
    #[arg(long)]
    pub source: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Resume after this cursor (each line carries one: `cursor`, or `unmapped.cursor` in
    /// OCSF); `now` for only what is stored from now on. Default: from the first event.
    #[arg(long, value_name = "CURSOR")]
    pub since: Option<String>,
    #[arg(long, value_enum, default_value_t = LineFormat::Native)]
    pub format: LineFormat,
    /// Only the events of this customer's clusters.
    #[arg(long)]
    pub customer: Option<String>,
    #[command(flatten)]
    pub filters: StreamFilters,
}

fn query(
    format: LineFormat,
    since: Option<&str>,
    follow: bool,
    customer: Option<&str>,
    f: &StreamFilters,
    range: (Option<u64>, Option<u64>),
) -> String {
    let mut q = vec![
        format!("format={}", format.as_str()),
        format!("follow={follow}"),
    ];
    if let Some(s) = since {
        q.push(format!("since={}", enc(s)));
    }
    for (k, v) in [
        ("customer", customer),
        ("engineer", f.engineer.as_deref()),
        ("ticket", f.ticket.as_deref()),
        ("cluster", f.cluster.as_deref()),
        ("node", f.node.as_deref()),
        ("session", f.session.as_deref()),
        ("kind", f.kind.as_deref()),
        ("source", f.source.as_deref()),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(ms) = range.0 {
        q.push(format!("from={ms}"));
    }
    if let Some(ms) = range.1 {
        q.push(format!("until={ms}"));
    }
    format!("/v1/audit/stream?{}", q.join("&"))
}

/// Read one response to its end, giving each line and its cursor to `each`. `Err` for a broken
/// connection or a line that is not one of the format's; `Ok(Some(msg))` for the broker's error
/// line.
async fn read_lines(
    mut resp: reqwest::Response,
    format: LineFormat,
    mut each: impl FnMut(&str, Option<&str>) -> anyhow::Result<()>,
) -> anyhow::Result<Option<String>> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).to_string();
            if text.trim().is_empty() {
                continue;
            }
            let line = StreamLine::read(&text, format == LineFormat::Ocsf)
                .with_context(|| "the broker sent a line that is not one of its stream's")?;
            if let StreamLine::Ended(e) = &line {
                return Ok(Some(e.error.to_string()));
            }
            each(&text, line.cursor())?;
        }
    }
    Ok(None)
}

/// A long time: a stream has no total timeout.
const FOREVER: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

pub async fn stream(a: StreamArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let mut since = a.since.clone();
    let mut out = std::io::stdout();
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        let path = query(
            a.format,
            since.as_deref(),
            true,
            a.customer.as_deref(),
            &a.filters,
            (None, None),
        );
        let resp = match client.download(&path, FOREVER).await {
            Ok(r) => r,
            // The broker refused (a bad cursor, no permission): say so and stop.
            Err(e) if e.downcast_ref::<ApiFailure>().is_some() => return Err(e),
            Err(e) => {
                eprintln!("{e:#}; trying again in {}s", wait.as_secs());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
                continue;
            }
        };
        wait = std::time::Duration::from_secs(1);
        // Where the broker starts (`now` resolved): resumed from there if nothing arrives.
        if let Some(c) = resp
            .headers()
            .get("x-sallyport-cursor")
            .and_then(|v| v.to_str().ok())
        {
            since = Some(c.to_string());
        }
        let read = read_lines(resp, a.format, |text, cursor| {
            writeln!(out, "{text}")?;
            out.flush()?;
            if let Some(c) = cursor {
                since = Some(c.to_string());
            }
            Ok(())
        })
        .await;
        match read {
            Ok(Some(e)) => anyhow::bail!("the broker ended the stream: {e}"),
            Ok(None) => eprintln!("the broker closed the stream; resuming"),
            Err(e) => eprintln!("the stream broke ({e:#}); resuming"),
        }
        tokio::time::sleep(wait).await;
    }
}

/// `audit export --format ocsf`: the selected events, one OCSF event per line, to `out` (a new
/// file) or stdout.
pub async fn export_ocsf(
    conn: &Conn,
    customer: Option<&str>,
    filters: &StreamFilters,
    range: (Option<u64>, Option<u64>),
    out: Option<&PathBuf>,
) -> anyhow::Result<i32> {
    let client: Client = conn.client()?;
    let path = query(LineFormat::Ocsf, None, false, customer, filters, range);
    let resp = client.download(&path, FOREVER).await?;
    let mut sink: Box<dyn Write> = match out {
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("creating {} (give a new file to --out)", p.display()))?;
            Box::new(std::io::BufWriter::new(f))
        }
        None => Box::new(std::io::stdout()),
    };
    let mut n = 0u64;
    let ended = read_lines(resp, LineFormat::Ocsf, |text, _| {
        writeln!(sink, "{text}")?;
        n += 1;
        Ok(())
    })
    .await?;
    sink.flush()?;
    if let Some(e) = ended {
        anyhow::bail!("the broker stopped the export after {n} events: {e}");
    }
    if let Some(p) = out {
        eprintln!("wrote {n} OCSF events to {}", p.display());
    }
    Ok(0)
}
