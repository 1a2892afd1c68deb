//! The `sallyport` command line end to end, as engineers, approvers, reviewers and scripts use
//! it: HTTPS with a pinned broker CA (made with the real `openssl`), refusal of plain HTTP off
//! loopback, ssh-agent loading (real `ssh-agent`/`ssh-add`), just-in-time approval while `login`
//! waits, local approver/reviewer accounts, `--help`, and `sallyport demo` driven through its
//! `demo.env`. Runs against real slapd and the SQLite or PostgreSQL store
//! (SALLYPORT_TEST_STORE=postgres), through `tests/infra/run-tests.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sallyport_api::approvals::Approval;
use sallyport_api::audit::AuditEvents;
use sallyport_api::login::LoginResponse;
use sallyport_api::requests::{AccessRequest, IssuePending, RequestStatus};
use sallyport_broker::audit::AuditEvent;
use serde_json::{Value, json};
use support::broker::*;

fn ldap() -> Dir {
    Dir::Ldap {
        group_mode: "memberof",
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process that is killed if the test ends early (a panic), so nothing is left behind.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }

    /// Wait up to `timeout` for the process to exit.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(self.child(), timeout)
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Run `cmd` with `input` on its standard input (or none), killing it after `timeout`.
fn run_timed(cmd: &mut Command, input: Option<&str>, timeout: Duration) -> Ran {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    cmd.stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let start = Instant::now();
    let mut child = Reaped(Some(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}")),
    ));
    if let Some(i) = input {
        // The command may exit before reading (a refusal): a broken pipe is fine.
        let _ = child.child().stdin.take().unwrap().write_all(i.as_bytes());
    }
    let status = child.wait(timeout);
    let took = start.elapsed();
    let stdout = std::fs::read_to_string(out.path()).unwrap();
    let stderr = std::fs::read_to_string(err.path()).unwrap();
    let Some(status) = status else {
        panic!("{cmd:?} did not finish within {timeout:?}\nstdout: {stdout}\nstderr: {stderr}");
    };
    child.0 = None;
    Ran {
        status,
        stdout,
        stderr,
        took,
    }
}

/// `sallyport login` as a script runs it, with nothing of the caller's environment that could
/// change the outcome (agent, pinned CA, extra trusted roots).
fn login_cmd(broker: &str, user: &str, code: &str, ticket: &str, home: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "login",
        "--broker",
        broker,
        "--user",
        user,
        "--password-stdin",
        "--totp",
        code,
        "--ticket",
        ticket,
    ])
    .env("SALLYPORT_HOME", home)
    .env_remove("SSH_AUTH_SOCK")
    .env_remove("SALLYPORT_BROKER")
    .env_remove("SALLYPORT_BROKER_CA")
    .env_remove("SALLYPORT_TOKEN")
    .env_remove("SSL_CERT_FILE")
    .env_remove("SSL_CERT_DIR");
    c
}

fn cert_file(home: &Path, cluster: &str) -> PathBuf {
    home.join(format!("{cluster}-cert.pub"))
}

