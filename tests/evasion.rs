//! The evasion suite: a curious engineer tries, one way per test, to run a command on a node
//! without it being recorded. Each test runs a command that writes a unique marker file on the
//! node (the node is a real sshd on this machine, so the file is local), through real `ssh`,
//! `scp` and `sftp`, the edge and the gateway. What must hold: either the marker command is a
//! `command` event at the broker, or the channel was refused with a clear message — never a
//! marker on the node with no event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sallyport_api::audit::{AuditEntry, AuditEvents};
use serde_json::json;
use support::bastion::{self, Bastion};
use support::broker::*;
use support::browser::Console;
use support::ssh::Ssh;
use support::term::Term;

struct Setup {
    w: World,
    b: Bastion,
    home: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (w, b, home) = bastion::alice_through_edge("").await;
    Setup { w, b, home }
}

/// A marker path unique to this test run; removed first.
fn marker(tag: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/sp-ev-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// `ssh -F ssh_config <args>` with `stdin` as its input.
fn ssh_with_stdin(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Ssh::engineer(home)
        .args(args)
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn wait_file(p: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The `command` events at the broker whose text names `needle`, waiting for one.
async fn commands_naming(w: &World, needle: &str) -> Vec<AuditEntry> {
    let start = Instant::now();
    loop {
        let found: Vec<AuditEntry> = w
            .audit("kind=command&ticket=SUP-1234&limit=1000")
            .await
            .into_iter()
            .filter(|e| e.command.as_deref().is_some_and(|c| c.contains(needle)))
            .collect();
        if !found.is_empty() || start.elapsed() > Duration::from_secs(20) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rule of the suite: the marker ran and is a command event (returned), or it did not run
/// and the engineer was told why (`said`).
async fn recorded_or_refused(w: &World, m: &Path, said: &str) -> Option<AuditEntry> {
    let name = m.file_name().unwrap().to_str().unwrap().to_string();
    if wait_file(m) {
        let _ = std::fs::remove_file(m);
        let found = commands_naming(w, &name).await;
        assert!(
            !found.is_empty(),
            "{name} ran on the node with no command event"
        );
        Some(found[0].clone())
    } else {
        assert!(
            said.contains("sallyport:"),
            "{name} did not run, and nothing said why: {said}"
        );
        None
    }
}

/// `program` run on the node with `script` (which touches `m`) on its stdin: the marker ran, and
/// its command is one read on stdin (returned).
async fn ran_from_stdin(s: &Setup, program: &str, m: &Path, script: &str) -> AuditEntry {
    let out = ssh_with_stdin(
        s.home.path(),
        &["node1.acme-prod", program],
        script.as_bytes(),
    );
    let ev = recorded_or_refused(&s.w, m, &text(&out))
        .await
        .unwrap_or_else(|| panic!("{program}: refused: {}", text(&out)));
    assert_eq!(field_str(&ev, "via"), "stdin", "{program}: {ev:?}");
    ev
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// 1. Commands on the stdin of an exec channel.
#[tokio::test]
async fn commands_written_to_an_interpreter_on_stdin_are_command_events() {
    let s = setup().await;
    let cases: &[(&str, &str, String)] = &[
        ("bash-s", "bash -s", String::new()),
        ("sh", "sh", String::new()),
        (
            "sudo-env-sh",
            "env -i PATH=/usr/bin:/bin sh -s",
            String::new(),
        ),
        ("python3", "python3 -", String::new()),
        // Code in the command line that runs what it reads.
        ("perl-ne", "perl -ne 'system $_'", String::new()),
        ("awk-system", "awk '{system($0)}'", String::new()),
        // A script written to disk, then run.
        (
            "cat-then-sh",
            "cat > /tmp/sp-ev-script-$$; sh /tmp/sp-ev-script-$$; rm -f /tmp/sp-ev-script-$$",
            String::new(),
        ),
    ];
    for (tag, program, _) in cases {
        let m = marker(tag);
        let script = if program.starts_with("python3") {
            format!("import os\nos.system('touch {}')\n", m.display())
        } else {
            format!("echo harmless\ntouch {}\n", m.display())
        };
        ran_from_stdin(&s, program, &m, &script).await;
    }
}

// 2. A shell without a pty.
#[tokio::test]
async fn a_shell_without_a_pty_records_every_line_it_reads() {
    let s = setup().await;
    let m = marker("nopty");
    let script = format!("echo one\ntouch {}\nexit 0\n", m.display());
    let out = ssh_with_stdin(s.home.path(), &["-T", "node1.acme-prod"], script.as_bytes());
    let ev = recorded_or_refused(&s.w, &m, &text(&out)).await.unwrap();
    assert_eq!(field_str(&ev, "via"), "stdin", "{ev:?}");
    // Its stdin and output are in its recording.
    let session = ev.session.as_deref().unwrap();
    let done =
        s.w.wait_audit(&format!("kind=output_recorded&session={session}"), 1)
            .await;
    assert_eq!(done.len(), 1);
    assert_eq!(*field_of(&done[0], "input_bytes"), script.len());
    let id = field_str(&done[0], "recording").to_string();
    let cast = s.w.fetch_recording(&id).await;
    assert!(cast.contains(&format!("touch {}", m.display())), "{cast}");
    assert!(cast.contains("one"), "{cast}");
}

const PROMPT: &str = ":~$";

/// A shell at a real terminal (`width`x`height`): `steps` typed once the prompt shows, then
/// `exit`; the screen at the end.
fn at_prompt(s: &Setup, name: &str, width: u16, height: u16, steps: impl FnOnce(&Term)) -> String {
    let t = Term::ssh(name, s.home.path(), width, height, "");
    t.wait(PROMPT, 1);
    steps(&t);
    t.send(&["exit", "Enter"]);
    t.wait_exit();
    t.screen()
}

// 3. `stty -echo` at the shell prompt.
#[tokio::test]
async fn a_command_typed_after_stty_echo_off_is_recorded() {
    let s = setup().await;
    let m = marker("stty");
    let screen = at_prompt(&s, "ev-stty", 120, 30, |t| {
        t.send(&["stty -echo", "Enter"]);
        t.wait(PROMPT, 2);
        t.send(&[&format!("touch {}", m.display()), "Enter"]);
        t.wait(PROMPT, 3);
        t.send(&["stty echo", "Enter"]);
        t.wait(PROMPT, 4);
    });
    recorded_or_refused(&s.w, &m, &screen).await.unwrap();
}

// 4. The alternate screen, switched on by output at a shell prompt.
#[tokio::test]
async fn commands_at_a_prompt_on_the_alternate_screen_are_recorded() {
    let s = setup().await;
    let m = marker("altscreen");
    let screen = at_prompt(&s, "ev-alt", 120, 30, |t| {
        t.send(&["printf '\\033[?1049h'", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        t.send(&[&format!("touch {}", m.display()), "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
    });
    recorded_or_refused(&s.w, &m, &screen).await.unwrap();
}

// 5a. `ssh -tt` from a script: a 0x0 window, then a long output line.
#[tokio::test]
async fn a_zero_sized_terminal_and_long_output_do_not_stop_recording() {
    let s = setup().await;
    let m = marker("zerowin");
    let script = format!(
        "printf 'x%.0s' $(seq 1 600); echo\ntouch {}\nexit\n",
        m.display()
    );
    let out = ssh_with_stdin(
        s.home.path(),
        &["-tt", "node1.acme-prod"],
        script.as_bytes(),
    );
    // The screen model follows any size: the command is recorded, not refused.
    recorded_or_refused(&s.w, &m, &text(&out))
        .await
        .expect("recorded");
    // The gateway is still recording afterwards.
    let m2 = marker("zerowin-after");
    let out = ssh_with_stdin(
        s.home.path(),
        &["node1.acme-prod", &format!("touch {}", m2.display())],
        b"",
    );
    recorded_or_refused(&s.w, &m2, &text(&out)).await.unwrap();
}

// 5b. A terminal resized to one row, then a long output line.
#[tokio::test]
async fn a_terminal_one_row_high_does_not_stop_recording() {
    let s = setup().await;
    let m = marker("onerow");
    let screen = at_prompt(&s, "ev-onerow", 80, 24, |t| {
        t.send(&["stty rows 1", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        t.resize(80, 1);
        std::thread::sleep(Duration::from_millis(300));
        t.send(&["printf 'y%.0s' $(seq 1 500); echo", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        t.send(&[&format!("touch {}", m.display()), "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        t.resize(80, 24);
    });
    recorded_or_refused(&s.w, &m, &screen)
        .await
        .expect("recorded");
}

// 6. A pasted line longer than the screen.
#[tokio::test]
async fn a_pasted_line_longer_than_the_screen_is_a_command() {
    let s = setup().await;
    let m = marker("longpaste");
    let screen = at_prompt(&s, "ev-paste", 80, 10, |t| {
        let line = format!("echo {} ; touch {}", "z".repeat(1500), m.display());
        t.paste(&line);
        std::thread::sleep(Duration::from_millis(500));
        t.send(&["Enter"]);
        std::thread::sleep(Duration::from_millis(500));
    });
    recorded_or_refused(&s.w, &m, &screen).await.unwrap();
}

// 9. A command continued over several lines is one command.
#[tokio::test]
async fn a_continued_line_is_one_command() {
    let s = setup().await;
    let m = marker("continued");
    let screen = at_prompt(&s, "ev-cont", 120, 30, |t| {
        t.send(&["echo eps\\", "Enter"]);
        // capture-pane drops trailing blanks: bash's PS2 reads `>`.
        t.wait(">", 1);
        t.send(&[&format!("ilon-5 > {}", m.display()), "Enter"]);
        t.wait(PROMPT, 2);
    });
    let ev = recorded_or_refused(&s.w, &m, &screen).await.unwrap();
    assert_eq!(
        ev.command,
        Some(format!("echo epsilon-5 > {}", m.display())),
        "one command, as bash ran it: {ev:?}"
    );
}

// 8. Environment variables.
#[tokio::test]
async fn environment_requests_are_audited_and_only_the_allowlist_passes() {
    let s = setup().await;
    let out = ssh_with_stdin(
        s.home.path(),
        &[
            "-o",
            "SetEnv=LANG=C.UTF-8 BASH_FUNC_ls%%=x PROMPT_COMMAND=id EDITOR_THEME=dark",
            "node1.acme-prod",
            "echo envs",
        ],
        b"",
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("envs"),
        "{}",
        text(&out)
    );
    let passed = s.w.wait_audit("kind=env&ticket=SUP-1234", 1).await;
    assert_eq!(
        passed.len(),
        1,
        "{:#?}\n{}",
        s.w.audit("ticket=SUP-1234&limit=1000").await,
        s.b.gateway.log_text()
    );
    assert_eq!(field_str(&passed[0], "env_name"), "LANG");
    assert_eq!(field_str(&passed[0], "value"), "C.UTF-8");
    let refused =
        s.w.wait_audit("kind=channel_refused&ticket=SUP-1234", 3)
            .await;
    let mut names: Vec<&str> = refused
        .iter()
        .filter(|e| opt_str(e, "request") == Some("env"))
        .map(|e| field_str(e, "env_name"))
        .collect();
    names.sort();
    assert_eq!(names, ["BASH_FUNC_ls%%", "EDITOR_THEME", "PROMPT_COMMAND"]);
    let codes: Vec<&str> = refused.iter().map(|e| field_str(e, "code")).collect();
    assert!(codes.contains(&"environment_not_allowed"), "{codes:?}");
    assert!(codes.contains(&"environment_not_allowlisted"), "{codes:?}");
}

// 11. Files at rest on the gateway.
#[tokio::test]
async fn gateway_files_are_private_and_delivered_recordings_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let s = setup().await;
    let out = ssh_with_stdin(s.home.path(), &["node1.acme-prod", "echo rest"], b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rest"),
        "{}",
        text(&out)
    );
    s.w.wait_audit("kind=recording_finished&ticket=SUP-1234", 1)
        .await;
    let data = s.b.dir.path().join("gateway/data");
    // Delivered recordings are deleted from the gateway.
    let start = Instant::now();
    loop {
        let left: Vec<_> = std::fs::read_dir(data.join("recordings"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "still there: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    fn walk(p: &Path, found: &mut Vec<(PathBuf, u32, bool)>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            found.push((e.path(), meta.permissions().mode() & 0o777, meta.is_dir()));
            if meta.is_dir() {
                walk(&e.path(), found);
            }
        }
    }
    let mut found = vec![];
    walk(&data, &mut found);
    assert!(found.len() > 5, "{found:?}");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for (path, mode, dir) in found {
        let want = if dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    // A gateway refuses to start on a data_dir others can reach.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(BIN)
        .args(["gateway", "--config"])
        .arg(&s.b.gateway_config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mode 0755") && err.contains("chmod 700"),
        "{err}"
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
}

// 10. A node flooding terminal-mode switches cannot wedge or drown the audit log.
#[tokio::test]
async fn a_flood_of_mode_switches_leaves_shipping_working() {
    let s = setup().await;
    let flood = "for i in $(seq 1 10000); do printf '\\033[?1049h\\033[?1049l'; done; echo flooded";
    let out = ssh_with_stdin(s.home.path(), &["-tt", "node1.acme-prod", flood], b"");
    let said = text(&out);
    assert!(
        said.contains("flooded"),
        "{}",
        &said[said.len().saturating_sub(400)..]
    );
    // Another session's command reaches the broker within seconds.
    let m = marker("afterflood");
    let out = ssh_with_stdin(
        s.home.path(),
        &["node1.acme-prod", &format!("touch {}", m.display())],
        b"",
    );
    recorded_or_refused(&s.w, &m, &text(&out)).await.unwrap();
    // The switches were counted, not written one by one.
    let switches =
        s.w.audit("kind=full_screen&ticket=SUP-1234&limit=10000")
            .await;
    assert!(
        switches.len() <= 100,
        "{} full_screen events",
        switches.len()
    );
}

// 7. Files moved by an sftp server run as a command, and by scp wrapped in another command.
#[tokio::test]
async fn an_sftp_server_run_by_exec_is_parsed_and_policed_like_sftp() {
    let s = setup().await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("up.bin");
    std::fs::write(
        &src,
        b"the file that left the engineer's laptop\n".repeat(3000),
    )
    .unwrap();
    let want = sha256(&std::fs::read(&src).unwrap());
    let remote = format!("/tmp/sp-ev-sftp-s-{}", std::process::id());
    let back = work.path().join("back.bin");
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {remote}\nget {remote} {}\nrm {remote}\n",
            src.display(),
            back.display()
        ),
    )
    .unwrap();
    let sftp = || {
        Command::new("sftp")
            .arg("-F")
            .arg(s.home.path().join("ssh_config"))
            .args([
                "-o",
                "BatchMode=yes",
                "-s",
                "/usr/lib/openssh/sftp-server",
                "-b",
            ])
            .arg(&batch)
            .arg("node1.acme-prod")
            .output()
            .unwrap()
    };
    let out = sftp();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sha256(&std::fs::read(&back).unwrap()), want);
    let started = s.w.wait_audit("kind=sftp_started&ticket=SUP-1234", 1).await;
    assert_eq!(field_str(&started[0], "via"), "exec", "{started:?}");
    // The write's and the read's file_op events, in whatever order they reach the broker.
    let has = |ops: &[AuditEntry], field: &str| {
        ops.iter().any(|e| {
            let op = field_of(e, "op");
            op["path"] == remote.as_str() && op[field] == want.as_str()
        })
    };
    let began = Instant::now();
    let ops = loop {
        let ops = s.w.wait_audit("kind=file_op&ticket=SUP-1234", 3).await;
        if (has(&ops, "sha256_written") && has(&ops, "sha256_read"))
            || began.elapsed() > Duration::from_secs(20)
        {
            break ops;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(has(&ops, "sha256_written"), "{ops:#?}");
    assert!(has(&ops, "sha256_read"), "{ops:#?}");
    // The customer's no-file-transfer policy sees it as sftp, and scp wrapped in sudo as scp.
    let (st, v) = s
        .w
        .acme
        .put(
            "/v1/customers/acme/policies/no-file-transfer",
            serde_json::json!({"body": include_str!("../policies/examples/no-file-transfer.cedar")}),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let start = Instant::now();
    loop {
        let out = sftp();
        if !out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sftp -s still works"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let refused =
        s.w.wait_audit("kind=channel_refused&ticket=SUP-1234", 1)
            .await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("customer:acme_no_sftp")),
        "{refused:#?}"
    );
    let out = ssh_with_stdin(
        s.home.path(),
        &["node1.acme-prod", "sudo -n scp -t /tmp/x"],
        b"",
    );
    assert!(text(&out).contains("no scp"), "{}", text(&out));
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

// 10b. A broker outage: thousands of records queue at the gateway and all of them arrive.
#[tokio::test]
async fn five_thousand_records_queued_in_a_broker_outage_all_arrive() {
    let mut s = setup().await;
    // A first session, so that the gateway knows the node before the broker goes away.
    let out = ssh_with_stdin(s.home.path(), &["node1.acme-prod", "true"], b"");
    assert!(out.status.success(), "{}", text(&out));
    s.w.stop_broker();
    // 5,000 lines read by a shell on stdin: 5,000 command events, spooled while the broker is
    // down.
    let m = marker("outage");
    let mut script = String::from(":\n").repeat(4999);
    script.push_str(&format!("touch {}\n", m.display()));
    let out = ssh_with_stdin(
        s.home.path(),
        &["node1.acme-prod", "bash -s"],
        script.as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(m.exists());
    std::thread::sleep(Duration::from_secs(2));
    s.w.start_broker_again();
    let start = Instant::now();
    let total = loop {
        let (st, v) =
            s.w.reviewer
                .get("/v1/audit/events?kind=command&ticket=SUP-1234&limit=10000")
                .await;
        // Lines, not the partial ones a chunk ending inside a line reports ahead of them.
        let n = if st.is_success() {
            let page = read_as::<AuditEvents>("an audit page", v);
            page.events.iter().filter(|e| !is_partial(e)).count()
        } else {
            0
        };
        if n >= 5002 || start.elapsed() > Duration::from_secs(60) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The first session's command, the exec itself, and every line it read.
    assert_eq!(total, 5002);
    let _ = std::fs::remove_file(&m);
    // Shipping caught up: every chain intact and complete.
    let out = s.w.reviewer.cli(&["audit", "verify"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("INCOMPLETE"), "{said}");
}

// 3b. A secret typed at a prompt that asks for one stays out of the log and the recording.
#[tokio::test]
async fn a_secret_typed_at_a_password_prompt_is_kept_out_and_the_next_command_is_in() {
    let s = setup().await;
    let secret = format!("hunter2-{}", std::process::id());
    let m = marker("aftersecret");
    let screen = at_prompt(&s, "ev-secret", 120, 30, |t| {
        t.send(&["read -s -p 'Password: ' pw; echo", "Enter"]);
        t.wait("Password:", 1);
        t.send(&[&secret, "Enter"]);
        t.wait(PROMPT, 2);
        t.send(&[&format!("touch {}", m.display()), "Enter"]);
        t.wait(PROMPT, 3);
    });
    let ev = recorded_or_refused(&s.w, &m, &screen).await.unwrap();
    let session = ev.session.as_deref().unwrap().to_string();
    let hidden =
        s.w.wait_audit(&format!("kind=input_hidden&session={session}"), 1)
            .await;
    assert_eq!(hidden.len(), 1, "{hidden:#?}");
    // Nowhere in the audit log, nowhere in the recording.
    let all = s.w.audit(&format!("session={session}&limit=1000")).await;
    assert!(!serde_json::to_string(&all).unwrap().contains(&secret));
    let fin =
        s.w.wait_audit(&format!("kind=recording_finished&session={session}"), 1)
            .await;
    let cast = s.w.fetch_recording(field_str(&fin[0], "recording")).await;
    assert!(!cast.contains(&secret), "the secret is in the recording");
    assert!(cast.contains("touch"), "{cast}");
}

// 4a. A shell whose own prompt was made to read like a password prompt, echo then off: once a
// command of the session changed the prompt or the echo, no prompt is trusted to ask for a
// secret, and what is typed there is a command.
#[tokio::test]
async fn a_command_typed_at_a_forged_password_prompt_is_a_command() {
    let s = setup().await;
    let m = marker("forgedprompt");
    let screen = at_prompt(&s, "ev-forged", 120, 30, |t| {
        // The screen shows "Password:" once in the command, then once per prompt drawn.
        t.send(&["PS1='Password: '", "Enter"]);
        t.wait("Password:", 2);
        t.send(&["stty -echo", "Enter"]);
        t.wait("Password:", 3);
        t.send(&[&format!("touch {}", m.display()), "Enter"]);
        t.wait("Password:", 4);
        t.send(&["stty echo", "Enter"]);
        t.wait("Password:", 5);
    });
    let ev = recorded_or_refused(&s.w, &m, &screen).await.unwrap();
    assert_eq!(ev.kind, "command");
}

// 4a'. A loop that runs what is typed at a real password prompt (`read -s`): the gateway cannot
// tell it from a password, so it seals each such line to the broker's key instead of dropping
// it; a reviewer opens it with a reason (audited); nobody else can.
#[tokio::test]
async fn a_command_typed_at_a_password_prompt_that_runs_it_is_sealed_and_a_reviewer_opens_it() {
    let s = setup().await;
    let m = marker("sealedprompt");
    let typed = format!("touch {}", m.display());
    let screen = at_prompt(&s, "ev-sealed", 120, 30, |t| {
        t.send(&[
            "while IFS= read -rs -p 'Password: ' l; do echo; eval \"$l\"; done",
            "Enter",
        ]);
        t.wait("Password:", 2);
        t.send(&[&typed, "Enter"]);
        t.wait("Password:", 3);
        t.send(&["C-d"]);
        t.wait(PROMPT, 2);
    });
    assert!(wait_file(&m), "the command ran: {screen}");
    // The session's end is in: everything before it is too.
    let ended = s.w.wait_audit("kind=session_ended", 1).await;
    let session = ended[0].session.clone().unwrap();
    assert!(commands_naming(&s.w, "sealedprompt").await.is_empty());
    let hidden =
        s.w.audit(&format!("kind=input_hidden&session={session}"))
            .await;
    let sealed: Vec<&AuditEntry> = hidden
        .iter()
        .filter(|e| opt_str(e, "sealed").is_some())
        .collect();
    assert_eq!(sealed.len(), 1, "{hidden:#?}");
    let h = sealed[0];
    // In clear nowhere: not in the audit log, not in the recording.
    let all = s.w.audit(&format!("session={session}&limit=1000")).await;
    assert!(
        !serde_json::to_string(&all)
            .unwrap()
            .contains("forgedprompt")
    );
    let fin =
        s.w.wait_audit(&format!("kind=recording_finished&session={session}"), 1)
            .await;
    let cast = s.w.fetch_recording(field_str(&fin[0], "recording")).await;
    assert!(!cast.contains("sealedprompt"), "{cast}");

    let body = |reason: &str| json!({"source": h.source, "seq": h.seq, "reason": reason});
    // Nobody but a reviewer, and not without a reason; none of these leave an opening event.
    for (who, api) in [("operator", &s.w.op), ("approver", &s.w.acme)] {
        let (status, _) = api.post("/v1/audit/unseal", body("curious")).await;
        assert_eq!(status, 403, "{who}");
    }
    let (status, _) = s.w.reviewer.post("/v1/audit/unseal", body("  ")).await;
    assert_eq!(status, 400);
    let (status, _) =
        s.w.reviewer
            .post(
                "/v1/audit/unseal",
                json!({"source": h.source, "seq": h.seq - 1, "reason": "x"}),
            )
            .await;
    assert!(status == 422 || status == 404, "{status}");
    assert!(s.w.audit("kind=hidden_input_opened").await.is_empty());

    // The reviewer's CLI opens it; the act is in the broker's chain first.
    let out = Command::new(BIN)
        .args(["audit", "unseal", "--json", "--source", &h.source])
        .args([
            "--seq",
            &h.seq.to_string(),
            "--reason",
            "SUP-EV: what ran at the prompt",
        ])
        .env("SALLYPORT_BROKER", &s.w.broker.url)
        .env("SALLYPORT_TOKEN", s.w.reviewer.token.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let opened: sallyport_api::audit::Unsealed = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(opened.text, typed);
    assert_eq!(opened.session, session);
    let audited = s.w.wait_audit("kind=hidden_input_opened", 1).await;
    assert_eq!(audited[0].session.as_deref(), Some(session.as_str()));
    assert_eq!(
        field_str(&audited[0], "reason"),
        "SUP-EV: what ran at the prompt"
    );
    assert_eq!(
        field_str(&audited[0], "event"),
        format!("{}#{}", h.source, h.seq)
    );

    // In the console: the session page offers a reviewer the form (a reason required), not an
    // approver; the form opens it, and that opening is audited too.
    let totp = |secret: &str| {
        sallyport_broker::totp::code(secret, sallyport_ca::clock::now_secs()).unwrap()
    };
    let boss = s.w.account("ev-boss", "approver", Some("acme")).await;
    let sec = s.w.account("ev-sec", "reviewer", None).await;
    let mut approver = Console::new(&s.w.broker.url);
    approver
        .login("ev-boss", "ev-boss-password-1", &totp(&boss))
        .await;
    let page = approver.get(&format!("/console/sessions/{session}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("Open sealed input"), "{}", page.body);
    let mut reviewer = Console::new(&s.w.broker.url);
    reviewer
        .login("ev-sec", "ev-sec-password-1", &totp(&sec))
        .await;
    let page = reviewer.get(&format!("/console/sessions/{session}")).await;
    assert!(page.body.contains("Open sealed input"), "{}", page.body);
    assert!(!page.body.contains("sealedprompt"), "{}", page.body);
    let opened = reviewer
        .post(
            &format!("/console/sessions/{session}/unseal"),
            &[
                ("csrf", &reviewer.csrf().await),
                ("source", &h.source),
                ("seq", &h.seq.to_string()),
                ("reason", "SUP-EV: second look"),
            ],
            &[],
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(opened.body.contains(&typed), "{}", opened.body);
    let audited = s.w.wait_audit("kind=hidden_input_opened", 2).await;
    assert!(
        audited
            .iter()
            .any(|e| field_str(e, "reason") == "SUP-EV: second look")
    );
    // The approver's own post is refused and opens nothing.
    let refused = approver
        .post(
            &format!("/console/sessions/{session}/unseal"),
            &[
                ("csrf", &approver.csrf().await),
                ("source", &h.source),
                ("seq", &h.seq.to_string()),
                ("reason", "curious"),
            ],
            &[],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(!refused.body.contains(&typed));
}

// 4a''. A file put where something runs it later (a shell script, a start-up file): what runs
// from it has no command event, so what was written there is kept in the `file_op` event
// (`kept_content`), also when it is written elsewhere and renamed there, and search finds it.
#[tokio::test]
async fn what_is_written_by_sftp_to_a_file_that_runs_later_is_kept_and_found() {
    let s = setup().await;
    let m = marker("plantedscript");
    let tag = m.file_name().unwrap().to_str().unwrap().to_string();
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("payload");
    std::fs::write(&local, format!("touch {}\n", m.display())).unwrap();
    let remote = format!("/tmp/{tag}");
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {remote}.sh\nput {} {remote}.txt\nrename {remote}.txt {remote}-2.sh\n",
            local.display(),
            local.display()
        ),
    )
    .unwrap();
    let out = Command::new("sftp")
        .arg("-F")
        .arg(s.home.path().join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-b"])
        .arg(&batch)
        .arg("node1.acme-prod")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = Vec::new();
    while found.len() < 2 && Instant::now() < deadline {
        found =
            s.w.audit("kind=file_op&limit=1000")
                .await
                .into_iter()
                .filter(|e| field_of(e, "op")["op"] == "kept_content")
                .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let paths: Vec<String> = found
        .iter()
        .map(|e| field_of(e, "op")["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [format!("{remote}.sh"), format!("{remote}-2.sh")],
        "{found:#?}"
    );
    for e in &found {
        assert_eq!(
            field_of(e, "op")["content"],
            format!("touch {}\n", m.display())
        );
    }
    // The reviewer's search for what ran finds where it came from.
    let hits = s.w.audit(&format!("q={tag}")).await;
    assert!(
        hits.iter()
            .any(|e| e.kind == "file_op" && field_of(e, "op")["op"] == "kept_content"),
        "{hits:#?}"
    );
    let _ = std::fs::remove_file(format!("{remote}.sh"));
    let _ = std::fs::remove_file(format!("{remote}-2.sh"));
}

// 4b. A forged bracketed paste: the node turns the mode on, the shell (dash) does not honour it.
#[tokio::test]
async fn lines_inside_a_forged_bracketed_paste_are_commands() {
    let s = setup().await;
    let m = marker("forgedpaste");
    let screen = at_prompt(&s, "ev-forged", 120, 30, |t| {
        t.send(&["exec dash", "Enter"]);
        std::thread::sleep(Duration::from_millis(500));
        t.send(&["printf '\\033[?2004h'", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        // The paste start, a line break inside it, the command; no paste end.
        t.type_text(&format!("\u{1b}[200~\rtouch {}\r", m.display()));
        std::thread::sleep(Duration::from_millis(500));
    });
    recorded_or_refused(&s.w, &m, &screen).await.unwrap();
}

/// Whether a process whose command line holds `needle` runs on this machine (the node).
fn running(needle: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", needle])
        .output()
        .unwrap()
        .status
        .success()
}

// A program left running on the node by an engineer who drops the connection (the client
// killed, the network gone): OpenSSH's sshd lets a program without a pty run on, and one that
// ignores SIGHUP outlives its pty. Through sallyport, the session's end ends it on the node, and
// its channel's recording is finished and delivered.
#[tokio::test]
async fn a_program_left_running_when_the_engineer_drops_the_connection_is_ended_on_the_node() {
    let s = setup().await;
    let mut seen: Vec<String> = Vec::new();
    for (tag, pty) in [("nopty", false), ("pty-nohup", true)] {
        let m = marker(&format!("left-{tag}"));
        let sleeper = format!("sleep 58.{}{}", std::process::id(), u8::from(pty));
        let mut cmd = Ssh::engineer(s.home.path()).command();
        if pty {
            cmd.arg("-tt");
        }
        let mut ssh = cmd
            .arg("node1.acme-prod")
            .arg(format!("trap '' HUP; touch {}; {sleeper}", m.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_file(&m), "{tag}: {}", s.b.gateway.log_text());
        let _ = std::fs::remove_file(&m);
        let started =
            s.w.wait_audit(
                "kind=session_started&ticket=SUP-1234&limit=100",
                seen.len() + 1,
            )
            .await;
        let session = started
            .iter()
            .filter_map(|e| e.session.as_deref())
            .find(|id| !seen.iter().any(|s| s == id))
            .unwrap()
            .to_string();
        seen.push(session.clone());
        assert!(running(&sleeper), "{tag}: the program is not running");
        ssh.kill().unwrap();
        ssh.wait().unwrap();
        let start = Instant::now();
        while running(&sleeper) {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{tag}: still running on the node after the engineer left:\n{}",
                s.b.gateway.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let fin =
            s.w.wait_audit(&format!("kind=recording_finished&session={session}"), 1)
                .await;
        let recording = field_str(&fin[0], "recording");
        s.w.wait_audit(&format!("kind=recording_stored&session={recording}"), 1)
            .await;
        let ended =
            s.w.wait_audit(&format!("kind=session_ended&session={session}"), 1)
                .await;
        assert_eq!(ended.len(), 1);
    }
}

// Programs the gateway does not know run what they read: their stdin lines are commands.
#[tokio::test]
async fn unknown_wrappers_names_and_assignments_have_their_stdin_recorded() {
    let s = setup().await;
    let cases: &[(&str, &str)] = &[
        ("setarch", "setarch x86_64 bash"),
        ("prlimit", "prlimit bash"),
        ("function", "f() { bash; }; f"),
        ("glob", "/bin/bas? -s"),
        ("brace", "{bash,-s}"),
        ("find-exec", "find /tmp -maxdepth 0 -exec bash \\;"),
    ];
    for (tag, program) in cases {
        let m = marker(tag);
        let script = format!("touch {}\n", m.display());
        ran_from_stdin(&s, program, &m, &script).await;
    }
}

// A line longer than the 64 KiB a command event holds: in pieces, every byte in the log.
#[tokio::test]
async fn a_line_longer_than_an_event_comes_in_pieces_and_none_is_lost() {
    let s = setup().await;
    let m = marker("long-line");
    let line = format!(": {}; touch {}\n", "x".repeat(300_000), m.display());
    let ev = ran_from_stdin(&s, "bash -s", &m, &line).await;
    let session = ev.session.clone().unwrap();
    let pieces: Vec<AuditEntry> =
        s.w.audit(&format!("kind=command&session={session}&limit=100"))
            .await
            .into_iter()
            .filter(|e| opt_str(e, "via") == Some("stdin") && !is_partial(e))
            .collect();
    // The pieces, in order, are the line.
    let mut parts: Vec<(u64, String)> = pieces
        .iter()
        .map(|e| {
            (
                field_of(e, "part").as_u64().unwrap(),
                e.command.clone().unwrap(),
            )
        })
        .collect();
    parts.sort();
    assert!(parts.len() >= 5, "{}", parts.len());
    let whole: String = parts.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(whole, line.trim_end());
    let last = pieces
        .iter()
        .find(|e| *field_of(e, "continued") == false)
        .unwrap();
    assert_eq!(*field_of(last, "line_bytes"), line.len() - 1);
}

// An SFTP server the gateway cannot see as one (under a wrapper it does not know) is neither
// parsed nor policed: the channel ends before the first SFTP packet reaches it.
#[tokio::test]
async fn an_sftp_server_under_an_unknown_wrapper_is_ended_before_it_serves() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("up.txt");
    std::fs::write(&local, "payload").unwrap();
    let remote = marker("sftp-wrapped");
    let batch = dir.path().join("batch");
    std::fs::write(
        &batch,
        format!("put {} {}\n", local.display(), remote.display()),
    )
    .unwrap();
    let out = Command::new("sftp")
        .arg("-F")
        .arg(s.home.path().join("ssh_config"))
        .arg("-b")
        .arg(&batch)
        .arg("-s")
        .arg("setarch x86_64 /usr/lib/openssh/sftp-server")
        .arg("node1.acme-prod")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        !remote.exists(),
        "the file was written through an unrecorded SFTP session"
    );
    let failed =
        s.w.wait_audit("kind=recording_failed&ticket=SUP-1234", 1)
            .await;
    assert!(
        failed
            .iter()
            .any(|e| opt_str(e, "reason").is_some_and(|r| r.contains("SFTP"))),
        "{failed:?}"
    );
}

/// Poll (every 100 ms, at most 30 s) until `done` holds; whether it did.
async fn eventually(done: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// An ssh client that does not outlive its test, even a failed one.
struct Client(std::process::Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Send `signal` (`TERM`, `KILL`) to a local process and reap it.
fn kill_with(child: &mut std::process::Child, signal: &str) {
    let st = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} {}", child.id());
    child.wait().unwrap();
}

/// What runs on the node and must not outlive its client: the command, and the pattern
/// (`pgrep -f`, anchored: the ssh client's own command line holds the command too) of the
/// process that shows it runs. A pipeline `tail -f FILE | bash` also runs a line appended to
/// FILE (the proof that it is live), which it would go on doing for anyone who can write FILE,
/// with the line recorded only as what appended it.
struct LeftRunning {
    command: String,
    pattern: String,
    queue: Option<PathBuf>,
    /// Typed as a background job (`&`) into an interactive shell at a pty instead: a process
    /// group of its own, which the signals sshd sends to the shell's group do not reach.
    job: bool,
}

impl LeftRunning {
    fn sleep(n: &str) -> LeftRunning {
        LeftRunning {
            command: format!("sleep {n}"),
            pattern: format!("^sleep {n}$"),
            queue: None,
            job: false,
        }
    }

    fn job(n: &str) -> LeftRunning {
        LeftRunning {
            job: true,
            ..LeftRunning::sleep(n)
        }
    }

    /// Run it through `ssh <args> node1.acme-prod` (with `-tt` for a pty), its client's stdin
    /// kept open.
    fn spawn(&self, s: &Setup, args: &[&str], pty: bool) -> Client {
        let mut cmd = Ssh::engineer(s.home.path()).args(args).command();
        if pty || self.job {
            cmd.arg("-tt");
        }
        cmd.arg("node1.acme-prod");
        if !self.job {
            cmd.arg(&self.command);
        }
        let mut client = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Client)
            .unwrap();
        if self.job {
            let stdin = client.0.stdin.as_mut().unwrap();
            writeln!(stdin, "{} &", self.command).unwrap();
        }
        client
    }

    fn pipeline(tag: &str) -> LeftRunning {
        let queue = marker(&format!("queue-{tag}"));
        std::fs::write(&queue, "").unwrap();
        LeftRunning {
            command: format!("sh -c 'tail -f {} | bash'", queue.display()),
            pattern: format!("^tail -f {}$", queue.display()),
            queue: Some(queue),
            job: false,
        }
    }

    /// Wait until it runs on the node (and, for a pipeline, runs what is appended).
    async fn started(&self, what: &str, s: &Setup) {
        assert!(
            eventually(|| running(&self.pattern)).await,
            "{what}: never ran:\n{}",
            s.b.gateway.log_text()
        );
        if let Some(queue) = &self.queue {
            let m = marker(&format!("{what}-live"));
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(queue)
                .unwrap();
            writeln!(f, "touch {}", m.display()).unwrap();
            assert!(wait_file(&m), "{what}: the pipeline does not run its lines");
            let _ = std::fs::remove_file(&m);
        }
    }

    /// Wait until nothing of it runs on the node any more.
    async fn ended(&self, what: &str, s: &Setup) {
        assert!(
            eventually(|| !running(&self.pattern)).await,
            "{what}: `{}` still runs on the node after its client went:\n{}",
            self.command,
            s.b.gateway.log_text()
        );
        if let Some(queue) = &self.queue {
            let _ = std::fs::remove_file(queue);
        }
    }
}

// An exec without a pty whose ssh client is killed (TERM or KILL): sshd lets such a program
// run on when its channel closes. Through sallyport it is ended on the node, and so is a
// pipeline that would run later lines appended to a file; with a pty too (regression).
#[tokio::test]
async fn a_program_whose_client_is_killed_is_ended_on_the_node_with_or_without_a_pty() {
    let s = setup().await;
    let pid = std::process::id();
    let cases = [
        (
            "sleep-term",
            false,
            "TERM",
            LeftRunning::sleep(&format!("781{pid}")),
        ),
        (
            "sleep-kill",
            false,
            "KILL",
            LeftRunning::sleep(&format!("782{pid}")),
        ),
        ("pipe-term", false, "TERM", LeftRunning::pipeline("term")),
        ("pipe-kill", false, "KILL", LeftRunning::pipeline("kill")),
        (
            "pty-term",
            true,
            "TERM",
            LeftRunning::sleep(&format!("783{pid}")),
        ),
        ("pty-pipe-kill", true, "KILL", LeftRunning::pipeline("pty")),
        // The interactive shell is hung up first, and hangs up its jobs as when its terminal
        // goes away.
        (
            "pty-job",
            true,
            "TERM",
            LeftRunning::job(&format!("785{pid}")),
        ),
    ];
    for (what, pty, signal, program) in cases {
        let mut ssh = program.spawn(&s, &[], pty);
        program.started(what, &s).await;
        kill_with(&mut ssh.0, signal);
        program.ended(what, &s).await;
    }
}

// A channel closed by its client while the session goes on (a client multiplexed over a
// ControlMaster connection, killed: the master closes its channel and keeps the connection):
// its program is ended on the node, and the session still serves the next channel.
#[tokio::test]
async fn a_program_whose_channel_closes_in_a_live_session_is_ended_on_the_node() {
    let s = setup().await;
    let socket = PathBuf::from(format!("/tmp/sp-ev-mux-{}", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let control = format!("ControlPath={}", socket.display());
    let mut master = Ssh::engineer(s.home.path())
        .args([
            "-o",
            "ControlMaster=yes",
            "-o",
            &control,
            "-N",
            "node1.acme-prod",
        ])
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Client)
        .unwrap();
    assert!(eventually(|| socket.exists()).await, "no control socket");
    let pid = std::process::id();
    let cases = [
        ("mux-sleep", LeftRunning::sleep(&format!("784{pid}"))),
        ("mux-pipe", LeftRunning::pipeline("mux")),
        ("mux-job", LeftRunning::job(&format!("786{pid}"))),
    ];
    for (what, program) in cases {
        let mut client = program.spawn(&s, &["-o", "ControlMaster=no", "-o", &control], false);
        program.started(what, &s).await;
        kill_with(&mut client.0, "KILL");
        program.ended(what, &s).await;
        assert!(
            master.0.try_wait().unwrap().is_none(),
            "{what}: the session ended"
        );
    }
    let out = Ssh::engineer(s.home.path())
        .args([
            "-o",
            "ControlMaster=no",
            "-o",
            &control,
            "node1.acme-prod",
            "echo still",
        ])
        .output();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "still\n",
        "{}",
        text(&out)
    );
    kill_with(&mut master.0, "TERM");
}

/// A `command` event that reports bytes of a line ahead of it (the line comes whole later).
fn is_partial(e: &AuditEntry) -> bool {
    *field_of(e, "partial") == true
}

// The last line an interpreter reads without its newline, through an inner pipe that ends
// there (`head -c N | bash`): bash runs it at once, long before the channel's EOF or end. Its
// command is in the audit log while the channel is still open, as a partial line; once the
// line is complete (here at EOF) it is one command, which says it continues the partial one.
#[tokio::test]
async fn a_last_line_without_its_newline_is_a_command_before_it_runs() {
    let s = setup().await;
    let m = marker("unterminated");
    let line = format!("touch {}", m.display());
    let mut ssh = Ssh::engineer(s.home.path())
        .command()
        .arg("node1.acme-prod")
        .arg(format!("head -c {} | bash; sleep 120", line.len()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Client)
        .unwrap();
    let mut stdin = ssh.0.stdin.take().unwrap();
    // No newline, and no EOF: the channel stays open.
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
    assert!(wait_file(&m), "bash did not run the line");
    let _ = std::fs::remove_file(&m);
    let name = m.file_name().unwrap().to_str().unwrap();
    let found = commands_naming(&s.w, name).await;
    assert!(
        !found.is_empty(),
        "the line ran with no command event while its channel is open"
    );
    let ahead = &found[0];
    assert!(is_partial(ahead), "{ahead:?}");
    assert_eq!(field_str(ahead, "via"), "stdin");
    assert_eq!(ahead.command.as_deref(), Some(line.as_str()));
    // EOF completes the line: one command, continuing the partial one.
    drop(stdin);
    let session = ahead.session.clone().unwrap();
    let start = Instant::now();
    let whole = loop {
        let lines: Vec<AuditEntry> =
            s.w.audit(&format!("kind=command&session={session}&limit=100"))
                .await
                .into_iter()
                .filter(|e| opt_str(e, "via") == Some("stdin") && !is_partial(e))
                .collect();
        if !lines.is_empty() || start.elapsed() > Duration::from_secs(20) {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(whole.len(), 1, "{whole:#?}");
    assert_eq!(whole[0].command.as_deref(), Some(line.as_str()));
    assert_eq!(*field_of(&whole[0], "continues_partial"), true, "{whole:?}");
    // The program left running is ended with its client.
    kill_with(&mut ssh.0, "TERM");
}
