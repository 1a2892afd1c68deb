//! Table tests: every deny reason, the allow path, and a customer's own forbid policy.

use super::cedar::hour_and_weekday;
use super::*;

const NOW: u64 = 1_763_978_400; // 2025-11-24 10:00:00 UTC, a Monday

fn approval() -> ApprovalFacts {
    ApprovalFacts {
        id: "ap-1".into(),
        group: "support-l2".into(),
        cluster: "acme-prod".into(),
        logins: vec!["ubuntu".into(), "deploy".into()],
        valid_from: NOW - 86_400,
        valid_until: NOW + 86_400,
        withdrawn: false,
        just_in_time: false,
        max_session_secs: 4 * 3600,
        per_session_mfa: false,
        observer_required: false,
        port_forwarding: false,
        source_networks: vec![],
    }
}

fn facts() -> IssueFacts {
    IssueFacts {
        engineer: "alice".into(),
        groups: vec!["support-l2".into()],
        mfa: true,
        customer: "acme".into(),
        cluster: "acme-prod".into(),
        ticket: TicketFacts {
            id: "SUP-1234".into(),
            status: "open".into(),
            assignee: "alice".into(),
            customer: "acme".into(),
            cluster: "acme-prod".into(),
        },
        approvals: vec![approval()],
        requested_logins: None,
        request: None,
        now: NOW,
        max_ttl: 8 * 3600,
        requested_ttl: None,
    }
}

fn ids() -> GrantIds {
    GrantIds {
        id: "g-1".into(),
        serial: 42,
    }
}

fn codes(d: &Decision) -> Vec<String> {
    match d {
        Decision::Allow(_) => vec!["ALLOW".into()],
        Decision::Deny { reasons, .. } => reasons.iter().map(|r| r.code.clone()).collect(),
    }
}

#[test]
fn allows_and_computes_the_grant() {
    let engine = Engine::new().unwrap();
    let Decision::Allow(g) = engine.decide(&facts(), &[], ids()) else {
        panic!("expected allow");
    };
    assert_eq!(g.engineer(), "alice");
    assert_eq!(g.ticket(), "SUP-1234");
    assert_eq!(g.cluster(), "acme-prod");
    assert_eq!(g.approval(), "ap-1");
    assert_eq!(g.logins(), ["ubuntu", "deploy"]);
    assert_eq!(g.serial(), 42);
    assert_eq!(g.valid_after(), NOW - 60);
    // min(8h policy cap, 4h approval cap, approval end in 24h) = 4h
    assert_eq!(g.valid_before(), NOW + 4 * 3600);
    assert!(!g.permit_port_forwarding());
}

#[test]
fn lifetime_is_capped_by_every_limit() {
    let engine = Engine::new().unwrap();
    type Change = Box<dyn Fn(&mut IssueFacts)>;
    let cases: Vec<(Change, u64)> = vec![
        (Box::new(|f| f.max_ttl = 600), NOW + 600),
        (
            Box::new(|f| f.approvals[0].valid_until = NOW + 300),
            NOW + 300,
        ),
        (Box::new(|f| f.requested_ttl = Some(120)), NOW + 120),
        (
            Box::new(|f| f.approvals[0].max_session_secs = 900),
            NOW + 900,
        ),
    ];
    for (change, want) in cases {
        let mut f = facts();
        change(&mut f);
        let Decision::Allow(g) = engine.decide(&f, &[], ids()) else {
            panic!("expected allow");
        };
        assert_eq!(g.valid_before(), want);
    }
}

