//! A deployment as README describes it — broker, edge and gateway as three processes of the
//! `sallyport` binary, a node sshd set up from `admin node-config` — made with `sallyport`
//! commands only, for the benches and tests that need the stages as separate processes.
//! (`tests/deploy_walkthrough.rs` runs README's steps one by one with its own assertions.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sallyport_api::admin::{Enrollment, TokenCreated};
use serde_json::Value;

use super::bastion::{LOGIN, Proc, write_0600};
use super::broker::{BIN, BrokerProc, fresh_store};
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
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A command's `--json` output read as the API type `T`.
pub fn json_as<T: serde::de::DeserializeOwned>(out: &Output) -> T {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

pub fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
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
            &format!("{PASSWORD}\n"),
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
        let broker = BrokerProc::start(etc, broker_toml, store, token.clone());
        let url = broker.url.clone();
        let op: &[(&str, &str)] = &[("SALLYPORT_BROKER", &url), ("SALLYPORT_TOKEN", &token)];
        sp(etc, op, &["admin", "customer", "acme"], "");
        sp(
            etc,
            op,
            &["admin", "cluster", "acme-prod", "--customer", "acme"],
            "",
        );
        let alice: Enrollment = json_as(&sp(etc, op, &["admin", "engineer", "alice"], ""));
        let totp_secret = alice.totp_secret;
        let token_of = |name: &str, role: &str, customer: Option<&str>| -> String {
            let mut args = vec!["admin", "token", name, "--role", role];
            if let Some(c) = customer {
                args.extend(["--customer", c]);
            }
            json_as::<TokenCreated>(&sp(etc, op, &args, "")).token
        };
        let edge_token = token_of("edge-eu1", "edge", None);
        let approver = token_of("acme-approver-script", "approver", Some("acme"));
        let jira = token_of("acme-jira", "ticket_system", Some("acme"));
        let as_token = |t: &str| {
            [
                ("SALLYPORT_BROKER", url.clone()),
                ("SALLYPORT_TOKEN", t.to_string()),
            ]
        };
        let approver_env = as_token(&approver);
        let approver_env: Vec<(&str, &str)> =
            approver_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sp(
            etc,
            &approver_env,
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
        let jira_env = as_token(&jira);
        let jira_env: Vec<(&str, &str)> = jira_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sp(
            etc,
            &jira_env,
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

        write_0600(&etc.join("edge.token"), &format!("{edge_token}\n"));
        let (edge_port, tunnel_port) = (free_port(), free_port());
        std::fs::write(
            etc.join("edge.toml"),
            format!(
                "listen = \"127.0.0.1:{edge_port}\"\ntunnel_listen = \"127.0.0.1:{tunnel_port}\"\n\
                 data_dir = \"edge-data\"\nbroker = \"{url}\"\nname = \"edge-eu1\"\n\
                 token_file = \"edge.token\"\npublic_address = \"127.0.0.1:{edge_port}\"\n{}\n",
                extra.edge
            ),
        )
        .unwrap();
        let edge = start_edge(etc);

        enroll_gateway(etc, op, tunnel_port);
        // Top-level keys go before the file's tables.
        let gateway_toml = etc.join("gateway.toml");
        let enrolled = std::fs::read_to_string(&gateway_toml).unwrap();
        std::fs::write(&gateway_toml, format!("{}\n{enrolled}", extra.gateway)).unwrap();
        let gateway = Proc::start(&["gateway"], &gateway_toml, etc.join("gateway.log"));
        assert!(
            gateway.wait_log("tunnel up", Duration::from_secs(30)),
            "{}",
            gateway.log_text()
        );

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
        let node = SshdNode::start_with(ca.trim(), LOGIN, &principals, extra.sshd);
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
