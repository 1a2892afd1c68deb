//! `sallyport audit search`, `sallyport audit verify` and `sallyport audit keys` (`audit export`
//! and `audit verify --bundle`: `audit_bundle`).

use std::path::PathBuf;

use std::collections::HashMap;

use anyhow::Context;
use russh::keys::PublicKey;
use sallyport_api::audit::{
    AuditChain, AuditEvents, AuditKeys, AuditSignatures, AuditSources, UnsealRequest, Unsealed,
};
use sallyport_broker::audit::AuditRecord;
use sallyport_broker::chains::{Chain, judge};
use sallyport_broker::store::{BROKER_SOURCE, HeadSignature};
use serde_json::Value;

use crate::client::{Client, enc};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCmd {
    /// Search the audit log by engineer, ticket, cluster, node, session, kind, source, time and
    /// the text of commands, lines on screen and file paths (--command); reviewer or operator.
    Search(SearchArgs),
    /// Check every hash chain end to end and its signatures: names the first broken link;
    /// reports records with a valid hash but no valid signature as TAMPERED, records after the
    /// last signature as UNSIGNED (the live tail), a chain whose stored tail is behind the head
    /// its gateway or edge reported as INCOMPLETE, and (with --keys) a pinned key that is not
    /// the trusted one. Exit status 0 only when every chain is intact, signed as far as it has
    /// signatures, and complete (reviewer or operator). With --bundle DIR: checks an exported
    /// bundle offline instead (no broker, no token).
    Verify(VerifyArgs),
    /// Export a signed evidence bundle of a ticket, a session or a customer into a directory:
    /// the events (as stored), the recordings they name, the chain links and signed heads that
    /// prove them, the keys, an offline viewer (index.html) and manifest.json listing the
    /// SHA-256 of every file, signed by the broker's audit key. Check it anywhere, without a
    /// broker, with `audit verify --bundle DIR` (reviewer or operator). With --format ocsf:
    /// the events any filters select as OCSF events, one per line, for a SIEM (a customer's
    /// approver: its own clusters' events).
    Export(crate::audit_bundle::ExportArgs),
    /// The public keys that sign each chain (the broker's own and those pinned for gateways
    /// and edges), as lines `<source> <public key>`: keep them out of band and give them to
    /// `audit verify --keys` (reviewer or operator).
    Keys(KeysArgs),
    /// The audit log as it grows, one JSON object per line (NDJSON, `--format ocsf` for OCSF
    /// events): first what is stored after --since, then each new event, until interrupted.
    /// Every line carries the cursor to resume after it; a broken connection is resumed there
    /// (reviewer or operator; a customer's approver gets its own clusters' events).
    Stream(crate::audit_stream::StreamArgs),
    /// One session: who, ticket, approval, node, login, source address, times, and the timeline
    /// of commands (with exit status), file operations (with SHA-256), forwards and refusals
    /// (reviewer, operator, or the session's customer's approver).
    Show(crate::audit_session::ShowArgs),
    /// Play a session's recording in this terminal (--speed, --channel); a channel without a
    /// pty prints its input and output (reading a recording is audited).
    Replay(crate::audit_session::ReplayArgs),
    /// The sessions, newest first: the same as `sallyport sessions list`.
    Sessions(crate::sessions_cmd::ListArgs),
    /// End an open session: the same as `sallyport sessions terminate`.
    Terminate(crate::sessions_cmd::TerminateArgs),
    /// Open a line typed without echo at a password prompt (an `input_hidden` event), which the
    /// gateway sealed to the broker's hidden-input key: a password, or a command typed at a
    /// shell whose prompt was made to read like a password prompt. Reviewer only; the reason is
    /// kept in a `hidden_input_opened` event before the text is shown.
    Unseal(UnsealArgs),
}

