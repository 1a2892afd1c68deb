//! A load client: engineer sessions opened in this process with russh — what `ssh -J` does: one
//! connection to the edge per session, a forward to the node in it, the engineer's SSH session to
//! the gateway through that forward — for the load test and the memory bench, where thousands of
//! OpenSSH clients would cost the machine more than what is measured. It accepts any host key: it
//! drives load, it does not check trust (the other tests do).
//!
//! Also the **stand-in node** ([`start_stand_in`]): an SSH server in a process of its own that
//! accepts the gateway's certificate without checking it and answers a pty shell with a prompt,
//! then waits; for session counts a real sshd cannot hold on this machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use russh::keys::{Certificate, PrivateKey};
use russh::{ChannelMsg, client};

use super::bastion::LOGIN;
use super::deploy::Deployment;

pub struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Who opens the sessions, where to: alice's key and certificate from `sallyport login`.
#[derive(Clone)]
pub struct Engineer {
    pub edge: std::net::SocketAddr,
    /// The node the sessions go to (`node1.acme-prod` is the deployment's real sshd).
    pub node: Arc<str>,
    pub key: Arc<PrivateKey>,
    pub cert: Certificate,
}

impl Engineer {
    /// Alice as `sallyport login` left her in `home` (cluster `acme-prod`), going to `node`.
    pub fn from_home(d: &Deployment, home: &Path, node: &str) -> Engineer {
        Engineer {
            edge: format!("127.0.0.1:{}", d.edge_port).parse().unwrap(),
            node: node.into(),
            key: Arc::new(russh::keys::load_secret_key(home.join("acme-prod"), None).unwrap()),
            cert: Certificate::from_openssh(
                &std::fs::read_to_string(home.join("acme-prod-cert.pub")).unwrap(),
            )
            .unwrap(),
        }
    }
}

/// One engineer connection: the edge connection (kept open: the forward lives in it) and the
/// SSH session with the gateway through it.
pub struct Connection {
    pub edge: client::Handle<AnyHostKey>,
    pub gateway: client::Handle<AnyHostKey>,
}

impl Connection {
    /// Log in at the edge, forward to the node, log in at the gateway through the forward.
    pub async fn open(e: &Engineer) -> anyhow::Result<Connection> {
        let cfg = Arc::new(client::Config::default());
        let mut edge = client::connect(cfg.clone(), e.edge, AnyHostKey).await?;
        let auth = edge
            .authenticate_openssh_cert("alice", e.key.clone(), e.cert.clone())
            .await?;
        ensure!(auth.success(), "the edge refused the certificate");
        let forward = edge
            .channel_open_direct_tcpip(&*e.node, 22, "127.0.0.1", 0)
            .await?;
        let mut gateway = client::connect_stream(cfg, forward.into_stream(), AnyHostKey).await?;
        let auth = gateway
            .authenticate_openssh_cert(LOGIN, e.key.clone(), e.cert.clone())
            .await?;
        ensure!(auth.success(), "the gateway refused the certificate");
        Ok(Connection { edge, gateway })
    }

    /// Say goodbye to the gateway (the session ends there), then drop the edge connection.
    pub async fn close(self) {
        let _ = self
            .gateway
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }

    /// A pty shell whose first output (the node's prompt) has arrived.
    pub async fn shell(&self) -> anyhow::Result<russh::Channel<client::Msg>> {
        let mut shell = self.gateway.channel_open_session().await?;
        shell.request_pty(false, "xterm", 80, 24, 0, 0, &[]).await?;
        shell.request_shell(false).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), shell.wait())
                .await
                .context("no prompt from the node within 60 s")?
            {
                Some(ChannelMsg::Data { .. }) => return Ok(shell),
                Some(_) => continue,
                None => bail!("the session closed before the node's shell answered"),
            }
        }
    }

    /// `command` run with exec (no pty): its output and exit status.
    pub async fn exec(&self, command: &str) -> anyhow::Result<(Vec<u8>, u32)> {
        let mut ch = self.gateway.channel_open_session().await?;
        ch.exec(true, command).await?;
        let (mut out, mut status) = (Vec::new(), None);
        loop {
            match tokio::time::timeout(Duration::from_secs(60), ch.wait())
                .await
                .with_context(|| format!("{command:?}: no answer within 60 s"))?
            {
                Some(ChannelMsg::Data { data }) => out.extend_from_slice(&data),
                Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                Some(ChannelMsg::Failure) => bail!("{command:?}: the exec request was refused"),
                Some(_) => continue,
                None => break,
            }
        }
        let status = status.with_context(|| format!("{command:?}: no exit status"))?;
        Ok((out, status))
    }
}

