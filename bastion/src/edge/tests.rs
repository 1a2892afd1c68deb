use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use russh::{ChannelOpenFailure, Disconnect};

use super::auth::{CertificateStep, PlainKeyStep, certificate_step, plain_key_step, russh_refusal};
use super::conn::{Close, Limits};
use super::forward::{Ask, Refusal, decide};
use super::handler::key_id_subjects;
use super::mfa::{CodeStep, MfaVerdict, VerdictStep, code_step, mfa_verdict, verdict_step};
use super::{Edge, edge_identity};
use crate::config::EdgeConfig;

fn cfg(dir: &Path, name: Option<&str>, token_file: Option<&Path>) -> EdgeConfig {
    EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tunnel_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        broker: "http://127.0.0.1:1".into(),
        broker_ca: None,
        user_ca_keys: vec![],
        refresh_secs: 10,
        max_connections: 10,
        idle_timeout_secs: 600,
        shutdown_grace_secs: 25,
        login_grace_secs: 120,
        name: name.map(str::to_string),
        token_file: token_file.map(Path::to_path_buf),
        public_address: None,
        max_forwards_per_connection: 10,
    }
}

#[test]
fn the_token_file_must_be_the_owners_only_and_hold_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.token");
    std::fs::write(&file, "spt_abc\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file))).unwrap(),
        Some(("edge1".to_string(), "spt_abc".to_string()))
    );
    // A name is needed with a token, and must be a plain name.
    let err = edge_identity(&cfg(dir.path(), None, Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("set `name`"), "{err}");
    assert!(edge_identity(&cfg(dir.path(), Some("a b/c"), Some(&file))).is_err());
    // Not a token; no such file.
    std::fs::write(&file, "password\n").unwrap();
    let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spt_"), "{err}");
    assert!(
        edge_identity(&cfg(
            dir.path(),
            Some("edge1"),
            Some(&dir.path().join("missing"))
        ))
        .is_err()
    );
    // Without a token file the edge runs (and only logs).
    assert_eq!(
        edge_identity(&cfg(dir.path(), Some("edge1"), None)).unwrap(),
        None
    );
    assert!(
        Edge::new(cfg(dir.path(), None, None))
            .unwrap()
            .spool
            .is_none()
    );
}

#[test]
fn limits_must_be_usable_and_the_grace_period_has_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), None, None);
    c.idle_timeout_secs = 0;
    let err = Edge::new(c).err().unwrap().to_string();
    assert!(err.contains("idle_timeout_secs"), "{err}");
    let mut c = cfg(dir.path(), None, None);
    c.max_connections = 0;
    let err = Edge::new(c).err().unwrap().to_string();
    assert!(err.contains("max_connections"), "{err}");
    let mut c = cfg(dir.path(), None, None);
    c.idle_timeout_secs = 1;
    assert_eq!(Edge::new(c).unwrap().idle_timeout(), Duration::from_secs(1));
    let parsed: EdgeConfig = toml::from_str(
        "listen = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbroker = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    assert_eq!(
        (
            parsed.max_connections,
            parsed.idle_timeout_secs,
            parsed.shutdown_grace_secs
        ),
        (1000, 600, 25)
    );
}

#[test]
fn key_ids_name_the_subjects_only_when_they_are_sallyports() {
    let v = key_id_subjects("sallyport:eng=alice;ticket=SUP-1;grant=g-1;cluster=acme-prod");
    assert_eq!(v["engineer"], "alice");
    assert_eq!(v["ticket"], "SUP-1");
    assert_eq!(v["cluster"], "acme-prod");
    let v = key_id_subjects("sallyport:eng=al ice;ticket=x;grant=y;cluster=z");
    assert!(v["engineer"].is_null(), "{v}");
    assert!(key_id_subjects("anything")["cluster"].is_null());
}

/// The edge's check of a certificate, as `certificate_step` takes it.
type Check = Result<(&'static str, bool), (&'static str, String)>;
/// A keyboard-interactive answer, as `code_step` takes it.
type Answer = Option<Option<&'static [u8]>>;

#[test]
fn what_becomes_of_a_certificate() {
    let refused = || Err(("expired", "the certificate expired".to_string()));
    // (the edge's check, the edge has a broker token, the step)
    let cases: [(Check, bool, CertificateStep<&str>); 7] = [
        (Ok(("alice", false)), true, CertificateStep::Accept("alice")),
        (
            Ok(("alice", false)),
            false,
            CertificateStep::Accept("alice"),
        ),
        (Ok(("alice", true)), true, CertificateStep::AskCode("alice")),
        (
            Ok(("alice", true)),
            false,
            CertificateStep::Refuse {
                code: "mfa_unavailable",
                reason: "the certificate asks for per-session MFA, and this edge has no broker \
                         token (token_file) to check TOTP codes with"
                    .into(),
            },
        ),
        (
            refused(),
            true,
            CertificateStep::Refuse {
                code: "expired",
                reason: "the certificate expired".into(),
            },
        ),
        (
            refused(),
            false,
            CertificateStep::Refuse {
                code: "expired",
                reason: "the certificate expired".into(),
            },
        ),
        (
            Err(("revoked", "in the KRL".into())),
            true,
            CertificateStep::Refuse {
                code: "revoked",
                reason: "in the KRL".into(),
            },
        ),
    ];
    for (check, has_token, want) in cases {
        let what = format!("{check:?} token={has_token}");
        assert_eq!(certificate_step(check, has_token), want, "{what}");
    }
    // A certificate russh refused: the edge's own code, or "outside_validity" when its check
    // passes (the clocks disagree by a second).
    assert_eq!(
        russh_refusal(Err(("untrusted_ca", "not ours".into()))),
        ("untrusted_ca", "not ours".to_string())
    );
    assert_eq!(russh_refusal(Ok(())).0, "outside_validity");
}

