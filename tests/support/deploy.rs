//! A deployment as README describes it — broker, edge and gateway as three processes of the
//! `sallyport` binary, a node sshd set up from `admin node-config` — made with `sallyport`
//! commands only, for the benches and tests that need the stages as separate processes.
//! (`tests/deploy_walkthrough.rs` runs README's steps one by one with its own assertions.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sallyport_api::admin::{Enrollment, TokenCreated};

use super::bastion::{LOGIN, Proc, write_0600};
use super::broker::{BIN, BrokerProc, fresh_store, spawn_fed};
use super::sshd::{SshdNode, free_port};

/// `sallyport ARGS` in `dir` with `env`, `stdin` fed; panics unless it succeeds.
pub fn sp(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let out = sp_output(dir, env, args, stdin);
    assert!(
        out.status.success(),
        "sallyport {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The edge of `etc/edge.toml` started, once it registered with the broker.
pub fn start_edge(etc: &Path) -> Proc {
    let edge = Proc::start(&["edge"], &etc.join("edge.toml"), etc.join("edge.log"));
    assert!(
        edge.wait_log("registered with the broker", Duration::from_secs(30)),
        "{}",
        edge.log_text()
    );
    edge
}

/// gw1 of acme-prod enrolled with `admin gateway enroll` (as `op`), dialing the edge's tunnel
/// port: writes `etc/gateway.toml`.
pub fn enroll_gateway(etc: &Path, op: &[(&str, &str)], tunnel_port: u16) {
    let edge = format!("127.0.0.1:{tunnel_port}");
    let mut args: Vec<&str> = "admin gateway enroll --cluster acme-prod --name gw1 \
                               --edge-host-key edge-data/host_key.pub --data-dir gw-data \
                               --out gateway.toml"
        .split_whitespace()
        .collect();
    args.extend(["--edge", &edge]);
    sp(etc, op, &args, "");
}

/// `sallyport ARGS` in `dir` with `env`, `stdin` fed; whatever it did.
pub fn sp_output(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    spawn_fed(
        Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        stdin,
    )
    .wait_with_output()
    .unwrap()
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A command's `--json` output read as the API type `T`.
pub fn json_as<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// `admin hash-token`: the operator's token, and the `operator_token_sha256` line for the
/// broker's config.
pub fn operator_token(etc: &Path) -> (String, String) {
    let none: &[(&str, &str)] = &[];
    let printed = text(&sp(etc, none, &["admin", "hash-token"], ""));
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
    (token, hash_line)
}

/// The embedded directory file `etc/engineers.toml`: alice (group `support-l2`) with `password`,
/// as `admin hash-password` prints her entry.
pub fn write_directory(etc: &Path, password: &str) {
    let none: &[(&str, &str)] = &[];
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
        &format!("{password}\n"),
    );
    std::fs::write(etc.join("engineers.toml"), text(&entry)).unwrap();
}

/// `etc/broker.toml` on a fresh store, with the directory file and the operator token's
/// `hash_line`; returns its path and the store's URL.
pub async fn write_broker_config(etc: &Path, hash_line: &str) -> (PathBuf, String) {
    let store = fresh_store(etc).await;
    let broker_toml = etc.join("broker.toml");
    std::fs::write(
        &broker_toml,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndatabase = \"{store}\"\ndirectory = \"engineers.toml\"\n{hash_line}\n"
        ),
    )
    .unwrap();
    (broker_toml, store)
}

/// As the operator (`op`): customer acme, its cluster acme-prod, engineer alice and the token
/// of edge `edge-eu1`; returns alice's TOTP secret and the edge's token.
pub fn customer_cluster_engineer(etc: &Path, op: &[(&str, &str)]) -> (String, String) {
    sp(etc, op, &["admin", "customer", "acme"], "");
    sp(
        etc,
        op,
        &["admin", "cluster", "acme-prod", "--customer", "acme"],
        "",
    );
    let alice: Enrollment = json_as(&sp(etc, op, &["admin", "engineer", "alice"], ""));
    let edge = json_as::<TokenCreated>(&sp(
        etc,
        op,
        &["admin", "token", "edge-eu1", "--role", "edge"],
        "",
    ));
    (alice.totp_secret, edge.token)
}

/// A token of `role` for customer acme, named `name`, made by the operator (`op`).
pub fn acme_token(etc: &Path, op: &[(&str, &str)], name: &str, role: &str) -> String {
    json_as::<TokenCreated>(&sp(
        etc,
        op,
        &["admin", "token", name, "--role", role, "--customer", "acme"],
        "",
    ))
    .token
}

/// With their own tokens: acme's approver approves support-l2 on acme-prod as `LOGIN`, and
/// acme's ticket system opens SUP-1 for alice.
pub fn approve_and_open_ticket(etc: &Path, url: &str, approver_token: &str, jira_token: &str) {
    let approver: &[(&str, &str)] = &[
        ("SALLYPORT_BROKER", url),
        ("SALLYPORT_TOKEN", approver_token),
    ];
    let jira: &[(&str, &str)] = &[("SALLYPORT_BROKER", url), ("SALLYPORT_TOKEN", jira_token)];
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
}

/// `etc/edge.toml` for edge `edge-eu1` (its token in a 0600 `edge.token`, its public address)
/// with `extra` lines; returns its engineers' port and its tunnel port.
pub fn write_edge_config(etc: &Path, url: &str, edge_token: &str, extra: &str) -> (u16, u16) {
    write_0600(&etc.join("edge.token"), &format!("{edge_token}\n"));
    let (edge_port, tunnel_port) = (free_port(), free_port());
    std::fs::write(
        etc.join("edge.toml"),
        format!(
            "listen = \"127.0.0.1:{edge_port}\"\ntunnel_listen = \"127.0.0.1:{tunnel_port}\"\n\
             data_dir = \"edge-data\"\nbroker = \"{url}\"\nname = \"edge-eu1\"\n\
             token_file = \"edge.token\"\npublic_address = \"127.0.0.1:{edge_port}\"\n{extra}\n"
        ),
    )
    .unwrap();
    (edge_port, tunnel_port)
}

/// The gateway of `etc/gateway.toml` started, once its tunnel is up.
pub fn start_gateway(etc: &Path) -> Proc {
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
    gateway
}

/// Node1 of acme-prod: an sshd (with `sshd_extra` lines) set up from `admin node-config` alone,
/// then registered with its host key (as `op`).
pub fn node_from_config(etc: &Path, op: &[(&str, &str)], sshd_extra: &str) -> SshdNode {
    let cfg: NodeSetup = json_as(&sp(
        etc,
        op,
        &["admin", "node-config", "--cluster", "acme-prod", "--json"],
        "",
    ));
    let ca = &cfg.files["/etc/ssh/sallyport/node_ca.pub"];
    let principals: Vec<&str> = cfg.files[&format!("/etc/ssh/sallyport/principals/{LOGIN}")]
        .lines()
        .collect();
    let node = SshdNode::start_with(ca.trim(), LOGIN, &principals, sshd_extra);
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
    node
}

/// What the tests read of `admin node-config --json`: the files a node needs, by path.
#[derive(Debug, serde::Deserialize)]
pub struct NodeSetup {
    pub files: std::collections::BTreeMap<String, String>,
}

/// Extra config lines for each process (top-level keys).
#[derive(Default)]
pub struct Extra<'a> {
    pub edge: &'a str,
    pub gateway: &'a str,
    pub sshd: &'a str,
}

