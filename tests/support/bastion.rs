//! Real `sallyport edge` and `sallyport gateway` processes for a test, wired to a World's broker,
//! with a real sshd node that trusts the gateway's node CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sallyport_api::admin::TokenCreated;
use sallyport_api::gateways::GatewayCreated;
use serde_json::{Value, json};

use super::broker::{BIN, World};
use super::ssh::Ssh;
use super::sshd::{SshdNode, free_port};

pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

/// `sallyport`, or `sallyport` under the profiler that `SALLYPORT_PROFILE_WRAP=STAGE=COMMAND`
/// names for this subcommand (benches: `gateway=heaptrack -o /tmp/gateway` runs the gateway
/// under heaptrack from its first allocation).
fn profile_wrap(subcommand: &str) -> Command {
    let wrap = std::env::var("SALLYPORT_PROFILE_WRAP").unwrap_or_default();
    match wrap.split_once('=') {
        Some((stage, command)) if stage == subcommand && !command.trim().is_empty() => {
            let mut words = command.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(BIN);
            cmd
        }
        _ => Command::new(BIN),
    }
}

impl Proc {
    pub fn start(args: &[&str], config: &Path, log: PathBuf) -> Proc {
        Proc::start_with_env(args, config, log, &[])
    }

    /// [`Proc::start`] with more environment variables (e.g. a clock moved by libfaketime).
    pub fn start_with_env(
        args: &[&str],
        config: &Path,
        log: PathBuf,
        env: &[(String, String)],
    ) -> Proc {
        let mut cmd = profile_wrap(args.first().copied().unwrap_or_default());
        let child = cmd
            .args(args)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info,russh=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM (as a service manager stopping it would).
    pub fn sigterm(&self) {
        let st = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -TERM {}", self.pid());
    }

    /// Its exit status once it exited, waiting at most `timeout`; `None` while it runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const LOGIN: &str = "sallyport-node";

pub struct Bastion {
    pub edge: Proc,
    pub gateway: Proc,
    pub node: SshdNode,
    pub edge_port: u16,
    pub edge_host_key: String,
    pub dir: tempfile::TempDir,
    pub gateway_config: PathBuf,
}

/// The edge port to give the broker (as `edge_address`) before it starts.
pub fn pick_edge_port() -> u16 {
    free_port()
}

/// Start edge, gateway (enrolled with a fresh join token) and an sshd node `node1` of acme-prod.
pub async fn start(w: &World, edge_port: u16) -> Bastion {
    start_prepared(w, edge_port, |_| {}).await
}

/// `start`, with `prepare(gateway data dir)` run before the gateway's first start.
pub async fn start_prepared(w: &World, edge_port: u16, prepare: impl FnOnce(&Path)) -> Bastion {
    let dir = tempfile::tempdir().unwrap();
    let (edge, edge_host_key, tunnel_port) = start_edge(w, &dir.path().join("edge"), edge_port);

    // Gateway: a join token from the operator, then enrollment at first start.
    let (s, created) =
        w.op.post_as::<GatewayCreated>("/v1/clusters/acme-prod/gateways", json!({"name": "gw1"}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{created:?}");
    let token = &created.join_token;
    let gw_dir = dir.path().join("gateway");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let gateway_config = gw_dir.join("gateway.toml");
    std::fs::write(
        &gateway_config,
        format!(
            "data_dir = \"{}\"\nbroker = \"{}\"\njoin_token = \"{token}\"\nrefresh_secs = 1\nconfig_refresh_secs = 1\nspool_reserve_bytes = 65536\n[[edges]]\naddress = \"127.0.0.1:{tunnel_port}\"\nhost_key = \"{edge_host_key}\"\n",
            gw_dir.join("data").display(),
            w.broker.url
        ),
    )
    .unwrap();
    prepare(&gw_dir.join("data"));
    let gateway = Proc::start(&["gateway"], &gateway_config, gw_dir.join("gateway.log"));
    assert!(
        gateway.wait_log("tunnel up", Duration::from_secs(30)),
        "gateway tunnel did not come up: {}\n--- edge:\n{}",
        gateway.log_text(),
        edge.log_text()
    );

    // The node trusts only the gateway's node CA.
    let node_ca = std::fs::read_to_string(gw_dir.join("data/node_ca.pub")).unwrap();
    let node = SshdNode::start(node_ca.trim(), LOGIN, &[LOGIN]);
    let (s, v) =
        w.op.post(
            "/v1/clusters/acme-prod/nodes",
            json!({"name": "node1", "address": "127.0.0.1", "port": node.port(),
                   "host_keys": [node.host_public_key()]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Bastion {
        edge,
        gateway,
        node,
        edge_port,
        edge_host_key,
        dir,
        gateway_config,
    }
}

/// Start an edge in `edge_dir` listening for engineers on `edge_port`; returns it, its host key
/// and its tunnel port.
pub fn start_edge(w: &World, edge_dir: &Path, edge_port: u16) -> (Proc, String, u16) {
    let tunnel_port = free_port();
    std::fs::create_dir_all(edge_dir).unwrap();
    let edge_cfg = edge_dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "listen = \"127.0.0.1:{edge_port}\"\ntunnel_listen = \"127.0.0.1:{tunnel_port}\"\ndata_dir = \"{}\"\nbroker = \"{}\"\nrefresh_secs = 1\n",
            edge_dir.join("data").display(),
            w.broker.url
        ),
    )
    .unwrap();
    let edge = Proc::start(&["edge"], &edge_cfg, edge_dir.join("edge.log"));
    assert!(
        edge.wait_log("edge listening", Duration::from_secs(20)),
        "edge did not start: {}",
        edge.log_text()
    );
    let edge_host_key = std::fs::read_to_string(edge_dir.join("data/host_key.pub"))
        .unwrap()
        .trim()
        .to_string();
    (edge, edge_host_key, tunnel_port)
}

impl Bastion {
    /// The gateway's and the edge's logs so far, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- gateway:\n{}\n--- edge:\n{}",
            self.gateway.log_text(),
            self.edge.log_text()
        )
    }

    /// Add `extra` (TOML lines) to the gateway's config and restart it on the same data.
    pub fn reconfigure_gateway(&mut self, extra: &str) {
        let mut text = std::fs::read_to_string(&self.gateway_config).unwrap();
        // Top-level keys go before the `[[edges]]` tables.
        let at = text.find("[[edges]]").unwrap_or(text.len());
        text.insert_str(at, extra);
        std::fs::write(&self.gateway_config, text).unwrap();
        self.restart_gateway();
    }

    /// Restart the gateway process on the same data (after a kill).
    pub fn restart_gateway(&mut self) {
        self.restart_gateway_with_env(&[]);
        assert!(
            self.gateway.wait_log("tunnel up", Duration::from_secs(30)),
            "{}",
            self.gateway.log_text()
        );
    }

    /// Start the gateway again with more environment variables; returns once it runs (whether
    /// its tunnel comes up is for the caller to see).
    pub fn restart_gateway_with_env(&mut self, env: &[(String, String)]) {
        self.gateway.kill9();
        let log = self.dir.path().join("gateway/gateway-2.log");
        self.gateway = Proc::start_with_env(&["gateway"], &self.gateway_config, log, env);
        assert!(
            self.gateway
                .wait_log("gateway running", Duration::from_secs(30)),
            "{}",
            self.gateway.log_text()
        );
    }
}

/// `ssh -F <home>/ssh_config <args>` as the engineer would type it.
pub fn ssh(home: &Path, args: &[&str]) -> std::process::Output {
    Ssh::engineer(home)
        .opt("StrictHostKeyChecking=yes")
        .args(args)
        .output()
}

/// `ssh node1.acme-prod 'touch TAG'` from `home`: whether it ran on the node (the file is
/// there and it printed), and what ssh said.
pub fn try_touch(home: &Path, tag: &str) -> (bool, String) {
    let _ = std::fs::remove_file(tag);
    let out = ssh(
        home,
        &["node1.acme-prod", &format!("touch {tag}; echo ran")],
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    let ran = out.status.success()
        && String::from_utf8_lossy(&out.stdout).contains("ran")
        && Path::new(tag).exists();
    let _ = std::fs::remove_file(tag);
    (ran, said)
}

/// The name of the edge that `start_with_edge_token` runs.
pub const EDGE_NAME: &str = "edge1";

/// An API token of role `edge` named `EDGE_NAME`, made by the operator.
pub async fn edge_token(w: &World) -> String {
    let (s, created) =
        w.op.post_as::<TokenCreated>("/v1/tokens", json!({"name": EDGE_NAME, "role": "edge"}))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{created:?}");
    created.token
}

/// Write `text` to a new file only its owner may read.
pub fn write_0600(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Like `start`, but the edge is named `EDGE_NAME` and holds `token` (role edge) in a 0600
/// `token_file`: it spools its refusals and sessions, ships them to the broker and checks
/// per-session TOTP codes there. (The edge of `start` is restarted on the same data and ports
/// with the two keys added; the gateway's tunnel comes back by itself.)
pub async fn start_with_edge_token(w: &World, edge_port: u16, token: &str) -> Bastion {
    start_with_edge_token_and(w, edge_port, token, "").await
}

/// `start_with_edge_token`, with `extra` (TOML lines) added to the edge's config.
pub async fn start_with_edge_token_and(
    w: &World,
    edge_port: u16,
    token: &str,
    extra: &str,
) -> Bastion {
    let mut b = start(w, edge_port).await;
    let edge_dir = b.dir.path().join("edge");
    let token_file = edge_dir.join("edge.token");
    write_0600(&token_file, &format!("{token}\n"));
    let cfg = edge_dir.join("edge.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "name = \"{EDGE_NAME}\"\ntoken_file = \"{}\"\n{extra}",
        token_file.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    b.edge.kill9();
    b.edge = Proc::start(&["edge"], &cfg, edge_dir.join("edge-with-token.log"));
    assert!(
        b.edge
            .wait_log("gateway tunnel up", Duration::from_secs(30)),
        "the gateway's tunnel did not come back to the restarted edge: {}\n--- gateway:\n{}",
        b.edge.log_text(),
        b.gateway.log_text()
    );
    b
}

impl Bastion {
    /// Start the edge again on its config and data (after it exited or was killed), logging to
    /// `edge/<log>`; returns once the gateway's tunnel is back.
    pub fn restart_edge(&mut self, log: &str) {
        self.restart_edge_with_env(log, &[]);
        assert!(
            self.edge
                .wait_log("gateway tunnel up", Duration::from_secs(30)),
            "the gateway's tunnel did not come back to the restarted edge: {}\n--- gateway:\n{}",
            self.edge.log_text(),
            self.gateway.log_text()
        );
    }

    /// Start the edge again with more environment variables; returns once it listens (whether
    /// the gateway's tunnel comes back is for the caller to see).
    pub fn restart_edge_with_env(&mut self, log: &str, env: &[(String, String)]) {
        self.edge.kill9();
        let edge_dir = self.dir.path().join("edge");
        self.edge = Proc::start_with_env(
            &["edge"],
            &edge_dir.join("edge.toml"),
            edge_dir.join(log),
            env,
        );
        assert!(
            self.edge
                .wait_log("edge listening", Duration::from_secs(20)),
            "the edge did not start again: {}",
            self.edge.log_text()
        );
    }
}

/// A world whose broker knows the edge's address (so `sallyport login` writes the jump), with
/// an approval of support-l2 on acme-prod and alice's open ticket SUP-1234. Returns the world and
/// the edge's port (pass it to [`start`]).
pub async fn world_with_edge() -> (World, u16) {
    let (w, port, _) = world_with_edge_approval(json!({})).await;
    (w, port)
}

/// A world (LDAP, groups by memberOf) whose broker knows the edge's address (so `sallyport
/// login` writes the jump), nothing approved yet; returns it and the edge's port (pass it to
/// [`start`]).
pub async fn world_knowing_the_edge() -> (World, u16) {
    let port = pick_edge_port();
    let w = World::ldap_with(&format!("edge_address = \"127.0.0.1:{port}\"\n")).await;
    (w, port)
}

/// [`world_with_edge`] whose approval has `extra` (per_session_mfa, port_forwarding...); also
/// returns the approval's id.
pub async fn world_with_edge_approval(extra: Value) -> (World, u16, String) {
    let (w, port) = world_knowing_the_edge().await;
    let approval = w.approve("acme-prod", "support-l2", &[LOGIN], extra).await;
    w.ticket("SUP-1234", "acme-prod", "alice", "open").await;
    (w, port, approval)
}

/// Trust the edge's host key for the jump hop in a `SALLYPORT_HOME` (login's ssh_config names
/// the edge by its alias per cluster).
pub fn trust_edge(home: &Path, b: &Bastion) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(home.join("known_hosts"))
        .unwrap();
    for cluster in ["acme-prod", "globex-prod"] {
        writeln!(f, "sallyport-edge-{cluster} {}", b.edge_host_key).unwrap();
    }
}

/// The environment that runs a process with its clock `offset` away (libfaketime's syntax:
/// "-10m", "+40s"); monotonic clocks are left alone, so timers and timeouts keep real time.
pub fn moved_clock(offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), libfaketime()),
        ("FAKETIME".into(), offset.into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// The environment that runs a process with its clock moved by the offset written in `file`
/// (libfaketime's syntax, "+0", "+10m"), read again every second: processes started with the
/// same file move together when the test rewrites it. Monotonic clocks keep real time.
pub fn clock_from_file(file: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), libfaketime()),
        ("FAKETIME_TIMESTAMP_FILE".into(), file.display().to_string()),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

fn libfaketime() -> String {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|a| format!("/usr/lib/{a}/faketime/libfaketime.so.1"))
        .find(|p| Path::new(p).exists())
        .expect("libfaketime is not installed (tests/infra/install.sh installs it)")
}

/// How a test wants alice at the edge: a world with an edge ([`world_with_edge_approval`]), its
/// gateway and node ([`start`]), and alice logged in for SUP-1234 in a fresh `SALLYPORT_HOME`
/// that trusts the edge ([`alice_home`]). Awaiting it starts them all and gives the world, the
/// bastion and alice's home:
/// `alice_at_the_edge().approval(json!({"per_session_mfa": true})).audited().await`.
#[derive(Default)]
#[must_use = "await it to start the world"]
pub struct AliceAtTheEdge {
    approval: Option<Value>,
    gateway: String,
    edge: Option<String>,
}

/// Alice at the edge, the plain approval and configs; see [`AliceAtTheEdge`].
pub fn alice_at_the_edge() -> AliceAtTheEdge {
    AliceAtTheEdge::default()
}

impl AliceAtTheEdge {
    /// More fields of the approval of support-l2 (`per_session_mfa`, `port_forwarding`...).
    pub fn approval(mut self, extra: Value) -> Self {
        self.approval = Some(extra);
        self
    }

    /// More lines (top-level keys) in the gateway's config, taken by a restart
    /// ([`Bastion::reconfigure_gateway`]).
    pub fn gateway(mut self, lines: &str) -> Self {
        self.gateway.push_str(lines);
        self
    }

    /// The edge holds its own token ([`edge_token`], [`start_with_edge_token`]), so that its
    /// refusals and sessions go to the audit log.
    pub fn audited(self) -> Self {
        self.edge("")
    }

    /// An audited edge with more lines (top-level keys) in its config.
    pub fn edge(mut self, lines: &str) -> Self {
        self.edge.get_or_insert_default().push_str(lines);
        self
    }

    async fn start(self) -> (World, Bastion, tempfile::TempDir) {
        let approval = self.approval.unwrap_or_else(|| json!({}));
        let (w, port, _) = world_with_edge_approval(approval).await;
        let mut b = match &self.edge {
            Some(extra) => {
                let token = edge_token(&w).await;
                start_with_edge_token_and(&w, port, &token, extra).await
            }
            None => start(&w, port).await,
        };
        if !self.gateway.is_empty() {
            b.reconfigure_gateway(&self.gateway);
        }
        let home = alice_home(&w, &b);
        (w, b, home)
    }
}

impl std::future::IntoFuture for AliceAtTheEdge {
    type Output = (World, Bastion, tempfile::TempDir);
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.start())
    }
}

/// [`alice_at_the_edge`] with `gateway_extra` lines in the gateway's config (nothing when empty).
pub async fn alice_through_edge(gateway_extra: &str) -> (World, Bastion, tempfile::TempDir) {
    alice_at_the_edge().gateway(gateway_extra).await
}

/// A fresh `SALLYPORT_HOME` with alice logged in for SUP-1234, trusting `b`'s edge.
pub fn alice_home(w: &World, b: &Bastion) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    w.login_cli(home.path(), "alice", "SUP-1234", &w.code("alice", 0));
    trust_edge(home.path(), b);
    home
}
