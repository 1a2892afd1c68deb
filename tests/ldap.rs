//! The LDAP directory end to end, through the broker's real login and issuance paths against
//! the test slapd (tests/infra/start-ldap.sh):
//!
//! - TLS is proven, not assumed: LDAPS and StartTLS with the CA the test infrastructure made
//!   log in and issue; a wrong CA or a wrong host name fails closed with a clear error and an
//!   audit event, never falling back to plain LDAP; and a TCP relay between the broker and slapd
//!   records every byte, to show that neither the engineer's nor the service account's password
//!   crosses in clear when TLS is configured (and, as the control, that it does with plain
//!   `ldap://`). A plain `ldap://` URL to another machine is refused at start.
//! - A group is its full DN under `group_base`: look-alike groups elsewhere give nothing.
//! - Groups are read again at each issuance: an engineer removed from a group cannot mint a
//!   certificate with a session token from before; a directory that cannot be asked refuses.
//!
//! Each test makes its own engineer and groups in slapd (as the directory's admin), so tests
//! running at once do not see each other's changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use sallyport_api::admin::Enrollment;
use sallyport_api::certificates::Issued;
use sallyport_api::login::LoginResponse;
use sallyport_broker::audit::AuditEvent;
use serde_json::{Value, json};
use support::broker::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STARTTLS_OID: &str = "1.3.6.1.4.1.1466.20037";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with tests/infra/run-tests.sh (it starts slapd)")
    })
}

fn service_password() -> String {
    env("SALLYPORT_TEST_LDAP_BIND_PASSWORD")
}

