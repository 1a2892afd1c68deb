//! README's "Deploying the broker for real", run as an operator would: only `sallyport`
//! commands and the files they print, the broker, the edge and the gateway as three separate
//! processes, and a node sshd set up from `admin node-config` alone. The engineer then reaches
//! the node with plain `ssh`, and the command is in the audit log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use sallyport_api::admin::{Enrollment, TokenCreated};
use support::bastion::{LOGIN, Proc, write_0600};
use support::broker::{BrokerProc, fresh_store};
use support::deploy::{enroll_gateway, json, json_as, sp, start_edge, text};
use support::ssh::Ssh;
use support::sshd::{SshdNode, free_port};

#[tokio::test]
async fn the_readme_deployment_reaches_a_node_through_three_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path();
    let none: &[(&str, &str)] = &[];

    // 1. The operator token and its hash.
    let out = sp(etc, none, &["admin", "hash-token"], "");
    let printed = text(&out);
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_string();
    let hash_line = printed
        .lines()
        .find(|l| l.starts_with("operator_token_sha256"))
        .unwrap()
        .to_string();

    // 2. The config: an embedded directory file made by `admin hash-password`.
    let entry = sp(
        etc,
        none,
        &[
            "admin",
            "hash-password",
            "--stdin",
            "--uid",
            "alice",
            "--group",
            "support-l2",
        ],
        "alice-long-password-1\n",
    );
    std::fs::write(etc.join("engineers.toml"), text(&entry)).unwrap();
    let store = fresh_store(etc).await;
    let broker_toml = etc.join("broker.toml");
    std::fs::write(
        &broker_toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndatabase = \"{store}\"\ndirectory = \"engineers.toml\"\n{hash_line}\n"
        ),
    )
    .unwrap();

    // 3. Check it, start it.
    let out = sp(
        etc,
        none,
        &["admin", "check", "--config", "broker.toml"],
        "",
    );
    assert!(text(&out).starts_with("ok:"), "{}", text(&out));
    let broker = BrokerProc::start(etc, broker_toml, store, token.clone());
    let url = broker.url.clone();
    let op: &[(&str, &str)] = &[("SALLYPORT_BROKER", &url), ("SALLYPORT_TOKEN", &token)];

    // 4. Customer, cluster, engineer, the edge's token; 5. an approval and a ticket.
    sp(etc, op, &["admin", "customer", "acme"], "");
    sp(
        etc,
        op,
        &["admin", "cluster", "acme-prod", "--customer", "acme"],
        "",
    );
    let alice: Enrollment = json_as(&sp(etc, op, &["admin", "engineer", "alice"], ""));
    let totp = alice.totp_secret;
    let edge_token = json_as::<TokenCreated>(&sp(
        etc,
        op,
        &["admin", "token", "edge-eu1", "--role", "edge"],
        "",
    ))
    .token;
    // The customer's approver and ticket system act with their own tokens.
    let token_of = |name: &str, role: &str| -> String {
        json_as::<TokenCreated>(&sp(
            etc,
            op,
            &["admin", "token", name, "--role", role, "--customer", "acme"],
            "",
        ))
        .token
    };
    let approver_token = token_of("acme-approver-script", "approver");
    let jira_token = token_of("acme-jira", "ticket_system");
    let approver: &[(&str, &str)] = &[
        ("SALLYPORT_BROKER", &url),
        ("SALLYPORT_TOKEN", &approver_token),
    ];
    let jira: &[(&str, &str)] = &[("SALLYPORT_BROKER", &url), ("SALLYPORT_TOKEN", &jira_token)];
    sp(
        etc,
        approver,
        &[
            "admin",
            "approve",
            "--cluster",
            "acme-prod",
            "--group",
            "support-l2",
            "--login",
            LOGIN,
        ],
        "",
    );
    sp(
        etc,
        jira,
        &[
            "admin",
            "ticket",
            "SUP-1",
            "--customer",
            "acme",
            "--cluster",
            "acme-prod",
            "--assignee",
            "alice",
        ],
        "",
    );

    // 6. The edge: its token in a 0600 file, its public address; it registers itself.
    write_0600(&etc.join("edge.token"), &format!("{edge_token}\n"));
    let (edge_port, tunnel_port) = (free_port(), free_port());
    std::fs::write(
        etc.join("edge.toml"),
        format!(
            "listen = \"127.0.0.1:{edge_port}\"\ntunnel_listen = \"127.0.0.1:{tunnel_port}\"\n\
             data_dir = \"edge-data\"\nbroker = \"{url}\"\nname = \"edge-eu1\"\n\
             token_file = \"edge.token\"\npublic_address = \"127.0.0.1:{edge_port}\"\n"
        ),
    )
    .unwrap();
    let out = sp(etc, none, &["admin", "check", "--config", "edge.toml"], "");
    assert!(text(&out).starts_with("ok:"), "{}", text(&out));
    let edge = start_edge(etc);

    // 7. The gateway: enrolled with one command, checked, started.
    enroll_gateway(etc, op, tunnel_port);
    let out = sp(
        etc,
        none,
        &["admin", "check", "--config", "gateway.toml"],
        "",
    );
    assert!(text(&out).starts_with("ok:"), "{}", text(&out));
    let gateway = Proc::start(
        &["gateway"],
        &etc.join("gateway.toml"),
        etc.join("gateway.log"),
    );
    assert!(
        gateway.wait_log("tunnel up", Duration::from_secs(30)),
        "{}",
        gateway.log_text()
    );

    // 8. The node, from `admin node-config` alone, then registered with its host key.
    let cfg = json(&sp(
        etc,
        op,
        &["admin", "node-config", "--cluster", "acme-prod", "--json"],
        "",
    ));
    let files = cfg["files"].as_object().unwrap();
    let ca = files["/etc/ssh/sallyport/node_ca.pub"].as_str().unwrap();
    let principals: Vec<&str> = files[&format!("/etc/ssh/sallyport/principals/{LOGIN}")]
        .as_str()
        .unwrap()
        .lines()
        .collect();
    let node = SshdNode::start(ca.trim(), LOGIN, &principals);
    std::fs::write(etc.join("node1.pub"), node.host_public_key()).unwrap();
    sp(
        etc,
        op,
        &[
            "admin",
            "node",
            "acme-prod",
            "node1",
            "--address",
            "127.0.0.1",
            "--port",
            &node.port().to_string(),
            "--host-key",
            "node1.pub",
        ],
        "",
    );

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