/// Type `line` and Enter into a pty shell, then read until the node printed `until` as many as
/// `times` times in what came back since (the echo of the typed line counts too).
pub async fn type_line(
    shell: &mut russh::Channel<client::Msg>,
    line: &str,
    until: &str,
    times: usize,
) -> anyhow::Result<String> {
    shell.data(format!("{line}\r").as_bytes()).await?;
    let mut seen = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.matches(until).count() >= times {
            return Ok(text);
        }
        match tokio::time::timeout(Duration::from_secs(60), shell.wait())
            .await
            .with_context(|| format!("{line:?}: {until:?} not seen within 60 s: {text:?}"))?
        {
            Some(ChannelMsg::Data { data }) => seen.extend_from_slice(&data),
            Some(_) => continue,
            None => bail!("{line:?}: the shell closed; it printed {text:?}"),
        }
    }
}

/// Wait until a channel is closed by the other side (after `exit`, say).
pub async fn closed(ch: &mut russh::Channel<client::Msg>) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ch.wait())
            .await
            .context("the channel did not close within 60 s")?
        {
            Some(_) => continue,
            None => return Ok(()),
        }
    }
}

/// A minimal SFTP (version 3) client over an `sftp` subsystem channel: what a load test needs
/// to write and remove files, one request at a time.
pub struct Sftp {
    ch: russh::Channel<client::Msg>,
    buf: Vec<u8>,
    next_id: u32,
}

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_WRITE: u8 = 6;
const FXP_REMOVE: u8 = 13;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXF_WRITE: u32 = 0x02;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;

fn put_str(p: &mut Vec<u8>, s: &[u8]) {
    p.extend_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend_from_slice(s);
}

fn u32_at(b: &[u8], at: usize) -> anyhow::Result<u32> {
    let bytes = b.get(at..at + 4).context("an SFTP reply cut short")?;
    Ok(u32::from_be_bytes(bytes.try_into()?))
}

impl Sftp {
    /// Open the `sftp` subsystem on the connection and agree on version 3.
    pub async fn start(c: &Connection) -> anyhow::Result<Sftp> {
        let ch = c.gateway.channel_open_session().await?;
        ch.request_subsystem(true, "sftp").await?;
        let mut s = Sftp {
            ch,
            buf: Vec::new(),
            next_id: 1,
        };
        s.send(FXP_INIT, &3u32.to_be_bytes()).await?;
        let (kind, _) = s.reply().await?;
        ensure!(kind == FXP_VERSION, "SFTP: no version reply (type {kind})");
        Ok(s)
    }

    async fn send(&mut self, kind: u8, body: &[u8]) -> anyhow::Result<()> {
        let mut p = Vec::with_capacity(body.len() + 5);
        p.extend_from_slice(&(body.len() as u32 + 1).to_be_bytes());
        p.push(kind);
        p.extend_from_slice(body);
        self.ch.data(&p[..]).await?;
        Ok(())
    }

