//! The data plane end to end: real `ssh` through a real edge and gateway (both `sallyport`
//! processes) to a real sshd node, with the audit trail checked at the broker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sallyport_api::admin::Tokens;
use sallyport_api::audit::{AuditChain, AuditEntry, AuditEvents};
use sallyport_api::certificates::Issued;
use sallyport_api::gateways::Gateway;
use sallyport_audit::AuditRecord;
use serde_json::{Value, json};
use support::bastion::{self, LOGIN, ssh, trust_edge, world_with_edge, world_with_edge_approval};
use support::broker::*;
use support::ssh::{Ssh, sftp_batch};
use support::term::{Term, tmux, tmux_ssh, wait_exit, wait_pane, wait_pane_any};

/// `sallyport login` for `user` on `ticket` into `home`; panics unless it succeeds.
fn login(w: &World, home: &Path, user: &str, ticket: &str) -> Issued {
    read_as(
        "login --json",
        w.login_cli(home, user, ticket, &w.code(user, 0)),
    )
}

#[tokio::test]
async fn exec_through_edge_and_gateway_is_recorded_with_its_exit_status() {
    let (w, b, home) = bastion::alice_at_the_edge().await;

    let out = ssh(home.path(), &["node1.acme-prod", "echo hi; exit 3"]);
    assert_printed(&out, "hi", &b.logs());
    assert_eq!(out.status.code(), Some(3));

    // The command, with engineer, ticket, node and login, then its exit status.
    let cmds = w.wait_audit("kind=command&ticket=SUP-1234", 1).await;
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let c = &cmds[0];
    assert_eq!(c.command.as_deref(), Some("echo hi; exit 3"));
    assert_eq!(c.engineer.as_deref(), Some("alice"));
    assert_eq!(c.node.as_deref(), Some("node1"));
    assert_eq!(field_str(c, "login"), LOGIN);
    assert_eq!(c.cluster.as_deref(), Some("acme-prod"));
    assert!(c.source.as_str().starts_with("gateway:"));
    let session = c.session.as_deref().unwrap().to_string();
    let exits = w
        .wait_audit(&format!("kind=channel_exit&session={session}"), 1)
        .await;
    assert_eq!(*field_of(&exits[0], "exit_status"), 3);
    // The node's own sshd log names the session and the ticket.
    assert!(
        b.node.wait_for_log("SUP-1234", Duration::from_secs(5)),
        "{}",
        b.node.log()
    );
    assert!(b.node.log().contains(&session), "{}", b.node.log());
    // The whole log, gateway chain included, verifies.
    let out = audit_verify(&w);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gateway:"), "{text}");
    // The gateway's and the broker's chains are signed.
    for line in text
        .lines()
        .filter(|l| l.starts_with("gateway:") || l.starts_with("broker:"))
    {
        assert!(line.contains("signed through #"), "{text}");
    }
}

#[tokio::test]
async fn the_edge_opens_no_shell_and_nodes_do_not_trust_engineer_certificates() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), "alice", "SUP-1234");
    trust_edge(home.path(), &b);
    // A shell or command on the edge itself: a message, no shell.
    let jump = "sallyport-edge-acme-prod";
    let out = ssh(home.path(), &[jump, "id"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("opens no shell"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("uid="));
    // The engineer's certificate straight to the node: refused (the node trusts its node CA only).
    let key = home.path().join("acme-prod");
    let cert = home.path().join("acme-prod-cert.pub");
    let kh = home.path().join("node_kh");
    std::fs::write(&kh, b.node.known_hosts_line()).unwrap();
    let out = Ssh::bare()
        .opt(format!("UserKnownHostsFile={}", kh.display()))
        .key(&key)
        .opt(format!("CertificateFile={}", cert.display()))
        .args([
            "-p",
            &b.node.port().to_string(),
            &format!("{LOGIN}@127.0.0.1"),
            "id",
        ])
        .output();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!issued.certificate.is_empty());
}

/// `ssh node1.acme-prod 'sleep 60; echo finished'` as alice, open once its command is in the
/// audit log (returned with it).
async fn sleeping_session(
    w: &World,
    b: &bastion::Bastion,
    home: &Path,
) -> (std::process::Child, Vec<AuditEntry>) {
    let child = Ssh::engineer(home)
        .args(["node1.acme-prod", "sleep 60; echo finished"])
        .spawn();
    let cmds = w.wait_audit("kind=command&ticket=SUP-1234", 1).await;
    assert_eq!(cmds.len(), 1, "{}", b.gateway.log_text());
    (child, cmds)
}

#[tokio::test]
async fn revoking_the_grant_ends_an_open_session() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), "alice", "SUP-1234");
    trust_edge(home.path(), &b);
    let (mut child, _cmds) = sleeping_session(&w, &b, home.path()).await;
    let (s, v) =
        w.op.post(
            "/v1/revocations",
            json!({"scope": "grant", "value": issued.grant, "reason": "test"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let revoked_at = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the session outlived its revocation by 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"));
    let ended = w
        .wait_audit("kind=session_terminated&ticket=SUP-1234", 1)
        .await;
    assert_eq!(
        field_str(&ended[0], "reason"),
        "the certificate was revoked"
    );
    // And a new connection with the revoked certificate is refused.
    let out = ssh(home.path(), &["node1.acme-prod", "true"]);
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test]
async fn on_sigterm_the_gateway_ends_open_sessions_ships_their_end_and_exits() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let (child, cmds) = sleeping_session(&w, &b, home.path()).await;
    let session = cmds[0].session.as_deref().unwrap().to_string();
    assert!(
        w.audit(&format!("kind=session_ended&session={session}"))
            .await
            .is_empty()
    );

    b.gateway.sigterm();
    let status = b.gateway.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        b.gateway.log_text()
    );
    // The engineer's session ended with the gateway, before its command finished.
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sallyport gateway: shutting down"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its end was written by the session as the gateway stopped, and shipped before the gateway
    // exited: at the broker already, once.
    let ended = w
        .audit(&format!("kind=session_ended&session={session}"))
        .await;
    assert_eq!(ended.len(), 1, "{ended:#?}\n{}", b.gateway.log_text());
    assert_eq!(ended[0].engineer.as_deref(), Some("alice"));
    assert_eq!(ended[0].ticket.as_deref(), Some("SUP-1234"));
    let log = b.gateway.log_text();
    assert!(log.contains("gateway shutting down"), "{log}");
    assert!(
        log.contains("gateway stopped: the broker has every audit record"),
        "{log}"
    );
}

