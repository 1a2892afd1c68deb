//! The in-process level of the tests: a broker, an edge, a gateway and a node in the test's own
//! process and tokio runtime, on 127.0.0.1 ports the system picked (port 0), with certificates
//! minted in the test by the project's CA code and an engineer played by a russh client. No
//! LDAP, no `sallyport` binary, no OpenSSH: a world starts in about a second, so the matrix of
//! refusals lives here (`tests/refusals.rs`); the end-to-end tests keep real ssh/scp/sftp.
//!
//! - The broker is the real one (`sallyport_broker::serve`), on SQLite in a temporary directory
//!   (or a fresh PostgreSQL database with `SALLYPORT_TEST_STORE=postgres`), seeded through its
//!   HTTP API: customers acme and globex, clusters acme-prod and globex-prod, a reviewer token
//!   (to read the audit log) and an edge token.
//! - The edge (`sallyport_bastion::edge::run_on`) has that token: its refusals and forwards
//!   are audit events at the broker, as in production. The gateway of acme-prod enrolls with a
//!   join token and dials the edge's tunnel listener.
//! - The node (`node1.acme-prod`) is a russh server that lets in a certificate of the gateway's
//!   node CA, answers an exec with the command it got and exit status [`NODE_EXIT`], and counts
//!   what reached it: a refusal must leave those counts alone.
//! - Certificates are built field by field ([`CertSpec`]) and signed by the broker's user CA
//!   (`Broker::user_ca`), another CA, or the gateway's host CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use russh::keys::ssh_key::HashAlg;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::{Certificate, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, client};
use sallyport_api::admin::TokenCreated;
use sallyport_api::audit::{AuditEntry, AuditEvents};
use sallyport_api::certificates::Revocations;
use sallyport_api::gateways::GatewayCreated;
use sallyport_bastion::edge::Edge;
use sallyport_bastion::gateway::Gateway;
use sallyport_ca::cert::{EXT_CLUSTER, EXT_GRANT, EXT_PERMIT_PTY, EXT_TICKET, OPT_SOURCE_ADDRESS};
use serde_json::json;

use super::broker::{Api, Dir, fresh_store, now, write_config};

/// The login the node lets in (what the certificates name as `<cluster>:<login>`).
pub const LOGIN: &str = "sallyport-node";
/// The exit status of every exec on the node.
pub const NODE_EXIT: u32 = 7;
/// Every await on the network is bounded by this.
pub const STEP: Duration = Duration::from_secs(15);

