//! `sallyport audit search` and `sallyport audit verify`.

use std::path::PathBuf;

use anyhow::Context;
use sallyport_broker::audit::{AuditRecord, ChainBreak, verify_chain};
use serde_json::Value;

use crate::client::{Client, enc};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Search the audit log.
    Search(SearchArgs),
    /// Check every hash chain end to end; names the first broken link, and reports a chain
    /// whose stored tail is behind the head its gateway or edge reported as INCOMPLETE. Exit
    /// status 0 only when every chain is intact and complete.
    Verify(VerifyArgs),
}

#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The broker's URL.
    #[arg(long, env = "SALLYPORT_BROKER")]
    pub broker: Option<String>,
    /// A reviewer or operator API token.
    #[arg(long, env = "SALLYPORT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the broker's certificate.
    #[arg(long, env = "SALLYPORT_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,
}

impl Conn {
    pub fn client(&self) -> anyhow::Result<Client> {
        let broker = self
            .broker
            .as_deref()
            .context("no broker: set SALLYPORT_BROKER or --broker")?;
        let token = self
            .token
            .clone()
            .context("no API token: set SALLYPORT_TOKEN or --token")?;
        Client::new(broker, Some(token), self.broker_ca.as_deref())
    }
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[arg(long)]
    pub engineer: Option<String>,
    #[arg(long)]
    pub ticket: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long)]
    pub source: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-11-23T10:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub since: Option<std::time::SystemTime>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub until: Option<std::time::SystemTime>,
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// Only this source's chain (default: every source).
    #[arg(long)]
    pub source: Option<String>,
    /// Read the store directly with this broker config instead of asking the broker.
    #[arg(long, env = "SALLYPORT_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub async fn run(cmd: AuditCmd) -> anyhow::Result<i32> {
    match cmd {
        AuditCmd::Search(a) => search(a).await,
        AuditCmd::Verify(a) => verify(a).await,
    }
}

async fn search(a: SearchArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("engineer", &a.engineer),
        ("ticket", &a.ticket),
        ("cluster", &a.cluster),
        ("node", &a.node),
        ("session", &a.session),
        ("kind", &a.kind),
        ("source", &a.source),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(t) = a.since {
        q.push(format!("since={}", ms(t)));
    }
    if let Some(t) = a.until {
        q.push(format!("until={}", ms(t)));
    }
    let v = client
        .get(&format!("/v1/audit/events?{}", q.join("&")))
        .await?;
    let events = v["events"].as_array().cloned().unwrap_or_default();
    for e in &events {
        if a.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            // Whatever a source wrote, a terminal shows as text: control characters replaced.
            let s = |k: &str| sallyport_audit::sanitize(e[k].as_str().unwrap_or("-"));
            let extra = match e["command"].as_str() {
                Some(c) => format!(" command={c:?}"),
                None => e["reasons"]
                    .as_array()
                    .map(|r| {
                        format!(
                            " reasons={}",
                            r.iter()
                                .filter_map(|x| x["code"].as_str())
                                .map(sallyport_audit::sanitize)
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                    .unwrap_or_default(),
            };
            println!(
                "{} {:<24} engineer={} ticket={} cluster={} source={}{}",
                s("time"),
                s("kind"),
                s("engineer"),
                s("ticket"),
                s("cluster"),
                s("source"),
                extra
            );
        }
    }
    Ok(0)
}

/// The stored sources, and those that reported a head but have no stored record yet.
fn with_reported(
    mut sources: Vec<String>,
    heads: &std::collections::HashMap<String, u64>,
) -> Vec<String> {
    for (s, head) in heads {
        if *head > 0 && !sources.contains(s) {
            sources.push(s.clone());
        }
    }
    sources.sort();
    sources
}

async fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let mut results: Vec<(String, Result<u64, ChainBreak>)> = Vec::new();
    // What each gateway and edge last reported of its own chain's head.
    let mut heads: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    if let Some(cfg) = &a.config {
        let cfg = sallyport_broker::BrokerConfig::load(cfg)?;
        let store = sallyport_broker::store::Store::connect(&cfg.database_url()).await?;
        for (source, head, _) in store.audit_heads().await? {
            heads.insert(source, head);
        }
        let sources = match &a.source {
            Some(s) => vec![s.clone()],
            None => with_reported(store.audit_sources().await?, &heads),
        };
        for s in sources {
            let mut all = Vec::new();
            loop {
                let after = all.last().map(|r: &AuditRecord| r.seq).unwrap_or(0);
                let page = store.audit_chain(&s, after, 5000).await?;
                if page.is_empty() {
                    break;
                }
                all.extend(page);
            }
            results.push((s, verify_chain(&all)));
        }
    } else {
        let client = a.conn.client()?;
        let listed = client.get("/v1/audit/sources").await?;
        for h in listed["heads"].as_array().into_iter().flatten() {
            if let (Some(s), Some(n)) = (h["source"].as_str(), h["reported"].as_u64()) {
                heads.insert(s.to_string(), n);
            }
        }
        let sources: Vec<String> = match &a.source {
            Some(s) => vec![s.clone()],
            None => with_reported(
                listed["sources"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                &heads,
            ),
        };
        for s in sources {
            let mut all: Vec<AuditRecord> = Vec::new();
            loop {
                let after = all.last().map(|r| r.seq).unwrap_or(0);
                let v = client
                    .get(&format!(
                        "/v1/audit/chain?source={}&after_seq={after}&limit=5000",
                        enc(&s)
                    ))
                    .await?;
                let page: Vec<AuditRecord> = serde_json::from_value(v["records"].clone())?;
                if page.is_empty() {
                    break;
                }
                all.extend(page);
            }
            results.push((s, verify_chain(&all)));
        }
    }
    let mut bad = false;
    for (source, r) in &results {
        match r {
            // The broker holds an intact chain, but the source wrote more than it holds: records
            // are missing at the tail (shipping is behind, or they were lost).
            Ok(n) if heads.get(source).is_some_and(|h| h > n) => {
                bad = true;
                let head = heads.get(source).copied().unwrap_or(0);
                let missing = head - n;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"source": source, "ok": false, "incomplete": true, "events": n, "reported_head": head, "missing": missing})
                    );
                } else {
                    println!(
                        "{source}: INCOMPLETE: {n} events intact, but the source reported {head}: the last {missing} have not reached the broker"
                    );
                }
            }
            Ok(n) => {
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"source": source, "ok": true, "events": n})
                    );
                } else {
                    println!("{source}: {n} events, chain intact");
                }
            }
            Err(b) => {
                bad = true;
                if a.json {
                    println!(
                        "{}",
                        serde_json::json!({"source": source, "ok": false, "seq": b.seq, "problem": b.problem})
                    );
                } else {
                    println!("{source}: BROKEN at event #{}: {}", b.seq, b.problem);
                }
            }
        }
    }
    if results.is_empty() && !a.json {
        println!("no audit events yet");
    }
    Ok(if bad { 1 } else { 0 })
}