fn random_file(path: &Path, size: usize) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for b in buf.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn scp_and_sftp_move_20_mb_intact_and_are_recorded() {
    let (w, b, home) = bastion::alice_at_the_edge().await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("payload.bin");
    random_file(&src, 20 << 20);
    let want = sha256_file(&src);
    let remote_dir = format!("/tmp/sallyport-scp-{}", std::process::id());
    let out = ssh(
        home.path(),
        &[
            "node1.acme-prod",
            &format!("mkdir -p {remote_dir} && chmod 777 {remote_dir}"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // scp up and down.
    let cfg = home.path().join("ssh_config");
    // -O: the classic scp protocol, through its exec command; without it, scp speaks sftp.
    let scp = |classic: bool, from: &str, to: &str| {
        let mut cmd = Command::new("scp");
        cmd.arg("-F").arg(&cfg).args(["-o", "BatchMode=yes", "-q"]);
        if classic {
            cmd.arg("-O");
        }
        let out = cmd.args([from, to]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let remote = format!("node1.acme-prod:{remote_dir}/via-scp.bin");
    scp(true, src.to_str().unwrap(), &remote);
    let back = work.path().join("back-scp.bin");
    scp(true, &remote, back.to_str().unwrap());
    assert_eq!(sha256_file(&back), want);
    let back_modern = work.path().join("back-scp-sftp.bin");
    scp(false, &remote, back_modern.to_str().unwrap());
    assert_eq!(sha256_file(&back_modern), want);

    // sftp up and down.
    let batch = work.path().join("batch");
    let back2 = work.path().join("back-sftp.bin");
    std::fs::write(&batch, format!("put {} {remote_dir}/via-sftp.bin\nget {remote_dir}/via-sftp.bin {}\nrm {remote_dir}/via-sftp.bin\n", src.display(), back2.display())).unwrap();
    let out = sftp_batch(home.path(), &batch);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.gateway.log_text()
    );
    assert_eq!(sha256_file(&back2), want);
    let _ = ssh(
        home.path(),
        &["node1.acme-prod", &format!("rm -rf {remote_dir}")],
    );

    // scp is recorded through its exec command; sftp as a subsystem session.
    let cmds = w.wait_audit("kind=command&ticket=SUP-1234", 4).await;
    let texts: Vec<&str> = cmds.iter().filter_map(|c| c.command.as_deref()).collect();
    assert!(
        texts
            .iter()
            .any(|c| c.starts_with("scp -t") && c.contains("via-scp.bin")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|c| c.starts_with("scp -f") && c.contains("via-scp.bin")),
        "{texts:?}"
    );
    assert_eq!(
        w.wait_audit("kind=sftp_started&ticket=SUP-1234", 2)
            .await
            .len(),
        2
    );
    // sftp operations, parsed from the subsystem stream: the upload's close carries its bytes,
    // the download's its bytes, and the remove its path.
    let ops = w.wait_audit("kind=file_op&ticket=SUP-1234", 5).await;
    let ops: Vec<&Value> = ops.iter().map(|e| field_of(e, "op")).collect();
    let path = format!("{remote_dir}/via-sftp.bin");
    let size = 20u64 << 20;
    assert!(
        ops.iter()
            .any(|o| o["path"] == path.as_str() && o["bytes_written"] == size),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|o| o["path"] == path.as_str() && o["bytes_read"] == size),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|o| o["op"] == "remove" && o["path"] == path.as_str()),
        "{ops:#?}"
    );
    // Every file moved carries the SHA-256 that sha256sum prints for it: sftp both ways, and
    // classic scp (its stream parsed) both ways.
    assert!(
        ops.iter()
            .any(|o| o["path"] == path.as_str() && o["sha256_written"] == want.as_str()),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|o| o["path"] == path.as_str() && o["sha256_read"] == want.as_str()),
        "{ops:#?}"
    );
    let scp_ops: Vec<AuditEntry> = w
        .wait_audit("kind=file_op&ticket=SUP-1234&limit=1000", 7)
        .await
        .into_iter()
        .filter(|e| opt_str(e, "via") == Some("scp"))
        .collect();
    let files: Vec<&Value> = scp_ops
        .iter()
        .map(|e| field_of(e, "op"))
        .filter(|o| o["op"] == "file")
        .collect();
    assert_eq!(files.len(), 2, "{scp_ops:#?}");
    // The upload names the file as the engineer's side does, the download as the node's.
    let mut names: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["payload.bin", "via-scp.bin"], "{files:#?}");
    for f in files {
        assert_eq!(f["sha256"], want.as_str(), "{f}");
        assert_eq!(f["size"], size, "{f}");
        assert_eq!(f["status"]["status"], "ok", "{f}");
    }
}

#[tokio::test]
async fn forwarding_is_refused_unless_approved_and_agent_forwarding_always() {
    let (w, b, home) = bastion::alice_at_the_edge().await;
    // -W asks for a direct-tcpip channel to the node's own sshd port.
    let target = format!("127.0.0.1:{}", b.node.port());
    let out = Ssh::engineer(home.path())
        .args(["-W", &target, "node1.acme-prod"])
        .output();
    assert_ne!(out.status.code(), Some(0));
    let refused = w
        .wait_audit("kind=forward_refused&ticket=SUP-1234", 1)
        .await;
    assert_eq!(field_str(&refused[0], "target"), target.as_str());
    // Agent forwarding: the session runs, the agent is not forwarded, and it is recorded.
    let agent = Command::new("ssh-agent").arg("-s").output().unwrap();
    let text = String::from_utf8_lossy(&agent.stdout).to_string();
    // `ssh-agent -s` prints `NAME=VALUE; export NAME;` lines.
    let var = |name: &str| {
        let after = text.split(&format!("{name}=")).nth(1).unwrap();
        after.split(';').next().unwrap().to_string()
    };
    let (sock, pid) = (var("SSH_AUTH_SOCK"), var("SSH_AGENT_PID"));
    let out = Ssh::engineer(home.path())
        .args(["-A", "node1.acme-prod", "echo agent=${SSH_AUTH_SOCK:-none}"])
        .env("SSH_AUTH_SOCK", &sock)
        .output();
    let _ = Command::new("kill").arg(&pid).status();
    assert_printed(&out, "agent=none", "");
    let refused = w
        .wait_audit("kind=channel_refused&ticket=SUP-1234", 1)
        .await;
    assert_eq!(field_str(&refused[0], "request"), "agent");
    assert_eq!(field_str(&refused[0], "code"), "agent_forwarding_refused");
}

/// A world with an edge whose approval of support-l2 on acme-prod has `extra`, alice's open
/// `ticket`, the bastion, and alice logged in for it (her home trusting the edge); then her
/// `ssh -W` to the node's own sshd port through node1: what it printed and the target.
async fn forward_on_ticket(
    ticket: &str,
    extra: Value,
) -> (
    World,
    bastion::Bastion,
    tempfile::TempDir,
    String,
    std::process::Output,
) {
    let (w, port) = bastion::world_knowing_the_edge().await;
    w.approve("acme-prod", "support-l2", &[LOGIN], extra).await;
    w.ticket(ticket, "acme-prod", "alice", "open").await;
    let b = bastion::start(&w, port).await;
    let home = tempfile::tempdir().unwrap();
    login(&w, home.path(), "alice", ticket);
    trust_edge(home.path(), &b);
    let target = format!("127.0.0.1:{}", b.node.port());
    let out = Ssh::engineer(home.path())
        .args(["-W", &target, "node1.acme-prod"])
        .output();
    (w, b, home, target, out)
}

#[tokio::test]
async fn approved_port_forwarding_reaches_the_target_from_the_node() {
    let (w, b, home, target, out) =
        forward_on_ticket("SUP-7", json!({"port_forwarding": true})).await;
    // The node's sshd greets through the forward.
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("SSH-2.0-OpenSSH"),
        "{} / {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let fwd = w.wait_audit("kind=forward&ticket=SUP-7", 1).await;
    assert_eq!(field_str(&fwd[0], "target"), target.as_str());
    // Both ways: a whole SSH key exchange with the node's sshd runs through the forward (the
    // engineer has no key the node takes, so it ends at authentication, not before).
    let proxy = format!(
        "ssh -F {} -o BatchMode=yes -W %h:%p node1.acme-prod",
        home.path().join("ssh_config").display()
    );
    let out = Ssh::bare()
        .opt(format!("ProxyCommand={proxy}"))
        .any_host_key()
        .opt("IdentitiesOnly=yes")
        .opt("IdentityFile=/dev/null")
        .args(["-p", &b.node.port().to_string(), "nobody@127.0.0.1", "true"])
        .output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");
    assert_eq!(w.wait_audit("kind=forward&ticket=SUP-7", 2).await.len(), 2);
}