/// The three processes and the node, with engineer `alice` (group `support-l2`, approved for
/// `LOGIN` on cluster `acme-prod`) and ticket `SUP-1` assigned to her.
pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub broker: BrokerProc,
    pub edge: Proc,
    pub gateway: Proc,
    pub node: SshdNode,
    pub edge_port: u16,
    pub operator_token: String,
    pub totp_secret: String,
}

pub const PASSWORD: &str = "alice-long-password-1";

impl Deployment {
    pub async fn start(extra: Extra<'_>) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path();
        let (token, hash_line) = operator_token(etc);
        write_directory(etc, PASSWORD);
        let (broker_toml, store) = write_broker_config(etc, &hash_line).await;
        let broker = BrokerProc::start(etc, broker_toml, store, token.clone());
        let url = broker.url.clone();
        let op: &[(&str, &str)] = &[("SALLYPORT_BROKER", &url), ("SALLYPORT_TOKEN", &token)];
        let (totp_secret, edge_token) = customer_cluster_engineer(etc, op);
        let approver = acme_token(etc, op, "acme-approver-script", "approver");
        let jira = acme_token(etc, op, "acme-jira", "ticket_system");
        approve_and_open_ticket(etc, &url, &approver, &jira);

        let (edge_port, tunnel_port) = write_edge_config(etc, &url, &edge_token, extra.edge);
        let edge = start_edge(etc);

        enroll_gateway(etc, op, tunnel_port);
        // Top-level keys go before the file's tables.
        let gateway_toml = etc.join("gateway.toml");
        let enrolled = std::fs::read_to_string(&gateway_toml).unwrap();
        std::fs::write(&gateway_toml, format!("{}\n{enrolled}", extra.gateway)).unwrap();
        let gateway = start_gateway(etc);
        let node = node_from_config(etc, op, extra.sshd);
        Deployment {
            dir,
            broker,
            edge,
            gateway,
            node,
            edge_port,
            operator_token: token,
            totp_secret,
        }
    }

    /// `sallyport login` as alice for ticket `SUP-1` into SALLYPORT_HOME `alice-home`; returns it.
    pub fn login(&self) -> PathBuf {
        let out = self.try_login(PASSWORD, 0);
        assert!(
            out.status.success(),
            "sallyport login failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.dir.path().join("alice-home")
    }

    /// `sallyport login` as alice with `password` and the TOTP code of the period `periods` away
    /// from now (a code is good for one login; the broker takes the neighbouring periods too).
    pub fn try_login(&self, password: &str, periods: i64) -> Output {
        let etc = self.dir.path();
        let home = etc.join("alice-home");
        std::fs::create_dir_all(&home).unwrap();
        let at = super::broker::now() as i64 + 30 * periods;
        let code = sallyport_broker::totp::code(&self.totp_secret, at as u64).unwrap();
        let home_s = home.display().to_string();
        sp_output(
            etc,
            &[("SALLYPORT_HOME", &home_s)],
            &[
                "login",
                "--broker",
                &self.broker.url,
                "--user",
                "alice",
                "--password-stdin",
                "--totp",
                &code,
                "--ticket",
                "SUP-1",
            ],
            &format!("{password}\n"),
        )
    }
}