#[test]
fn every_deny_reason() {
    let engine = Engine::new().unwrap();
    type Change = Box<dyn Fn(&mut IssueFacts)>;
    let cases: Vec<(&str, Change, &[&str])> = vec![
        (
            "no group approved",
            Box::new(|f| f.groups = vec!["support-l1".into()]),
            &["not_in_approved_group"],
        ),
        (
            "no groups at all",
            Box::new(|f| f.groups.clear()),
            &["not_in_approved_group"],
        ),
        (
            "approval of another cluster",
            Box::new(|f| f.approvals[0].cluster = "other".into()),
            &["not_in_approved_group"],
        ),
        ("no mfa", Box::new(|f| f.mfa = false), &["no_mfa"]),
        (
            "ticket closed",
            Box::new(|f| f.ticket.status = "closed".into()),
            &["ticket_not_open"],
        ),
        (
            "ticket of someone else",
            Box::new(|f| f.ticket.assignee = "bob".into()),
            &["ticket_not_assigned"],
        ),
        (
            "ticket for another cluster",
            Box::new(|f| f.ticket.cluster = "acme-dev".into()),
            &["ticket_other_cluster"],
        ),
        (
            "ticket of another customer",
            Box::new(|f| f.ticket.customer = "globex".into()),
            &["ticket_other_cluster"],
        ),
        (
            "approval withdrawn",
            Box::new(|f| f.approvals[0].withdrawn = true),
            &["approval_withdrawn"],
        ),
        (
            "approval expired",
            Box::new(|f| f.approvals[0].valid_until = NOW - 1),
            &["approval_expired"],
        ),
        (
            "approval not yet valid",
            Box::new(|f| f.approvals[0].valid_from = NOW + 10),
            &["approval_not_yet_valid"],
        ),
        (
            "login not approved",
            Box::new(|f| f.requested_logins = Some(vec!["root".into()])),
            &["login_not_approved"],
        ),
        (
            "no login asked",
            Box::new(|f| f.requested_logins = Some(vec![])),
            &["login_not_approved"],
        ),
        (
            "jit without request",
            Box::new(|f| f.approvals[0].just_in_time = true),
            &["request_pending"],
        ),
        (
            "jit pending",
            Box::new(|f| {
                f.approvals[0].just_in_time = true;
                f.request = Some(RequestFacts {
                    id: "r1".into(),
                    approval: "ap-1".into(),
                    status: RequestStatus::Pending,
                    logins: vec!["ubuntu".into()],
                    ttl_secs: 600,
                });
            }),
            &["request_pending"],
        ),
        (
            "jit denied",
            Box::new(|f| {
                f.approvals[0].just_in_time = true;
                f.request = Some(RequestFacts {
                    id: "r1".into(),
                    approval: "ap-1".into(),
                    status: RequestStatus::Denied,
                    logins: vec!["ubuntu".into()],
                    ttl_secs: 600,
                });
            }),
            &["request_denied"],
        ),
        (
            "jit approved for another approval",
            Box::new(|f| {
                f.approvals[0].just_in_time = true;
                f.request = Some(RequestFacts {
                    id: "r1".into(),
                    approval: "ap-9".into(),
                    status: RequestStatus::Approved,
                    logins: vec!["ubuntu".into()],
                    ttl_secs: 600,
                });
            }),
            &["request_pending"],
        ),
        (
            "several at once",
            Box::new(|f| {
                f.mfa = false;
                f.ticket.status = "closed".into();
                f.ticket.assignee = "bob".into();
            }),
            &["no_mfa", "ticket_not_open", "ticket_not_assigned"],
        ),
    ];
    for (name, change, want) in cases {
        let mut f = facts();
        change(&mut f);
        let d = engine.decide(&f, &[], ids());
        assert_eq!(codes(&d), want.to_vec(), "case {name}");
        if let Decision::Deny { reasons, .. } = &d {
            assert!(reasons.iter().all(|r| !r.message.is_empty()), "case {name}");
        }
    }
}

