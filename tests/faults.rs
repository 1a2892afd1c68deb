//! kill -9 and restart, one at a time, with an engineer's interactive session open through the
//! real edge and gateway processes (real OpenSSH `ssh` in a terminal, a real sshd node): the
//! broker, the edge, the gateway, the store's PostgreSQL, the directory's slapd. What the
//! engineer typed is
//! compared with the audit log (each command exactly once), with the node's bash history and
//! with the node sshd's own log; certificates are refused (503, fail closed) while the store or
//! the directory is down. (A killed gateway's spool and recordings in detail:
//! `tests/bastion.rs`.)
//!
//! PostgreSQL and slapd are private instances each test starts on its own ports with
//! `tests/infra/start-postgres.sh` / `start-ldap.sh` — never the shared ones other tests use.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sallyport_api::audit::AuditEntry;
use serde_json::{Value, json};
use support::bastion::{self, Bastion, LOGIN, ssh, trust_edge};
use support::broker::*;
use support::sshd::free_port;
use support::term::{Term, tmux};

const PROMPT: &str = ":~$";
const INFRA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/infra");

/// An interactive shell on node1 whose bash appends each command to its own history file
/// (`/tmp/<tag>.hist`) as it runs, so the node's own record can be read mid-session.
struct Shell {
    term: Term,
    tag: String,
    /// The lines typed, in order.
    typed: Vec<String>,
    prompts: usize,
}

impl Shell {
    fn open(name: &str, home: &Path) -> Shell {
        let tag = format!("{name}-{}-{}", std::process::id(), now());
        let term = Term::ssh(name, home, 160, 60, "");
        term.wait(PROMPT, 1);
        let mut shell = Shell {
            term,
            tag,
            typed: Vec::new(),
            prompts: 1,
        };
        let hist = shell.history_path();
        shell.run(&format!(
            "export HISTFILE={} HISTCONTROL=; shopt -s histappend; PROMPT_COMMAND='history -a'",
            hist.display()
        ));
        shell
    }

    fn history_path(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/{}.hist", self.tag))
    }

    /// Type `line` and Enter; wait for the next prompt.
    fn run(&mut self, line: &str) {
        self.term.type_text(line);
        self.term.send(&["Enter"]);
        self.typed.push(line.to_string());
        self.prompts += 1;
        self.term.wait(PROMPT, self.prompts);
    }

    /// `echo <word>-<tag>`, and its output on the screen.
    fn echo(&mut self, word: &str) {
        let line = format!("echo {word}-{}", self.tag);
        self.run(&line);
        let out = format!("{word}-{}", self.tag);
        // The line as typed and its output.
        assert!(
            self.term.screen().matches(&out).count() >= 2,
            "{}",
            self.term.screen()
        );
    }

    /// The echo lines typed, in order.
    fn echoes(&self) -> Vec<String> {
        self.typed
            .iter()
            .filter(|l| l.starts_with("echo "))
            .cloned()
            .collect()
    }

    /// The commands of the node's bash history file that name this shell's tag.
    fn history(&self) -> Vec<String> {
        std::fs::read_to_string(self.history_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("echo ") && l.contains(&self.tag))
            .map(str::to_string)
            .collect()
    }

    /// Type `exit`; wait until ssh ended.
    fn exit(&mut self) {
        self.term.type_text("exit");
        self.term.send(&["Enter"]);
        self.typed.push("exit".into());
        self.term.wait_exit();
    }

    /// How ssh ended: `Some(status)`, or `None` when a signal ended it (tmux shows no status
    /// then). Call once ssh exited: tmux may see the terminal close before it has the status.
    fn exit_status(&self) -> Option<i32> {
        let start = Instant::now();
        loop {
            let status = tmux(&[
                "list-panes",
                "-t",
                &self.term.name,
                "-F",
                "#{pane_dead_status}",
            ]);
            if let Ok(status) = status.trim().parse() {
                return Some(status);
            }
            // tmux reaps the pane's program in its own time: seconds on a loaded machine.
            if start.elapsed() > Duration::from_secs(20) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.history_path());
    }
}