/// In a moderated session (an approver of the customer must watch), a port forward is no way
/// around the watcher: with forwarding approved, `ssh -W` before anyone watches is refused
/// (`forward_refused`, code `no_observer`), the engineer reads why, and nothing from the target
/// comes back.
#[tokio::test]
async fn a_port_forward_in_a_moderated_session_is_refused_until_someone_watches() {
    let (w, _b, _home, _target, out) = forward_on_ticket(
        "SUP-8",
        json!({"port_forwarding": true, "observer_required": true}),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("SSH-2.0"),
        "the forward reached the target with nobody watching: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("watches the session; none has joined yet"),
        "{said}"
    );
    let refused = w.wait_audit("kind=forward_refused&ticket=SUP-8", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("no_observer")),
        "{refused:#?}"
    );
    assert!(
        w.audit("kind=forward&ticket=SUP-8").await.is_empty(),
        "a forward was recorded as opened"
    );
}

/// dave logs in for GLX-1 (globex-prod) and aims his certificate at acme's node: refused.
/// The jump hop comes from dave's own ssh_config (it names the edge); the target is acme's.
fn dave_aims_his_globex_certificate_at_acme(w: &World, b: &bastion::Bastion) {
    let home2 = tempfile::tempdir().unwrap();
    login(w, home2.path(), "dave", "GLX-1");
    trust_edge(home2.path(), b);
    let out = Ssh::engineer(home2.path())
        .any_host_key()
        .key(&home2.path().join("globex-prod"))
        .opt(format!(
            "CertificateFile={}",
            home2.path().join("globex-prod-cert.pub").display()
        ))
        .opt("ProxyJump=sallyport-edge-globex-prod")
        .args([&format!("{LOGIN}@node1.acme-prod"), "echo in"])
        .output();
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test]
async fn a_killed_gateway_loses_no_event_and_the_broker_down_loses_none_either() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    for i in 0..3 {
        let out = ssh(home.path(), &["node1.acme-prod", &format!("echo run-{i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A session in the middle when the gateway dies.
    let mut child = Ssh::engineer(home.path())
        .args(["node1.acme-prod", "echo started; sleep 30"])
        .spawn();
    w.wait_audit("kind=command&ticket=SUP-1234", 4).await;
    // The node's output reached the engineer (so the gateway recorded it first), then the kill.
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "started");
    }
    b.gateway.kill9();
    let _ = child.wait();
    // The spool's segments (audit-<first seq>.jsonl), oldest first.
    let spool = b.dir.path().join("gateway/data/spool");
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    segments.sort();
    let spooled: Vec<AuditRecord> = segments
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<AuditRecord>>()
        })
        .collect();
    assert!(spooled.len() >= 8, "{}", spooled.len());
    b.restart_gateway();
    let out = ssh(home.path(), &["node1.acme-prod", "echo after-restart"]);
    assert_printed(&out, "after-restart", "");
    // Every event written before the kill reached the broker, exactly once, in one intact chain.
    let source = spooled[0].source.clone();
    let start = Instant::now();
    let chain = loop {
        let (_, v) = w
            .reviewer
            .get_as::<AuditChain>(&format!("/v1/audit/chain?source={source}&limit=10000"))
            .await;
        let recs = v.records;
        if recs.len() > spooled.len() || start.elapsed() > Duration::from_secs(20) {
            break recs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (i, s) in spooled.iter().enumerate() {
        assert_eq!(chain[i].seq, s.seq);
        assert_eq!(chain[i].hash, s.hash, "event {i} differs");
    }
    let seqs: Vec<u64> = chain.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|p| p[1] == p[0] + 1), "{seqs:?}");
    // The recording of the session cut by the kill was finished at the restart and uploaded:
    // what it had, then a marker saying where it ends.
    let cut = spooled
        .iter()
        .find(|e| e.data["command"] == "echo started; sleep 30")
        .expect("the cut session's command was spooled");
    let session = cut.data["session"].as_str().unwrap();
    let recovered = w.wait_audit("kind=recording_recovered", 1).await;
    let rec = recovered
        .iter()
        .find(|e| e.session.as_deref() == Some(session))
        .unwrap_or_else(|| panic!("no recording_recovered for {session}: {recovered:#?}"));
    let cast = w.fetch_recording(field_str(rec, "recording")).await;
    let events = sallyport_bastion::record::asciicast::parse_events(&cast).unwrap();
    assert!(events.iter().any(|e| e.data.contains("started")), "{cast}");
    let last = events.last().unwrap();
    assert_eq!(
        last.kind,
        sallyport_bastion::record::asciicast::EventKind::Marker,
        "{cast}"
    );
    assert!(last.data.contains("gateway stopped"), "{cast}");
    assert!(
        !b.dir
            .path()
            .join(format!(
                "gateway/data/recordings/{}.cast.part",
                field_str(rec, "recording")
            ))
            .exists()
    );

    // The broker stops: certificates still work, events are spooled, then delivered.
    let mut w = w;
    w.stop_broker();
    let out = ssh(home.path(), &["node1.acme-prod", "echo while-broker-down"]);
    assert_printed(&out, "while-broker-down", "");
    w.start_broker_again();
    let reviewer = &w.reviewer;
    let start = Instant::now();
    loop {
        let (s, v) = reviewer
            .get("/v1/audit/events?kind=command&limit=1000")
            .await;
        if s == StatusCode::OK
            && read_as::<AuditEvents>("an audit page", v)
                .events
                .iter()
                .any(|e| e.command.as_deref() == Some("echo while-broker-down"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the spooled command never reached the broker"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A session left quiet at its prompt lets the gateway's screen model rest (after
/// `REST_AFTER`); what is typed after it — a line recalled from history, which only the screen
/// shows, and one finished with tab completion — is recorded as it ran.
#[tokio::test]
async fn a_session_quiet_long_enough_to_rest_records_what_is_typed_after() {
    let (w, _b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("resttest{}", std::process::id());
    let term = Term::ssh("sp-rest", home.path(), 100, 30, "");
    let prompt = ":~$";
    term.wait(prompt, 1);
    term.send(&[&format!("touch /tmp/{tag}-file; echo made"), "Enter"]);
    term.wait(prompt, 2);
    let quiet = sallyport_bastion::gateway::REST_AFTER + Duration::from_secs(6);
    tokio::time::sleep(quiet).await;
    term.send(&["Up", "Enter"]);
    term.wait(prompt, 3);
    tokio::time::sleep(quiet).await;
    term.send(&[&format!("ls /tmp/{tag}-f"), "Tab"]);
    term.wait(&format!("ls /tmp/{tag}-file"), 1);
    term.send(&["Enter"]);
    term.wait(prompt, 4);
    term.send(&[&format!("rm /tmp/{tag}-file"), "Enter"]);
    term.wait(prompt, 5);
    term.send(&["exit", "Enter"]);
    term.wait_exit();

    let want = vec![
        format!("touch /tmp/{tag}-file; echo made"),
        format!("touch /tmp/{tag}-file; echo made"),
        format!("ls /tmp/{tag}-file"),
        format!("rm /tmp/{tag}-file"),
        "exit".to_string(),
    ];
    interactive_commands_are(&w, &want).await;
}

/// The interactive commands of SUP-1234 are `want`, in order; its command events.
async fn interactive_commands_are(w: &World, want: &[String]) -> Vec<AuditEntry> {
    let events = w
        .wait_audit("kind=command&ticket=SUP-1234", want.len())
        .await;
    let got: Vec<String> = events
        .iter()
        .filter(|e| opt_str(e, "via") == Some("interactive"))
        .map(|e| e.command.as_deref().unwrap().trim_end().to_string())
        .collect();
    assert_eq!(got, want, "{events:#?}");
    events
}

#[tokio::test]
async fn an_interactive_session_is_recorded_command_by_command_and_replays_the_same_screen() {
    let (w, _b, home) = bastion::alice_at_the_edge().await;
    let name = format!("sp-{}", std::process::id());
    let tag = format!("tabtest{}", std::process::id());
    tmux_ssh(&name, home.path(), 120, 40, "");
    // capture-pane drops trailing blanks: the prompt reads `user@host:~$`.
    let prompt = ":~$";
    wait_pane(&name, prompt, 1);
    let send = |keys: &[&str]| {
        let mut args = vec!["send-keys", "-t", name.as_str()];
        args.extend_from_slice(keys);
        tmux(&args);
    };
    send(&["echo first-cmd", "Enter"]);
    wait_pane(&name, "first-cmd", 2);
    send(&["echo second", "Enter"]);
    wait_pane(&name, "second", 2);
    // Recalled from history.
    send(&["Up", "Enter"]);
    wait_pane(&name, "second", 4);
    send(&[&format!("touch /tmp/{tag}-file"), "Enter"]);
    wait_pane(&name, prompt, 5);
    // Finished with tab completion.
    send(&[&format!("ls /tmp/{tag}-f"), "Tab"]);
    wait_pane(&name, &format!("ls /tmp/{tag}-file"), 1);
    send(&["Enter"]);
    wait_pane(&name, &format!("/tmp/{tag}-file"), 3);
    send(&[&format!("rm /tmp/{tag}-file"), "Enter"]);
    let before_exit = wait_pane(&name, prompt, 7);
    send(&["exit", "Enter"]);
    wait_exit(&name);
    tmux(&["kill-session", "-t", &name]);

    let want = vec![
        "echo first-cmd".to_string(),
        "echo second".to_string(),
        "echo second".to_string(),
        format!("touch /tmp/{tag}-file"),
        format!("ls /tmp/{tag}-file"),
        format!("rm /tmp/{tag}-file"),
        "exit".to_string(),
    ];
    let events = interactive_commands_are(&w, &want).await;
    // Each Enter was written to the spool before it went on to the node: every command's line
    // has a line_entered event earlier in the gateway's chain, showing what the screen showed.
    let entered = w
        .wait_audit("kind=line_entered&ticket=SUP-1234", want.len())
        .await;
    for c in events
        .iter()
        .filter(|e| opt_str(e, "via") == Some("interactive"))
    {
        let e = entered
            .iter()
            .find(|e| field_of(e, "line") == field_of(c, "line") && e.session == c.session)
            .unwrap_or_else(|| panic!("no line_entered for {c:?}: {entered:#?}"));
        assert!(e.seq < c.seq, "{e:?} {c:?}");
        // The screen at Enter shows the line as far as its echo had come.
        if let Some(shown) = opt_str(e, "shown") {
            assert!(
                c.command.as_deref().unwrap().starts_with(shown.trim_end()),
                "{e:?} {c:?}"
            );
        }
    }

    // The recording reaches the broker and replays to the screen the engineer saw.
    let fin = w
        .wait_audit("kind=recording_finished&ticket=SUP-1234", 1)
        .await;
    let id = field_str(&fin[0], "recording").to_string();
    let cast = w.fetch_recording(&id).await;
    let screen = sallyport_bastion::record::asciicast::replay_screen(&cast, 40, 120).unwrap();
    let replayed: Vec<&str> = screen
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    // Every line the engineer saw before typing `exit`, in order; the last one (the prompt)
    // went on with `exit` after the capture.
    let seen: Vec<&str> = before_exit
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let mut at = 0;
    for (i, line) in seen.iter().enumerate() {
        let last = i + 1 == seen.len();
        let found = replayed[at..]
            .iter()
            .position(|r| r == line || (last && r.starts_with(line)));
        assert!(
            found.is_some(),
            "screen line {line:?} not in the replay:\n{screen}"
        );
        at += found.unwrap() + 1;
    }
    assert!(!cast.is_empty());
}

// --- the edge's own audit trail, per-session MFA and source networks ---

/// Re-sign the engineer's key in `home` for acme-prod with `ca`, keeping the key id,
/// principal and extensions of the certificate login wrote.
fn resign_acme_cert(home: &Path, ca: &Path, validity: &str) {
    let cert = home.join("acme-prod-cert.pub");
    let listing = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout).to_string();
    let key_id = text
        .split("Key ID: \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-s"]).arg(ca).args([
        "-I",
        &key_id,
        "-n",
        &format!("acme-prod:{LOGIN}"),
        "-V",
        validity,
        "-z",
        "4243",
        "-O",
        "clear",
        "-O",
        "permit-pty",
    ]);
    for kv in key_id.trim_start_matches("sallyport:").split(';') {
        let (k, v) = kv.split_once('=').unwrap();
        if ["grant", "ticket", "cluster"].contains(&k) {
            cmd.args(["-O", &format!("extension:{k}@sallyport.dev={v}")]);
        }
    }
    cmd.arg(home.join("acme-prod.pub"));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `sallyport audit verify`, as a reviewer.
fn audit_verify(w: &World) -> std::process::Output {
    Command::new(BIN)
        .args(["audit", "verify"])
        .env("SALLYPORT_BROKER", &w.broker.url)
        .env("SALLYPORT_TOKEN", w.reviewer.token.as_ref().unwrap())
        .output()
        .unwrap()
}

/// `sallyport audit search --json` with `args`, as a reviewer.
fn audit_search(w: &World, args: &[&str]) -> Vec<AuditEntry> {
    let out = Command::new(BIN)
        .args(["audit", "search", "--json"])
        .args(args)
        .env("SALLYPORT_BROKER", &w.broker.url)
        .env("SALLYPORT_TOKEN", w.reviewer.token.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn refusals_at_the_edge_are_audit_events_at_the_broker() {
    let (w, port) = world_with_edge().await;
    let (s, v) = w.globex.post("/v1/approvals", json!({"cluster": "globex-prod", "group": "support-l2", "logins": [LOGIN], "max_session_secs": 3600, "valid_until": now() + 3600})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    w.ticket("GLX-1", "globex-prod", "dave", "open").await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let source = format!("edge:{}", bastion::EDGE_NAME);
    let home = bastion::alice_home(&w, &b);

    // A session through the edge is an `edge_session` event.
    let out = ssh(home.path(), &["node1.acme-prod", "echo through"]);
    assert_printed(&out, "through", &b.logs());
    let sessions = w.wait_audit("kind=edge_session&ticket=SUP-1234", 1).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let s0 = &sessions[0];
    assert_eq!(s0.source, source.as_str());
    assert_eq!(s0.engineer.as_deref(), Some("alice"));
    assert_eq!(s0.cluster.as_deref(), Some("acme-prod"));
    assert_eq!(s0.node.as_deref(), Some("node1"));
    assert_eq!(field_str(s0, "source_ip"), "127.0.0.1");
    assert_eq!(*field_of(s0, "per_session_mfa"), false);

    // A shell on the edge itself.
    let out = ssh(home.path(), &["sallyport-edge-acme-prod", "id"]);
    assert_ne!(out.status.code(), Some(0));
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "no_shell_on_edge")
        .await;
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(field_str(&e, "request"), "exec");
    assert_eq!(e.command.as_deref(), Some("id"));
    assert_eq!(e.source, source.as_str());

    // A certificate from another CA, naming alice's ticket in its key id.
    let good = std::fs::read_to_string(home.path().join("acme-prod-cert.pub")).unwrap();
    let rogue = home.path().join("rogue_ca");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&rogue)
        .status()
        .unwrap();
    resign_acme_cert(home.path(), &rogue, "-5m:+1h");
    let out = ssh(home.path(), &["node1.acme-prod", "echo in"]);
    assert_ne!(out.status.code(), Some(0));
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "untrusted_ca")
        .await;
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(e.cluster.as_deref(), Some("acme-prod"));
    assert_eq!(field_str(&e, "login"), "alice");
    assert_eq!(field_str(&e, "serial"), "4243");
    assert!(
        field_str(&e, "key_id").starts_with("sallyport:eng=alice;"),
        "{e:?}"
    );
    assert!(field_str(&e, "reason").contains("not trusted"), "{e:?}");

    // Expired (signed by the real CA): refused before the client proved it holds the key, and
    // audited with what the certificate names.
    std::fs::write(home.path().join("acme-prod-cert.pub"), &good).unwrap();
    resign_acme_cert(home.path(), &w.broker.dir.join("data/user_ca"), "-2h:-1h");
    let out = ssh(home.path(), &["node1.acme-prod", "echo in"]);
    assert_ne!(out.status.code(), Some(0));
    let e = w.wait_code("kind=edge_refused&limit=1000", "expired").await;
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(field_str(&e, "key_ownership"), "not proven");
    assert!(field_str(&e, "reason").contains("expired"), "{e:?}");

    // A plain key, no certificate: refused and audited with the key's fingerprint.
    let plain = home.path().join("plain");
    std::fs::copy(home.path().join("acme-prod"), &plain).unwrap();
    let out = Ssh::bare()
        .any_host_key()
        .key(&plain)
        .args(["-p", &port.to_string(), "alice@127.0.0.1", "true"])
        .output();
    assert_ne!(out.status.code(), Some(0));
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "not_a_certificate")
        .await;
    assert_eq!(field_str(&e, "login"), "alice");
    let issued = w.audit("kind=certificate_issued&ticket=SUP-1234").await;
    let key = std::fs::read_to_string(home.path().join("acme-prod.pub")).unwrap();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    assert_eq!(field_str(&e, "public_key"), key.join(" "));
    // The key's fingerprint is the one the certificate was issued for.
    assert_eq!(
        field_str(&e, "fingerprint"),
        field_str(&issued[0], "public_key"),
        "{issued:?}"
    );

    // A certificate for another cluster: dave's globex certificate, aimed at acme's node.
    dave_aims_his_globex_certificate_at_acme(&w, &b);
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "other_cluster")
        .await;
    assert_eq!(e.engineer.as_deref(), Some("dave"));
    assert_eq!(e.ticket.as_deref(), Some("GLX-1"));
    assert_eq!(e.cluster.as_deref(), Some("globex-prod"));
    assert_eq!(field_str(&e, "target_cluster"), "acme-prod");
    assert_eq!(field_str(&e, "target"), "node1.acme-prod:22");

    // The reviewer's CLI shows them, and the edge's chain verifies with the rest.
    let listed = audit_search(&w, &["--kind", "edge_refused"]);
    let codes: Vec<&str> = listed.iter().filter_map(|e| opt_str(e, "code")).collect();
    for code in [
        "no_shell_on_edge",
        "untrusted_ca",
        "expired",
        "not_a_certificate",
        "other_cluster",
    ] {
        assert!(codes.contains(&code), "{code} not in {codes:?}");
    }
    assert!(listed.iter().all(|e| e.source == source.as_str()));
    let by_ticket = audit_search(&w, &["--ticket", "GLX-1", "--kind", "edge_refused"]);
    assert_eq!(by_ticket.len(), 1, "{by_ticket:?}");
    let out = audit_verify(&w);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&source), "{text}");
    // Nothing of the refused attempts reached the node.
    let cmds = w.audit("kind=command").await;
    assert!(
        cmds.iter()
            .all(|c| c.command.as_deref() == Some("echo through")),
        "{cmds:?}"
    );
}

