//! Certificate issuing rate against the raw Ed25519 signing rate of the same key.
//!
//!     cargo bench -p sallyport-ca --bench signing
//!
//! Prints certificates/s for `build_user_cert` (what the broker's CA does per login), raw
//! signatures/s, and their ratio. Measured, not asserted: this is no test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use russh::keys::signature::Signer;
use sallyport_ca::policy::{ApprovalFacts, Decision, Engine, GrantIds, IssueFacts, TicketFacts};

/// Facts that allow (with the approval) or deny (without it).
fn facts(with_approval: bool) -> IssueFacts {
    let now = 1_763_978_400;
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
        approvals: with_approval
            .then(|| ApprovalFacts {
                id: "ap-1".into(),
                group: "support-l2".into(),
                cluster: "acme-prod".into(),
                logins: vec!["ubuntu".into()],
                valid_from: now - 10,
                valid_until: now + 86_400,
                withdrawn: false,
                just_in_time: false,
                max_session_secs: 3600,
                per_session_mfa: false,
                observer_required: false,
                port_forwarding: false,
                source_networks: vec![],
            })
            .into_iter()
            .collect(),
        requested_logins: None,
        request: None,
        now,
        max_ttl: 8 * 3600,
        requested_ttl: None,
    }
}

fn grant(engine: &Engine, serial: u64) -> sallyport_ca::Grant {
    match engine.decide(
        &facts(true),
        &[],
        GrantIds {
            id: format!("g-{serial}"),
            serial,
        },
    ) {
        Decision::Allow(g) => *g,
        Decision::Deny { reasons, .. } => panic!("denied: {reasons:?}"),
    }
}

fn main() {
    let engine = Engine::new().expect("policies");
    let ca = sallyport_ca::keys::generate_ed25519("bench ca").expect("ca");
    let subject = sallyport_ca::keys::generate_ed25519("bench subject").expect("subject");
    let n = 2000u64;

    let t = Instant::now();
    for i in 0..n {
        let _ = engine.decide(
            &facts(true),
            &[],
            GrantIds {
                id: format!("g-{i}"),
                serial: i + 1,
            },
        );
    }
    let decide = n as f64 / t.elapsed().as_secs_f64();

    let grants: Vec<_> = (1..=n).map(|i| grant(&engine, i)).collect();
    let t = Instant::now();
    for g in &grants {
        sallyport_ca::build_user_cert(&ca, subject.public_key(), g).expect("cert");
    }
    let certs = n as f64 / t.elapsed().as_secs_f64();

    let msg = vec![7u8; 512];
    let t = Instant::now();
    for _ in 0..n {
        let _sig: russh::keys::ssh_key::Signature = ca.try_sign(&msg).expect("sign");
    }
    let raw = n as f64 / t.elapsed().as_secs_f64();

    println!("policy decisions/s        {decide:>10.0}");
    println!("certificates/s            {certs:>10.0}");
    println!("raw Ed25519 signatures/s  {raw:>10.0}");
    println!("certificates / raw signs  {:>10.3}", certs / raw);
}