#[test]
fn jit_pending_asks_for_a_request_and_approved_request_allows() {
    let engine = Engine::new().unwrap();
    let mut f = facts();
    f.approvals[0].just_in_time = true;
    match engine.decide(&f, &[], ids()) {
        Decision::Deny { needs_request, .. } => assert_eq!(needs_request.as_deref(), Some("ap-1")),
        Decision::Allow(_) => panic!("jit must not allow without a request"),
    }
    f.request = Some(RequestFacts {
        id: "r1".into(),
        approval: "ap-1".into(),
        status: RequestStatus::Approved,
        logins: vec!["ubuntu".into()],
        ttl_secs: 600,
    });
    let Decision::Allow(g) = engine.decide(&f, &[], ids()) else {
        panic!("approved request must allow")
    };
    assert_eq!(g.request(), Some("r1"));
}

#[test]
fn an_approved_request_binds_the_certificate_to_what_its_approvers_saw() {
    let engine = Engine::new().unwrap();
    let mut f = facts();
    f.approvals[0].just_in_time = true;
    f.request = Some(RequestFacts {
        id: "r1".into(),
        approval: "ap-1".into(),
        status: RequestStatus::Approved,
        logins: vec!["ubuntu".into()],
        ttl_secs: 300,
    });
    // Without --login: the request's logins (not every login of the approval), its lifetime.
    let Decision::Allow(g) = engine.decide(&f, &[], ids()) else {
        panic!("approved request must allow")
    };
    assert_eq!(g.logins(), ["ubuntu".to_string()]);
    assert_eq!(g.valid_before(), NOW + 300);
    // Asking for a longer lifetime gets the approved one.
    f.requested_ttl = Some(3600);
    let Decision::Allow(g) = engine.decide(&f, &[], ids()) else {
        panic!("approved request must allow")
    };
    assert_eq!(g.valid_before(), NOW + 300);
    // A login the approvers did not see needs a new request.
    f.requested_logins = Some(vec!["ubuntu".into(), "deploy".into()]);
    match engine.decide(&f, &[], ids()) {
        Decision::Deny { needs_request, .. } => assert_eq!(needs_request.as_deref(), Some("ap-1")),
        Decision::Allow(_) => panic!("a login beyond the approved request must not be granted"),
    }
}

#[test]
fn a_valid_approval_is_not_hidden_by_an_expired_one() {
    let engine = Engine::new().unwrap();
    let mut f = facts();
    let mut old = approval();
    old.id = "ap-0".into();
    old.valid_until = NOW - 10;
    f.approvals.insert(0, old);
    let Decision::Allow(g) = engine.decide(&f, &[], ids()) else {
        panic!("expected allow")
    };
    assert_eq!(g.approval(), "ap-1");
}

#[test]
fn customer_forbid_policy() {
    let engine = Engine::new().unwrap();
    let text = include_str!("../../../policies/examples/business-hours.cedar");
    let customer = engine.check_customer_policies(text).unwrap();
    // Monday 10:00 UTC: allowed.
    assert_eq!(codes(&engine.decide(&facts(), &customer, ids())), ["ALLOW"]);
    // Monday 20:00 UTC: the customer's own rule says no, with its own message.
    let mut f = facts();
    f.now = NOW + 10 * 3600;
    let d = engine.decide(&f, &customer, ids());
    assert_eq!(codes(&d), ["customer:acme_business_hours"]);
    let Decision::Deny { reasons, .. } = d else {
        unreachable!()
    };
    assert!(reasons[0].message.contains("weekdays"));
    // Sunday: also no.
    let mut f = facts();
    f.now = NOW - 86_400;
    assert_eq!(
        codes(&engine.decide(&f, &customer, ids())),
        ["customer:acme_business_hours"]
    );
}

