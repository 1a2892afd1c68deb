//! `sallyport audit show SESSION` (who, ticket, node, login, times, and the timeline of what
//! happened) and `sallyport audit replay SESSION` (a channel's recording played in this
//! terminal). Both read what the console's session page and player read: the session's events
//! (`GET /v1/audit/events?session=`) and its recordings (`GET /v1/recordings/{id}`, audited as
//! `recording_read`).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
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

fn clean(t: &str) -> String {
    sallyport_audit::sanitize(t)
}

/// The session's events, oldest first (an error that says what to do when there are none).
async fn events(client: &Client, session: &str) -> anyhow::Result<Vec<Value>> {
    let v = client
        .get(&format!(
            "/v1/audit/events?session={}&limit=100000",
            enc(session)
        ))
        .await?;
    let list = v["events"].as_array().cloned().unwrap_or_default();
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
/// Enter repeats the command; the output's byte counts are in --json).
fn entry(e: &Value, exits: &BTreeMap<u64, Value>) -> Option<Value> {
    let kind = s(e, "kind");
    let channel = e.get("channel").and_then(Value::as_u64);
    let mut out = json!({"time_ms": e["time_ms"], "kind": kind, "channel": channel});
    let text = match kind {
        "command" => {
            out["command"] = e["command"].clone();
            out["via"] = e["via"].clone();
            // An exec channel runs one command: its exit is the command's.
            if s(e, "via") == "exec"
                && let Some(x) = channel.and_then(|c| exits.get(&c))
            {
                out["exit_status"] = x["exit_status"].clone();
                out["exit_signal"] = x["exit_signal"].clone();
            }
            let status = match (out["exit_status"].as_u64(), out["exit_signal"].as_str()) {
                (Some(n), _) => format!("  [exit {n}]"),
                (None, Some(sig)) => format!("  [signal {}]", clean(sig)),
                (None, None) => String::new(),
            };
            format!("$ {}{status}", clean(s(e, "command")))
        }
        "channel_exit" => {
            out["exit_status"] = e["exit_status"].clone();
            out["exit_signal"] = e["exit_signal"].clone();
            match (e["exit_status"].as_u64(), e["exit_signal"].as_str()) {
                (Some(n), _) => format!("exit status {n}"),
                (None, Some(sig)) => format!("ended by signal {}", clean(sig)),
                (None, None) => "closed".into(),
            }
        }
        "file_op" => {
            let op = &e["op"];
            let path = ["path", "from"]
                .iter()
                .map(|k| s(op, k))
                .find(|p| !p.is_empty())
                .unwrap_or("");
            let sha = ["sha256", "sha256_written", "sha256_read"]
                .iter()
                .map(|k| s(op, k))
                .find(|p| !p.is_empty())
                .unwrap_or("");
            let size = op
                .get("bytes")
                .or_else(|| op.get("size"))
                .or_else(|| op.get("bytes_written"))
                .and_then(Value::as_u64);
            out["op"] = op.clone();
            out["path"] = json!(path);
            out["sha256"] = json!((!sha.is_empty()).then_some(sha));
            out["size"] = json!(size);
            let mut t = format!("{} {} {}", s(e, "via"), s(op, "op"), clean(path));
            if !s(op, "to").is_empty() {
                t.push_str(&format!(" -> {}", clean(s(op, "to"))));
            }
            if let Some(n) = size {
                t.push_str(&format!(" ({n} bytes)"));
            }
            if !sha.is_empty() {
                t.push_str(&format!(" sha256 {}", clean(sha)));
            }
            t
        }
        "file_transfer" => {
            let tr = &e["transfer"];
            out["path"] = tr["path"].clone();
            out["direction"] = tr["direction"].clone();
            format!("scp {} {}", clean(s(tr, "direction")), clean(s(tr, "path")))
        }
        "forward" | "forward_failed" => {
            out["target"] = e["target"].clone();
            format!("port forward to {}", clean(s(e, "target")))
        }
        "channel_refused" | "forward_refused" | "session_refused" | "node_unreachable"
        | "node_key_refused" | "recording_failed" | "session_terminated" => {
            out["reason"] = e["reason"].clone();
            let what = [s(e, "request"), s(e, "target")]
                .iter()
                .filter(|x| !x.is_empty())
                .map(|x| clean(x))
                .collect::<Vec<_>>()
                .join(" ");
            format!("REFUSED/FAILED {what}: {}", clean(s(e, "reason")))
                .replace("REFUSED/FAILED ", &format!("{} ", kind.replace('_', " ")))
        }
        "env" => format!("env {}", clean(s(e, "env_name"))),
        "shell" => "shell (no pty)".into(),
        "sftp_started" => "sftp".into(),
        "input_hidden" => {
            "input typed with echo off at a prompt for a secret (not recorded)".into()
        }
        "session_started" => format!(
            "session started from {} as {}",
            clean(s(e, "peer")),
            clean(s(e, "login"))
        ),
        "session_ended" => "session ended".into(),
        "observer_joined" => "an observer joined".into(),
        "recording_finished" | "recording_recovered" => {
            out["recording"] = e["recording"].clone();
            format!("recording {}", clean(s(e, "recording")))
        }
        _ => return None,
    };
    out["text"] = json!(text);
    Some(out)
}

pub async fn show(a: ShowArgs) -> anyhow::Result<i32> {
    let client = a.conn.client()?;
    let list = events(&client, &a.session).await?;
    let start = list.iter().find(|e| s(e, "kind") == "session_started");
    let first = list
        .first()
        .and_then(|e| e["time_ms"].as_u64())
        .unwrap_or(0);
    let started_ms = start.and_then(|e| e["time_ms"].as_u64()).unwrap_or(first);
    let ended_ms = list
        .iter()
        .filter(|e| matches!(s(e, "kind"), "session_ended" | "session_terminated"))
        .filter_map(|e| e["time_ms"].as_u64())
        .max();
    let fact = |k: &str| {
        start
            .map(|e| s(e, k))
            .filter(|v| !v.is_empty())
            .or_else(|| list.iter().map(|e| s(e, k)).find(|v| !v.is_empty()))
            .unwrap_or("")
            .to_string()
    };
    // The grant's certificate, from the broker's record of issuing it: the approval and the
    // request it came from.
    let grant = fact("grant");
    let mut issued = Value::Null;
    if !grant.is_empty() && !fact("ticket").is_empty() {
        let v = client
            .get(&format!(
                "/v1/audit/events?kind=certificate_issued&ticket={}&limit=10000",
                enc(&fact("ticket"))
            ))
            .await?;
        if let Some(c) = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| s(c, "grant") == grant)
        {
            issued = c.clone();
        }
    }
    let exits: BTreeMap<u64, Value> = list
        .iter()
        .filter(|e| s(e, "kind") == "channel_exit")
        .filter_map(|e| Some((e["channel"].as_u64()?, e.clone())))
        .collect();
    let timeline: Vec<Value> = list.iter().filter_map(|e| entry(e, &exits)).collect();
    let mut recordings: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for e in &list {
        let id = s(e, "recording");
        if !id.is_empty() {
            recordings
                .entry(id.to_string())
                .or_insert(e.get("channel").and_then(Value::as_u64));
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
        "approval": issued.get("approval"),
        "request": issued.get("request"),
        "recorded_by": start.map(|e| s(e, "source")).unwrap_or(""),
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
    if !issued.is_null() {
        println!(
            "approval    {}  request {}",
            clean(s(&issued, "approval")),
            issued["request"].as_str().map(clean).unwrap_or("-".into())
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
        let id = s(e, "recording");
        if !id.is_empty() && !channels.iter().any(|(r, _)| r == id) {
            channels.push((id.to_string(), e.get("channel").and_then(Value::as_u64)));
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
