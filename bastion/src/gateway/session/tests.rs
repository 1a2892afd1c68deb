//! The session's pure decisions, as tables of cases.

use sallyport_audit::writers::GatewayKind;
use sallyport_ca::policy::{ChannelRequest, DenyReason};
use serde_json::json;

use super::auth::{end_reason, refusal_here};
use super::forward::{ForwardVerdict, forward_verdict};
use super::requests::{env_event, exec_plan, signal_name};
use super::{refusal_event, refusal_text};
use crate::record::exec::ExecKind;

#[test]
fn a_checked_certificate_must_be_for_this_cluster_and_name_the_login() {
    let cases: &[(&str, bool, Option<&str>)] = &[
        ("acme-prod", true, None),
        ("other", true, Some("other_cluster")),
        // Another cluster says the most, whatever the logins.
        ("other", false, Some("other_cluster")),
        ("acme-prod", false, Some("login_not_in_certificate")),
    ];
    for (cert_cluster, allows, want) in cases {
        let got = refusal_here(cert_cluster, *allows, "acme-prod", "root");
        assert_eq!(
            got.as_ref().map(|(c, _)| c.as_str()),
            *want,
            "{cert_cluster} {allows}"
        );
    }
    let (_, reason) = refusal_here("acme-prod", false, "acme-prod", "root").unwrap();
    assert_eq!(reason, "the certificate does not allow the login root");
}

#[test]
fn a_live_session_ends_when_someone_ends_it_or_its_certificate_lapses() {
    type Case<'a> = (bool, bool, Option<&'a (String, String)>, Option<&'a str>);
    let by = ("reviewer bob".to_string(), "suspicious".to_string());
    let cases: &[Case] = &[
        (false, false, None, None),
        (true, false, None, Some("the certificate expired")),
        (false, true, None, Some("the certificate was revoked")),
        (true, true, None, Some("the certificate expired")),
        (
            true,
            true,
            Some(&by),
            Some("the session was ended by reviewer bob: suspicious"),
        ),
        (
            false,
            false,
            Some(&by),
            Some("the session was ended by reviewer bob: suspicious"),
        ),
    ];
    for (expired, revoked, ended_by, want) in cases {
        let got = end_reason(*expired, *revoked, *ended_by);
        assert_eq!(got.as_deref(), *want, "{expired} {revoked} {ended_by:?}");
    }
}

#[test]
fn a_forward_needs_the_policy_then_the_certificate_then_an_observer() {
    use ForwardVerdict::*;
    let refused = || Err("sallyport: no\r\n".to_string());
    let cases = [
        (Ok(()), true, true, Open),
        (Ok(()), false, true, NotCertified),
        (Ok(()), false, false, NotCertified),
        (Ok(()), true, false, NoObserver),
        (refused(), true, true, Policy("sallyport: no\r\n".into())),
        (refused(), false, false, Policy("sallyport: no\r\n".into())),
    ];
    for (policy, certified, released, want) in cases {
        let got = forward_verdict(policy.clone(), certified, released);
        assert_eq!(got, want, "{policy:?} {certified} {released}");
    }
}

#[test]
fn an_exec_is_classified_before_the_policy_and_the_command_event_see_it() {
    // (command, file_transfer, interpreter)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("uptime", "", None),
        ("bash", "", Some("bash")),
        ("/usr/lib/openssh/sftp-server", "sftp", None),
        ("scp -t /tmp", "scp", None),
    ];
    for (command, transfer, interpreter) in cases {
        let plan = exec_plan(command.as_bytes());
        assert_eq!(plan.file_transfer, *transfer, "{command}");
        assert_eq!(
            plan.request(),
            ChannelRequest::Exec {
                command: command.to_string(),
                file_transfer: transfer.to_string(),
            }
        );
        let event = plan.command_event(3);
        assert_eq!(event["channel"], 3);
        assert_eq!(event["command"], *command);
        assert_eq!(event["via"], "exec");
        assert_eq!(event["interpreter"].as_str(), *interpreter, "{command}");
        let want_transfer = (!transfer.is_empty()).then_some(*transfer);
        assert_eq!(event["file_transfer"].as_str(), want_transfer, "{command}");
        assert_eq!(
            matches!(plan.kind, ExecKind::Interpreter { .. }),
            interpreter.is_some()
        );
    }
}