#[test]
fn customer_policies_are_checked_when_saved() {
    let engine = Engine::new().unwrap();
    type IsExpected = fn(&PolicyError) -> bool;
    let bad: &[(&str, IsExpected)] = &[
        (
            r#"@id("p") @message("m") permit(principal, action, resource);"#,
            |e| matches!(e, PolicyError::NotForbid(_)),
        ),
        (r#"@id("p") forbid(principal, action, resource);"#, |e| {
            matches!(e, PolicyError::NoMessage(_))
        }),
        (
            r#"@message("m") forbid(principal, action, resource);"#,
            |e| matches!(e, PolicyError::NoId(_)),
        ),
        (
            r#"@id("p") @message("m") forbid(principal, action, resource) when { context.nonsense };"#,
            |e| matches!(e, PolicyError::Invalid(_)),
        ),
        ("forbid(", |e| matches!(e, PolicyError::Parse(_))),
        ("", |e| matches!(e, PolicyError::Parse(_))),
    ];
    for (text, ok) in bad {
        let err = engine.check_customer_policies(text).unwrap_err();
        assert!(ok(&err), "{text}: {err}");
    }
}

#[test]
fn hour_and_weekday_are_utc() {
    assert_eq!(hour_and_weekday(0), (0, 4)); // Thursday
    assert_eq!(hour_and_weekday(NOW), (10, 1)); // Monday
}

