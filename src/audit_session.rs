//! `sallyport audit show SESSION` (who, ticket, node, login, times, and the timeline of what
//! happened) and `sallyport audit replay SESSION` (a channel's recording played in this
//! terminal). Both read what the console's session page and player read: the session's events
//! (`GET /v1/audit/events?session=`) and its recordings (`GET /v1/recordings/{id}`, audited as
//! `recording_read`).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use sallyport_api::audit::{AuditEntry, AuditEvents};
use sallyport_audit::writers::{ChainKind, GatewayKind};
use serde_json::{Value, json};

use crate::audit_cmd::Conn;
use crate::client::{Client, enc};

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The session's id (`sallyport audit sessions` lists them).
    pub session: String,
    /// One JSON object: the session's facts, its timeline and its recordings.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The session's id (`sallyport audit sessions` lists them).
    pub session: String,
    /// Play this many times faster than it happened (0.1 to 1000; pauses longer than 2 s are
    /// cut to 2 s whatever the speed).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// The channel to play (`audit show` lists each recorded channel); default: the first
    /// terminal (pty) channel, else the first channel.
    #[arg(long)]
    pub channel: Option<u64>,
}

/// The longest pause a replay makes, whatever the recording's.
const MAX_PAUSE: f64 = 2.0;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A field of an event as text ("" when it has none): a subject field or `command` (typed in
/// the entry), else one of the event's own.
fn text<'a>(e: &'a AuditEntry, k: &str) -> &'a str {
    let typed = match k {
        "engineer" => e.engineer.as_deref(),
        "ticket" => e.ticket.as_deref(),
        "cluster" => e.cluster.as_deref(),
        "node" => e.node.as_deref(),
        "session" => e.session.as_deref(),
        "command" => e.command.as_deref(),
        _ => None,
    };
    typed
        .or_else(|| e.field(k).and_then(Value::as_str))
        .unwrap_or("")
}

/// One of the event's own fields as written (null when it has none).
fn own(e: &AuditEntry, k: &str) -> Value {
    e.field(k).cloned().unwrap_or(Value::Null)
}

fn channel(e: &AuditEntry) -> Option<u64> {
    e.field("channel").and_then(Value::as_u64)
}

fn clean(t: &str) -> String {
    sallyport_audit::sanitize(t)
}

/// The session's events, oldest first (an error that says what to do when there are none).
async fn events(client: &Client, session: &str) -> anyhow::Result<Vec<AuditEntry>> {
    let list = client
        .get_as::<AuditEvents>(&format!(
            "/v1/audit/events?session={}&limit=100000",
            enc(session)
        ))
        .await?
        .events;
    anyhow::ensure!(
        !list.is_empty(),
        "no events of session {:?} on a cluster you may see: check the id with `sallyport audit \
         sessions`",
        clean(session)
    );
    Ok(list)
}