#[test]
fn only_display_settings_show_their_value_in_the_env_event() {
    let cases: &[(&str, bool)] = &[
        ("LANG", true),
        ("LC_ALL", true),
        ("TERM", true),
        ("TZ", true),
        ("COLORTERM", true),
        ("AWS_SECRET_ACCESS_KEY", false),
        ("PASSWORD", false),
        ("LANGUAGE_SECRET", false),
    ];
    for (name, shown) in cases {
        let event = env_event(0, name, "s3cr3t");
        assert_eq!(event["value"].is_string(), *shown, "{name}");
        assert_eq!(event["value_len"], 6);
        assert_eq!(event["env_name"], *name);
        assert_eq!(
            event["value_sha256"],
            "4e738ca5563c06cfd0018299933d58db1dd8bf97f6973dc99bf6cdc64b5550bd"
        );
    }
    let long = "x".repeat(100);
    assert_eq!(env_event(0, "LANG", &long)["value"], "x".repeat(64));
}

#[test]
fn signals_are_named_without_sig() {
    assert_eq!(signal_name(&russh::Sig::TERM), "TERM");
    assert_eq!(signal_name(&russh::Sig::INT), "INT");
    assert_eq!(signal_name(&russh::Sig::Custom("WINCH".into())), "WINCH");
}

#[test]
fn a_policy_refusal_is_audited_with_its_codes_and_what_it_was_about() {
    let reasons = vec![
        DenyReason {
            code: "business_hours".into(),
            message: "only in business hours".into(),
        },
        DenyReason {
            code: "no_sudo".into(),
            message: "no sudo here".into(),
        },
    ];
    let forward = ChannelRequest::DirectTcpip {
        host: "db".into(),
        port: 5432,
    };
    let exec = ChannelRequest::Exec {
        command: "sudo -i".into(),
        file_transfer: String::new(),
    };
    let env = ChannelRequest::Env { name: "FOO".into() };
    let subsystem = ChannelRequest::Subsystem {
        name: "netconf".into(),
    };
    let signal = ChannelRequest::Signal {
        name: "KILL".into(),
    };
    let cases = [
        (
            forward,
            GatewayKind::ForwardRefused,
            "target",
            json!("db:5432"),
        ),
        (
            exec,
            GatewayKind::ChannelRefused,
            "command",
            json!("sudo -i"),
        ),
        (env, GatewayKind::ChannelRefused, "env_name", json!("FOO")),
        (
            subsystem,
            GatewayKind::ChannelRefused,
            "subsystem",
            json!("netconf"),
        ),
        (signal, GatewayKind::ChannelRefused, "signal", json!("KILL")),
        (
            ChannelRequest::Shell,
            GatewayKind::ChannelRefused,
            "request",
            json!("shell"),
        ),
    ];
    for (request, kind, field, value) in cases {
        let (got, detail) = refusal_event(&request, &reasons, Some(2));
        assert_eq!(got, kind, "{request:?}");
        assert_eq!(detail[field], value, "{detail}");
        assert_eq!(detail["code"], "business_hours");
        assert_eq!(detail["codes"], json!(["business_hours", "no_sudo"]));
        assert_eq!(detail["reason"], "only in business hours; no sudo here");
        assert_eq!(detail["channel"], 2);
    }
    let (_, detail) = refusal_event(&ChannelRequest::Pty, &reasons, None);
    assert!(detail.get("channel").is_none(), "{detail}");
    assert_eq!(
        refusal_text(&reasons),
        "sallyport: only in business hours\r\nsallyport: no sudo here\r\n"
    );
}

#[test]
fn a_channel_is_ended_by_signals_only_while_its_program_runs() {
    use super::bridge::{Ending, Running, ending};
    // (what runs, the program exited, the node closed the channel) -> how it is ended
    let cases = [
        (Running::Program, false, false, Ending::Signal),
        // An exited program is never signalled (sshd has forgotten its process group).
        (Running::Program, true, false, Ending::Close),
        (Running::Program, true, true, Ending::Nothing),
        (Running::Program, false, true, Ending::Nothing),
        // sshd refuses to signal a subsystem: it ends when its channel closes.
        (Running::Subsystem, false, false, Ending::Close),
        (Running::Subsystem, true, false, Ending::Close),
        (Running::Subsystem, false, true, Ending::Nothing),
        // Nothing asked for: nothing to signal.
        (Running::Nothing, false, false, Ending::Close),
        (Running::Nothing, false, true, Ending::Nothing),
    ];
    for (running, exited, closed, want) in cases {
        assert_eq!(
            ending(running, exited, closed),
            want,
            "{running:?} exited={exited} closed={closed}"
        );
    }
}
