//! `sallyport sessions list|watch|terminate`: engineers' sessions for reviewers, customer
//! approvers (their own clusters) and the operator.

use clap::Subcommand;
use serde_json::json;

use crate::audit_cmd::Conn;
use crate::client::enc;

#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// List sessions, newest first (reviewer, operator, or a customer approver for its own
    /// clusters).
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only the sessions open now.
        #[arg(long)]
        live: bool,
        /// At most this many.
        #[arg(long, default_value_t = 200)]
        limit: u64,
        /// One JSON object per session.
        #[arg(long)]
        json: bool,
    },
    /// Watch an open session in this terminal, read-only: each channel's screen (or output),
    /// redrawn twice a second until the session ends (watching is audited, and releases a
    /// moderated session when a customer's approver watches).
    Watch {
        #[command(flatten)]
        conn: Conn,
        /// The session's id (`sallyport sessions list --live` shows it).
        session: String,
        /// Print what the session shows now once, and exit.
        #[arg(long)]
        once: bool,
        /// With --once: the broker's answer as JSON.
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// End an open session: the engineer is disconnected within about two seconds and sees who
    /// ended it and why (reviewer, operator, or the approver of the session's customer).
    Terminate {
        #[command(flatten)]
        conn: Conn,
        /// The session's id (`sallyport sessions list` shows it).
        session: String,
        /// Why: the engineer and the audit log see it.
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: SessionsCmd) -> anyhow::Result<i32> {
    match cmd {
        SessionsCmd::List {
            conn,
            live,
            limit,
            json,
        } => {
            let v = conn
                .client()?
                .get(&format!("/v1/sessions?live={live}&limit={limit}"))
                .await?;
            let list = v["sessions"].as_array().cloned().unwrap_or_default();
            if list.is_empty() && !json {
                eprintln!(
                    "{}",
                    if live {
                        "no session is open now"
                    } else {
                        "no session recorded yet"
                    }
                );
            }
            for s in &list {
                if json {
                    println!("{}", serde_json::to_string(s)?);
                } else {
                    let t = |k: &str| sallyport_audit::sanitize(s[k].as_str().unwrap_or("-"));
                    println!(
                        "{} {} engineer={} ticket={} node={}.{} commands={}",
                        t("session"),
                        if s["live"] == true { "live " } else { "ended" },
                        t("engineer"),
                        t("ticket"),
                        t("node"),
                        t("cluster"),
                        s["commands"]
                    );
                }
            }
            Ok(0)
        }
        SessionsCmd::Watch {
            conn,
            session,
            once,
            json,
        } => {
            use std::io::{IsTerminal, Write};
            let client = conn.client()?;
            let path = format!("/v1/sessions/{}/live", enc(&session));
            let redraw = !once && std::io::stdout().is_terminal();
            let start = std::time::Instant::now();
            loop {
                let v = client.get(&path).await?;
                if once && json {
                    println!("{}", serde_json::to_string(&v)?);
                    return Ok(0);
                }
                let channels = v["channels"].as_array().cloned().unwrap_or_default();
                // The gateway starts sending once it hears of the watch (a second or two).
                if once
                    && channels.is_empty()
                    && v["live"] == true
                    && start.elapsed().as_secs() < 10
                {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
                let mut out = String::new();
                if redraw {
                    out.push_str("\x1b[H\x1b[2J");
                }
                out.push_str(&format!(
                    "session {} on {} ({}; ctrl-c to stop watching)\n",
                    sallyport_audit::sanitize(&session),
                    sallyport_audit::sanitize(v["cluster"].as_str().unwrap_or("-")),
                    if v["live"] == true { "live" } else { "ended" }
                ));
                for c in &channels {
                    let text = if c["pty"] == true {
                        c["rows"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join("\n")
                    } else {
                        c["stream"].as_str().unwrap_or_default().to_string()
                    };
                    out.push_str(&format!(
                        "--- {} ---\n{}\n",
                        sallyport_audit::sanitize(c["recording"].as_str().unwrap_or("-")),
                        // Text only: nothing the session printed may drive this terminal.
                        text.lines()
                            .map(sallyport_audit::sanitize)
                            .collect::<Vec<_>>()
                            .join("\n")
                    ));
                }
                if channels.is_empty() {
                    out.push_str("(nothing on screen yet)\n");
                }
                std::io::stdout().write_all(out.as_bytes())?;
                std::io::stdout().flush()?;
                if once || v["live"] != true {
                    return Ok(0);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        SessionsCmd::Terminate {
            conn,
            session,
            reason,
            json,
        } => {
            let (_, v) = conn
                .client()?
                .post(
                    &format!("/v1/sessions/{}/terminate", enc(&session)),
                    &json!({"reason": reason}),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "asked the gateway of {} to end session {}; the engineer sees: ended by {}: {}",
                    sallyport_audit::sanitize(v["cluster"].as_str().unwrap_or("-")),
                    sallyport_audit::sanitize(&session),
                    sallyport_audit::sanitize(v["requested_by"].as_str().unwrap_or("-")),
                    sallyport_audit::sanitize(v["reason"].as_str().unwrap_or("-")),
                );
            }
            Ok(0)
        }
    }
}
