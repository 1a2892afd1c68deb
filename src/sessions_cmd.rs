//! `sallyport sessions list|watch|terminate`: engineers' sessions for reviewers, customer
//! approvers (their own clusters) and the operator.

use clap::{Args, Subcommand};
use sallyport_api::sessions::{LiveView, Sessions, TerminateRequest, TerminationRequested};
use sallyport_audit::sanitize;

use crate::audit_cmd::Conn;
use crate::client::enc;
use crate::show::show_all;

#[derive(Subcommand, Debug)]
pub enum SessionsCmd {
    /// List sessions, newest first (reviewer, operator, or a customer approver for its own
    /// clusters).
    List(ListArgs),
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
    Terminate(TerminateArgs),
}

/// `sallyport sessions list` (and `sallyport audit sessions`).
#[derive(Args, Debug)]
pub struct ListArgs {
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
}

/// `sallyport sessions terminate` (and `sallyport audit terminate`).
#[derive(Args, Debug)]
pub struct TerminateArgs {
    #[command(flatten)]
    conn: Conn,
    /// The session's id (`sallyport sessions list` shows it).
    session: String,
    /// Why: the engineer and the audit log see it.
    #[arg(long)]
    reason: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: SessionsCmd) -> anyhow::Result<i32> {
    match cmd {
        SessionsCmd::List(ListArgs {
            conn,
            live,
            limit,
            json,
        }) => {
            let list = conn
                .client()?
                .get_as::<Sessions>(&format!("/v1/sessions?live={live}&limit={limit}"))
                .await?
                .sessions;
            let empty = if live {
                "no session is open now"
            } else {
                "no session recorded yet"
            };
            show_all(&list, json, empty, |s| {
                format!(
                    "{} {} engineer={} ticket={} node={}.{} commands={}",
                    sanitize(&s.session),
                    if s.live { "live " } else { "ended" },
                    sanitize(&s.engineer),
                    sanitize(&s.ticket),
                    sanitize(&s.node),
                    sanitize(&s.cluster),
                    s.commands
                )
            })?;
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
                let v: LiveView = client.get_as(&path).await?;
                if once && json {
                    println!("{}", serde_json::to_string(&v)?);
                    return Ok(0);
                }
                // The gateway starts sending once it hears of the watch (a second or two).
                if once && v.channels.is_empty() && v.live && start.elapsed().as_secs() < 10 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
                let mut out = String::new();
                if redraw {
                    out.push_str("\x1b[H\x1b[2J");
                }
                out.push_str(&format!(
                    "session {} on {} ({}; ctrl-c to stop watching)\n",
                    sanitize(&session),
                    sanitize(&v.cluster),
                    if v.live { "live" } else { "ended" }
                ));
                for c in &v.channels {
                    let text = if c.pty {
                        c.rows.join("\n")
                    } else {
                        c.stream.clone()
                    };
                    out.push_str(&format!(
                        "--- {} ---\n{}\n",
                        sanitize(&c.recording),
                        // Text only: nothing the session printed may drive this terminal.
                        text.lines().map(sanitize).collect::<Vec<_>>().join("\n")
                    ));
                }
                if v.channels.is_empty() {
                    out.push_str("(nothing on screen yet)\n");
                }
                std::io::stdout().write_all(out.as_bytes())?;
                std::io::stdout().flush()?;
                if once || !v.live {
                    return Ok(0);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        SessionsCmd::Terminate(TerminateArgs {
            conn,
            session,
            reason,
            json,
        }) => {
            let v: TerminationRequested = conn
                .client()?
                .post_as(
                    &format!("/v1/sessions/{}/terminate", enc(&session)),
                    &TerminateRequest { reason },
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "asked the gateway of {} to end session {}; the engineer sees: ended by {}: {}",
                    sanitize(&v.cluster),
                    sanitize(&session),
                    sanitize(&v.requested_by),
                    sanitize(&v.reason),
                );
            }
            Ok(0)
        }
    }
}