#[test]
fn a_plain_key_is_refused_and_audited_once() {
    // (full, a certificate reached the check before, the step)
    let cases = [
        (true, false, PlainKeyStep::Full),
        (true, true, PlainKeyStep::Full),
        (false, false, PlainKeyStep::NotACertificate),
        (false, true, PlainKeyStep::Reject),
    ];
    for (full, seen, want) in cases {
        assert_eq!(plain_key_step(full, seen), want, "full={full} seen={seen}");
    }
}

#[test]
fn keyboard_interactive_asks_for_a_code_only_after_a_certificate_that_asks_for_it() {
    // (the pending certificate's user, the request's user, the answer, the step)
    let cases: [(Option<&str>, &str, Answer, CodeStep); 8] = [
        (None, "ubuntu", None, CodeStep::Reject),
        (None, "ubuntu", Some(Some(b"123456")), CodeStep::Reject),
        (Some("ubuntu"), "root", None, CodeStep::OtherUser),
        (
            Some("ubuntu"),
            "root",
            Some(Some(b"123456")),
            CodeStep::OtherUser,
        ),
        (Some("ubuntu"), "ubuntu", None, CodeStep::Prompt),
        (Some("ubuntu"), "ubuntu", Some(None), CodeStep::NoCode),
        (
            Some("ubuntu"),
            "ubuntu",
            Some(Some(b"  \n")),
            CodeStep::NoCode,
        ),
        (
            Some("ubuntu"),
            "ubuntu",
            Some(Some(b" 123456\n")),
            CodeStep::Check("123456".into()),
        ),
    ];
    for (pending, user, answer, want) in cases {
        let what = format!("{pending:?} {user} {answer:?}");
        assert_eq!(code_step(pending, user, answer), want, "{what}");
    }
    // A code is cut at 64 characters.
    let long = [b'1'; 100];
    assert_eq!(
        code_step(Some("u"), "u", Some(Some(&long))),
        CodeStep::Check("1".repeat(64))
    );
}

#[test]
fn the_brokers_verdict_on_a_code() {
    let refused = |code| MfaVerdict::Refused {
        code,
        reason: "wrong code".into(),
    };
    // The broker's answer: (status, ok, message) -> the verdict.
    assert_eq!(mfa_verdict(200, true, ""), MfaVerdict::Verified);
    assert_eq!(mfa_verdict(401, false, "wrong code"), refused("mfa_failed"));
    assert_eq!(mfa_verdict(400, false, "wrong code"), refused("mfa_failed"));
    assert_eq!(
        mfa_verdict(429, false, "wrong code"),
        refused("mfa_locked_out")
    );
    assert_eq!(
        mfa_verdict(200, false, "odd"),
        MfaVerdict::Unavailable("the broker answered 200 OK: odd".into())
    );
    assert_eq!(
        mfa_verdict(503, false, "down"),
        MfaVerdict::Unavailable("the broker answered 503 Service Unavailable: down".into())
    );
    // The verdict, after so many wrong codes before it -> the step.
    let retry = |code| VerdictStep::Retry {
        code,
        reason: "wrong code".into(),
    };
    let stop = |code| VerdictStep::Stop {
        code,
        reason: "wrong code".into(),
    };
    let cases = [
        (MfaVerdict::Verified, 0, VerdictStep::Accept),
        (MfaVerdict::Verified, 2, VerdictStep::Accept),
        (refused("mfa_failed"), 0, retry("mfa_failed")),
        (refused("mfa_failed"), 1, retry("mfa_failed")),
        // The third wrong code ends the asking.
        (refused("mfa_failed"), 2, stop("mfa_failed")),
        (refused("mfa_locked_out"), 0, stop("mfa_locked_out")),
        (
            MfaVerdict::Unavailable("the broker did not answer".into()),
            0,
            VerdictStep::Stop {
                code: "mfa_unavailable",
                reason: "the per-session TOTP code cannot be checked: the broker did not answer"
                    .into(),
            },
        ),
    ];
    for (verdict, failures, want) in cases {
        let what = format!("{verdict:?} after {failures}");
        assert_eq!(verdict_step(verdict, failures), want, "{what}");
    }
}

