//! README's "Deploying the broker for real", run as an operator would: only `sallyport`
//! commands and the files they print, the broker, the edge and the gateway as three separate
//! processes, and a node sshd set up from `admin node-config` alone. The engineer then reaches
//! the node with plain `ssh`, and the command is in the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::broker::BrokerProc;
use support::deploy::{
    acme_token, approve_and_open_ticket, customer_cluster_engineer, enroll_gateway,
    node_from_config, operator_token, sp, start_edge, start_gateway, text, write_broker_config,
    write_directory, write_edge_config,
};
use support::ssh::Ssh;

/// `admin check --config NAME` in `etc`: the file is fine.
fn check_config(etc: &Path, name: &str) {
    let none: &[(&str, &str)] = &[];
    let out = sp(etc, none, &["admin", "check", "--config", name], "");
    assert!(text(&out).starts_with("ok:"), "{}", text(&out));
}

#[tokio::test]
async fn the_readme_deployment_reaches_a_node_through_three_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path();
    let none: &[(&str, &str)] = &[];

    // 1. The operator token and its hash.
    let (token, hash_line) = operator_token(etc);

    // 2. The config: an embedded directory file made by `admin hash-password`.
    write_directory(etc, "alice-long-password-1");
    let (broker_toml, store) = write_broker_config(etc, &hash_line).await;

    // 3. Check it, start it.
    check_config(etc, "broker.toml");
    let broker = BrokerProc::start(etc, broker_toml, store, token.clone());
    let url = broker.url.clone();
    let op: &[(&str, &str)] = &[("SALLYPORT_BROKER", &url), ("SALLYPORT_TOKEN", &token)];

    // 4. Customer, cluster, engineer, the edge's token; 5. an approval and a ticket.
    let (totp, edge_token) = customer_cluster_engineer(etc, op);
    // The customer's approver and ticket system act with their own tokens.
    let approver_token = acme_token(etc, op, "acme-approver-script", "approver");
    let jira_token = acme_token(etc, op, "acme-jira", "ticket_system");
    approve_and_open_ticket(etc, &url, &approver_token, &jira_token);

    // 6. The edge: its token in a 0600 file, its public address; it registers itself.
    let (_, tunnel_port) = write_edge_config(etc, &url, &edge_token, "");
    check_config(etc, "edge.toml");
    let edge = start_edge(etc);

    // 7. The gateway: enrolled with one command, checked, started.
    enroll_gateway(etc, op, tunnel_port);
    check_config(etc, "gateway.toml");
    let gateway = start_gateway(etc);

    // 8. The node, from `admin node-config` alone, then registered with its host key.
    let _node = node_from_config(etc, op, "");

    // The engineer: `sallyport login`, then plain ssh.
    let home = etc.join("alice-home");
    std::fs::create_dir_all(&home).unwrap();
    let code = text(&sp(etc, none, &["totp", "--secret", &totp], ""));
    let home_s = home.display().to_string();
    let engineer: &[(&str, &str)] = &[("SALLYPORT_HOME", &home_s)];
    sp(
        etc,
        engineer,
        &[
            "login",
            "--broker",
            &url,
            "--user",
            "alice",
            "--password-stdin",
            "--totp",
            code.trim(),
            "--ticket",
            "SUP-1",
        ],
        "alice-long-password-1\n",
    );
    let mut ssh = Ssh::engineer(&home)
        .args(["node1.acme-prod", "echo deployed-$((6*7))"])
        .command();
    let out = ssh
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        text(&out).trim(),
        "deployed-42",
        "{}\nedge: {}\ngateway: {}",
        String::from_utf8_lossy(&out.stderr),
        edge.log_text(),
        gateway.log_text()
    );

    // What ran is in the audit log.
    let mut found = false;
    for _ in 0..100 {
        let out = sp(
            etc,
            op,
            &["audit", "search", "--command", "deployed", "--json"],
            "",
        );
        if text(&out).contains("echo deployed-$((6*7))") {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(found, "the command is not in the audit log");
}