#[test]
fn customer_policies_must_name_their_own_cluster() {
    let engine = Engine::new().unwrap();
    let own = vec!["acme-prod".to_string()];
    let text = include_str!("../../../policies/examples/business-hours.cedar");
    let ps = engine.check_customer_policies(text).unwrap();
    Engine::check_scope(&ps, &own).unwrap();
    assert!(Engine::check_scope(&ps, &["globex-prod".to_string()]).is_err());
    let any = engine
        .check_customer_policies(r#"@id("x") @message("m") forbid(principal, action, resource);"#)
        .unwrap();
    assert!(matches!(
        Engine::check_scope(&any, &own),
        Err(PolicyError::NotScoped(_))
    ));
}

fn channel(request: ChannelRequest) -> ChannelFacts {
    ChannelFacts {
        engineer: "alice".into(),
        group: Some("support-l2".into()),
        customer: "acme".into(),
        cluster: "acme-prod".into(),
        node: "node1".into(),
        login: "ubuntu".into(),
        ticket: "SUP-1234".into(),
        port_forwarding: false,
        now: NOW,
        request,
    }
}

fn channel_codes(engine: &Engine, f: &ChannelFacts, customer: &[Policy]) -> Vec<String> {
    match engine.decide_channel(f, customer) {
        Ok(()) => vec!["ALLOW".into()],
        Err(reasons) => reasons.into_iter().map(|r| r.code).collect(),
    }
}

#[test]
fn channel_requests_under_the_base_policies() {
    use ChannelRequest as R;
    let engine = Engine::new().unwrap();
    let s = |v: &str| v.to_string();
    let table: Vec<(R, bool, &str)> = vec![
        (R::Pty, false, "ALLOW"),
        (R::Shell, false, "ALLOW"),
        (
            R::Exec {
                command: s("echo hi; exit 3"),
                file_transfer: s(""),
            },
            false,
            "ALLOW",
        ),
        (R::Subsystem { name: s("sftp") }, false, "ALLOW"),
        (
            R::Subsystem { name: s("netconf") },
            false,
            "subsystem_not_allowed",
        ),
        (R::Env { name: s("LANG") }, false, "ALLOW"),
        (
            R::Env {
                name: s("LD_PRELOAD"),
            },
            false,
            "environment_not_allowed",
        ),
        (
            R::Env {
                name: s("BASH_ENV"),
            },
            false,
            "environment_not_allowed",
        ),
        (R::WindowChange, false, "ALLOW"),
        (R::Signal { name: s("INT") }, false, "ALLOW"),
        (
            R::DirectTcpip {
                host: s("127.0.0.1"),
                port: 5432,
            },
            false,
            "port_forwarding_not_approved",
        ),
        (
            R::DirectTcpip {
                host: s("127.0.0.1"),
                port: 5432,
            },
            true,
            "ALLOW",
        ),
        (
            R::TcpipForward {
                host: s("0.0.0.0"),
                port: 8080,
            },
            true,
            "remote_forwarding_refused",
        ),
        (R::Agent, true, "agent_forwarding_refused"),
        (R::X11, true, "x11_forwarding_refused"),
    ];
    for (request, port_forwarding, want) in table {
        let mut f = channel(request.clone());
        f.port_forwarding = port_forwarding;
        assert_eq!(channel_codes(&engine, &f, &[]), [want], "{request:?}");
    }
    // Every refusal carries a message the engineer can read.
    let err = engine.decide_channel(&channel(R::Agent), &[]).unwrap_err();
    assert!(err[0].message.contains("agent forwarding"), "{err:?}");
}

#[test]
fn customer_channel_policies_narrow_what_a_session_may_do() {
    use ChannelRequest as R;
    let engine = Engine::new().unwrap();
    let text = include_str!("../../../policies/examples/no-file-transfer.cedar");
    let customer = engine.check_customer_policies(text).unwrap();
    Engine::check_scope(&customer, &["acme-prod".to_string()]).unwrap();
    let s = |v: &str| v.to_string();
    let l1 = |mut f: ChannelFacts| {
        f.group = Some("support-l1".into());
        f
    };
    let table: Vec<(ChannelFacts, &str)> = vec![
        (
            channel(R::Subsystem { name: s("sftp") }),
            "customer:acme_no_sftp",
        ),
        (
            channel(R::Exec {
                command: s("scp -t /tmp"),
                file_transfer: s("scp"),
            }),
            "customer:acme_no_scp",
        ),
        (
            channel(R::Exec {
                command: s("sudo /usr/bin/scp -f x"),
                file_transfer: s("scp"),
            }),
            "customer:acme_no_scp",
        ),
        (
            channel(R::Exec {
                command: s("/usr/lib/openssh/sftp-server"),
                file_transfer: s("sftp"),
            }),
            "customer:acme_no_sftp",
        ),
        (
            channel(R::Exec {
                command: s("sudo /usr/bin/scp -f x"),
                file_transfer: s("scp"),
            }),
            "customer:acme_no_scp",
        ),
        (
            channel(R::Exec {
                command: s("uptime"),
                file_transfer: s(""),
            }),
            "ALLOW",
        ),
        (channel(R::Shell), "ALLOW"),
        (l1(channel(R::Shell)), "customer:acme_no_shell_for_l1"),
        (
            l1(channel(R::Exec {
                command: s("uptime"),
                file_transfer: s(""),
            })),
            "ALLOW",
        ),
    ];
    for (f, want) in table {
        assert_eq!(
            channel_codes(&engine, &f, &customer),
            [want],
            "{:?}",
            f.request
        );
    }
    // Scoped to acme-prod: the same requests on another cluster are not touched.
    let mut other = channel(R::Subsystem { name: s("sftp") });
    other.cluster = "acme-dev".into();
    assert_eq!(channel_codes(&engine, &other, &customer), ["ALLOW"]);
    // A customer's forbid and a base forbid both explain a refusal, base first.
    let mut both = channel(R::Agent);
    both.group = Some("support-l1".into());
    let all = engine
        .check_customer_policies(
            r#"@id("no_agent_either") @message("no") forbid(principal, action == Sallyport::Action::"channel", resource == Sallyport::Cluster::"acme-prod") when { context.request == "agent" };"#,
        )
        .unwrap();
    assert_eq!(
        channel_codes(&engine, &both, &all),
        ["agent_forwarding_refused", "customer:no_agent_either"]
    );
}

#[test]
fn issue_policies_do_not_leak_into_channels_or_back() {
    let engine = Engine::new().unwrap();
    // The business-hours rule is about issuing: at 20:00 a session already open goes on.
    let text = include_str!("../../../policies/examples/business-hours.cedar");
    let customer = engine.check_customer_policies(text).unwrap();
    let mut f = channel(ChannelRequest::Shell);
    f.now = NOW + 10 * 3600;
    assert_eq!(channel_codes(&engine, &f, &customer), ["ALLOW"]);
    // A channel rule does not stop issuing.
    let text = include_str!("../../../policies/examples/no-file-transfer.cedar");
    let customer = engine.check_customer_policies(text).unwrap();
    assert_eq!(codes(&engine.decide(&facts(), &customer, ids())), ["ALLOW"]);
    // An unknown request kind is refused by default, with its own reason.
    let unknown = Engine::with_policies(
        &BASE_POLICIES.replace("\"signal\", \"direct_tcpip\"", "\"direct_tcpip\""),
    )
    .unwrap();
    assert_eq!(
        channel_codes(
            &unknown,
            &channel(ChannelRequest::Signal { name: "INT".into() }),
            &[]
        ),
        ["request_not_allowed"]
    );
}

#[test]
fn environment_variables_pass_only_from_the_allowlist_and_what_the_customer_permits() {
    use ChannelRequest as R;
    let engine = Engine::new().unwrap();
    let env = |n: &str| channel(R::Env { name: n.into() });
    let base: &[(&str, &str)] = &[
        ("LANG", "ALLOW"),
        ("LC_ALL", "ALLOW"),
        ("LC_CTYPE", "ALLOW"),
        ("TERM", "ALLOW"),
        ("COLORTERM", "ALLOW"),
        ("TZ", "ALLOW"),
        // Not on the allowlist.
        ("EDITOR_THEME", "environment_not_allowlisted"),
        ("FOO", "environment_not_allowlisted"),
        // Names that change what a shell or an interpreter runs: refused by name.
        ("LD_PRELOAD", "environment_not_allowed"),
        ("BASH_FUNC_ls%%", "environment_not_allowed"),
        ("PROMPT_COMMAND", "environment_not_allowed"),
        ("PS1", "environment_not_allowed"),
        ("PYTHONSTARTUP", "environment_not_allowed"),
        ("PERL5OPT", "environment_not_allowed"),
        ("NODE_OPTIONS", "environment_not_allowed"),
        ("GIT_SSH_COMMAND", "environment_not_allowed"),
        ("BASH_ENV", "environment_not_allowed"),
    ];
    for (name, want) in base {
        assert_eq!(channel_codes(&engine, &env(name), &[]), [*want], "{name}");
    }
    let err = engine.decide_channel(&env("FOO"), &[]).unwrap_err();
    assert!(err[0].message.contains("LANG, LC_*"), "{err:?}");
    // A customer may permit more names for their cluster, never one the base forbids.
    let text = r#"
        @id("acme_env")
        permit (principal, action == Sallyport::Action::"pass_env", resource == Sallyport::Cluster::"acme-prod")
        when { ["EDITOR_THEME", "LD_PRELOAD", "PROMPT_COMMAND"].contains(context.env_name) };
    "#;
    let customer = engine.check_customer_policies(text).unwrap();
    Engine::check_scope(&customer, &["acme-prod".to_string()]).unwrap();
    assert_eq!(
        channel_codes(&engine, &env("EDITOR_THEME"), &customer),
        ["ALLOW"]
    );
    assert_eq!(
        channel_codes(&engine, &env("FOO"), &customer),
        ["environment_not_allowlisted"]
    );
    for name in ["LD_PRELOAD", "PROMPT_COMMAND"] {
        assert_eq!(
            channel_codes(&engine, &env(name), &customer),
            ["environment_not_allowed"],
            "{name}"
        );
    }
    // Other permits stay refused: a customer cannot open what the base closes.
    let open = r#"@id("x") permit (principal, action == Sallyport::Action::"channel", resource == Sallyport::Cluster::"acme-prod");"#;
    assert!(matches!(
        engine.check_customer_policies(open),
        Err(PolicyError::NotForbid(_))
    ));
}