/// `ldap://127.0.0.1:3890` -> 3890.
fn port_of(uri: &str) -> u16 {
    uri.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// A TCP relay on 127.0.0.1 between the broker and slapd that keeps every byte, both ways

struct Relay {
    port: u16,
    bytes: Arc<Mutex<Vec<u8>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let log = bytes.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, log.clone()));
                tokio::spawn(pipe(sr, cw, log.clone()));
            }
        });
        Relay {
            port,
            bytes,
            accept,
        }
    }

    /// Everything that crossed so far, both directions.
    fn seen(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn saw(&self, needle: &str) -> bool {
        let hay = self.seen();
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Stop accepting: new connections are refused, as with a directory that is down.
    fn close(&self) {
        self.accept.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    log: Arc<Mutex<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The directory, changed as its admin would

fn ldap_admin(tool: &str, ldif: &str) {
    use std::io::Write;
    let mut child = Command::new(tool)
        .args(["-x", "-H", &ldap_uri(), "-D"])
        .arg(env("SALLYPORT_TEST_LDAP_ADMIN_DN"))
        .arg("-w")
        .arg(env("SALLYPORT_TEST_LDAP_ADMIN_PASSWORD"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} (ldap-utils) is needed: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ldif.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} failed: {}\n{ldif}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// A new engineer in slapd (`uid=<uid>,ou=people`, password `<uid>-pw`) in a new group
/// `cn=<group>,ou=groups` (with dave too, so that the group keeps a member when the engineer
/// leaves it), enrolled at the broker. Returns (uid, group, TOTP secret).
async fn new_engineer_in_new_group(w: &World) -> (String, String, String) {
    let uid = unique("eng");
    let group = unique("grp");
    ldap_admin(
        "ldapadd",
        &format!(
            "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {uid}-pw\n\n\
             dn: cn={group},ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: {group}\nmember: uid=dave,{PEOPLE}\nmember: uid={uid},{PEOPLE}\n"
        ),
    );
    let (s, v) =
        w.op.post_as::<Enrollment>("/v1/engineers", json!({"uid": uid}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v:?}");
    (uid, group, v.totp_secret)
}

fn set_membership(uid: &str, group_dn: &str, member: bool) {
    let op = if member { "add" } else { "delete" };
    ldap_admin(
        "ldapmodify",
        &format!("dn: {group_dn}\nchangetype: modify\n{op}: member\nmember: uid={uid},{PEOPLE}\n"),
    );
}

fn totp_now(secret: &str, offset: i64) -> String {
    sallyport_broker::totp::code(secret, (now() as i64 + offset * 30) as u64).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Login and issuance, and what the audit log and the broker's log say

/// acme-prod approves `group` (login ubuntu); `ticket` is open and assigned to `uid`.
async fn approve_and_ticket(w: &World, group: &str, uid: &str, ticket: &str) {
    w.approve("acme-prod", group, &["ubuntu"], json!({})).await;
    w.ticket(ticket, "acme-prod", uid, "open").await;
}

async fn login(w: &World, uid: &str, secret: &str, offset: i64) -> (StatusCode, Value) {
    w.login(uid, &format!("{uid}-pw"), &totp_now(secret, offset))
        .await
}

async fn session(w: &World, uid: &str, secret: &str, offset: i64) -> (Api, Vec<String>) {
    let (s, v) = login(w, uid, secret, offset).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v: LoginResponse = read_as("a login", v);
    (w.anon.with(&v.token), v.groups)
}

async fn ask(session: &Api, ticket: &str) -> (StatusCode, Value) {
    let (_, key) = engineer_key();
    session
        .post(
            "/v1/certificates",
            json!({"public_key": key, "ticket": ticket}),
        )
        .await
}

/// The reason codes of a refused answer.
fn refused_codes(v: &Value) -> Vec<String> {
    reason_codes(&error_of(v))
}

/// The `certificate_denied` events as (engineer, reason codes), in the order search gives them.
async fn denials(w: &World) -> Vec<(String, Vec<String>)> {
    w.picked("kind=certificate_denied", |e| match e {
        AuditEvent::CertificateDenied {
            engineer, reasons, ..
        } => Some((engineer, reasons.into_iter().map(|r| r.code).collect())),
        _ => None,
    })
    .await
}

/// No password the test knows appears in the broker's log.
fn assert_no_password_in_broker_log(w: &World, passwords: &[&str]) {
    for entry in std::fs::read_dir(&w.broker.dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("broker-") && name.ends_with(".log") {
            let text = std::fs::read_to_string(&path).unwrap();
            for pw in passwords {
                assert!(!text.contains(pw), "{name} holds a password");
            }
        }
    }
}

/// A world whose broker asks slapd through `relay` at `scheme://host:<relay port>`, with more
/// `[ldap]` lines.
async fn world_via(relay: &Relay, scheme_host: &str, extra: &str) -> World {
    World::start(Dir::LdapAt {
        url: format!("{scheme_host}:{}", relay.port),
        extra: extra.to_string(),
    })
    .await
}

fn ca_line(var: &str) -> String {
    format!("ca_file = \"{}\"\n", env(var))
}

/// Log in as alice and get a certificate (engineer's bind at login, service account's bind at
/// issuance): both passwords were used on the way.
async fn alice_logs_in_and_gets_a_certificate(w: &World) {
    approve_and_ticket(w, "support-l2", "alice", "SUP-1").await;
    let alice = w.session("alice", 0).await;
    let (s, v) = ask(&alice, "SUP-1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let issued: Issued = read_as("an issued certificate", v);
    assert!(issued.certificate.starts_with("ssh-ed25519-cert"));
}

// ---------------------------------------------------------------------------------------------
// 1. LDAP over TLS

#[tokio::test]
async fn ldaps_with_the_right_ca_logs_in_and_no_password_crosses_in_clear() {
    let relay = Relay::to(port_of(&env("SALLYPORT_TEST_LDAP_LDAPS_URI"))).await;
    let w = world_via(
        &relay,
        "ldaps://127.0.0.1",
        &ca_line("SALLYPORT_TEST_LDAP_CA_FILE"),
    )
    .await;
    alice_logs_in_and_gets_a_certificate(&w).await;
    assert!(
        !relay.seen().is_empty(),
        "the broker did not go through the relay"
    );
    for pw in ["alice-pw", service_password().as_str()] {
        assert!(!relay.saw(pw), "{pw} crossed in clear over LDAPS");
    }
    assert!(
        !relay.saw("uid=alice"),
        "the bind DN crossed in clear over LDAPS"
    );
    assert_no_password_in_broker_log(&w, &["alice-pw", &service_password()]);
}

#[tokio::test]
async fn starttls_with_the_right_ca_logs_in_and_no_password_crosses_in_clear() {
    let relay = Relay::to(port_of(&ldap_uri())).await;
    let w = world_via(
        &relay,
        "ldap://127.0.0.1",
        &format!(
            "starttls = true\n{}",
            ca_line("SALLYPORT_TEST_LDAP_CA_FILE")
        ),
    )
    .await;
    alice_logs_in_and_gets_a_certificate(&w).await;
    // StartTLS was asked for on the plain port, and everything after it was TLS.
    assert!(
        relay.saw(STARTTLS_OID),
        "no StartTLS request crossed the relay"
    );
    for pw in ["alice-pw", service_password().as_str()] {
        assert!(!relay.saw(pw), "{pw} crossed in clear with StartTLS");
    }
    assert!(
        !relay.saw("uid=alice"),
        "the bind DN crossed in clear with StartTLS"
    );
    assert_no_password_in_broker_log(&w, &["alice-pw", &service_password()]);
}

/// The control: without TLS, the relay does see both passwords, so the assertions above can
/// fail.
#[tokio::test]
async fn plain_ldap_on_loopback_sends_both_passwords_in_clear_control() {
    let relay = Relay::to(port_of(&ldap_uri())).await;
    let w = world_via(&relay, "ldap://127.0.0.1", "").await;
    alice_logs_in_and_gets_a_certificate(&w).await;
    assert!(relay.saw("alice-pw"), "the engineer's bind was not seen");
    assert!(
        relay.saw(&service_password()),
        "the service account's bind (at issuance) was not seen"
    );
}

/// A TLS failure: 503 with a message about TLS, not counted as a failed login, audited with
/// what was wrong; nothing but the handshake (and for StartTLS its request) crossed, so no
/// password either.
async fn assert_tls_refused(w: &World, relay: &Relay, want_detail: &str) {
    let (s, v) = w.login("alice", "alice-pw", &w.code("alice", 0)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    let message = error_of(&v).message;
    assert!(
        message.contains("LDAP") && message.contains("TLS"),
        "unclear: {message}"
    );
    assert!(v.get("token").is_none());
    let event = w.broker_events("kind=login_failed").await.pop().unwrap();
    let AuditEvent::LoginFailed { code, reason, .. } = &event else {
        panic!("{event:?}")
    };
    assert_eq!(code, "directory_tls_refused", "{event:?}");
    assert!(reason.contains(want_detail), "{reason}");
    assert!(
        !relay.seen().is_empty(),
        "the broker did not go through the relay"
    );
    for pw in ["alice-pw", service_password().as_str()] {
        assert!(!relay.saw(pw), "{pw} crossed after a refused TLS handshake");
    }
    assert_no_password_in_broker_log(w, &["alice-pw", &service_password()]);
}

/// A broker whose directory is `url` (`ldaps://` to slapd's LDAPS port, else StartTLS to its
/// plain one) through a relay, trusting the CA file of `ca_var`: its TLS is refused for
/// `detail` ([`assert_tls_refused`]). Returns the relay, to read what crossed.
async fn tls_refused(url: &str, ca_var: &str, detail: &str) -> Relay {
    let ldaps = url.starts_with("ldaps://");
    let upstream = if ldaps {
        env("SALLYPORT_TEST_LDAP_LDAPS_URI")
    } else {
        ldap_uri()
    };
    let relay = Relay::to(port_of(&upstream)).await;
    let starttls = if ldaps { "" } else { "starttls = true\n" };
    let w = world_via(&relay, url, &format!("{starttls}{}", ca_line(ca_var))).await;
    assert_tls_refused(&w, &relay, detail).await;
    relay
}

#[tokio::test]
async fn ldaps_with_a_wrong_ca_fails_closed() {
    tls_refused(
        "ldaps://127.0.0.1",
        "SALLYPORT_TEST_LDAP_OTHER_CA_FILE",
        "not signed by the CA in [ldap] ca_file",
    )
    .await;
}

#[tokio::test]
async fn starttls_with_a_wrong_ca_fails_closed_without_falling_back_to_plain() {
    let relay = tls_refused(
        "ldap://127.0.0.1",
        "SALLYPORT_TEST_LDAP_OTHER_CA_FILE",
        "not signed by the CA in [ldap] ca_file",
    )
    .await;
    assert!(relay.saw(STARTTLS_OID));
    assert!(
        !relay.saw("uid=alice"),
        "a bind went out after StartTLS failed"
    );
}

/// slapd's certificate names IP:127.0.0.1 only; `localhost` reaches the same slapd (through the
/// relay on 127.0.0.1) but is a name the certificate is not for.
#[tokio::test]
async fn ldaps_to_a_host_name_the_certificate_is_not_for_fails_closed() {
    tls_refused(
        "ldaps://localhost",
        "SALLYPORT_TEST_LDAP_CA_FILE",
        "not for the host name in [ldap] url",
    )
    .await;
}

#[tokio::test]
async fn starttls_to_a_host_name_the_certificate_is_not_for_fails_closed() {
    tls_refused(
        "ldap://localhost",
        "SALLYPORT_TEST_LDAP_CA_FILE",
        "not for the host name in [ldap] url",
    )
    .await;
}

/// Configurations that would send passwords in clear (or trust nothing) are refused at start,
/// saying what to change; nothing is contacted.
#[tokio::test]
async fn ldap_configs_that_would_leak_passwords_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("ldap://ldap.vendor.example:389", "", "in clear"),
        ("ldap://10.0.0.5", "", "in clear"),
        ("ldaps://ldap.vendor.example", "", "ca_file is required"),
        (
            "ldap://ldap.vendor.example",
            "starttls = true\n",
            "ca_file is required",
        ),
        (
            "ldaps://ldap.vendor.example",
            "starttls = true\nca_file = \"/dev/null\"\n",
            "starttls = true with an ldaps:// url",
        ),
        (
            "ldap://127.0.0.1:389",
            "group_base = \"\"\n",
            "group_base is required",
        ),
    ];
    for (i, (url, extra, want)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        // group_base comes once: a case's own replaces the default
        let extra = extra.to_string();
        let config = write_config(
            &dir,
            &format!("sqlite://{}", dir.join("b.db").display()),
            &Dir::LdapAt {
                url: url.into(),
                extra: String::new(),
            },
            &"0".repeat(64),
            "",
        );
        let mut text = std::fs::read_to_string(&config).unwrap();
        if extra.contains("group_base") {
            text = text.replace("group_base = \"ou=groups,dc=example,dc=com\"\n", "");
        }
        text.push_str(&extra);
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["broker", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} {extra}: the broker started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{url} {extra}: {stderr}");
    }

    // The service account's password file must be the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.path().join("pw");
    let config = write_config(
        &dir,
        &format!("sqlite://{}", dir.join("b.db").display()),
        &Dir::LdapAt {
            url: ldap_uri(),
            extra: String::new(),
        },
        &"0".repeat(64),
        "",
    );
    let pw = dir.join("ldap-bind.pw");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["broker", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readable by its owner only") && !stderr.contains(&service_password()),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A group is its full DN under group_base

async fn look_alike_groups_give_no_access(group_mode: &str) {
    let w = World::start(Dir::LdapAt {
        url: ldap_uri(),
        extra: format!("group_mode = \"{group_mode}\"\n"),
    })
    .await;
    let (uid, group, secret) = new_engineer_in_new_group(&w).await;
    let real = format!("cn={group},ou=groups,dc=example,dc=com");
    set_membership(&uid, &real, false);
    // Look-alikes: the same first RDN in another branch, and one level deeper under the base.
    let elsewhere = unique("elsewhere");
    let team = unique("team");
    ldap_admin(
        "ldapadd",
        &format!(
            "dn: ou={elsewhere},dc=example,dc=com\nobjectClass: organizationalUnit\nou: {elsewhere}\n\n\
             dn: cn={group},ou={elsewhere},dc=example,dc=com\nobjectClass: groupOfNames\ncn: {group}\nmember: uid={uid},{PEOPLE}\n\n\
             dn: ou={team},ou=groups,dc=example,dc=com\nobjectClass: organizationalUnit\nou: {team}\n\n\
             dn: cn={group},ou={team},ou=groups,dc=example,dc=com\nobjectClass: groupOfNames\ncn: {group}\nmember: uid={uid},{PEOPLE}\n"
        ),
    );
    approve_and_ticket(&w, &group, &uid, "SUP-LOOK").await;

    let (s, groups) = session(&w, &uid, &secret, -1).await;
    assert!(!groups.contains(&group), "{group_mode}: {groups:?}");
    let before = denials(&w).await.len();
    let (status, v) = ask(&s, "SUP-LOOK").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{group_mode}: {v}");
    assert_eq!(refused_codes(&v), ["not_in_approved_group"], "{v}");
    let events = denials(&w).await;
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().unwrap().0, uid);

    // The control: in the real group, the same engineer gets in.
    set_membership(&uid, &real, true);
    let (s, groups) = session(&w, &uid, &secret, 0).await;
    assert!(groups.contains(&group), "{group_mode}: {groups:?}");
    let (status, v) = ask(&s, "SUP-LOOK").await;
    assert_eq!(status, StatusCode::OK, "{group_mode}: {v}");
}

#[tokio::test]
async fn look_alike_groups_give_no_access_memberof() {
    look_alike_groups_give_no_access("memberof").await;
}

#[tokio::test]
async fn look_alike_groups_give_no_access_search() {
    look_alike_groups_give_no_access("search").await;
}

// ---------------------------------------------------------------------------------------------
// 3. Groups read again at issuance

#[tokio::test]
async fn removed_from_the_group_after_login_gets_no_certificate_with_the_old_session() {
    let w = World::start(Dir::Ldap {
        group_mode: "memberof",
    })
    .await;
    let (uid, group, secret) = new_engineer_in_new_group(&w).await;
    approve_and_ticket(&w, &group, &uid, "SUP-GONE").await;
    let (s, groups) = session(&w, &uid, &secret, 0).await;
    assert_eq!(groups, std::slice::from_ref(&group));

    set_membership(
        &uid,
        &format!("cn={group},ou=groups,dc=example,dc=com"),
        false,
    );
    let before = denials(&w).await.len();
    let (status, v) = ask(&s, "SUP-GONE").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(v.get("certificate").is_none());
    assert_eq!(
        refused_codes(&v),
        ["groups_changed", "not_in_approved_group"],
        "{v}"
    );
    let reasons = error_of(&v).reasons.unwrap();
    let message = &reasons[0].message;
    assert!(message.contains(&group), "{message}");
    let events = denials(&w).await;
    assert_eq!(events.len(), before + 1);
    let last = events.last().unwrap();
    assert_eq!(last.0, uid);
    assert_eq!(last.1[0], "groups_changed");
}

/// With `groups_cache_secs = 0` every issuance asks the directory: a first certificate, then the
/// engineer leaves the group, then the same session is refused.
#[tokio::test]
async fn without_a_cache_each_issuance_reads_the_groups_again() {
    let w = World::start(Dir::LdapAt {
        url: ldap_uri(),
        extra: "group_mode = \"search\"\ngroups_cache_secs = 0\n".into(),
    })
    .await;
    let (uid, group, secret) = new_engineer_in_new_group(&w).await;
    approve_and_ticket(&w, &group, &uid, "SUP-NOCACHE").await;
    let (s, _) = session(&w, &uid, &secret, 0).await;
    assert_eq!(ask(&s, "SUP-NOCACHE").await.0, StatusCode::OK);
    set_membership(
        &uid,
        &format!("cn={group},ou=groups,dc=example,dc=com"),
        false,
    );
    let (status, v) = ask(&s, "SUP-NOCACHE").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(refused_codes(&v)[0], "groups_changed");
}

/// The cache does what `groups_cache_secs` says: within its lifetime the groups of the last read
/// are used (here an hour, so that the test does not depend on time).
#[tokio::test]
async fn the_groups_cache_lives_as_configured() {
    let w = World::start(Dir::LdapAt {
        url: ldap_uri(),
        extra: "groups_cache_secs = 3600\n".into(),
    })
    .await;
    let (uid, group, secret) = new_engineer_in_new_group(&w).await;
    approve_and_ticket(&w, &group, &uid, "SUP-CACHE").await;
    let (s, _) = session(&w, &uid, &secret, 0).await;
    assert_eq!(ask(&s, "SUP-CACHE").await.0, StatusCode::OK);
    set_membership(
        &uid,
        &format!("cn={group},ou=groups,dc=example,dc=com"),
        false,
    );
    assert_eq!(ask(&s, "SUP-CACHE").await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_engineer_deleted_from_the_directory_gets_no_certificate() {
    let w = World::start(Dir::Ldap {
        group_mode: "search",
    })
    .await;
    let (uid, group, secret) = new_engineer_in_new_group(&w).await;
    approve_and_ticket(&w, &group, &uid, "SUP-DEL").await;
    let (s, _) = session(&w, &uid, &secret, 0).await;
    set_membership(
        &uid,
        &format!("cn={group},ou=groups,dc=example,dc=com"),
        false,
    );
    ldap_admin(
        "ldapmodify",
        &format!("dn: uid={uid},{PEOPLE}\nchangetype: delete\n"),
    );
    let (status, v) = ask(&s, "SUP-DEL").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(refused_codes(&v), ["not_in_directory"]);
    let last = denials(&w).await.pop().unwrap();
    assert_eq!(last.1, ["not_in_directory"]);
}

#[tokio::test]
async fn directory_unreachable_at_issuance_fails_closed_and_is_audited() {
    let relay = Relay::to(port_of(&ldap_uri())).await;
    let w = world_via(&relay, "ldap://127.0.0.1", "").await;
    approve_and_ticket(&w, "support-l2", "alice", "SUP-DOWN").await;
    let alice = w.session("alice", 0).await;
    relay.close();
    let before = denials(&w).await.len();
    let (status, v) = ask(&alice, "SUP-DOWN").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v.get("certificate").is_none());
    let message = error_of(&v).message;
    assert!(message.contains("LDAP"), "{message}");
    let events = denials(&w).await;
    assert_eq!(events.len(), before + 1);
    let last = events.last().unwrap();
    assert_eq!(last.0, "alice");
    assert_eq!(last.1, ["directory_unavailable"]);
    assert!(w.audit("kind=certificate_issued").await.is_empty());
}