#[tokio::test]
async fn per_session_mfa_asks_a_fresh_totp_code_at_the_edge() {
    let (w, port, _) = world_with_edge_approval(json!({"per_session_mfa": true})).await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = tempfile::tempdir().unwrap();
    let login_code = w.code("alice", 0);
    w.login_cli(home.path(), "alice", "SUP-1234", &login_code);
    trust_edge(home.path(), &b);

    // Without the code (BatchMode: no prompts) the certificate alone opens nothing; the empty
    // answer is refused at the edge without counting toward alice's lockout.
    let out = ssh(home.path(), &["node1.acme-prod", "echo in"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in"));
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "mfa_no_code")
        .await;
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    // Keyboard-interactive alone, without a certificate: never asked, never reaches the broker.
    let out = Command::new("ssh")
        .arg("-F")
        .arg(home.path().join("ssh_config"))
        .args([
            "-o",
            "PreferredAuthentications=keyboard-interactive",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "StrictHostKeyChecking=yes",
            "sallyport-edge-acme-prod",
            "true",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("TOTP"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.audit("kind=edge_session").await.is_empty());
    assert!(w.audit("kind=session_started").await.is_empty());
    assert!(w.audit("kind=session_mfa_failed").await.is_empty());
    assert!(w.audit("kind=session_mfa_verified").await.is_empty());

    let name = format!("sp-mfa-{}", std::process::id());
    tmux_ssh(&name, home.path(), 160, 40, "");
    let send = |keys: &[&str]| {
        let mut args = vec!["send-keys", "-t", name.as_str()];
        args.extend_from_slice(keys);
        tmux(&args);
    };
    let prompt = "TOTP code for alice";
    wait_pane(&name, prompt, 1);
    // A wrong code: one that is none of the codes valid now.
    let valid: Vec<String> = (-2..=2).map(|o| w.code("alice", o)).collect();
    let wrong = ["000000", "111111", "222222", "333333"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .unwrap();
    send(&[wrong, "Enter"]);
    wait_pane(&name, prompt, 2);
    // The code used at login: spent already.
    send(&[&login_code, "Enter"]);
    wait_pane(&name, prompt, 3);
    // A fresh code: the shell opens.
    send(&[&w.code("alice", 1), "Enter"]);
    let screen = wait_pane_any(&name, &[":~$", "Permission denied"]);
    if !screen.contains(":~$") {
        let mfa = w.audit("kind=session_mfa_failed").await;
        panic!(
            "{screen}\n--- broker:\n{mfa:#?}\n--- edge:\n{}",
            b.edge.log_text()
        );
    }
    assert!(
        !screen.contains(&login_code),
        "the code was echoed: {screen}"
    );
    send(&["echo after-mfa", "Enter"]);
    wait_pane(&name, "after-mfa", 2);
    send(&["exit", "Enter"]);
    wait_exit(&name);
    tmux(&["kill-session", "-t", &name]);

    // The broker checked the codes, the edge audited its refusals and the session.
    let failed = w.audit("kind=session_mfa_failed&engineer=alice").await;
    let codes: Vec<&str> = failed.iter().filter_map(|e| opt_str(e, "code")).collect();
    assert_eq!(codes, ["bad_totp", "totp_replayed"], "{failed:#?}");
    let by = format!("edge:{}", bastion::EDGE_NAME);
    assert!(
        failed.iter().all(|e| opt_str(e, "by") == Some(by.as_str())),
        "{failed:#?}"
    );
    assert!(
        failed
            .iter()
            .all(|e| e.ticket.as_deref() == Some("SUP-1234"))
    );
    let verified = w.audit("kind=session_mfa_verified&ticket=SUP-1234").await;
    assert_eq!(verified.len(), 1, "{verified:#?}");
    assert_eq!(field_str(&verified[0], "by"), by.as_str());
    assert_eq!(verified[0].engineer.as_deref(), Some("alice"));
    assert_eq!(field_str(&verified[0], "source_ip"), "127.0.0.1");
    let start = Instant::now();
    let refused = loop {
        let r: Vec<AuditEntry> = w
            .audit("kind=edge_refused&ticket=SUP-1234")
            .await
            .into_iter()
            .filter(|e| opt_str(e, "code") == Some("mfa_failed"))
            .collect();
        if r.len() >= 2 || start.elapsed() > Duration::from_secs(20) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        field_str(&refused[1], "reason").contains("already used"),
        "{refused:#?}"
    );
    let sessions = w.wait_audit("kind=edge_session&ticket=SUP-1234", 1).await;
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    assert_eq!(*field_of(&sessions[0], "per_session_mfa"), true);
    let cmds = w.wait_audit("kind=command&ticket=SUP-1234", 1).await;
    assert!(
        cmds.iter()
            .any(|c| c.command.as_deref() == Some("echo after-mfa")),
        "{cmds:#?}"
    );
}

#[tokio::test]
async fn source_networks_are_checked_against_the_client_address_at_the_edge() {
    let (w, port, approval) =
        world_with_edge_approval(json!({"source_networks": ["203.0.113.0/24"]})).await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token(&w, port, &token).await;
    let home = bastion::alice_home(&w, &b);
    // The certificate may only be used from 203.0.113.0/24; the client is 127.0.0.1.
    let out = ssh(home.path(), &["node1.acme-prod", "echo in"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in"));
    let e = w
        .wait_code("kind=edge_refused&limit=1000", "source_address_mismatch")
        .await;
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    assert_eq!(e.ticket.as_deref(), Some("SUP-1234"));
    assert_eq!(field_str(&e, "source_ip"), "127.0.0.1");
    assert!(field_str(&e, "reason").contains("203.0.113.0/24"), "{e:?}");
    assert!(w.audit("kind=edge_session").await.is_empty());

    // The approver allows loopback: a new certificate works from here.
    let (s, v) = w
        .acme
        .put(
            &format!("/v1/approvals/{approval}"),
            json!({"cluster": "acme-prod", "group": "support-l2", "logins": [LOGIN],
                "max_session_secs": 3600, "valid_until": now() + 86_400,
                "source_networks": ["127.0.0.0/8"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 1));
    let out = ssh(home.path(), &["node1.acme-prod", "echo in"]);
    assert_printed(&out, "in", &b.logs());
    let sessions = w.wait_audit("kind=edge_session&ticket=SUP-1234", 1).await;
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
}

#[tokio::test]
async fn a_full_audit_spool_refuses_new_activity_with_a_clear_message_and_recovers() {
    let (w, port) = world_with_edge().await;
    // The gateway's spool on a small file system of its own, to fill it up.
    let mount = std::sync::Arc::new(std::sync::Mutex::new(None::<std::path::PathBuf>));
    let m2 = mount.clone();
    let b = bastion::start_prepared(&w, port, move |data| {
        let spool = data.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::set_permissions(data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(&spool)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs (the tests run as root)");
        *m2.lock().unwrap() = Some(spool);
    })
    .await;
    let spool = mount.lock().unwrap().clone().unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let home = bastion::alice_home(&w, &b);
    let out = ssh(home.path(), &["node1.acme-prod", "echo recorded"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "recorded");
    // An interactive session already open when the spool fills up.
    let pane = format!("spfull-{}", std::process::id());
    tmux_ssh(&pane, home.path(), 120, 40, "");
    wait_pane(&pane, ":~$", 1);

    // Fill the file system.
    let filler = spool.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let marker = format!("/tmp/sallyport-unrecorded-{}", std::process::id());
    let out = ssh(
        home.path(),
        &["node1.acme-prod", &format!("touch {marker}")],
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("cannot write its audit log"), "{err}");
    assert!(
        !Path::new(&marker).exists(),
        "the command ran although it could not be recorded"
    );
    // A line typed in the open shell: its Enter cannot be recorded, so it never reaches the
    // node; the engineer is told why and the channel ends.
    let typed = format!("{marker}-interactive");
    tmux(&["send-keys", "-t", &pane, &format!("touch {typed}"), "Enter"]);
    let screen = wait_pane(&pane, "cannot write its audit log", 1);
    assert!(screen.contains("cannot write its audit log"), "{screen}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !Path::new(&typed).exists(),
        "the typed command ran although its Enter could not be recorded"
    );
    tmux(&["kill-session", "-t", &pane]);

    // Room again: activity is recorded and allowed again, the chain intact.
    std::fs::remove_file(&filler).unwrap();
    let out = ssh(home.path(), &["node1.acme-prod", "echo again"]);
    assert_printed(&out, "again", "");
    let cmds = w.wait_audit("kind=command&ticket=SUP-1234", 2).await;
    let texts: Vec<&str> = cmds.iter().filter_map(|c| c.command.as_deref()).collect();
    // The refused line is no command (it never reached the node), even when the channel's end
    // is handled after the spool has room again.
    assert_eq!(texts, ["echo recorded", "echo again"]);
    assert!(!Path::new(&typed).exists(), "the refused line ran later");
    // Asked again while the gateway's last records are still on their way.
    verify_chains(&w.reviewer);
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wait for a child with a generous guard; a hang is a failure, not a timing measurement.
fn wait_guard(
    child: &mut std::process::Child,
    guard: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > guard {
            let _ = child.kill();
            panic!("{what} did not finish within {guard:?}: stalled");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn five_hundred_mb_both_ways_at_once_completes_with_bounded_gateway_memory() {
    let (_w, b, home) = bastion::alice_at_the_edge().await;
    let before = vm_kib(b.gateway.pid(), "VmRSS:");
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 500M /dev/zero | ssh -F {} -o BatchMode=yes node1.acme-prod cat | wc -c",
            home.path().join("ssh_config").display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_guard(&mut child, Duration::from_secs(600), "500 MB both ways");
    let out = child.wait_with_output().unwrap();
    assert!(st.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "524288000");
    let peak = vm_kib(b.gateway.pid(), "VmHWM:");
    let secs = started.elapsed().as_secs_f64();
    println!(
        "500 MB each way at once in {secs:.1}s ({:.0} MB/s each way); gateway RSS {} MiB before, peak {} MiB",
        500.0 / secs,
        before / 1024,
        peak / 1024
    );
    assert!(
        peak < 256 * 1024,
        "gateway peak RSS {} MiB: not bounded",
        peak / 1024
    );
}

#[tokio::test]
async fn a_stalled_session_does_not_slow_another_through_the_same_edge_and_gateway() {
    let (_w, b, home) = bastion::alice_at_the_edge().await;
    let cfg = home.path().join("ssh_config");
    // Session A: the node floods it, and nobody reads its output.
    let mut stalled = Command::new("ssh")
        .arg("-F")
        .arg(&cfg)
        .args(["-o", "BatchMode=yes", "node1.acme-prod", "cat /dev/zero"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        stalled.try_wait().unwrap().is_none(),
        "session A should still be open (stalled)"
    );
    // Session B, through the same edge, tunnel and gateway: 100 MB each way.
    let mut other = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 100M /dev/zero | ssh -F {} -o BatchMode=yes node1.acme-prod cat | wc -c",
            cfg.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let st = wait_guard(
        &mut other,
        Duration::from_secs(180),
        "session B next to a stalled session",
    );
    let out = other.wait_with_output().unwrap();
    println!(
        "session B: 100 MB each way in {:.1}s next to a stalled session",
        started.elapsed().as_secs_f64()
    );
    assert!(st.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "104857600");
    assert!(
        stalled.try_wait().unwrap().is_none(),
        "session A is still open, only stalled"
    );
    let _ = stalled.kill();
    let peak = vm_kib(b.gateway.pid(), "VmHWM:");
    assert!(peak < 256 * 1024, "gateway peak RSS {} MiB", peak / 1024);
}

#[tokio::test]
async fn a_customers_channel_policy_reaches_the_gateway_and_refuses_with_its_own_message() {
    let (w, _b, home) = bastion::alice_at_the_edge().await;
    let work = tempfile::tempdir().unwrap();
    let batch = work.path().join("batch");
    std::fs::write(&batch, "ls /\n").unwrap();
    let sftp = || sftp_batch(home.path(), &batch);
    let first = sftp();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );

    // acme's approver forbids file transfers on acme-prod.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/examples/no-file-transfer.cedar"),
    )
    .unwrap();
    let (s, v) = w
        .acme
        .put(
            "/v1/customers/acme/policies/no-files",
            json!({"body": text}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The gateway picks it up with its configuration (every second in tests).
    let start = Instant::now();
    let refused = loop {
        let out = sftp();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            break err;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sftp still allowed: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        refused.contains("acme does not allow file transfers on acme-prod: no sftp"),
        "{refused}"
    );
    let e = w
        .wait_audit("kind=channel_refused&ticket=SUP-1234", 1)
        .await;
    assert_eq!(field_str(&e[0], "code"), "customer:acme_no_sftp", "{e:#?}");
    assert_eq!(field_str(&e[0], "request"), "subsystem");
    assert_eq!(field_str(&e[0], "subsystem"), "sftp");
    assert_eq!(e[0].engineer.as_deref(), Some("alice"));

    // Classic scp is an exec request: refused with the customer's message, nothing ran.
    let src = work.path().join("f.txt");
    std::fs::write(&src, "payload").unwrap();
    let target = format!("/tmp/sallyport-noscp-{}", std::process::id());
    let out = Command::new("scp")
        .arg("-F")
        .arg(home.path().join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-O"])
        .arg(&src)
        .arg(format!("node1.acme-prod:{target}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no scp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!Path::new(&target).exists(), "scp reached the node");
    let e = w
        .wait_audit("kind=channel_refused&ticket=SUP-1234", 2)
        .await;
    let scp = e
        .iter()
        .find(|e| opt_str(e, "code") == Some("customer:acme_no_scp"))
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert!(
        scp.command.as_deref().unwrap().starts_with("scp "),
        "{scp:?}"
    );

    // Other commands go on; a base rule keeps loader variables off the node, audited.
    let out = Ssh::engineer(home.path())
        .opt("SetEnv=LD_PRELOAD=/tmp/evil.so")
        .args(["node1.acme-prod", "echo still-here"])
        .output();
    assert_printed(&out, "still-here", "");
    let e = w
        .wait_audit("kind=channel_refused&ticket=SUP-1234", 3)
        .await;
    let env = e
        .iter()
        .find(|e| opt_str(e, "code") == Some("environment_not_allowed"))
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert_eq!(field_str(env, "env_name"), "LD_PRELOAD");
    assert!(
        env.field("value").is_none(),
        "values are never logged: {env:?}"
    );

    // The customer lifts the rule: sftp works again.
    let (s, v) = w.acme.delete("/v1/customers/acme/policies/no-files").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let start = Instant::now();
    loop {
        let out = sftp();
        if out.status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sftp still refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The gateway's host certificates and its tunnel certificate are short-lived and renewed: past
/// the first certificates' lifetime engineers still connect (with StrictHostKeyChecking), a
/// session that began before the tunnel was replaced runs to its end, and the replaced tunnel
/// closes once it is idle.
#[tokio::test]
async fn host_and_tunnel_certificates_are_renewed_without_cutting_sessions() {
    let (_w, b, home) = bastion::alice_at_the_edge()
        .gateway("host_cert_secs = 20\ntunnel_cert_secs = 30\n")
        .await;
    let start = Instant::now();
    let out = ssh(home.path(), &["node1.acme-prod", "echo first"]);
    assert_printed(&out, "first", "");
    // A session across the tunnel's renewal (15 s after the gateway started).
    let long = Ssh::engineer(home.path())
        .args(["node1.acme-prod", "sleep 14; echo survived"])
        .spawn();
    // Past the first host certificate's lifetime (20 s): new sessions still get in.
    while start.elapsed() < Duration::from_secs(24) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = ssh(home.path(), &["node1.acme-prod", "echo later"]);
    assert_printed(&out, "later", &b.logs());
    let long = long.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&long.stdout).trim(),
        "survived",
        "{}",
        String::from_utf8_lossy(&long.stderr)
    );
    let log = b.gateway.log_text();
    assert!(log.matches("new host certificate").count() >= 2, "{log}");
    assert!(log.contains("renewing the tunnel's certificate"), "{log}");
    assert!(
        !log.contains("with sessions still open"),
        "a replaced tunnel cut a session: {log}"
    );
}

/// The edge tells a missing tunnel from a gateway that refused the node: an unknown node through
/// a live tunnel is `gateway_refused`, not `no_tunnel`.
#[tokio::test]
async fn an_unknown_node_is_refused_by_the_gateway_not_reported_as_no_tunnel() {
    let (w, _b, home) = bastion::alice_at_the_edge().audited().await;
    let out = ssh(home.path(), &["ghost.acme-prod", "echo in"]);
    assert_ne!(out.status.code(), Some(0));
    // The engineer reads why, not only "connect failed".
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("sallyport: the gateway of cluster acme-prod refused ghost"),
        "{said}"
    );
    let refused = w.wait_audit("kind=edge_refused&ticket=SUP-1234", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("gateway_refused")
                && opt_str(e, "target") == Some("ghost.acme-prod:22")),
        "{refused:#?}"
    );
    assert!(
        !refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("no_tunnel")),
        "{refused:#?}"
    );
}

/// When the node refuses or cannot be reached, the engineer's `ssh` prints the reason the
/// gateway saw, and the audit event (`node_unreachable`) names the same with a code: a node
/// whose sshd does not let the login in (`certificate_refused`, with what to check), and a
/// node that does not answer (`unreachable`).
#[tokio::test]
async fn the_engineer_reads_why_the_node_refused_or_could_not_be_reached() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("/tmp/sp-node-why-{}", std::process::id());
    let _ = std::fs::remove_file(&tag);

    // The node's principals file no longer lists the login: its sshd refuses the certificate.
    let principals = b.node.dir().join("principals").join(LOGIN);
    let listed = std::fs::read_to_string(&principals).unwrap();
    std::fs::write(&principals, "someone-else\n").unwrap();
    let out = ssh(home.path(), &["node1.acme-prod", &format!("touch {tag}")]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(!Path::new(&tag).exists(), "ran on a node that refused");
    assert!(
        said.contains("sallyport: node node1 refused the session certificate for")
            && said.contains("admin node-config"),
        "{said}"
    );
    let ev = w
        .wait_audit("kind=node_unreachable&ticket=SUP-1234", 1)
        .await;
    assert!(
        ev.iter()
            .any(|e| opt_str(e, "code") == Some("certificate_refused")
                && opt_str(e, "reason")
                    .is_some_and(|r| r.contains("refused the session certificate"))),
        "{ev:#?}"
    );
    std::fs::write(&principals, listed).unwrap();

    // The node moves to an address where nothing listens.
    let closed = support::sshd::free_port();
    let (s, v) =
        w.op.patch(
            "/v1/clusters/acme-prod/nodes/node1",
            json!({"address": "127.0.0.1", "port": closed}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    b.restart_gateway();
    let out = ssh(home.path(), &["node1.acme-prod", &format!("touch {tag}")]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("sallyport: the gateway cannot reach node node1"),
        "{said}"
    );
    let ev = w
        .wait_audit("kind=node_unreachable&ticket=SUP-1234", 2)
        .await;
    assert!(
        ev.iter().any(|e| opt_str(e, "code") == Some("unreachable")),
        "{ev:#?}"
    );
    assert!(!Path::new(&tag).exists());
}

/// `admin node-config` prints what a node needs: an sshd set up only from its output (the CA
/// key file and the principals file it lists) lets the gateway in for the approved login; a
/// login that is not a Unix name is refused.
#[tokio::test]
async fn a_node_set_up_from_admin_node_config_lets_the_gateway_in() {
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    let out =
        w.op.cli(&["admin", "node-config", "--cluster", "acme-prod", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    let logins: Vec<&str> = cfg["logins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(logins.contains(&LOGIN), "{cfg:#}");
    let files = cfg["files"].as_object().unwrap();
    let ca = files["/etc/ssh/sallyport/node_ca.pub"].as_str().unwrap();
    let principals = files[&format!("/etc/ssh/sallyport/principals/{LOGIN}")]
        .as_str()
        .unwrap();
    assert!(
        cfg["sshd_config"]
            .as_str()
            .unwrap()
            .contains("AuthorizedPrincipalsFile /etc/ssh/sallyport/principals/%u"),
        "{cfg:#}"
    );
    let script =
        w.op.cli(&["admin", "node-config", "--cluster", "acme-prod"]);
    assert!(script.status.success());
    let script = String::from_utf8_lossy(&script.stdout);
    assert!(
        script.starts_with("#!/bin/sh") && script.contains(ca.trim()),
        "{script}"
    );

    // A second node, set up from that output alone.
    let listed: Vec<&str> = principals.lines().collect();
    let node2 = support::sshd::SshdNode::start(ca.trim(), LOGIN, &listed);
    let (s, v) =
        w.op.post(
            "/v1/clusters/acme-prod/nodes",
            json!({"name": "node2", "address": "127.0.0.1", "port": node2.port(),
                   "host_keys": [node2.host_public_key()]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let home = bastion::alice_home(&w, &b);
    let out = ssh(home.path(), &["node2.acme-prod", "echo on-node2"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("on-node2"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        b.gateway.log_text()
    );

    // Bad input: a login that is no Unix name changes nothing and says why.
    let bad = w.op.cli(&[
        "admin",
        "node-config",
        "--cluster",
        "acme-prod",
        "--login",
        "../root",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a Unix login name"));
}

/// No ordering trap: a broker that knows nothing of its edge (no `edge_address`, no
/// `edge_host_keys`) learns both from the edge itself (its token, `public_address`), and the
/// engineer's next login pins the edge's key and jumps through it — no broker restart, no
/// hand-copied key. Registering is audited; only an edge token may register; a revoked edge's
/// key is handed out no more.
#[tokio::test]
async fn an_edge_registers_its_host_key_and_address_and_logins_pick_them_up() {
    let port = bastion::pick_edge_port();
    let w = World::ldap_with("").await;
    w.approve("acme-prod", "support-l2", &[LOGIN], json!({}))
        .await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
    let token = bastion::edge_token(&w).await;
    let b = bastion::start_with_edge_token_and(
        &w,
        port,
        &token,
        &format!("public_address = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    assert!(
        b.edge
            .wait_log("registered with the broker", Duration::from_secs(20)),
        "{}",
        b.edge.log_text()
    );
    let registered = w.wait_audit("kind=admin_change", 1).await;
    assert!(
        registered
            .iter()
            .any(|e| opt_str(e, "action") == Some("edge_registered")
                && opt_str(e, "target").is_some_and(|t| t.contains(&format!("127.0.0.1:{port}")))),
        "{registered:#?}"
    );

    // The engineer's login alone is enough: no trust_edge, no broker restart.
    let home = tempfile::tempdir().unwrap();
    let issued = login(&w, home.path(), "alice", "SUP-1234");
    assert_eq!(
        issued.edge,
        Some(format!("127.0.0.1:{port}")),
        "{issued:#?}"
    );
    let out = ssh(
        home.path(),
        &["node1.acme-prod", "echo through-registered-edge"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("through-registered-edge"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only an edge registers.
    let key = b.edge_host_key.clone();
    let (s, v) = w
        .acme
        .post(
            "/v1/edge/self",
            json!({"host_key": key, "address": "evil.example:22"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let refused = w.wait_audit("kind=refused", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "action") == Some("register_edge")
                && opt_str(e, "by") == Some("approver:acme:acme-admin")),
        "{refused:#?}"
    );
    let edge_api = w.anon.with(&token);
    let (s, v) = edge_api
        .post("/v1/edge/self", json!({"host_key": "not a key"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // The edge's token revoked: its key and address are handed out no more.
    let (s, tokens) = w.op.get_as::<Tokens>("/v1/tokens").await;
    assert_eq!(s, StatusCode::OK);
    let id = tokens
        .tokens
        .iter()
        .find(|t| t.role == "edge")
        .map(|t| t.id.clone())
        .unwrap();
    let (s, v) = w.op.delete(&format!("/v1/tokens/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let home2 = tempfile::tempdir().unwrap();
    let issued: Issued = read_as(
        "login --json",
        w.login_cli(home2.path(), "alice", "SUP-1234", &w.code("alice", 1)),
    );
    assert!(issued.edge.is_none(), "{issued:#?}");
    assert!(issued.edge_host_keys.is_empty(), "{issued:#?}");
}

/// The operator makes a second gateway with one command: `admin gateway enroll` writes a
/// gateway.toml (0600, it holds the join token) that starts as is and brings its tunnel up;
/// `admin gateway list` shows both; `admin gateway revoke` revokes one, and its join token
/// cannot be used again.
#[tokio::test]
async fn admin_gateway_enroll_writes_a_config_that_starts_as_is() {
    use std::os::unix::fs::PermissionsExt;
    let (w, port) = world_with_edge().await;
    let b = bastion::start(&w, port).await;
    // The edge's tunnel address, as the first gateway's config names it.
    let first = std::fs::read_to_string(&b.gateway_config).unwrap();
    let address = first
        .lines()
        .find_map(|l| l.strip_prefix("address = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("edge_host_key.pub");
    std::fs::write(&key_file, format!("{}\n", b.edge_host_key)).unwrap();
    let config = dir.path().join("gateway.toml");
    let data = dir.path().join("data");
    // `admin gateway enroll` of gateway `name` of acme-prod to the edge, with `key` and `more`.
    let enroll = |name: &str, key: &str, more: &[&str]| {
        let mut args = vec!["admin", "gateway", "enroll", "--cluster", "acme-prod"];
        args.extend(["--name", name, "--edge", &address, "--edge-host-key", key]);
        args.extend_from_slice(more);
        w.op.cli(&args)
    };
    let (key, config_s) = (key_file.to_str().unwrap(), config.to_str().unwrap());
    let out = enroll(
        "gw2",
        key,
        &["--data-dir", data.to_str().unwrap(), "--out", config_s],
    );
    assert!(out.status.success(), "{out:?}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("join_token = \"spg") || text.contains("join_token = "),
        "{text}"
    );
    // Written once: the same --out again is refused, the file unchanged.
    let again = enroll("gw3", key, &["--out", config_s]);
    assert!(!again.status.success(), "{again:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    // A key that is not one is refused before anything is made.
    let bad = enroll("gw4", "ssh-ed25519 not-a-key", &[]);
    assert!(!bad.status.success(), "{bad:?}");
    let gw = bastion::Proc::start(&["gateway"], &config, dir.path().join("gateway.log"));
    assert!(
        gw.wait_log("tunnel up", Duration::from_secs(30)),
        "{}",
        gw.log_text()
    );
    let out =
        w.op.cli(&["admin", "gateway", "list", "--cluster", "acme-prod"]);
    assert!(out.status.success(), "{out:?}");
    let list: Vec<Gateway> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list.iter().map(|g| g.name.as_str()).collect();
    assert!(names.contains(&"gw1") && names.contains(&"gw2"), "{list:?}");
    assert!(
        !names.contains(&"gw3") && !names.contains(&"gw4"),
        "{list:?}"
    );
    let id = list.iter().find(|g| g.name == "gw2").unwrap().id.clone();
    let out = w.op.cli(&["admin", "gateway", "revoke", &id]);
    assert!(out.status.success(), "{out:?}");
    let revoked: Gateway = serde_json::from_slice(&out.stdout).unwrap();
    assert!(revoked.revoked_at.is_some(), "{revoked:?}");
}