#[derive(clap::Args, Debug)]
pub struct UnsealArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The chain of the `input_hidden` event (its `source`, e.g. gateway:gw-1a2b).
    #[arg(long)]
    pub source: String,
    /// The event's sequence number in its chain (its `seq`).
    #[arg(long)]
    pub seq: u64,
    /// Why it is opened (kept in the audit log).
    #[arg(long)]
    pub reason: String,
    /// The answer as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The broker's URL.
    #[arg(long, env = "SALLYPORT_BROKER")]
    pub broker: Option<String>,
    /// An API token (or a session token from an account's login) of the role the command
    /// needs: the command's description names it.
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
    /// Only events whose text contains every word of TEXT, ignoring case: commands (typed at a
    /// shell, run with exec, read by an interpreter on stdin), the line on screen at each Enter,
    /// and the paths of sftp and scp file operations. Words are separated by spaces; a word
    /// matches anywhere in the text ("temctl rest" finds "sudo systemctl restart nginx"); quotes,
    /// `*`, `-`, `%` and every other character are taken literally. Newest first.
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
    /// Only events older than this cursor, newest first: the next page of a search (printed
    /// after a full page).
    #[arg(long, value_name = "CURSOR")]
    pub before: Option<String>,
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
    /// Trusted keys, kept outside the broker's database (`sallyport audit keys` writes them):
    /// lines `<source> <ssh-ed25519 public key>`, `#` comments. Signatures are checked with
    /// these keys instead of the ones the broker pinned; a pinned key that differs, or a chain
    /// with no key here, fails.
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Check an exported bundle offline instead (no broker): the manifest's signature, every
    /// file's SHA-256, every event's hash and links, the signed heads, and every recording the
    /// events name; names the file and the event that changed. With --keys, the broker's key
    /// and the chains' keys are the trusted ones; without, those in the bundle.
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Records after a chain's last signature fail too (by default they are shown as UNSIGNED:
    /// the live tail of a chain).
    #[arg(long)]
    pub require_signed: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object per key.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: AuditCmd) -> anyhow::Result<i32> {
    match cmd {
        AuditCmd::Search(a) => search(a).await,
        AuditCmd::Verify(a) => verify(a).await,
        AuditCmd::Export(a) => crate::audit_bundle::export(a).await,
        AuditCmd::Keys(a) => keys(a).await,
        AuditCmd::Unseal(a) => unseal(a).await,
        AuditCmd::Stream(a) => crate::audit_stream::stream(a).await,
        AuditCmd::Show(a) => crate::audit_session::show(a).await,
        AuditCmd::Replay(a) => crate::audit_session::replay(a).await,
        AuditCmd::Sessions(args) => {
            crate::sessions_cmd::run(crate::sessions_cmd::SessionsCmd::List(args)).await
        }
        AuditCmd::Terminate(args) => {
            crate::sessions_cmd::run(crate::sessions_cmd::SessionsCmd::Terminate(args)).await
        }
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
        ("q", &a.command),
        ("before", &a.before),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(t) = a.since {
        q.push(format!("since={}", sallyport_ca::clock::unix_ms(t)));
    }
    if let Some(t) = a.until {
        q.push(format!("until={}", sallyport_ca::clock::unix_ms(t)));
    }
    let v: AuditEvents = client
        .get_as(&format!("/v1/audit/events?{}", q.join("&")))
        .await?;
    for e in &v.events {
        // An event's own fields are as many as its kind has: read by name.
        let e = &Value::Object(e.to_map());
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
    if let Some(next) = &v.next {
        eprintln!(
            "more events: add --before {}",
            sallyport_audit::sanitize(next)
        );
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

/// `--keys`: source → public key.
fn read_keys(path: &std::path::Path) -> anyhow::Result<HashMap<String, PublicKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the trusted keys {}", path.display()))?;
    crate::audit_bundle::parse_keys(&text, &path.display().to_string())
}

async fn read_chains(a: &VerifyArgs) -> anyhow::Result<(Vec<Chain>, HashMap<String, u64>)> {
    let mut chains = Vec::new();
    // What each gateway and edge last reported of its own chain's head.
    let mut heads: HashMap<String, u64> = HashMap::new();
    if let Some(cfg) = &a.config {
        let cfg = sallyport_broker::BrokerConfig::load(cfg)?;
        let store = sallyport_broker::store::Store::connect(&cfg.database_url()).await?;
        for (source, head, _) in store.audit_heads().await? {
            heads.insert(source, head);
        }
        let mut pinned: HashMap<String, String> = store
            .audit_keys()
            .await?
            .into_iter()
            .map(|k| (k.source, k.public_key))
            .collect();
        // The broker's own key lives in its data_dir, never in the database.
        let broker_key = sallyport_ca::keys::public_key_path(&cfg.audit_key_file());
        if let Ok(line) = std::fs::read_to_string(&broker_key) {
            pinned.insert(BROKER_SOURCE.to_string(), line.trim().to_string());
        }
        let sources = match &a.source {
            Some(s) => vec![s.clone()],
            None => with_reported(store.audit_sources().await?, &heads),
        };
        for s in sources {
            let p = pinned.get(&s).cloned();
            chains.push(sallyport_broker::chains::load(&store, &s, p).await?);
        }
    } else {
        let client = a.conn.client()?;
        let listed: AuditSources = client.get_as("/v1/audit/sources").await?;
        for h in listed.heads {
            heads.insert(h.source, h.reported);
        }
        let keys: AuditKeys = client.get_as("/v1/audit/keys").await?;
        let pinned: HashMap<String, String> = keys
            .keys
            .into_iter()
            .map(|k| (k.source, k.public_key))
            .collect();
        let sources: Vec<String> = match &a.source {
            Some(s) => vec![s.clone()],
            None => with_reported(listed.sources, &heads),
        };
        for s in sources {
            // Signatures first (see above).
            let sigs: Vec<HeadSignature> = all_pages(
                &client,
                "signatures",
                &s,
                |p: AuditSignatures| p.signatures,
                |h| h.seq,
            )
            .await?;
            let records: Vec<AuditRecord> =
                all_pages(&client, "chain", &s, |p: AuditChain| p.records, |r| r.seq).await?;
            chains.push(Chain {
                pinned: pinned.get(&s).cloned(),
                source: s,
                records,
                heads: sigs,
            });
        }
    }
    Ok((chains, heads))
}

async fn verify(a: VerifyArgs) -> anyhow::Result<i32> {
    let trusted = match &a.keys {
        Some(p) => Some(read_keys(p)?),
        None => None,
    };
    if let Some(dir) = &a.bundle {
        return crate::audit_bundle::verify(dir, trusted.as_ref(), a.require_signed, a.json);
    }
    let (chains, heads) = read_chains(&a).await?;
    let mut bad = false;
    for chain in &chains {
        let v = judge(
            chain,
            heads.get(&chain.source).copied(),
            trusted.as_ref(),
            a.require_signed,
        );
        bad |= !v.ok;
        if a.json {
            println!("{}", v.json);
        } else {
            println!("{}", v.text);
        }
    }
    if chains.is_empty() && !a.json {
        println!("no audit events yet");
    }
    Ok(if bad { 1 } else { 0 })
}

async fn keys(a: KeysArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let keys = client.get_as::<AuditKeys>("/v1/audit/keys").await?.keys;
    if !a.json {
        println!(
            "# the keys that sign sallyport's audit chains: keep this file out of band and give \
             it to `sallyport audit verify --keys`"
        );
    }
    for k in &keys {
        if a.json {
            println!("{}", serde_json::to_string(k)?);
        } else {
            let s = sallyport_audit::sanitize;
            println!(
                "# {} {} (pinned by {})",
                s(&k.source),
                s(&k.fingerprint),
                s(&k.pinned_by)
            );
            println!("{} {}", s(&k.source), s(&k.public_key));
        }
    }
    Ok(0)
}

async fn unseal(a: UnsealArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let opened: Unsealed = client
        .post_as(
            "/v1/audit/unseal",
            &UnsealRequest {
                source: a.source,
                seq: a.seq,
                reason: a.reason,
            },
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string(&opened)?);
    } else {
        let s = sallyport_audit::sanitize;
        println!(
            "# {}#{}: session {}, line {} (opening it is in the audit log)",
            s(&opened.source),
            opened.seq,
            s(&opened.session),
            opened.line
        );
        println!("{}", s(&opened.text));
    }
    Ok(0)
}

/// Every item of one source from a paged `/v1/audit/<endpoint>` (pages of 5,000 after the last
/// sequence number seen, until an empty one), as listed under `key`.
async fn all_pages<P: serde::de::DeserializeOwned, T>(
    client: &Client,
    endpoint: &str,
    source: &str,
    items: impl Fn(P) -> Vec<T>,
    seq: impl Fn(&T) -> u64,
) -> anyhow::Result<Vec<T>> {
    let mut all: Vec<T> = Vec::new();
    loop {
        let after = all.last().map(&seq).unwrap_or(0);
        let page = items(
            client
                .get_as(&format!(
                    "/v1/audit/{endpoint}?source={}&after_seq={after}&limit=5000",
                    enc(source)
                ))
                .await?,
        );
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signed_chain(key: &russh::keys::PrivateKey, n: usize) -> Chain {
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let prev = records.last().map(|r| (r.seq, r.hash.as_str()));
            records.push(AuditRecord::next(
                "gateway:gw-1",
                prev,
                i as u64,
                "command",
                json!({"i": i}),
            ));
        }
        let last = records.last().unwrap();
        let sig =
            sallyport_ca::chainsig::sign_head(key, "gateway:gw-1", last.seq, &last.hash).unwrap();
        Chain {
            source: "gateway:gw-1".into(),
            heads: vec![HeadSignature {
                seq: last.seq,
                hash: last.hash.clone(),
                signature: sig,
            }],
            pinned: Some(key.public_key().to_openssh().unwrap()),
            records,
        }
    }

    #[test]
    fn verdicts() {
        let k = sallyport_ca::keys::generate_ed25519("gw").unwrap();
        let other = sallyport_ca::keys::generate_ed25519("other").unwrap();
        let c = signed_chain(&k, 4);
        let v = judge(&c, None, None, false);
        assert!(v.ok && v.text.contains("signed through #4"), "{}", v.text);
        // A trusted key from outside the database that the pinned one is not.
        let trusted: HashMap<String, PublicKey> =
            [("gateway:gw-1".to_string(), other.public_key().clone())].into();
        let v = judge(&c, None, Some(&trusted), false);
        assert!(!v.ok && v.text.contains("KEY REPLACED"), "{}", v.text);
        // A chain re-signed by whoever replaced the pinned key: the trusted key finds it.
        let forged = signed_chain(&other, 4);
        let trusted_k: HashMap<String, PublicKey> =
            [("gateway:gw-1".to_string(), k.public_key().clone())].into();
        let v = judge(&forged, None, Some(&trusted_k), false);
        assert!(!v.ok && v.text.contains("TAMPERED"), "{}", v.text);
        // A live tail: shown, not failed, unless signatures are required.
        let mut tail = signed_chain(&k, 4);
        let last = tail.records.last().unwrap().clone();
        tail.records.push(AuditRecord::next(
            "gateway:gw-1",
            Some((last.seq, &last.hash)),
            9,
            "command",
            json!({}),
        ));
        let v = judge(&tail, None, None, false);
        assert!(
            v.ok && v.text.contains("UNSIGNED: events #5..#5"),
            "{}",
            v.text
        );
        assert!(!judge(&tail, None, None, true).ok);
        // Behind the reported head.
        let v = judge(&c, Some(6), None, false);
        assert!(!v.ok && v.text.contains("INCOMPLETE"), "{}", v.text);
    }
}