#[test]
fn the_forwarding_decision() {
    let ask = Ask {
        draining: false,
        host: "node1.acme-prod",
        port: 22,
        cert_cluster: "acme-prod",
        per_session_mfa: false,
        mfa_session_used: false,
    };
    let other = Refusal::OtherCluster {
        cert_cluster: "acme-prod".into(),
        target_cluster: "globex".into(),
    };
    // (the facts, the decision)
    let cases = [
        (ask, Ok(("node1", "acme-prod"))),
        (
            Ask {
                draining: true,
                ..ask
            },
            Err(Refusal::ShuttingDown),
        ),
        // Shutting down is said first, whatever the target.
        (
            Ask {
                draining: true,
                host: "evil.example.com",
                ..ask
            },
            Err(Refusal::ShuttingDown),
        ),
        (Ask { port: 2222, ..ask }, Err(Refusal::BadTarget)),
        (
            Ask {
                host: "node1",
                ..ask
            },
            Err(Refusal::BadTarget),
        ),
        (Ask { host: "", ..ask }, Err(Refusal::BadTarget)),
        (
            Ask {
                host: "node1.globex",
                ..ask
            },
            Err(other),
        ),
        (
            Ask {
                per_session_mfa: true,
                ..ask
            },
            Ok(("node1", "acme-prod")),
        ),
        (
            Ask {
                mfa_session_used: true,
                ..ask
            },
            Ok(("node1", "acme-prod")),
        ),
        (
            Ask {
                per_session_mfa: true,
                mfa_session_used: true,
                ..ask
            },
            Err(Refusal::MfaSessionUsed),
        ),
    ];
    for (ask, want) in cases {
        assert_eq!(decide(&ask), want, "{ask:?}");
    }
    // What each refusal is audited as and what the client is told.
    let told = [
        (
            Refusal::ShuttingDown,
            "shutting_down",
            ChannelOpenFailure::ConnectFailed,
        ),
        (
            Refusal::BadTarget,
            "bad_target",
            ChannelOpenFailure::ConnectFailed,
        ),
        (
            Refusal::OtherCluster {
                cert_cluster: "a".into(),
                target_cluster: "b".into(),
            },
            "other_cluster",
            ChannelOpenFailure::AdministrativelyProhibited,
        ),
        (
            Refusal::MfaSessionUsed,
            "mfa_session_used",
            ChannelOpenFailure::AdministrativelyProhibited,
        ),
        (
            Refusal::TooManyForwards { limit: 3 },
            "too_many_forwards",
            ChannelOpenFailure::ResourceShortage,
        ),
    ];
    for (refusal, code, failure) in told {
        assert_eq!(refusal.code(), code);
        assert_eq!(refusal.failure().code(), failure.code(), "{refusal:?}");
        assert!(!refusal.reason().is_empty());
    }
    assert_eq!(
        Refusal::TooManyForwards { limit: 3 }.reason(),
        "at most 3 sessions at once through one connection to the edge"
    );
    assert_eq!(
        Refusal::OtherCluster {
            cert_cluster: "a".into(),
            target_cluster: "b".into()
        }
        .fields()["target_cluster"],
        "b"
    );
}

#[test]
fn what_a_closed_connection_is_told_and_audited_as() {
    let limits = Limits {
        max_connections: 7,
        idle: Duration::from_secs(600),
        login_grace: Duration::from_secs(120),
        shutdown_grace_secs: 25,
    };
    // (why, the disconnect reason is "too many connections", the message, the audit code)
    let cases = [
        (
            Close::Full,
            true,
            "sallyport edge: too many connections (at most 7 at once), try again later",
            None,
        ),
        (
            Close::Idle,
            false,
            "sallyport edge: no traffic for 600 s, disconnected (idle_timeout_secs)",
            Some("idle_timeout"),
        ),
        (
            Close::Shutdown,
            false,
            "sallyport edge: shutting down, disconnected after a grace period of 25 s; connect again",
            Some("shutdown"),
        ),
        (
            Close::NotLoggedIn,
            false,
            "sallyport edge: not logged in within 120 s, disconnected (login_grace_secs)",
            None,
        ),
        (
            Close::Revoked,
            false,
            "sallyport edge: your certificate was revoked, disconnected",
            Some("revoked"),
        ),
        (
            Close::Expired,
            false,
            "sallyport edge: your certificate expired, disconnected: log in again",
            Some("expired"),
        ),
    ];
    for (close, too_many, message, code) in cases {
        let (reason, told) = close.notice(&limits);
        assert_eq!(
            matches!(reason, Disconnect::TooManyConnections),
            too_many,
            "{close:?}"
        );
        assert!(
            too_many || matches!(reason, Disconnect::ByApplication),
            "{close:?}"
        );
        assert_eq!(told, message, "{close:?}");
        assert_eq!(close.code(), code, "{close:?}");
    }
}