/// The interactive commands of the one session that ran `first` (as typed), once at least
/// `n` arrived (or after 30 s): (session id, commands in order).
async fn session_commands(w: &World, first: &str, n: usize) -> (String, Vec<String>) {
    let start = Instant::now();
    loop {
        let events = w.audit("kind=command&limit=10000").await;
        let session = events
            .iter()
            .find(|e| e.command.as_deref().map(str::trim_end) == Some(first))
            .map(|e| e.session.clone().unwrap());
        if let Some(session) = session {
            let cmds: Vec<String> = events
                .iter()
                .filter(|e| {
                    e.session.as_deref() == Some(session.as_str())
                        && opt_str(e, "via") == Some("interactive")
                })
                .map(|e| e.command.as_deref().unwrap().trim_end().to_string())
                .collect();
            if cmds.len() >= n || start.elapsed() > Duration::from_secs(30) {
                return (session, cmds);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no session ran {first:?}: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The node sshd's log names the session (its certificate's key id) in exactly one accepted
/// login — one connection to the node for the whole session, whatever died meanwhile — and
/// shows that connection closed.
fn node_saw_one_login(b: &Bastion, session: &str) {
    assert!(
        b.node.wait_for_log(session, Duration::from_secs(5)),
        "{}",
        b.node.log()
    );
    let log = b.node.log();
    let accepted: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("Accepted publickey") && l.contains(session))
        .collect();
    assert_eq!(accepted.len(), 1, "{log}");
    // "Accepted publickey for LOGIN from 127.0.0.1 port N ssh2: ..."
    let port = accepted[0]
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .unwrap();
    // "Disconnected from user ..." when the gateway ends it, "Connection closed by ..." or
    // "Connection reset by ..." when the gateway died.
    let peer = format!("127.0.0.1 port {port}");
    let start = Instant::now();
    while !b.node.log().lines().any(|l| {
        l.contains(&peer)
            && [
                "Disconnected from",
                "Connection closed by",
                "Connection reset by",
            ]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the node never saw the session's connection end:\n{}",
            b.node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sallyport login` as alice for SUP-1234 into a fresh home with TOTP `code`; whatever it did.
fn cli_login(w: &World, code: &str) -> (Output, tempfile::TempDir) {
    let home = tempfile::tempdir().unwrap();
    let out = w
        .spawn_login_cli(home.path(), "alice", "SUP-1234", code, &[])
        .wait_with_output()
        .unwrap();
    (out, home)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// No certificate file was written into a `SALLYPORT_HOME`.
fn no_certificate(home: &Path) {
    let certs: Vec<_> = std::fs::read_dir(home)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with("-cert.pub"))
                .collect()
        })
        .unwrap_or_default();
    assert!(certs.is_empty(), "{certs:?}");
}

/// Send SIGKILL to `pid` (a process this test started).
fn kill9(pid: u32) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid}");
}

fn alive(pid: u32) -> bool {
    // A zombie is as dead as a process gets for this purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_dead(pid: u32) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{pid} still alive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// `KEY=value` lines of a run dir's `env` file (written by the start scripts).
fn env_file(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(dir.join("env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn env_value(dir: &Path, key: &str) -> String {
    env_file(dir)
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {}/env", dir.display()))
        .1
}

fn script(name: &str, envs: &[(&str, String)], args: &[&Path]) {
    let out = run(Command::new(format!("{INFRA}/{name}"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str()))));
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL of this test only (start-postgres.sh on a port of its own), stopped and
/// removed when dropped.
struct PrivatePg {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    url: String,
}

impl PrivatePg {
    fn start() -> PrivatePg {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        // The postgres user must reach the run dir.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("pg");
        script(
            "start-postgres.sh",
            &[
                ("PG_PORT", free_port().to_string()),
                // What the server acknowledged survives its kill (WAL written at commit).
                ("PG_OPTIONS", "-c synchronous_commit=on".into()),
            ],
            &[&dir],
        );
        let url = env_value(&dir, "PG_URL");
        PrivatePg {
            _tmp: tmp,
            dir,
            url,
        }
    }

    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// kill -9 the postmaster and every backend it started (a crash of the server).
    fn kill9(&self) {
        let pm = self.postmaster().expect("PostgreSQL runs");
        let backends = children(pm);
        kill9(pm);
        for p in &backends {
            kill9(*p);
        }
        wait_dead(pm);
        for p in backends {
            wait_dead(p);
        }
    }

    /// Start it again on the same data dir (crash recovery), as its start script did.
    fn restart(&self) {
        let pgbin = env_value(&self.dir, "PGBIN");
        let opts = env_value(&self.dir, "PG_SERVER_OPTIONS");
        let out = run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{pgbin}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"]));
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = run(Command::new(format!("{INFRA}/stop-postgres.sh")).arg(&self.dir));
    }
}

/// A slapd of this test only (start-ldap.sh on ports of its own, the usual seed), stopped and
/// removed when dropped.
struct PrivateLdap {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    url: String,
}

impl PrivateLdap {
    fn start() -> PrivateLdap {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ldap");
        script(
            "start-ldap.sh",
            &[
                ("LDAP_PORT", free_port().to_string()),
                ("LDAPS_PORT", free_port().to_string()),
            ],
            &[&dir],
        );
        let url = env_value(&dir, "LDAP_URI");
        PrivateLdap {
            _tmp: tmp,
            dir,
            url,
        }
    }

    fn kill9(&self) {
        let pid: u32 = std::fs::read_to_string(self.dir.join("slapd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        kill9(pid);
        wait_dead(pid);
    }

    /// Start it again on the same data (ldap-ctl.sh start: returns once it answers).
    fn restart(&self) {
        script("ldap-ctl.sh", &[], &[Path::new("start"), &self.dir]);
    }
}

impl Drop for PrivateLdap {
    fn drop(&mut self) {
        let _ = run(Command::new(format!("{INFRA}/stop-ldap.sh")).arg(&self.dir));
    }
}

/// Every echo typed is in the audit log exactly once, in the order typed, and in the node's
/// bash history exactly once, in the same order.
/// What was typed is the session's commands, each recorded once (audit log and the node's
/// history), the node saw one login, and the session has exactly one end: returned.
async fn recorded_once_and_ended(
    w: &World,
    b: &Bastion,
    shell: &Shell,
    cmds: &[String],
    session: &str,
) -> AuditEntry {
    assert_eq!(cmds, shell.typed, "{}", b.gateway.log_text());
    all_recorded_once(shell, cmds);
    node_saw_one_login(b, session);
    let ended = w
        .wait_audit(&format!("kind=session_ended&session={session}"), 1)
        .await;
    assert_eq!(ended.len(), 1, "{ended:#?}\n{}", b.gateway.log_text());
    ended[0].clone()
}

/// The commands typed during an outage waited in the gateway's spool.
fn spooled_meanwhile(b: &Bastion) {
    assert!(
        b.gateway.log_text().contains("they stay spooled"),
        "{}",
        b.gateway.log_text()
    );
}

fn all_recorded_once(shell: &Shell, cmds: &[String]) {
    let want = shell.echoes();
    let got: Vec<String> = cmds
        .iter()
        .filter(|c| c.starts_with("echo "))
        .cloned()
        .collect();
    assert_eq!(got, want, "audit log vs typed");
    assert_eq!(shell.history(), want, "node's bash history vs typed");
}

/// A broker killed with -9 mid-session: the session goes on; what is typed while the broker is
/// down is recorded at the gateway and arrives once the broker is back on the same store; a
/// login meanwhile fails with a clear message.
#[tokio::test]
async fn a_killed_broker_leaves_the_session_running_and_loses_no_command() {
    let (mut w, b, _home, mut shell) = two_commands_in("sp-fault-broker").await;
    let first = shell.typed[0].clone();
    // The first commands reached the broker: the session is established end to end.
    session_commands(&w, &first, 3).await;

    w.stop_broker();
    shell.echo("during-1");
    let (out, failed_home) = cli_login(&w, &w.code("alice", 1));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the broker"),
        "{}",
        stderr(&out)
    );
    no_certificate(failed_home.path());
    shell.echo("during-2");
    w.start_broker_again();
    shell.echo("after-1");
    shell.exit();
    assert_eq!(shell.exit_status(), Some(0), "{}", shell.term.screen());

    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;
    spooled_meanwhile(&b);
    verify_chains(&w.reviewer);
}

/// The broker away for an hour of simulated time with a session running. The edge, the gateway
/// and (when it is back) the broker read their clocks from one offset file (libfaketime); while
/// the broker is down the test moves it an hour ahead in steps of ten minutes, a command typed
/// after each step. Timers keep real time. The session runs on, the gateway keeps what is typed
/// in its spool, and once the broker is back everything arrives exactly once, an hour apart as
/// the gateway saw it, and the chains verify.
#[tokio::test]
async fn an_hour_without_the_broker_loses_no_command() {
    // The approval and the certificate outlive the simulated hour (the edge and the gateway end
    // a session when its certificate expires).
    let (mut w, port, _) =
        bastion::world_with_edge_approval(json!({"max_session_secs": 3 * 3600})).await;
    let mut b = bastion::start(&w, port).await;
    let clock_dir = tempfile::tempdir().unwrap();
    let clock_file = clock_dir.path().join("offset");
    std::fs::write(&clock_file, "+0\n").unwrap();
    let clock = bastion::clock_from_file(&clock_file);
    b.restart_gateway_with_env(&clock);
    b.restart_edge_with_env("edge-clock.log", &clock);
    assert!(
        b.edge
            .wait_log("gateway tunnel up", Duration::from_secs(30)),
        "{}",
        b.edge.log_text()
    );
    let home = tempfile::tempdir().unwrap();
    w.login_cli_with(
        home.path(),
        "alice",
        "SUP-1234",
        &w.code("alice", 0),
        &["--ttl", "3h"],
    );
    trust_edge(home.path(), &b);
    let mut shell = Shell::open("sp-fault-hour", home.path());
    shell.echo("before-1");
    let first = shell.typed[0].clone();
    session_commands(&w, &first, 2).await;

    w.stop_broker();
    for minutes in (10..=60).step_by(10) {
        std::fs::write(&clock_file, format!("+{minutes}m\n")).unwrap();
        // libfaketime reads the file again once a second (a cached offset can lag a step).
        std::thread::sleep(Duration::from_millis(2500));
        shell.echo(&format!("minute-{minutes}"));
    }
    spooled_meanwhile(&b);
    w.start_broker_again_with_env(&clock);
    shell.echo("after-1");
    shell.exit();
    assert_eq!(shell.exit_status(), Some(0), "{}", shell.term.screen());

    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;
    // The gateway's clock did move: the last command typed in the broker's absence is stamped
    // most of an hour after the first of the session (libfaketime may still have held the
    // previous step's offset).
    let events = w
        .audit(&format!("kind=command&session={session}&limit=1000"))
        .await;
    let at = |word: &str| {
        let e = events
            .iter()
            .find(|e| e.command.as_deref().unwrap_or_default().contains(word))
            .unwrap_or_else(|| panic!("no command with {word}: {events:#?}"));
        humantime::parse_rfc3339(&e.time).unwrap()
    };
    let apart = at("minute-60").duration_since(at("before-1")).unwrap();
    assert!(apart >= Duration::from_secs(50 * 60), "{apart:?}");
    verify_chains(&w.reviewer);
}

/// A world with an edge and a bastion, alice logged in for SUP-1234, and an interactive session
/// in tmux (`name`) that ran two commands.
async fn two_commands_in(name: &str) -> (World, Bastion, tempfile::TempDir, Shell) {
    let (w, b, home) = bastion::alice_at_the_edge().await;
    let mut shell = Shell::open(name, home.path());
    shell.echo("before-1");
    shell.echo("before-2");
    (w, b, home, shell)
}

/// An edge killed with -9 mid-session: the engineer's ssh ends, not successfully, with a
/// message; what was typed before is recorded once and the session has its end; the restarted
/// edge gets the gateway's tunnel back and a new session works.
#[tokio::test]
async fn a_killed_edge_ends_the_session_recorded_and_the_tunnel_comes_back() {
    let (w, mut b, home, shell) = two_commands_in("sp-fault-edge").await;
    let first = shell.typed[0].clone();

    b.edge.kill9();
    shell.term.wait_exit();
    let status = shell.exit_status();
    assert!(
        status.is_some_and(|s| s != 0),
        "{status:?}\n{}",
        shell.term.screen()
    );
    let screen = shell.term.screen();
    eprintln!("ssh's screen after the edge died (exit {status:?}):\n{screen}");
    assert!(
        screen.contains("closed") || screen.contains("Broken pipe"),
        "{screen}"
    );

    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;

    b.restart_edge("edge-2.log");
    let out = ssh(home.path(), &["node1.acme-prod", "echo after-edge-restart"]);
    assert_printed(&out, "after-edge-restart", "");
    verify_chains(&w.reviewer);
}

/// A gateway killed with -9 mid-session: the engineer's ssh ends, not successfully; what was typed before is recorded once (the gateway spools a command before the node
/// sees it); the cut session's recording is finished and its end written at the restart; a new
/// session works.
#[tokio::test]
async fn a_killed_gateway_ends_the_session_and_loses_no_command() {
    let (w, mut b, home, shell) = two_commands_in("sp-fault-gateway").await;
    let first = shell.typed[0].clone();

    b.gateway.kill9();
    shell.term.wait_exit();
    let status = shell.exit_status();
    let screen = shell.term.screen();
    eprintln!("ssh's screen after the gateway died (exit {status:?}):\n{screen}");
    assert_ne!(status, Some(0), "{screen}");
    // The edge tells the engineer why (OpenSSH's jump host prints the disconnect). (This edge
    // has no token: its `edge_disconnected` with code `tunnel_gone` is only logged.)
    assert!(
        screen.contains("gateway went away"),
        "the engineer is not told the gateway went away:\n{screen}"
    );
    assert!(
        b.edge.log_text().contains("reason=\"tunnel_gone\""),
        "{}",
        b.edge.log_text()
    );

    b.restart_gateway();
    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    // The cut session has its end too, written by the restarted gateway, once.
    let ended = recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;
    assert_eq!(*field_of(&ended, "ended_at_restart"), true, "{ended:#?}");
    let recovered = w.wait_audit("kind=recording_recovered", 1).await;
    assert!(
        recovered
            .iter()
            .any(|e| e.session.as_deref() == Some(session.as_str())),
        "{recovered:#?}"
    );
    assert_eq!(ended.engineer.as_deref(), Some("alice"), "{ended:#?}");

    let out = ssh(
        home.path(),
        &["node1.acme-prod", "echo after-gateway-restart"],
    );
    assert_printed(&out, "after-gateway-restart", "");
    verify_chains(&w.reviewer);
}

/// The tunnel between the gateway and the edge cut mid-session (its TCP connection reset, both
/// processes running on): the engineer is told the gateway went away, what was typed before is
/// recorded once and the session has one end, written by the running gateway; the gateway dials
/// the tunnel again by itself and a new session works.
#[tokio::test]
async fn a_cut_tunnel_ends_the_session_recorded_and_comes_back_by_itself() {
    let (w, b, home, shell) = two_commands_in("sp-fault-tunnel").await;
    let first = shell.typed[0].clone();
    let edge_toml = std::fs::read_to_string(b.dir.path().join("edge/edge.toml")).unwrap();
    let tunnel_port = edge_toml
        .lines()
        .find_map(|l| l.strip_prefix("tunnel_listen = \"127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse::<u16>().ok())
        .expect("tunnel_listen in edge.toml");

    // Reset the tunnel's TCP connection at both ends, as a network fault would.
    let cut = run(Command::new("ss").args([
        "-K",
        "state",
        "established",
        &format!("( dport = :{tunnel_port} or sport = :{tunnel_port} )"),
    ]));
    assert!(
        cut.status.success(),
        "{}",
        String::from_utf8_lossy(&cut.stderr)
    );
    shell.term.wait_exit();
    let status = shell.exit_status();
    let screen = shell.term.screen();
    assert_ne!(status, Some(0), "{screen}");
    assert!(
        screen.contains("gateway went away"),
        "the engineer is not told the gateway went away:\n{screen}"
    );

    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    let ended = recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;
    // Written by the gateway that kept running, not at a restart.
    assert_eq!(
        *field_of(&ended, "ended_at_restart"),
        Value::Null,
        "{ended:#?}"
    );
    assert!(
        wait_for(|| b.gateway.log_text().matches("tunnel up").count() >= 2),
        "the tunnel did not come back: {}",
        b.gateway.log_text()
    );
    let out = ssh(home.path(), &["node1.acme-prod", "echo after-tunnel-cut"]);
    assert_printed(&out, "after-tunnel-cut", "");
    verify_chains(&w.reviewer);
}

/// Poll `f` for up to 30 s.
fn wait_for(f: impl Fn() -> bool) -> bool {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A world with an edge address, acme-prod's approval of support-l2 and alice's SUP-1234, on
/// the given store and directory.
async fn world_on(store: Option<String>, directory: Dir) -> (World, u16) {
    let port = bastion::pick_edge_port();
    let extra = format!("edge_address = \"127.0.0.1:{port}\"\n");
    let w = match store {
        Some(store) => {
            World::start_on(tempfile::tempdir().unwrap(), store, directory, &extra).await
        }
        None => World::start_with(directory, &extra).await,
    };
    w.approve("acme-prod", "support-l2", &[LOGIN], json!({}))
        .await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
    (w, port)
}

/// `POST /v1/certificates` for alice on SUP-1234 with a fresh key.
async fn ask_certificate(alice: &Api) -> (StatusCode, Value) {
    let (_, key) = engineer_key();
    alice
        .post(
            "/v1/certificates",
            json!({"ticket": "SUP-1234", "public_key": key, "logins": [LOGIN]}),
        )
        .await
}

/// The store's PostgreSQL killed with -9 while a session runs: logins and certificates are
/// refused with 503 and a message saying so; the session's commands wait in the gateway's
/// spool and arrive exactly once after PostgreSQL is started again on its data; the broker
/// recovers without a restart.
#[tokio::test]
async fn a_killed_store_fails_closed_and_the_spool_delivers_once_it_is_back() {
    let pg = PrivatePg::start();
    let (w, port) = world_on(
        Some(pg.url.clone()),
        Dir::Ldap {
            group_mode: "memberof",
        },
    )
    .await;
    let b = bastion::start(&w, port).await;
    let home = bastion::alice_home(&w, &b);
    let alice = w.session("alice", -1).await;
    let broker_pid = w.broker.pid();

    let mut shell = Shell::open("sp-fault-pg", home.path());
    shell.echo("before-1");
    let first = shell.typed[0].clone();
    session_commands(&w, &first, 2).await;

    pg.kill9();
    shell.echo("during-1");
    // Fail closed: no session, no certificate, a message that says why.
    let asked = Instant::now();
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 1)).await;
    eprintln!("login with the store down: {s} after {:?}", asked.elapsed());
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let message = error_of(&v).message;
    assert!(message.contains("store"), "{v}");
    assert!(v.get("token").is_none(), "{v}");
    let (s, v) = ask_certificate(&alice).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.get("certificate").is_none(), "{v}");
    let (out, failed_home) = cli_login(&w, &w.code("alice", 1));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("store"), "{}", stderr(&out));
    no_certificate(failed_home.path());
    shell.echo("during-2");

    pg.restart();
    let restarted = Instant::now();
    shell.echo("after-1");
    shell.exit();
    let (session, cmds) = session_commands(&w, &first, shell.typed.len()).await;
    eprintln!(
        "the spooled commands at the broker {:?} after PostgreSQL restarted",
        restarted.elapsed()
    );
    recorded_once_and_ended(&w, &b, &shell, &cmds, &session).await;
    spooled_meanwhile(&b);

    // The same broker process serves again: a certificate, a login.
    assert_eq!(w.broker.pid(), broker_pid);
    let (s, v) = ask_certificate(&alice).await;
    assert_eq!(s, StatusCode::OK, "{v}\n{}", w.broker.log_text());
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    verify_chains(&w.reviewer);
}

/// slapd killed with -9: a login is refused with 503 and a message naming LDAP, and no
/// certificate is issued, not even on a session from before; once slapd is back a login works
/// without restarting the broker.
#[tokio::test]
async fn a_killed_directory_fails_closed_and_the_broker_uses_it_again_when_back() {
    let ldap = PrivateLdap::start();
    let (w, _port) = world_on(
        None,
        Dir::LdapAt {
            url: ldap.url.clone(),
            // The default config: groups read at every issuance (no `groups_cache_secs`).
            extra: "group_mode = \"memberof\"\n".into(),
        },
    )
    .await;
    let alice = w.session("alice", 0).await;
    let (s, v) = ask_certificate(&alice).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let broker_pid = w.broker.pid();

    ldap.kill9();
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 1)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(error_of(&v).message.contains("LDAP"), "{v}");
    assert!(v.get("token").is_none(), "{v}");
    let (s, v) = ask_certificate(&alice).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.get("certificate").is_none(), "{v}");
    let (out, failed_home) = cli_login(&w, &w.code("alice", 1));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("LDAP"), "{}", stderr(&out));
    no_certificate(failed_home.path());

    ldap.restart();
    assert_eq!(w.broker.pid(), broker_pid);
    let (s, v) = ask_certificate(&alice).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (out, home) = cli_login(&w, &w.code("alice", 1));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(home.path().read_dir().unwrap().count() > 0);
    let refused = w.audit("kind=login_failed&engineer=alice").await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("directory_unavailable")),
        "{refused:#?}"
    );
    verify_chains(&w.reviewer);
}