/// The base64 blob of an OpenSSH public key or certificate line.
fn blob(line: &str) -> String {
    line.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// A throwaway CA and server certificate, made with the openssl command line

struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA that signed the broker's certificate.
    ca: PathBuf,
    /// Another CA, which signed nothing the broker uses.
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("the openssl command line is needed for the HTTPS tests (Debian: apt-get install openssl): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    fn new() -> TestCa {
        let version = Command::new("openssl").arg("version").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "`openssl version` does not work: the openssl command line is needed for the HTTPS tests (Debian: apt-get install openssl): {version:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, cn) in [("ca", "sallyport test CA"), ("other-ca", "some other CA")] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        TestCa {
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            _dir: dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. HTTPS, pinning, and plain HTTP only on loopback

/// The edge and the gateway reach an HTTPS broker through the same client: with `broker_ca`
/// pinned they trust only a broker certificate that CA signed (another CA, or none pinned and
/// the CA in no system store, is refused before anything is sent).
#[tokio::test]
async fn the_data_plane_trusts_an_https_broker_only_through_its_pinned_ca() {
    use sallyport_bastion::broker_client::BrokerClient;
    let ca = TestCa::new();
    let w = World::start_tls(ldap(), &ca.ca, &ca.cert, &ca.key).await;
    let pinned = BrokerClient::new(&w.broker.url, Some(&ca.ca), None).unwrap();
    let v = pinned.get_json("/v1/ca").await.unwrap();
    assert!(v.to_string().contains("ssh-ed25519"), "{v}");
    for (label, pin) in [
        ("another CA", Some(ca.other_ca.as_path())),
        ("no pin", None),
    ] {
        let client = BrokerClient::new(&w.broker.url, pin, None).unwrap();
        let e = client.get_json("/v1/ca").await.unwrap_err();
        assert!(
            format!("{e:#}").contains("UnknownIssuer")
                || format!("{e:?}").contains("UnknownIssuer"),
            "{label}: {e:#}"
        );
    }
}

#[tokio::test]
async fn https_broker_is_trusted_only_through_the_pinned_ca() {
    let ca = TestCa::new();
    let w = World::start_tls(ldap(), &ca.ca, &ca.cert, &ca.key).await;
    assert!(
        w.broker.url.starts_with("https://127.0.0.1:"),
        "{}",
        w.broker.url
    );
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("SUP-1", "acme-prod", "alice", "open").await;
    let code = w.code("alice", 0);
    let home = tempfile::tempdir().unwrap();

    // The test CA is in no system store: without a pin, and with another CA pinned, the
    // broker's certificate is not trusted, and the password never leaves the laptop.
    for (label, pin) in [
        ("no --broker-ca", None),
        ("another CA pinned", Some(&ca.other_ca)),
    ] {
        let mut cmd = login_cmd(&w.broker.url, "alice", &code, "SUP-1", home.path());
        cmd.arg("--json");
        if let Some(p) = pin {
            cmd.arg("--broker-ca").arg(p);
        }
        let r = run_timed(&mut cmd, Some("alice-pw\n"), wait(60));
        assert!(
            !r.status.success(),
            "{label}: login succeeded against an untrusted certificate: {}",
            r.stdout
        );
        assert!(
            r.stderr.contains("certificate this machine does not trust")
                && r.stderr.contains("--broker-ca")
                && r.stderr.contains("UnknownIssuer"),
            "{label}: the error should say the broker's certificate is not trusted and how to pin its CA: {}",
            r.stderr
        );
        assert!(r.stdout.trim().is_empty(), "{label}: {}", r.stdout);
        assert!(
            !cert_file(home.path(), "acme-prod").exists(),
            "{label}: a certificate was written"
        );
    }
    assert!(
        w.events("kind=login_succeeded").await.is_empty()
            && w.events("kind=login_failed").await.is_empty(),
        "a login reached the broker over an untrusted connection"
    );

    // With the broker's CA pinned: a certificate.
    let mut cmd = login_cmd(&w.broker.url, "alice", &code, "SUP-1", home.path());
    cmd.arg("--json").arg("--broker-ca").arg(&ca.ca);
    let r = run_timed(&mut cmd, Some("alice-pw\n"), wait(60));
    assert!(r.status.success(), "pinned login failed: {}", r.stderr);
    let issued: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(issued["engineer"], "alice");
    assert_eq!(issued["cluster"], "acme-prod");
    assert_eq!(issued["logins"], json!(["ubuntu"]));
    let written = std::fs::read_to_string(cert_file(home.path(), "acme-prod")).unwrap();
    assert_eq!(
        written.trim(),
        issued["certificate"].as_str().unwrap().trim()
    );
    assert_eq!(
        issued["certificate_file"].as_str().unwrap(),
        cert_file(home.path(), "acme-prod").display().to_string()
    );
    assert_eq!(w.events("kind=login_succeeded").await.len(), 1);

    // The reviewer's commands pin the CA too (here through SALLYPORT_BROKER_CA).
    let reviewer = w.reviewer.token.clone().unwrap();
    let verify = |pin: Option<&Path>| {
        let mut c = Command::new(BIN);
        c.args(["audit", "verify"])
            .env("SALLYPORT_BROKER", &w.broker.url)
            .env("SALLYPORT_TOKEN", &reviewer)
            .env_remove("SALLYPORT_BROKER_CA")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        if let Some(p) = pin {
            c.env("SALLYPORT_BROKER_CA", p);
        }
        run_timed(&mut c, None, wait(60))
    };
    let ok = verify(Some(&ca.ca));
    assert!(ok.status.success(), "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("chain intact"), "{}", ok.stdout);
    let refused = verify(Some(&ca.other_ca));
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(refused.stderr.contains("--broker-ca"), "{}", refused.stderr);
}

#[test]
fn login_refuses_plain_http_to_a_remote_broker_before_connecting() {
    // 192.0.2.1 is TEST-NET-1: nothing may be sent there; the refusal comes first. With no
    // password on stdin, the refusal also comes before any secret is asked for.
    for input in [Some("alice-pw\n"), None] {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = login_cmd(
            "http://192.0.2.1:1",
            "alice",
            "123456",
            "SUP-1",
            home.path(),
        );
        let r = run_timed(&mut cmd, input, wait(30));
        assert!(!r.status.success(), "{}", r.stdout);
        assert!(
            r.took < Duration::from_secs(5),
            "the refusal took {:?}: did it try to connect?",
            r.took
        );
        assert!(
            r.stderr.contains("https://") && r.stderr.contains("refusing plain http://"),
            "stdin {input:?}: {}",
            r.stderr
        );
        assert!(
            std::fs::read_dir(home.path()).unwrap().next().is_none(),
            "files were written"
        );
    }
}

#[tokio::test]
async fn broker_refuses_plain_http_on_a_non_loopback_address() {
    let tmp = tempfile::tempdir().unwrap();
    let store = fresh_store(tmp.path()).await;
    let token = sallyport_broker::auth::new_api_token();
    let hash = sallyport_broker::auth::token_hash(&token);
    let config = write_config(tmp.path(), &store, &ldap(), &hash, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let open = text.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    assert_ne!(text, open);
    std::fs::write(&config, open).unwrap();

    let r = run_timed(
        Command::new(BIN).args(["broker", "--config"]).arg(&config),
        None,
        wait(30),
    );
    assert!(
        !r.status.success(),
        "the broker served plain HTTP on 0.0.0.0"
    );
    assert!(
        r.stderr.contains("refusing plain HTTP") && r.stderr.contains("[tls]"),
        "{}",
        r.stderr
    );
    // It never claimed to be listening (a supervisor waiting for that line would be misled).
    assert!(!r.stdout.contains("listening on"), "{}", r.stdout);
}

// ---------------------------------------------------------------------------------------------
// 2. ssh-agent

/// An `ssh-agent -s` of this test, killed at the end.
struct Agent {
    sock: String,
    pid: String,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-s")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .output()
            .expect("running ssh-agent");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let var = |name: &str| {
            text.split(';')
                .find_map(|part| part.trim().strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in ssh-agent's output: {text}"))
                .to_string()
        };
        let agent = Agent {
            sock: var("SSH_AUTH_SOCK"),
            pid: var("SSH_AGENT_PID"),
            _dir: dir,
        };
        assert_eq!(agent.sock, sock.display().to_string());
        assert!(agent.pid.parse::<u32>().is_ok(), "{}", agent.pid);
        agent
    }

    fn ssh_add(&self, arg: &str) -> (bool, String) {
        let out = Command::new("ssh-add")
            .arg(arg)
            .env("SSH_AUTH_SOCK", &self.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

#[tokio::test]
async fn login_loads_key_and_certificate_into_ssh_agent() {
    let w = World::start(ldap()).await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("SUP-7", "acme-prod", "alice", "open").await;
    let agent = Agent::start();
    let (has, listed) = agent.ssh_add("-l");
    assert!(!has, "a fresh agent holds keys: {listed}");

    let home = tempfile::tempdir().unwrap();
    let mut cmd = login_cmd(
        &w.broker.url,
        "alice",
        &w.code("alice", 0),
        "SUP-7",
        home.path(),
    );
    cmd.arg("--json").env("SSH_AUTH_SOCK", &agent.sock);
    let r = run_timed(&mut cmd, Some("alice-pw\n"), wait(60));
    assert!(r.status.success(), "{}", r.stderr);
    let issued: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(issued["agent"], json!(true), "{issued}");

    // The agent lists the login's key, by fingerprint...
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(home.path().join("acme-prod.pub"))
        .output()
        .unwrap();
    assert!(fp.status.success());
    let fingerprint = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let (ok, listed) = agent.ssh_add("-l");
    assert!(ok, "the agent holds no keys after login");
    assert!(
        listed.contains(&fingerprint),
        "{fingerprint} not in {listed}"
    );

    // ...and holds the certificate itself, exactly the one written to disk.
    let (ok, lines) = agent.ssh_add("-L");
    assert!(ok);
    let cert_on_disk = std::fs::read_to_string(cert_file(home.path(), "acme-prod")).unwrap();
    let cert_line = lines
        .lines()
        .find(|l| l.starts_with("ssh-ed25519-cert-v01@openssh.com "))
        .unwrap_or_else(|| panic!("no certificate in the agent: {lines}"));
    assert_eq!(blob(cert_line), blob(&cert_on_disk));
    let public = std::fs::read_to_string(home.path().join("acme-prod.pub")).unwrap();
    assert!(
        lines.lines().any(|l| blob(l) == blob(&public)),
        "the plain key is not in the agent: {lines}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Just in time, through the CLI

/// Wait for `engineer`'s pending access request (as acme's approver) and for login's progress
/// line; returns the request.
async fn pending_request(w: &World, engineer: &str, stderr: &Path) -> AccessRequest {
    let deadline = Instant::now() + wait(60);
    loop {
        let pending: Vec<AccessRequest> = w.acme.get_ok("/v1/access-requests?status=pending").await;
        let found = pending.into_iter().find(|r| r.engineer == engineer);
        let progress = std::fs::read_to_string(stderr).unwrap_or_default();
        if let Some(r) = found
            && progress.contains("waiting for a customer approver")
        {
            assert!(
                progress.contains(&r.id),
                "the progress line should name the request: {progress}"
            );
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no pending request of {engineer} with login waiting; stderr: {progress}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// acme's approver decides access request `id` with `decision`; the request after it.
async fn decide(w: &World, id: &str, decision: Value) -> AccessRequest {
    let (s, v) = w
        .acme
        .post_as::<AccessRequest>(&format!("/v1/access-requests/{id}/decision"), decision)
        .await;
    assert_eq!(s, StatusCode::OK, "{v:?}");
    v
}

/// The certificates issued on `ticket`: (the access request it used, its logins).
async fn issued_on(w: &World, ticket: &str) -> Vec<(Option<String>, Vec<String>)> {
    w.picked(
        &format!("kind=certificate_issued&ticket={ticket}"),
        |e| match e {
            AuditEvent::CertificateIssued {
                request, logins, ..
            } => Some((request, logins)),
            _ => None,
        },
    )
    .await
}

/// A CLI command's `--json` output, read as `T` (it must have succeeded).
fn json_of<T: serde::de::DeserializeOwned>(out: &std::process::Output) -> T {
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// `sallyport login` in the background (human output), stdout and stderr to files in `logs`.
fn login_in_background(w: &World, user: &str, ticket: &str, home: &Path, logs: &Path) -> Reaped {
    login_in_background_with(w, user, ticket, home, logs, &[])
}

fn login_in_background_with(
    w: &World,
    user: &str,
    ticket: &str,
    home: &Path,
    logs: &Path,
    extra: &[&str],
) -> Reaped {
    let mut cmd = login_cmd(&w.broker.url, user, &w.code(user, 0), ticket, home);
    cmd.args(["--wait", "90s"])
        .args(extra)
        .stdout(std::fs::File::create(logs.join("stdout")).unwrap())
        .stderr(std::fs::File::create(logs.join("stderr")).unwrap());
    Reaped(Some(spawn_fed(&mut cmd, &format!("{user}-pw\n"))))
}

/// The approver approves less than `sallyport login` asked for: login takes the certificate on
/// the approved terms (not a new request), says so, and the certificate carries only them.
#[tokio::test]
async fn just_in_time_login_takes_the_narrowed_terms_the_approver_approved() {
    let w = World::start(ldap()).await;
    w.jit_tickets_as(&["ubuntu", "deploy"], &[("SUP-12", "alice")])
        .await;
    let home = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut child = login_in_background_with(
        &w,
        "alice",
        "SUP-12",
        home.path(),
        logs.path(),
        &["--login", "ubuntu", "--login", "deploy", "--ttl", "1h"],
    );
    let rq = pending_request(&w, "alice", &logs.path().join("stderr")).await;
    let id = rq.id.as_str();
    decide(
        &w,
        id,
        json!({"approve": true, "logins": ["ubuntu"], "ttl_secs": 900}),
    )
    .await;
    let status = child
        .wait(wait(60))
        .expect("login did not finish after the approval");
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the approver narrowed access request {id}: logins ubuntu, at most 15m"
        )),
        "{stderr}"
    );
    let issued = issued_on(&w, "SUP-12").await;
    assert_eq!(issued.len(), 1, "{issued:#?}");
    assert_eq!(issued[0].0.as_deref(), Some(id));
    assert_eq!(issued[0].1, ["ubuntu"], "{issued:#?}");
    let cert = std::fs::read_to_string(cert_file(home.path(), "acme-prod")).unwrap();
    let cert = russh::keys::Certificate::from_openssh(&cert).unwrap();
    let principals: Vec<&str> = cert.valid_principals().iter().map(String::as_str).collect();
    assert_eq!(principals, vec!["acme-prod:ubuntu"]);
    assert!(cert.valid_before() - cert.valid_after() <= 900 + 60);
}

#[tokio::test]
async fn just_in_time_login_waits_for_the_customer_approver() {
    let w = World::start(ldap()).await;
    w.jit_tickets(&[("SUP-10", "alice"), ("SUP-11", "dave")])
        .await;

    // Approved while login waits.
    let home = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut child = login_in_background(&w, "alice", "SUP-10", home.path(), logs.path());
    let rq = pending_request(&w, "alice", &logs.path().join("stderr")).await;
    let id = rq.id.as_str();
    assert_eq!(rq.ticket, "SUP-10");
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "login did not wait"
    );
    assert!(!cert_file(home.path(), "acme-prod").exists());
    let v = decide(&w, id, json!({"approve": true})).await;
    assert_eq!(v.status, RequestStatus::Approved);
    let status = child
        .wait(wait(60))
        .expect("login did not finish after the approval");
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    let stdout = std::fs::read_to_string(logs.path().join("stdout")).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for a customer approver"),
        "{stderr}"
    );
    assert!(
        stdout.contains("certificate for alice on acme-prod (ticket SUP-10)"),
        "{stdout}"
    );
    assert!(cert_file(home.path(), "acme-prod").exists());
    let issued = issued_on(&w, "SUP-10").await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].0.as_deref(), Some(id));

    // Denied while login waits: no certificate, and the engineer reads why.
    let home = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut child = login_in_background(&w, "dave", "SUP-11", home.path(), logs.path());
    let rq = pending_request(&w, "dave", &logs.path().join("stderr")).await;
    let v = decide(
        &w,
        &rq.id,
        json!({"approve": false, "reason": "change freeze until Monday"}),
    )
    .await;
    assert_eq!(v.status, RequestStatus::Denied);
    let status = child
        .wait(wait(60))
        .expect("login did not finish after the denial");
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    assert!(
        !status.success(),
        "login succeeded after a denial: {stderr}"
    );
    assert!(
        stderr.contains("a customer approver denied your access request"),
        "{stderr}"
    );
    assert!(stderr.contains("change freeze until Monday"), "{stderr}");
    assert!(!cert_file(home.path(), "acme-prod").exists());
    assert!(issued_on(&w, "SUP-11").await.is_empty());
    let denied = w
        .picked("kind=certificate_denied&ticket=SUP-11", |e| match e {
            AuditEvent::CertificateDenied { reasons, .. } => Some(reasons),
            _ => None,
        })
        .await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0][0].code, "request_denied");
}

// ---------------------------------------------------------------------------------------------
// 4. Local approver and reviewer accounts (argon2 password + TOTP)

async fn account_login(w: &World, user: &str, password: &str, code: &str) -> (StatusCode, Value) {
    w.anon
        .post(
            "/v1/accounts/login",
            json!({"user": user, "password": password, "totp": code}),
        )
        .await
}

fn account_code(secret: &str, offset: i64) -> String {
    sallyport_broker::totp::code(secret, (now() as i64 + offset * 30) as u64).unwrap()
}

/// A new account made by the operator; returns its TOTP secret.
async fn new_account(
    w: &World,
    username: &str,
    role: &str,
    customer: Option<&str>,
    password: &str,
) -> String {
    let (s, v) =
        w.op.post(
            "/v1/accounts",
            json!({"username": username, "role": role, "customer": customer, "password": password}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["totp_secret"].as_str().unwrap().to_string()
}

/// acme's approver account acme-boss (password `a-long-password-1`); its TOTP secret.
async fn new_boss(w: &World) -> String {
    new_account(
        w,
        "acme-boss",
        "approver",
        Some("acme"),
        "a-long-password-1",
    )
    .await
}

/// An account logged in: what the login answered, and a caller with its token.
async fn account_session(
    w: &World,
    user: &str,
    password: &str,
    code: &str,
) -> (LoginResponse, Api) {
    let (s, v) = account_login(w, user, password, code).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v: LoginResponse = read_as("an account login", v);
    let api = w.anon.with(&v.token);
    (v, api)
}

/// The `account_login_failed` events as (account, code), in the order search gives them.
async fn account_failures(w: &World) -> Vec<(String, String)> {
    w.picked("kind=account_login_failed", |e| match e {
        AuditEvent::AccountLoginFailed { account, code, .. } => Some((account, code)),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn approver_and_reviewer_accounts_log_in_with_password_and_totp() {
    let w = World::start(ldap()).await;
    let secret = new_boss(&w).await;
    assert!(!secret.is_empty());
    // Only the operator makes accounts.
    let (s, _) = w
        .acme
        .post(
            "/v1/accounts",
            json!({"username": "sneaky", "role": "approver", "customer": "acme", "password": "a-long-password-2"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let code = account_code(&secret, 0);
    let (v, boss) = account_session(&w, "acme-boss", "a-long-password-1", &code).await;
    assert_eq!(v.role, "approver");
    assert_eq!(v.customer.as_deref(), Some("acme"));

    // The same code a second time is refused, even with the right password.
    let (s, v) = account_login(&w, "acme-boss", "a-long-password-1", &code).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(error_of(&v).code, "login_failed");
    let failed = account_failures(&w).await;
    assert_eq!(failed.last().unwrap().1, "totp_replayed", "{failed:?}");

    // The session acts as acme's approver: its own cluster yes, another customer's no.
    let approval = |cluster: &str| {
        json!({"cluster": cluster, "group": "support-l2", "logins": ["ubuntu"],
               "max_session_secs": 3600, "valid_until": now() + 86_400})
    };
    let (s, v) = boss.post("/v1/approvals", approval("acme-prod")).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = boss.post("/v1/approvals", approval("globex-prod")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let refused = w.audit("kind=refused").await;
    assert!(
        refused
            .iter()
            .any(|e| e.cluster.as_deref() == Some("globex-prod")
                && Value::Object(e.to_map()).to_string().contains("acme-boss")),
        "{refused:?}"
    );
    // An approver reads the audit log of its own customer's clusters only.
    let v: AuditEvents = boss.get_ok("/v1/audit/events?limit=1000").await;
    let events = &v.events;
    assert!(events.iter().any(|e| e.kind == "approval_saved"), "{v:?}");
    assert!(
        events
            .iter()
            .all(|e| matches!(e.cluster.as_deref(), Some("acme-prod" | "acme-dev"))),
        "an approver read another customer's events: {v:?}"
    );

    // A wrong password: 401 and an audit event naming the account.
    let before = account_failures(&w).await.len();
    let (s, v) = account_login(
        &w,
        "acme-boss",
        "not-the-password",
        &account_code(&secret, 1),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let failed = account_failures(&w).await;
    assert_eq!(failed.len(), before + 1);
    let last = failed.last().unwrap();
    assert_eq!(last.0, "acme-boss");
    assert_eq!(last.1, "bad_credentials");
    // An engineer's login endpoint knows nothing of accounts.
    let (s, _) = w
        .login("acme-boss", "a-long-password-1", &account_code(&secret, 1))
        .await;
    assert_ne!(s, StatusCode::OK);

    // A reviewer account reads the audit log and approves nothing.
    let rsecret = new_account(&w, "sec-review", "reviewer", None, "another-long-pw-2").await;
    let (v, reviewer) = account_session(
        &w,
        "sec-review",
        "another-long-pw-2",
        &account_code(&rsecret, 0),
    )
    .await;
    assert_eq!(v.role, "reviewer");
    let v: AuditEvents = reviewer
        .get_ok("/v1/audit/events?kind=account_login_succeeded")
        .await;
    let accounts: Vec<&str> = v.events.iter().map(|e| field_str(e, "account")).collect();
    assert!(
        accounts.contains(&"acme-boss") && accounts.contains(&"sec-review"),
        "{v:?}"
    );
    let (s, v) = reviewer.post("/v1/approvals", approval("acme-prod")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

// ---------------------------------------------------------------------------------------------
// 5. Help and usage errors

#[test]
fn help_lists_the_subcommands_and_usage_errors_exit_2() {
    let r = run_timed(Command::new(BIN).arg("--help"), None, wait(30));
    assert!(r.status.success(), "{}", r.stderr);
    for sub in ["login", "status", "broker", "audit", "admin", "demo"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(sub)),
            "{sub} is not listed:\n{}",
            r.stdout
        );
        let h = run_timed(Command::new(BIN).args([sub, "--help"]), None, wait(30));
        assert!(h.status.success(), "{sub} --help: {}", h.stderr);
        assert!(h.stdout.contains("Usage:"), "{sub} --help: {}", h.stdout);
    }
    let h = run_timed(Command::new(BIN).args(["login", "--help"]), None, wait(30));
    for flag in [
        "--broker",
        "--user",
        "--password-stdin",
        "--totp",
        "--ticket",
        "--cluster",
        "--broker-ca",
        "--json",
    ] {
        assert!(h.stdout.contains(flag), "login --help lacks {flag}");
    }

    // --ticket missing: a usage error (2), naming the flag, and nothing is attempted.
    let home = tempfile::tempdir().unwrap();
    let r = run_timed(
        Command::new(BIN)
            .args([
                "login",
                "--broker",
                "http://127.0.0.1:1",
                "--user",
                "alice",
                "--password-stdin",
            ])
            .env("SALLYPORT_HOME", home.path()),
        Some("alice-pw\n"),
        wait(30),
    );
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("--ticket"), "{}", r.stderr);
    let r = run_timed(Command::new(BIN).arg("no-such-command"), None, wait(30));
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 6. The demo, driven through demo.env

/// `KEY=value` lines, values possibly in single quotes (`'\''` for a quote).
fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l:?}"));
            let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(q) => q.replace("'\\''", "'"),
                None => v.to_string(),
            };
            (k.to_string(), v)
        })
        .collect()
}

#[test]
fn demo_runs_a_system_that_demo_env_drives_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut demo = Reaped(Some(
        Command::new(BIN)
            .args(["demo", "--dir"])
            .arg(&dir)
            .env_remove("SALLYPORT_BROKER")
            .env_remove("SALLYPORT_TOKEN")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(tmp.path().join("demo.out")).unwrap())
            .stderr(std::fs::File::create(tmp.path().join("demo.err")).unwrap())
            .spawn()
            .unwrap(),
    ));
    let env_file = dir.join("demo.env");
    let deadline = Instant::now() + wait(30);
    while !env_file.exists() {
        if let Some(s) = demo.child().try_wait().unwrap() {
            panic!(
                "the demo exited ({s}): {}",
                std::fs::read_to_string(tmp.path().join("demo.err")).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no demo.env after 30 s: {}",
            std::fs::read_to_string(tmp.path().join("demo.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let vars = parse_env(&std::fs::read_to_string(&env_file).unwrap());
    let get = |k: &str| {
        vars.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("demo.env has no {k}: {vars:?}"))
    };
    for k in [
        "SALLYPORT_BROKER",
        "DEMO_ENGINEER",
        "DEMO_PASSWORD",
        "DEMO_TOTP_SECRET",
        "DEMO_TICKET",
        "DEMO_CLUSTER",
        "DEMO_NODE",
        "DEMO_LOGIN",
        "DEMO_REVIEWER",
        "DEMO_REVIEWER_PASSWORD",
        "DEMO_REVIEWER_TOTP_SECRET",
        "DEMO_APPROVER",
        "DEMO_APPROVER_PASSWORD",
        "DEMO_APPROVER_TOTP_SECRET",
        "DEMO_OPERATOR_TOKEN",
        "DEMO_REVIEWER_TOKEN",
    ] {
        assert!(!get(k).is_empty(), "{k} is empty in demo.env");
    }
    let broker = get("SALLYPORT_BROKER");
    let addr: std::net::SocketAddr = broker
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{broker}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback(), "{broker}");
    assert!(
        get("DEMO_NODE").ends_with(&format!(".{}", get("DEMO_CLUSTER"))),
        "{vars:?}"
    );

    // The printed login flow: the code from `sallyport totp`, the password on stdin.
    let totp = run_timed(
        Command::new(BIN).args(["totp", "--secret", &get("DEMO_TOTP_SECRET")]),
        None,
        wait(30),
    );
    assert!(totp.status.success(), "{}", totp.stderr);
    let code = totp.stdout.trim().to_string();
    assert!(
        code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()),
        "{code:?}"
    );
    let home = dir.join("home");
    let mut login = Command::new(BIN);
    login
        .args([
            "login",
            "--user",
            &get("DEMO_ENGINEER"),
            "--password-stdin",
            "--totp",
            &code,
            "--ticket",
            &get("DEMO_TICKET"),
        ])
        .env("SALLYPORT_BROKER", &broker)
        .env("SALLYPORT_HOME", &home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SALLYPORT_BROKER_CA");
    let r = run_timed(
        &mut login,
        Some(&format!("{}\n", get("DEMO_PASSWORD"))),
        wait(60),
    );
    assert!(r.status.success(), "demo login failed: {}", r.stderr);
    let cert = cert_file(&home, &get("DEMO_CLUSTER"));
    assert!(cert.exists(), "no {}", cert.display());
    let shown = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&format!("{}:{}", get("DEMO_CLUSTER"), get("DEMO_LOGIN"))),
        "{shown}"
    );

    // A reviewer checks the log with the demo's token.
    let r = run_timed(
        Command::new(BIN)
            .args(["audit", "verify"])
            .env("SALLYPORT_BROKER", &broker)
            .env("SALLYPORT_TOKEN", get("DEMO_REVIEWER_TOKEN"))
            .env_remove("SALLYPORT_BROKER_CA"),
        None,
        wait(60),
    );
    assert!(r.status.success(), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("chain intact"), "{}", r.stdout);
    let r = run_timed(
        Command::new(BIN)
            .args(["audit", "search", "--json", "--kind", "certificate_issued"])
            .env("SALLYPORT_BROKER", &broker)
            .env("SALLYPORT_TOKEN", get("DEMO_REVIEWER_TOKEN")),
        None,
        wait(60),
    );
    assert!(r.status.success(), "{}", r.stderr);
    let issued: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(issued.len(), 1, "{}", r.stdout);
    assert_eq!(issued[0]["engineer"], json!(get("DEMO_ENGINEER")));
    assert_eq!(issued[0]["ticket"], json!(get("DEMO_TICKET")));

    // SIGTERM stops it, and its broker with it.
    let pid = demo.child().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = demo
        .wait(wait(5))
        .expect("the demo did not stop within 5 s of SIGTERM");
    demo.0 = None;
    assert!(
        status.success(),
        "the demo exited with {status}: {}",
        std::fs::read_to_string(tmp.path().join("demo.err")).unwrap_or_default()
    );
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err(),
        "the demo's broker still accepts connections on {addr}"
    );
}

#[tokio::test]
async fn a_disabled_engineer_or_account_cannot_log_in_until_enabled_and_loses_its_sessions() {
    let w = World::start(ldap()).await;
    w.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
        .await;
    w.ticket("SUP-7", "acme-prod", "alice", "open").await;
    let admin = |args: &[&str]| {
        let out = w.op.cli(&[&["admin"][..], args].concat());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // An engineer: a session from before, then disabled.
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", -1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let before = w.anon.with(&read_as::<LoginResponse>("a login", v).token);
    let (ok, out, err) = admin(&["disable", "--engineer", "alice", "--reason", "left"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"disabled\": true"), "{out}");
    let key = sallyport_ca::keys::generate_ed25519("t").unwrap();
    let ask = json!({"public_key": key.public_key().to_openssh().unwrap(), "ticket": "SUP-7"});
    let (s, v) = before.post("/v1/certificates", ask.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).message.contains("disabled"), "{v}");
    let failed = w.login_failure_codes().await;
    assert_eq!(failed.last().unwrap(), "disabled", "{failed:?}");
    // Disabled twice is a clear conflict; enabled, she logs in again.
    let (ok, _, err) = admin(&["disable", "--engineer", "alice"]);
    assert!(!ok && err.contains("disabled already"), "{err}");
    let (ok, out, err) = admin(&["enable", "--engineer", "alice"]);
    assert!(ok, "{out}{err}");
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 1)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // An approver account, the same way.
    let secret = new_boss(&w).await;
    let (_, boss) = account_session(
        &w,
        "acme-boss",
        "a-long-password-1",
        &account_code(&secret, 0),
    )
    .await;
    assert_eq!(boss.get("/v1/access-requests").await.0, StatusCode::OK);
    let (ok, out, err) = admin(&["disable", "--account", "acme-boss"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        boss.get("/v1/access-requests").await.0,
        StatusCode::FORBIDDEN
    );
    let (s, _) = account_login(
        &w,
        "acme-boss",
        "a-long-password-1",
        &account_code(&secret, 1),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Only the operator may do it; every act is audited.
    assert_eq!(
        w.acme.post("/v1/engineers/bob/disable", json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    let changes = w
        .picked("kind=admin_change&limit=100", |e| match e {
            AuditEvent::AdminChange { action, .. } => Some(action),
            _ => None,
        })
        .await;
    for action in ["disable_engineer", "enable_engineer", "disable_account"] {
        assert!(
            changes.iter().any(|a| a == action),
            "{action}: {changes:#?}"
        );
    }
}

/// A service asked to log to a directory writes one file per day there, as JSON lines when
/// asked, without colour codes, and its last lines reach the file when it stops.
#[tokio::test]
async fn a_service_logs_to_daily_files_as_json_lines() {
    use std::io::BufRead;
    let w = World::start(Dir::File(vec![])).await;
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["broker", "--config"])
        .arg(&w.broker.config)
        .arg("--log-dir")
        .arg(logs.path())
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    let term = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<_> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("broker.log."), "{files:?}");
    let text = std::fs::read_to_string(logs.path().join(&files[0])).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().is_some_and(|m| m == "broker stopped")),
        "the last lines did not reach the file: {text}"
    );
}

/// The embedded directory's password hashes come from the CLI: the entry it prints is one the
/// broker reads and the hash verifies; a short password is refused.
#[test]
fn hash_password_prints_a_directory_entry_the_broker_reads() {
    let run = |args: &[&str], input: &str| {
        spawn_fed(
            Command::new(BIN)
                .args(["admin", "hash-password", "--stdin"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            input,
        )
        .wait_with_output()
        .unwrap()
    };
    let out = run(
        &["--uid", "eve", "--group", "support-l2"],
        "a-long-password-1\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let e = &entry["engineer"][0];
    assert_eq!(e["uid"].as_str(), Some("eve"));
    assert_eq!(e["groups"][0].as_str(), Some("support-l2"));
    let hash = e["password_argon2"].as_str().unwrap();
    assert!(sallyport_broker::directory::verify_argon2(
        hash,
        "a-long-password-1"
    ));
    assert!(!sallyport_broker::directory::verify_argon2(
        hash,
        "a-long-password-2"
    ));
    let out = run(&[], "short\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 12"));
    assert!(out.stdout.is_empty());
}

/// A broker config's paths are relative to the file, and a config that fails leaves nothing
/// behind: no data directory, no database.
#[test]
fn a_broken_broker_config_creates_nothing_and_paths_follow_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let cfg = etc.join("broker.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndirectory = \"missing.toml\"\noperator_token_sha256 = \"{}\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // Run from elsewhere: the file names etc/missing.toml, not ./missing.toml.
    let out = Command::new(BIN)
        .args(["broker", "--config"])
        .arg(&cfg)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&etc.join("missing.toml").display().to_string()),
        "{err}"
    );
    assert!(
        !etc.join("data").exists(),
        "a failed start created the data directory"
    );
    assert!(!dir.path().join("data").exists());
}

/// `admin check` says everything wrong with a broker, edge or gateway config at once, before
/// anything starts, and touches nothing; once mended it says ok (exit 0).
#[test]
fn admin_check_lists_what_is_wrong_with_each_config_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let check = |cfg: &Path| {
        Command::new(BIN)
            .args(["admin", "check", "--json", "--config"])
            .arg(cfg)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let problems = |out: &std::process::Output| -> Vec<String> {
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    };
    // `admin check` of `cfg` exits 1, naming a problem with each of `words`.
    let refused = |cfg: &Path, words: &[&str]| -> std::process::Output {
        let out = check(cfg);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let p = problems(&out);
        for word in words {
            assert!(p.iter().any(|p| p.contains(word)), "{word}: {p:?}");
        }
        out
    };

    // Broker: a short operator hash, plain HTTP off this machine, a missing directory file.
    let broker = dir.path().join("broker.toml");
    std::fs::write(
        &broker,
        "listen = \"0.0.0.0:8443\"\ndata_dir = \"data\"\ndirectory = \"engineers.toml\"\noperator_token_sha256 = \"abc\"\n",
    )
    .unwrap();
    refused(
        &broker,
        &["operator_token_sha256", "[tls]", "engineers.toml"],
    );
    assert!(
        !dir.path().join("data").exists(),
        "check created the data_dir"
    );
    // Mended: ok, and still nothing made.
    let hash = sallyport_broker::directory::hash_argon2("a-long-password-1").unwrap();
    std::fs::write(
        dir.path().join("engineers.toml"),
        format!(
            "[[engineer]]\nuid = \"alice\"\npassword_argon2 = \"{hash}\"\ngroups = [\"support\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        &broker,
        format!(
            "listen = \"127.0.0.1:8443\"\ndata_dir = \"data\"\ndirectory = \"engineers.toml\"\noperator_token_sha256 = \"{}\"\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    let out = check(&broker);
    assert!(out.status.success(), "{out:?}");
    assert!(problems(&out).is_empty());
    assert!(
        !dir.path().join("data").exists(),
        "check created the data_dir"
    );

    // Edge: a token file others can read, one port for both listeners, plain HTTP to a broker
    // on another machine.
    let token = dir.path().join("edge.token");
    std::fs::write(&token, "sp_token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let edge = dir.path().join("edge.toml");
    std::fs::write(
        &edge,
        "listen = \"127.0.0.1:2222\"\ntunnel_listen = \"127.0.0.1:2222\"\ndata_dir = \"edge-data\"\nbroker = \"http://broker.example\"\nname = \"edge1\"\ntoken_file = \"edge.token\"\n",
    )
    .unwrap();
    let out = refused(
        &edge,
        &["chmod 600", "listen and tunnel_listen", "plain http://"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "edge");
    assert!(!dir.path().join("edge-data").exists());

    // Gateway: not enrolled (no join token) and no edge to dial.
    let gateway = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway,
        "data_dir = \"gw-data\"\nbroker = \"https://broker.example\"\nedges = []\n",
    )
    .unwrap();
    refused(&gateway, &["not enrolled", "[[edges]]"]);
    assert!(!dir.path().join("gw-data").exists());

    // Human output: each problem on its own line, and what to do.
    let out = Command::new(BIN)
        .args(["admin", "check", "--config"])
        .arg(&gateway)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2 problems") && text.contains("  - "),
        "{text}"
    );
}

/// A customer's approver scripts with its API token what the console does: approvals created,
/// listed, edited (only what is given changes) and withdrawn; requests listed, approved for
/// less than asked, denied with a reason. Another customer's token can do none of it to them.
#[tokio::test]
async fn a_customer_scripts_approvals_and_requests_with_its_token() {
    let w = World::start(ldap()).await;
    let created: Approval = json_of(&w.acme.cli(&[
        "approvals",
        "create",
        "--cluster",
        "acme-prod",
        "--group",
        "support-l2",
        "--login",
        "ubuntu",
        "--login",
        "deploy",
        "--max-session",
        "1h",
        "--just-in-time",
        "true",
        "--json",
    ]));
    let id = created.id.clone();
    assert!(created.just_in_time);
    assert_eq!(created.max_session_secs, 3600);
    let out = w.acme.cli(&["approvals", "list"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&id) && listed.contains("just-in-time"),
        "{listed}"
    );
    let out = w.globex.cli(&["approvals", "list", "--json"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&id),
        "{out:?}"
    );
    // Edit: what is given changes, the rest stays.
    let edited: Approval = json_of(&w.acme.cli(&[
        "approvals",
        "edit",
        &id,
        "--observer-required",
        "true",
        "--max-session",
        "30m",
        "--json",
    ]));
    assert!(edited.observer_required, "{edited:?}");
    assert_eq!(edited.max_session_secs, 1800);
    assert_eq!(edited.logins, ["ubuntu", "deploy"]);
    assert!(edited.just_in_time);
    let out = w
        .globex
        .cli(&["approvals", "edit", &id, "--max-session", "8h"]);
    assert!(!out.status.success(), "{out:?}");

    // Requests: alice asks twice (two tickets); one approved for less, one denied.
    let alice = w.session("alice", 0).await;
    let mut ids = Vec::new();
    for t in ["C-1", "C-2"] {
        w.ticket(t, "acme-prod", "alice", "open").await;
        let (_, key) = engineer_key();
        let (s, v) = alice
            .post_as::<IssuePending>("/v1/certificates", json!({"public_key": key, "ticket": t}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v:?}");
        ids.push(v.request.id);
    }
    let out = w.acme.cli(&["requests", "list"]);
    let pending = String::from_utf8_lossy(&out.stdout);
    assert!(
        ids.iter().all(|i| pending.contains(i.as_str())),
        "{pending}"
    );
    let out = w.globex.cli(&["requests", "approve", &ids[0]]);
    assert!(!out.status.success(), "{out:?}");
    let approved: AccessRequest = json_of(&w.acme.cli(&[
        "requests", "approve", &ids[0], "--login", "ubuntu", "--ttl", "10m", "--reason", "ok",
        "--json",
    ]));
    assert_eq!(approved.status, RequestStatus::Approved, "{approved:?}");
    assert_eq!(approved.logins, ["ubuntu"]);
    assert_eq!(approved.ttl_secs, 600);
    let out = w
        .acme
        .cli(&["requests", "deny", &ids[1], "--reason", "change freeze"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("denied"),
        "{out:?}"
    );
    let out = w.acme.cli(&["requests", "list", "--json"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );

    // Withdraw: the approval is listed as withdrawn.
    let out = w.acme.cli(&["approvals", "withdraw", &id]);
    assert!(out.status.success(), "{out:?}");
    let out = w.acme.cli(&["approvals", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains("withdrawn")),
        "{listed}"
    );
}