    /// The next packet from the server: its type and what follows the type.
    async fn reply(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32_at(&self.buf, 0)? as usize;
                if self.buf.len() >= 4 + len {
                    let packet: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    let kind = *packet.first().context("an empty SFTP packet")?;
                    return Ok((kind, packet[1..].to_vec()));
                }
            }
            match tokio::time::timeout(Duration::from_secs(60), self.ch.wait())
                .await
                .context("SFTP: no reply within 60 s")?
            {
                Some(ChannelMsg::Data { data }) => self.buf.extend_from_slice(&data),
                Some(_) => continue,
                None => bail!("SFTP: the channel closed"),
            }
        }
    }

    /// A request with a fresh id; its reply (type, body after the id).
    async fn request(&mut self, kind: u8, rest: &[u8]) -> anyhow::Result<(u8, Vec<u8>)> {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        self.send(kind, &body).await?;
        let (kind, body) = self.reply().await?;
        ensure!(u32_at(&body, 0)? == id, "SFTP: a reply to another request");
        Ok((kind, body[4..].to_vec()))
    }

    async fn ok(&mut self, kind: u8, rest: &[u8], what: &str) -> anyhow::Result<()> {
        let (kind, body) = self.request(kind, rest).await?;
        ensure!(
            kind == FXP_STATUS,
            "SFTP {what}: type {kind} instead of a status"
        );
        let code = u32_at(&body, 0)?;
        ensure!(code == 0, "SFTP {what}: status {code}");
        Ok(())
    }

    /// Create (or truncate) `path` and write `data` into it.
    pub async fn write_file(&mut self, path: &str, data: &[u8]) -> anyhow::Result<()> {
        let mut open = Vec::new();
        put_str(&mut open, path.as_bytes());
        open.extend_from_slice(&(FXF_WRITE | FXF_CREAT | FXF_TRUNC).to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        let (kind, body) = self.request(FXP_OPEN, &open).await?;
        ensure!(
            kind == FXP_HANDLE,
            "SFTP open {path}: type {kind}, not a handle"
        );
        let len = u32_at(&body, 0)? as usize;
        let handle = body.get(4..4 + len).context("SFTP: a handle cut short")?;
        let mut write = Vec::new();
        put_str(&mut write, handle);
        write.extend_from_slice(&0u64.to_be_bytes());
        put_str(&mut write, data);
        self.ok(FXP_WRITE, &write, path).await?;
        let mut close = Vec::new();
        put_str(&mut close, handle);
        self.ok(FXP_CLOSE, &close, path).await
    }

    pub async fn remove(&mut self, path: &str) -> anyhow::Result<()> {
        let mut p = Vec::new();
        put_str(&mut p, path.as_bytes());
        self.ok(FXP_REMOVE, &p, path).await
    }

    /// End the subsystem (EOF), as `sftp` does when it quits.
    pub async fn finish(mut self) -> anyhow::Result<()> {
        self.ch.eof().await?;
        closed(&mut self.ch).await
    }
}

/// The stand-in node (see the top of this file): any user, any key or certificate, a pty shell
/// that prints a prompt and then holds the channel open.
#[derive(Default)]
struct StandIn {
    channels: Vec<russh::Channel<russh::server::Msg>>,
}

impl russh::server::Handler for StandIn {
    type Error = russh::Error;

    async fn auth_openssh_certificate(
        &mut self,
        _user: &str,
        _certificate: &Certificate,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<russh::server::Auth, Self::Error> {
        Ok(russh::server::Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: russh::Channel<russh::server::Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        self.channels.push(channel);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: russh::ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: russh::ChannelId,
        session: &mut russh::server::Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(channel, &b"stand-in$ "[..])?;
        Ok(())
    }
}

/// Start the stand-in node in a process of its own and register it as `node2` of `acme-prod`;
/// returns its name for the engineer, and the process (killed when dropped). The process is this
/// program run again with `--stand-in` (its `main` calls [`stand_in_main`]): every session holds
/// a socket in the load client and one in the node, and in one process 10,000 sessions would
/// pass the descriptor limit that each process has on its own.
pub async fn start_stand_in(d: &Deployment) -> (Arc<str>, tokio::process::Child) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("--stand-in")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port = lines
        .next_line()
        .await
        .unwrap()
        .expect("the stand-in's port");
    let public = lines
        .next_line()
        .await
        .unwrap()
        .expect("the stand-in's host key");
    let etc = d.dir.path();
    std::fs::write(etc.join("node2.pub"), format!("{public}\n")).unwrap();
    let op = [
        ("SALLYPORT_BROKER", d.broker.url.as_str()),
        ("SALLYPORT_TOKEN", d.operator_token.as_str()),
    ];
    super::deploy::sp(
        etc,
        &op,
        &[
            "admin",
            "node",
            "acme-prod",
            "node2",
            "--address",
            "127.0.0.1",
            "--port",
            &port,
            "--host-key",
            "node2.pub",
        ],
        "",
    );
    ("node2.acme-prod".into(), child)
}

/// The stand-in node's process (see [`start_stand_in`]): on a loopback port, which it prints on
/// stdout with its host key (one line each); it serves until its stdin closes (the load client
/// ended, whichever way).
pub async fn stand_in_main() {
    let key = PrivateKey::random(
        &mut russh::keys::key::safe_rng(),
        russh::keys::Algorithm::Ed25519,
    )
    .unwrap();
    let public = key.public_key().to_openssh().unwrap();
    let config = Arc::new(russh::server::Config {
        keys: vec![key],
        inactivity_timeout: None,
        nodelay: true,
        auth_rejection_time: Duration::from_millis(0),
        auth_rejection_time_initial: Some(Duration::from_millis(0)),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    println!("{port}\n{public}");
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                if let Ok(session) =
                    russh::server::run_stream(config, socket, StandIn::default()).await
                {
                    let _ = session.await;
                }
            });
        }
    });
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    })
    .await;
}

/// Resident memory of a process in KiB (VmRSS of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