/// The broker, edge, gateway and node of one test, on loopback; stopped when dropped.
pub struct World {
    pub broker: Arc<sallyport_broker::Broker>,
    pub op: Api,
    pub reviewer: Api,
    pub edge: Arc<Edge>,
    pub gateway: Arc<Gateway>,
    /// Where engineers connect.
    pub edge_addr: SocketAddr,
    pub edge_host_key: PublicKey,
    pub node: Arc<NodeSeen>,
    /// The node's SSH address (what the gateway dials).
    pub node_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    pub dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Bound a step of a test: its value, or a panic that names it.
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// Wait (bounded) until `ready` holds.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < STEP * 2,
            "{what}: not within {:?}",
            STEP * 2
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn private_dir(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
}

impl World {
    pub async fn start() -> World {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let on_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        // The broker, in this process.
        let store = fresh_store(dir.path()).await;
        let operator = sallyport_broker::auth::new_api_token();
        let config = write_config(
            &dir.path().join("broker"),
            &store,
            &Dir::File(vec![]),
            &sallyport_broker::auth::token_hash(&operator),
            "",
        );
        let cfg = sallyport_broker::BrokerConfig::load(&config).unwrap();
        let broker = sallyport_broker::Broker::open(cfg).await.unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(sallyport_broker::serve(
            broker.clone(),
            listener,
            on_stop(stopped.clone()),
        ));
        let op = Api::new(&url, Some(&operator));
        bounded("the broker answers", async {
            while op.get("/v1/health").await.0 != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        for (id, name) in [("acme", "ACME"), ("globex", "Globex")] {
            let (s, v) = op
                .post("/v1/customers", json!({"id": id, "name": name}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        for (id, c) in [("acme-prod", "acme"), ("globex-prod", "globex")] {
            let (s, v) = op
                .post("/v1/clusters", json!({"id": id, "customer": c}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let token = |name: &str, role: &str| {
            let op = op.clone();
            let body = json!({"name": name, "role": role});
            async move {
                let (s, v) = op.post_as::<TokenCreated>("/v1/tokens", body).await;
                assert_eq!(s, StatusCode::CREATED, "{v:?}");
                v.token
            }
        };
        let reviewer = op.with(&token("security", "reviewer").await);

        // The edge, with a token: its refusals are audit events at the broker.
        let edge_dir = dir.path().join("edge");
        private_dir(&edge_dir);
        let token_file = edge_dir.join("edge.token");
        super::bastion::write_0600(&token_file, &format!("{}\n", token("edge1", "edge").await));
        let (host_key, _) =
            sallyport_ca::keys::load_or_create_key(&edge_dir.join("host_key"), "edge").unwrap();
        let engineers = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tunnels = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (edge_addr, tunnel_addr) = (
            engineers.local_addr().unwrap(),
            tunnels.local_addr().unwrap(),
        );
        let edge_cfg: sallyport_bastion::config::EdgeConfig = serde_json::from_value(json!({
            "listen": "127.0.0.1:0",
            "tunnel_listen": "127.0.0.1:0",
            "data_dir": edge_dir,
            "broker": url,
            "refresh_secs": 1,
            "name": "edge1",
            "token_file": token_file,
            "shutdown_grace_secs": 0,
        }))
        .unwrap();
        let edge = Edge::new(edge_cfg).unwrap();
        tokio::spawn(sallyport_bastion::edge::run_on(
            edge.clone(),
            engineers,
            tunnels,
            on_stop(stopped.clone()),
        ));

        // The gateway of acme-prod, enrolled with a join token.
        let (s, created) = op
            .post_as::<GatewayCreated>("/v1/clusters/acme-prod/gateways", json!({"name": "gw1"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{created:?}");
        let gw_cfg: sallyport_bastion::config::GatewayConfig = serde_json::from_value(json!({
            "data_dir": dir.path().join("gateway"),
            "broker": url,
            "join_token": created.join_token,
            "edges": [{"address": tunnel_addr.to_string(),
                       "host_key": host_key.public_key().to_openssh().unwrap()}],
            "refresh_secs": 1,
            "config_refresh_secs": 1,
            "spool_reserve_bytes": 65536,
        }))
        .unwrap();
        let gateway = bounded(
            "the gateway enrolls",
            sallyport_bastion::gateway::open(gw_cfg),
        )
        .await
        .unwrap();
        tokio::spawn(sallyport_bastion::gateway::run(
            gateway.clone(),
            on_stop(stopped.clone()),
        ));

        // The node, trusting the gateway's node CA, registered with its host key.
        let node = Arc::new(NodeSeen::default());
        let node_port = start_node(gateway.node_ca.public_key().clone(), node.clone()).await;
        let (s, v) = op
            .post(
                "/v1/clusters/acme-prod/nodes",
                json!({"name": "node1", "address": "127.0.0.1", "port": node_port.0,
                       "host_keys": [node_port.1]}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");

        let w = World {
            broker,
            op,
            reviewer,
            edge_host_key: host_key.public_key().clone(),
            edge,
            gateway,
            edge_addr,
            node,
            node_addr: SocketAddr::from(([127, 0, 0, 1], node_port.0)),
            stop,
            dir,
        };
        // Ready: both trust the broker's user CA, and the gateway's tunnel is up.
        until("the edge and the gateway take the broker's user CA", || {
            let ca = w.broker.user_ca.public_key();
            w.edge.trust.cas().contains(ca) && w.gateway.trust.cas().contains(ca)
        })
        .await;
        until("the gateway's tunnel is up", || {
            w.edge.tunnels.count("acme-prod") > 0
        })
        .await;
        w
    }

    /// The broker's user CA: what signs engineers' certificates.
    pub fn user_ca(&self) -> &PrivateKey {
        &self.broker.user_ca
    }

    /// Record `cert` (signed by the broker's user CA) in the broker's store as issued, as its
    /// issuance does, so that it can be revoked through the API.
    pub async fn record_issued(&self, cert: &Certificate) {
        let id: sallyport_ca::KeyId = cert.key_id().parse().unwrap();
        let row = sallyport_broker::store::GrantRow {
            id: id.grant().into(),
            engineer: id.engineer().into(),
            ticket: id.ticket().into(),
            customer: "acme".into(),
            cluster: id.cluster().into(),
            approval: "approval-in-test".into(),
            request: None,
            logins: vec![LOGIN.into()],
            serial: cert.serial().to_string(),
            key_id: cert.key_id().to_string(),
            ca_fingerprint: self
                .user_ca()
                .public_key()
                .fingerprint(HashAlg::Sha256)
                .to_string(),
            public_key: cert.public_key().fingerprint(HashAlg::Sha256).to_string(),
            certificate: cert.to_openssh().unwrap(),
            valid_after: cert.valid_after(),
            valid_before: cert.valid_before(),
            created_at: now(),
            revoked_at: None,
            revoked_reason: None,
        };
        let event = sallyport_broker::audit::AuditEvent::CertificateIssued {
            engineer: row.engineer.clone(),
            ticket: row.ticket.clone(),
            cluster: row.cluster.clone(),
            customer: row.customer.clone(),
            grant: row.id.clone(),
            approval: row.approval.clone(),
            request: None,
            serial: row.serial.clone(),
            key_id: row.key_id.clone(),
            logins: row.logins.clone(),
            valid_after: row.valid_after,
            valid_before: row.valid_before,
            public_key: row.public_key.clone(),
        };
        self.broker
            .store
            .insert_grant_audited(&row, &event)
            .await
            .unwrap();
    }

    /// Revoke through the API (`POST /v1/revocations`, as the operator) and wait until the edge
    /// and the gateway read the KRL that names `cert`.
    pub async fn revoke(&self, cert: &Certificate, scope: &str, value: &str) {
        let (s, v) = self
            .op
            .post_as::<Revocations>(
                "/v1/revocations",
                json!({"scope": scope, "value": value, "reason": "revoked in a test"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v:?}");
        assert_eq!(v.revoked.len(), 1, "{v:?}");
        until("the edge and the gateway read the new KRL", || {
            self.edge.trust.is_revoked(cert) && self.gateway.trust.is_revoked(cert)
        })
        .await;
    }

    /// The audit events of `kind` at the broker.
    pub async fn events(&self, kind: &str) -> Vec<AuditEntry> {
        let page: AuditEvents = self
            .reviewer
            .get_ok(&format!("/v1/audit/events?kind={kind}&limit=1000"))
            .await;
        page.events
    }

    /// The first event of `kind` that `pick` picks, waiting (bounded) until the edge or the
    /// gateway shipped it.
    pub async fn wait_event(&self, kind: &str, pick: impl Fn(&AuditEntry) -> bool) -> AuditEntry {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events(kind).await.into_iter().find(&pick) {
                return e;
            }
            assert!(
                start.elapsed() < STEP * 2,
                "no matching {kind} event within {:?}: {:#?}",
                STEP * 2,
                self.events(kind).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An engineer going to `node1.acme-prod` with `cert` (for `key`).
    pub fn engineer(&self, key: &PrivateKey, cert: Certificate) -> Engineer {
        Engineer {
            edge: self.edge_addr,
            edge_host_key: self.edge_host_key.clone(),
            host_ca: self.gateway.host_ca.public_key().clone(),
            key: Arc::new(key.clone()),
            cert: Some(cert),
            login: LOGIN.into(),
            target: ("node1.acme-prod".into(), 22),
        }
    }
}

/// A new Ed25519 key (an engineer's, or a CA's).
pub fn new_key() -> PrivateKey {
    sallyport_ca::keys::generate_ed25519("test").unwrap()
}

/// Everything an engineer certificate says, field by field; [`CertSpec::engineer`] is what the
/// broker issues for a grant (see `sallyport_ca::cert::build_user_cert`), and each refusal
/// changes one thing.
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub cert_type: CertType,
    pub serial: u64,
    pub key_id: String,
    pub principals: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub critical: Vec<(String, String)>,
    pub extensions: Vec<(String, String)>,
}

impl CertSpec {
    /// A certificate for `engineer` on `ticket` in `cluster` with login [`LOGIN`], valid from a
    /// minute ago for an hour, with a grant id made from the ticket.
    pub fn engineer(engineer: &str, ticket: &str, cluster: &str) -> CertSpec {
        let grant = format!("g-{}", ticket.to_lowercase());
        let key_id = sallyport_ca::KeyId::new(engineer, ticket, &grant, cluster).unwrap();
        let t = now();
        CertSpec {
            cert_type: CertType::User,
            serial: sallyport_ca::cert::random_serial(),
            key_id: key_id.to_string(),
            principals: vec![format!("{cluster}:{LOGIN}")],
            valid_after: t - 60,
            valid_before: t + 3600,
            critical: vec![],
            extensions: [
                (EXT_PERMIT_PTY, ""),
                (EXT_GRANT, grant.as_str()),
                (EXT_TICKET, ticket),
                (EXT_CLUSTER, cluster),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        }
    }

    pub fn valid(mut self, after: u64, before: u64) -> CertSpec {
        (self.valid_after, self.valid_before) = (after, before);
        self
    }

    pub fn principals(mut self, principals: &[&str]) -> CertSpec {
        self.principals = principals.iter().map(|p| p.to_string()).collect();
        self
    }

    pub fn source_address(mut self, networks: &str) -> CertSpec {
        self.critical
            .push((OPT_SOURCE_ADDRESS.into(), networks.into()));
        self
    }

    /// Add a critical option (OpenSSH refuses a certificate with one it does not know).
    pub fn critical(mut self, name: &str, value: &str) -> CertSpec {
        self.critical.push((name.into(), value.into()));
        self
    }

    /// Set an extension (`None`: remove it).
    pub fn extension(mut self, name: &str, value: Option<&str>) -> CertSpec {
        self.extensions.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.extensions.push((name.into(), v.into()));
        }
        self
    }

    pub fn cert_type(mut self, t: CertType) -> CertSpec {
        self.cert_type = t;
        self
    }

    pub fn sign(&self, ca: &PrivateKey, subject: &PrivateKey) -> Certificate {
        let mut b = Builder::new_with_random_nonce(
            &mut russh::keys::key::safe_rng(),
            subject.public_key().key_data().clone(),
            self.valid_after,
            self.valid_before,
        )
        .unwrap();
        b.cert_type(self.cert_type).unwrap();
        b.serial(self.serial).unwrap();
        b.key_id(self.key_id.as_str()).unwrap();
        for p in &self.principals {
            b.valid_principal(p.as_str()).unwrap();
        }
        for (k, v) in &self.critical {
            b.critical_option(k.as_str(), v.as_str()).unwrap();
        }
        for (k, v) in &self.extensions {
            b.extension(k.as_str(), v.as_str()).unwrap();
        }
        b.sign(ca).unwrap()
    }
}

/// What the node saw: connections, logins and execs (a refusal leaves them all alone).
#[derive(Default, Debug)]
pub struct NodeSeen {
    pub connections: AtomicUsize,
    pub logins: AtomicUsize,
    pub commands: std::sync::Mutex<Vec<String>>,
    /// Every other channel and request that reached it ("session", "agent", "env NAME",
    /// "direct-tcpip HOST:PORT", "tcpip-forward ADDRESS:PORT").
    pub requests: std::sync::Mutex<Vec<String>>,
}

impl NodeSeen {
    fn request(&self, what: String) {
        self.requests.lock().unwrap().push(what);
    }

    /// (connections, logins, execs) so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.connections.load(Ordering::SeqCst),
            self.logins.load(Ordering::SeqCst),
            self.commands.lock().unwrap().len(),
        )
    }
}

struct Node {
    node_ca: PublicKey,
    seen: Arc<NodeSeen>,
}

impl russh::server::Handler for Node {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<russh::server::Auth, Self::Error> {
        // As sshd with `TrustedUserCAKeys` = the node CA: signed by it, naming the login.
        let ours = cert.signature_key() == self.node_ca.key_data()
            && cert.valid_principals().iter().any(|p| p == user)
            && user == LOGIN;
        if !ours {
            return Ok(russh::server::Auth::reject());
        }
        self.seen.logins.fetch_add(1, Ordering::SeqCst);
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.seen.request("session".into());
        reply.accept().await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: russh::Channel<russh::server::Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.seen.request(format!("direct-tcpip {host}:{port}"));
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut russh::server::Session,
    ) -> Result<bool, Self::Error> {
        self.seen.request(format!("tcpip-forward {address}:{port}"));
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: russh::ChannelId,
        _session: &mut russh::server::Session,
    ) -> Result<bool, Self::Error> {
        self.seen.request("agent".into());
        Ok(false)
    }

    async fn env_request(
        &mut self,
        channel: russh::ChannelId,
        name: &str,
        _value: &str,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        self.seen.request(format!("env {name}"));
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: russh::ChannelId,
        data: &[u8],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).to_string();
        self.seen.commands.lock().unwrap().push(command.clone());
        session.channel_success(channel)?;
        session.data(channel, format!("node ran: {command}\n").into_bytes())?;
        session.exit_status_request(channel, NODE_EXIT)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}

/// Start the node on a loopback port; returns the port and its host key (OpenSSH line).
async fn start_node(node_ca: PublicKey, seen: Arc<NodeSeen>) -> (u16, String) {
    let key = new_key();
    let public = key.public_key().to_openssh().unwrap();
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        auth_rejection_time: Duration::from_millis(0),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let handler = Node {
                node_ca: node_ca.clone(),
                seen: seen.clone(),
            };
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) = russh::server::run_stream(config, socket, handler).await {
                    let _ = session.await;
                }
            });
        }
    });
    (port, public)
}

/// Checks the server's key: the edge's pinned host key, or a host certificate from the
/// cluster's host CA (the gateway, speaking for the node).
pub struct Trusting(Trust);

enum Trust {
    Key(PublicKey),
    HostCa(PublicKey),
}

impl client::Handler for Trusting {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        use russh::keys::PublicKeyOrCertificate as K;
        Ok(match (&self.0, key) {
            (Trust::Key(pinned), K::PublicKey { key, .. }) => key.key_data() == pinned.key_data(),
            (Trust::HostCa(ca), K::Certificate(cert)) => {
                cert.cert_type() == CertType::Host && cert.signature_key() == ca.key_data()
            }
            _ => false,
        })
    }
}

/// An engineer's client: what `ssh -J edge node1.acme-prod CMD` does, with russh.
#[derive(Clone)]
pub struct Engineer {
    pub edge: SocketAddr,
    pub edge_host_key: PublicKey,
    /// The cluster's host CA (the gateway's host certificates for the node names).
    pub host_ca: PublicKey,
    pub key: Arc<PrivateKey>,
    /// `None`: the plain key is offered, without a certificate.
    pub cert: Option<Certificate>,
    pub login: String,
    /// Where the forward at the edge goes.
    pub target: (String, u32),
}

/// How an engineer's attempt ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The command ran on the node: its exit status and output.
    Ran { status: u32, output: String },
    /// The edge refused the login.
    EdgeAuthRefused,
    /// The edge refused the forward (the error russh gives, with the edge's reason).
    ForwardRefused(String),
    /// The gateway refused the login.
    GatewayAuthRefused,
    /// The gateway refused the exec or closed the session without an exit status.
    ExecRefused(String),
}

impl Engineer {
    /// Log in at the edge, forward to the target, log in at the gateway through the forward,
    /// run `command`: how far it went.
    pub async fn exec(&self, command: &str) -> Outcome {
        match self.session().await {
            Ok(s) => s.exec(command).await,
            Err(refused) => refused,
        }
    }

    /// Log in at the edge, forward to the target, log in at the gateway through the forward:
    /// the session, or where it was refused.
    pub async fn session(&self) -> Result<Session, Outcome> {
        let cfg = Arc::new(client::Config::default());
        let mut edge = bounded(
            "connecting to the edge",
            client::connect(
                cfg.clone(),
                self.edge,
                Trusting(Trust::Key(self.edge_host_key.clone())),
            ),
        )
        .await
        .unwrap();
        if !bounded("logging in at the edge", self.login_at(&mut edge)).await {
            return Err(Outcome::EdgeAuthRefused);
        }
        let forward = bounded(
            "the forward at the edge",
            edge.channel_open_direct_tcpip(self.target.0.as_str(), self.target.1, "127.0.0.1", 0),
        )
        .await
        .map_err(|e| Outcome::ForwardRefused(e.to_string()))?;
        // As OpenSSH with `@cert-authority` in known_hosts: ask for the host certificate.
        let inner = Arc::new(client::Config {
            preferred: russh::Preferred {
                host_key_certificates: std::borrow::Cow::Owned(vec![
                    russh::keys::Algorithm::Ed25519,
                ]),
                ..russh::Preferred::default()
            },
            ..client::Config::default()
        });
        let mut gateway = bounded(
            "the SSH handshake with the gateway",
            client::connect_stream(
                inner,
                forward.into_stream(),
                Trusting(Trust::HostCa(self.host_ca.clone())),
            ),
        )
        .await
        .unwrap();
        if !bounded("logging in at the gateway", self.login_at(&mut gateway)).await {
            return Err(Outcome::GatewayAuthRefused);
        }
        Ok(Session { edge, gateway })
    }

    async fn login_at(&self, h: &mut client::Handle<Trusting>) -> bool {
        let r = match &self.cert {
            Some(cert) => {
                h.authenticate_openssh_cert(self.login.as_str(), self.key.clone(), cert.clone())
                    .await
            }
            None => {
                h.authenticate_publickey(
                    self.login.as_str(),
                    PrivateKeyWithHashAlg::new(self.key.clone(), None),
                )
                .await
            }
        };
        r.is_ok_and(|r| r.success())
    }
}

/// An engineer's session with the gateway (through the edge connection it is kept in).
pub struct Session {
    pub edge: client::Handle<Trusting>,
    pub gateway: client::Handle<Trusting>,
}

impl Session {
    /// `command` by exec on a new session channel: its exit status and output, or that it was
    /// refused.
    pub async fn exec(self, command: &str) -> Outcome {
        let mut ch = bounded("a session channel", self.gateway.channel_open_session())
            .await
            .unwrap();
        bounded("the exec request", ch.exec(true, command))
            .await
            .unwrap();
        let (mut output, mut status, mut refused) = (Vec::new(), None, false);
        loop {
            match bounded("the exec's output", ch.wait()).await {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    output.extend_from_slice(&data)
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Failure) => refused = true,
                Some(_) => continue,
                None => break,
            }
        }
        let output = String::from_utf8_lossy(&output).to_string();
        let _ = self
            .gateway
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        match status {
            Some(status) if !refused => Outcome::Ran { status, output },
            _ => Outcome::ExecRefused(output),
        }
    }
}