fn when(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn offset(ms: u64) -> String {
    let secs = ms / 1000;
    format!("+{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// One line of the timeline, or `None` for what it leaves out (the line on screen at each
/// Enter repeats the command; the output's byte counts are in --json; the gateway's own
/// housekeeping). Only the gateway writes a session's events.
fn entry(e: &AuditEntry, exits: &BTreeMap<u64, &AuditEntry>) -> Option<Value> {
    let kind = GatewayKind::ALL
        .iter()
        .copied()
        .find(|k| k.as_str() == e.kind)?;
    let channel = channel(e);
    let mut out = json!({"time_ms": e.time_ms, "kind": e.kind, "channel": channel});
    let text = match kind {
        GatewayKind::Command => {
            out["command"] = json!(e.command);
            out["via"] = own(e, "via");
            // An exec channel runs one command: its exit is the command's.
            if text(e, "via") == "exec"
                && let Some(x) = channel.and_then(|c| exits.get(&c))
            {
                out["exit_status"] = own(x, "exit_status");
                out["exit_signal"] = own(x, "exit_signal");
            }
            let status = match (out["exit_status"].as_u64(), out["exit_signal"].as_str()) {
                (Some(n), _) => format!("  [exit {n}]"),
                (None, Some(sig)) => format!("  [signal {}]", clean(sig)),
                (None, None) => String::new(),
            };
            format!("$ {}{status}", clean(text(e, "command")))
        }
        GatewayKind::ChannelExit => {
            out["exit_status"] = own(e, "exit_status");
            out["exit_signal"] = own(e, "exit_signal");
            match (out["exit_status"].as_u64(), out["exit_signal"].as_str()) {
                (Some(n), _) => format!("exit status {n}"),
                (None, Some(sig)) => format!("ended by signal {}", clean(sig)),
                (None, None) => "closed".into(),
            }
        }
        GatewayKind::FileOp => {
            let op = own(e, "op");
            let path = ["path", "from"]
                .iter()
                .map(|k| s(&op, k))
                .find(|p| !p.is_empty())
                .unwrap_or("");
            let sha = ["sha256", "sha256_written", "sha256_read"]
                .iter()
                .map(|k| s(&op, k))
                .find(|p| !p.is_empty())
                .unwrap_or("");
            let size = op
                .get("bytes")
                .or_else(|| op.get("size"))
                .or_else(|| op.get("bytes_written"))
                .and_then(Value::as_u64);
            let mut t = format!("{} {} {}", text(e, "via"), s(&op, "op"), clean(path));
            if !s(&op, "to").is_empty() {
                t.push_str(&format!(" -> {}", clean(s(&op, "to"))));
            }
            if let Some(n) = size {
                t.push_str(&format!(" ({n} bytes)"));
            }
            if !sha.is_empty() {
                t.push_str(&format!(" sha256 {}", clean(sha)));
            }
            out["path"] = json!(path);
            out["sha256"] = json!((!sha.is_empty()).then_some(sha));
            out["size"] = json!(size);
            out["op"] = op;
            t
        }
        GatewayKind::FileTransfer => {
            let tr = own(e, "transfer");
            out["path"] = tr["path"].clone();
            out["direction"] = tr["direction"].clone();
            format!(
                "scp {} {}",
                clean(s(&tr, "direction")),
                clean(s(&tr, "path"))
            )
        }
        GatewayKind::Forward | GatewayKind::ForwardFailed => {
            out["target"] = own(e, "target");
            format!("port forward to {}", clean(text(e, "target")))
        }
        GatewayKind::ChannelRefused
        | GatewayKind::ForwardRefused
        | GatewayKind::SessionRefused
        | GatewayKind::NodeUnreachable
        | GatewayKind::NodeKeyRefused
        | GatewayKind::RecordingFailed
        | GatewayKind::SessionTerminated => {
            out["reason"] = own(e, "reason");
            let what = [text(e, "request"), text(e, "target")]
                .iter()
                .filter(|x| !x.is_empty())
                .map(|x| clean(x))
                .collect::<Vec<_>>()
                .join(" ");
            format!(
                "{} {what}: {}",
                e.kind.replace('_', " "),
                clean(text(e, "reason"))
            )
        }
        GatewayKind::Env => format!("env {}", clean(text(e, "env_name"))),
        GatewayKind::Shell => "shell (no pty)".into(),
        GatewayKind::SftpStarted => "sftp".into(),
        GatewayKind::InputHidden if e.fields.get("sealed").is_some_and(|s| s.is_string()) => {
            format!(
                "input typed with echo off at a prompt for a secret (sealed; a reviewer opens it \
                 with `sallyport audit unseal --source {} --seq {} --reason ...`)",
                clean(&e.source),
                e.seq
            )
        }
        GatewayKind::InputHidden => {
            "input typed with echo off at a prompt for a secret (not kept)".into()
        }
        GatewayKind::SessionStarted => format!(
            "session started from {} as {}",
            clean(text(e, "peer")),
            clean(text(e, "login"))
        ),
        GatewayKind::SessionEnded => "session ended".into(),
        GatewayKind::ObserverJoined => "an observer joined".into(),
        GatewayKind::RecordingFinished | GatewayKind::RecordingRecovered => {
            out["recording"] = own(e, "recording");
            format!("recording {}", clean(text(e, "recording")))
        }
        GatewayKind::LineEntered
        | GatewayKind::FullScreen
        | GatewayKind::FullScreenSuppressed
        | GatewayKind::OutputRecorded
        | GatewayKind::NodeKeyPinned
        | GatewayKind::RecordingUnreadable
        | GatewayKind::UserCasRefused
        | GatewayKind::GatewayConfigReloaded
        | GatewayKind::GatewayConfigReloadRefused => return None,
    };
    out["text"] = json!(text);
    Some(out)
}

pub async fn show(a: ShowArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let list = events(&client, &a.session).await?;
    let is = |e: &&AuditEntry, k: GatewayKind| e.kind == k.as_str();
    let start = list.iter().find(|e| is(e, GatewayKind::SessionStarted));
    let first = list.first().map(|e| e.time_ms).unwrap_or(0);
    let started_ms = start.map(|e| e.time_ms).unwrap_or(first);
    let ended_ms = list
        .iter()
        .filter(|e| is(e, GatewayKind::SessionEnded) || is(e, GatewayKind::SessionTerminated))
        .map(|e| e.time_ms)
        .max();
    let fact = |k: &str| {
        start
            .map(|e| text(e, k))
            .filter(|v| !v.is_empty())
            .or_else(|| list.iter().map(|e| text(e, k)).find(|v| !v.is_empty()))
            .unwrap_or("")
            .to_string()
    };
    // The grant's certificate, from the broker's record of issuing it: the approval and the
    // request it came from.
    let grant = fact("grant");
    let mut issued = None;
    if !grant.is_empty() && !fact("ticket").is_empty() {
        let v = client
            .get_as::<AuditEvents>(&format!(
                "/v1/audit/events?kind=certificate_issued&ticket={}&limit=10000",
                enc(&fact("ticket"))
            ))
            .await?;
        issued = v.events.into_iter().find(|c| text(c, "grant") == grant);
    }
    let exits: BTreeMap<u64, &AuditEntry> = list
        .iter()
        .filter(|e| is(e, GatewayKind::ChannelExit))
        .filter_map(|e| Some((channel(e)?, e)))
        .collect();
    let timeline: Vec<Value> = list.iter().filter_map(|e| entry(e, &exits)).collect();
    let mut recordings: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for e in &list {
        let id = text(e, "recording");
        if !id.is_empty() {
            recordings.entry(id.to_string()).or_insert(channel(e));
        }
    }
    let facts = json!({
        "session": a.session,
        "engineer": fact("engineer"),
        "ticket": fact("ticket"),
        "cluster": fact("cluster"),
        "node": fact("node"),
        "host": fact("host"),
        "login": fact("login"),
        "source_address": fact("peer"),
        "certificate_serial": fact("serial"),
        "key_id": fact("key_id"),
        "grant": grant,
        "approval": issued.as_ref().map(|c| own(c, "approval")),
        "request": issued.as_ref().map(|c| own(c, "request")),
        "recorded_by": start.map(|e| e.source.as_str()).unwrap_or(""),
        "started": when(started_ms),
        "started_ms": started_ms,
        "ended": ended_ms.map(when),
        "ended_ms": ended_ms,
        "duration_secs": ended_ms.map(|e| e.saturating_sub(started_ms) / 1000),
        "live": ended_ms.is_none(),
    });
    if a.json {
        let mut v = facts;
        v["timeline"] = json!(timeline);
        v["recordings"] = json!(
            recordings
                .iter()
                .map(|(id, ch)| json!({"recording": id, "channel": ch}))
                .collect::<Vec<_>>()
        );
        v["events"] = json!(list.len());
        println!("{}", serde_json::to_string(&v)?);
        return Ok(0);
    }
    let f = |k: &str| clean(facts[k].as_str().unwrap_or("-"));
    println!("session     {}", clean(&a.session));
    println!("engineer    {}", f("engineer"));
    println!("ticket      {}", f("ticket"));
    let node = format!("{}.{}", f("node"), f("cluster"));
    if f("host") != node && !f("host").is_empty() {
        println!("node        {node} (as {})", f("host"));
    } else {
        println!("node        {node}");
    }
    println!("login       {}", f("login"));
    println!("from        {}", f("source_address"));
    println!(
        "certificate serial {}  grant {}",
        f("certificate_serial"),
        f("grant")
    );
    if let Some(c) = &issued {
        let request = text(c, "request");
        println!(
            "approval    {}  request {}",
            clean(text(c, "approval")),
            if request.is_empty() {
                "-".into()
            } else {
                clean(request)
            }
        );
    }
    println!("recorded by {}", f("recorded_by"));
    match ended_ms {
        Some(end) => println!(
            "time        {} .. {} ({}s)",
            f("started"),
            when(end),
            end.saturating_sub(started_ms) / 1000
        ),
        None => println!("time        {} .. (open now)", f("started")),
    }
    println!();
    for t in &timeline {
        let at = t["time_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(started_ms);
        let ch = t["channel"]
            .as_u64()
            .map(|c| format!("c{c}"))
            .unwrap_or_else(|| "  ".into());
        println!(
            "{} {:>3} {}",
            offset(at),
            ch,
            t["text"].as_str().unwrap_or("")
        );
    }
    if !recordings.is_empty() {
        println!();
        for (id, ch) in &recordings {
            let ch = ch.map(|c| format!(" --channel {c}")).unwrap_or_default();
            println!(
                "recording {}: sallyport audit replay {}{ch}",
                clean(id),
                clean(&a.session)
            );
        }
    }
    Ok(0)
}

/// A recording's events: (seconds, code, data).
type CastEvent = (f64, String, String);

fn parse_cast(text: &str) -> anyhow::Result<(Value, Vec<CastEvent>)> {
    let mut lines = text.lines();
    let header: Value = lines
        .next()
        .and_then(|l| serde_json::from_str(l).ok())
        .context("the recording has no asciicast header")?;
    anyhow::ensure!(
        header["version"] == 2,
        "the recording is not asciicast version 2"
    );
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev: CastEvent = serde_json::from_str(line)
            .with_context(|| format!("line {} of the recording cannot be read", n + 2))?;
        out.push(ev);
    }
    Ok((header, out))
}

/// Text a terminal may show: escape sequences and control characters other than newline and
/// tab removed (output without a pty is shown as text, never interpreted).
fn plain(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ ... final byte; other escapes: drop the next character.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        a.speed.is_finite() && (0.1..=1000.0).contains(&a.speed),
        "--speed must be between 0.1 and 1000"
    );
    let client = a.conn.client()?;
    let list = events(&client, &a.session).await?;
    // Each recorded channel, in the order the channels opened.
    let mut channels: Vec<(String, Option<u64>)> = Vec::new();
    for e in &list {
        let id = text(e, "recording");
        if !id.is_empty() && !channels.iter().any(|(r, _)| r == id) {
            channels.push((id.to_string(), channel(e)));
        }
    }
    anyhow::ensure!(
        !channels.is_empty(),
        "session {:?} has no recording (yet): `sallyport audit show {}` lists what happened",
        clean(&a.session),
        clean(&a.session)
    );
    let mut casts = Vec::new();
    for (id, ch) in &channels {
        if a.channel.is_some() && *ch != a.channel {
            continue;
        }
        let resp = client
            .download(
                &format!("/v1/recordings/{}", enc(id)),
                std::time::Duration::from_secs(600),
            )
            .await?;
        let text = resp.text().await?;
        let (header, evs) = parse_cast(&text)?;
        let pty = header["env"]["TERM"].as_str() != Some("dumb");
        casts.push((id.clone(), *ch, header, evs, pty));
        if a.channel.is_none() && pty {
            break;
        }
    }
    let chosen = match a.channel {
        Some(_) => casts.into_iter().next(),
        None => {
            let first_pty = casts.iter().position(|c| c.4);
            match first_pty {
                Some(i) => casts.into_iter().nth(i),
                None => casts.into_iter().next(),
            }
        }
    };
    let Some((id, ch, header, evs, pty)) = chosen else {
        anyhow::bail!(
            "session {:?} has no recorded channel {}: `sallyport audit show {}` lists them",
            clean(&a.session),
            a.channel.map(|c| c.to_string()).unwrap_or_default(),
            clean(&a.session)
        );
    };
    let mut out = std::io::stdout();
    let label = ch.map(|c| format!("channel {c}")).unwrap_or_default();
    if !pty {
        let (mut input, mut output) = (String::new(), String::new());
        for (_, code, data) in &evs {
            match code.as_str() {
                "i" => input.push_str(data),
                "o" => output.push_str(data),
                _ => {}
            }
        }
        writeln!(out, "--- {} {label} (no pty): input ---", clean(&id))?;
        write!(out, "{}", plain(&input))?;
        writeln!(out, "\n--- output ---")?;
        write!(out, "{}", plain(&output))?;
        writeln!(out)?;
        return Ok(0);
    }
    // A terminal channel: the output runs through the screen model, and what is written here is
    // the model's own redraw of what changed (never the recorded bytes themselves, so an escape
    // sequence the node sent cannot reach this terminal).
    let dim = |v: &Value, d: u16| {
        v.as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(d)
            .clamp(2, 500)
    };
    let (mut w, mut h) = (dim(&header["width"], 80), dim(&header["height"], 24));
    let mut parser = vt100::Parser::new(h, w, 0);
    let mut prev = parser.screen().clone();
    out.write_all(b"\x1b[H\x1b[2J")?;
    out.write_all(&parser.screen().contents_formatted())?;
    out.flush()?;
    let mut last = 0.0f64;
    for (t, code, data) in &evs {
        if code != "o" && code != "r" {
            continue;
        }
        let t = if t.is_finite() { t.max(last) } else { last };
        let pause = ((t - last) / a.speed).min(MAX_PAUSE);
        last = t;
        match code.as_str() {
            "o" => parser.process(data.as_bytes()),
            "r" => {
                if let Some((ws, hs)) = data.split_once('x')
                    && let (Ok(nw), Ok(nh)) = (ws.trim().parse::<u64>(), hs.trim().parse::<u64>())
                {
                    w = dim(&json!(nw), w);
                    h = dim(&json!(nh), h);
                    parser.screen_mut().set_size(h, w);
                }
                continue;
            }
            _ => continue,
        }
        if pause > 0.0 {
            tokio::time::sleep(std::time::Duration::from_secs_f64(pause)).await;
        }
        let now = parser.screen().clone();
        out.write_all(&now.contents_diff(&prev))?;
        out.flush()?;
        prev = now;
    }
    out.write_all(b"\x1b[0m\r\n")?;
    writeln!(out, "--- end of {} {label}", clean(&id))?;
    out.flush()?;
    Ok(0)
}
