//! `sallyport demo`: a complete local system on loopback with an embedded directory, seeded
//! with a customer, cluster, node, approval, ticket, engineer, approver and reviewer, and a
//! `demo.env` for scripts. Runs until interrupted, then stops what it started.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::Rng;
use sallyport_ca::clock::now_secs;
use serde_json::{Value, json};

use crate::client::Client;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Directory for the demo's keys, store and files (created; reused if it exists).
    #[arg(long, default_value = "sallyport-demo")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
}

fn password() -> String {
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

fn write_0600(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Shell quoting only where needed, so simple `KEY=value` readers work too.
fn q(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@%+-,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)?;
    if dir.join("demo.env").exists() {
        // A fresh store each run keeps the printed secrets true.
        for f in ["broker.db", "broker.db-wal", "broker.db-shm", "demo.env"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    std::fs::create_dir_all(dir.join("data"))?;
    let engineer = "dana";
    let engineer_pw = password();
    let login = std::env::var("USER")
        .ok()
        .filter(|u| crate::valid_name(u))
        .unwrap_or_else(|| "root".into());
    let directory = dir.join("directory.toml");
    write_0600(
        &directory,
        &format!(
            "# The demo's embedded directory (used when no LDAP is configured).\n[[engineer]]\nuid = \"{engineer}\"\npassword_argon2 = \"{}\"\ngroups = [\"support-l2\"]\n",
            sallyport_broker::directory::hash_argon2(&engineer_pw)?
        ),
    )?;
    // The edge's host key first: the broker hands it to engineers to pin.
    std::fs::create_dir_all(dir.join("edge"))?;
    // The edge refuses a data_dir that others can reach; the demo made this one.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("edge"), std::fs::Permissions::from_mode(0o700))?;
    }
    let (edge_key, _) =
        sallyport_ca::keys::load_or_create_key(&dir.join("edge/host_key"), "sallyport demo edge")?;
    let edge_pub = edge_key.public_key().to_openssh()?;
    let edge_port = free_port()?;
    let tunnel_port = free_port()?;
    let operator_token = sallyport_broker::auth::new_api_token();
    let config_path = dir.join("broker.toml");
    write_0600(
        &config_path,
        &format!(
            "# The demo broker: loopback, plain HTTP, SQLite, embedded directory.\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndatabase = \"sqlite://{}\"\ndirectory = \"{}\"\noperator_token_sha256 = \"{}\"\nedge_address = \"127.0.0.1:{edge_port}\"\nedge_host_keys = [\"{edge_pub}\"]\n",
            dir.join("broker.db").display(),
            directory.display(),
            sallyport_broker::auth::token_hash(&operator_token)
        ),
    )?;
    let cfg = sallyport_broker::BrokerConfig::load(&config_path)?;
    let broker = sallyport_broker::Broker::open(cfg).await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sallyport_broker::serve(broker, listener, async move {
        let _ = stop_rx.await;
    }));
    eprintln!("broker listening on {url}");

    let op = Client::new(&url, Some(operator_token.clone()), None)?;
    // Wait until it answers.
    for _ in 0..100 {
        if op.get("/v1/health").await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    eprintln!("seeding: customer acme, cluster acme-prod, node node1, ticket SUP-1234...");
    op.post("/v1/customers", &json!({"id": "acme", "name": "ACME Corp"}))
        .await?;
    op.post(
        "/v1/clusters",
        &json!({"id": "acme-prod", "customer": "acme"}),
    )
    .await?;
    let enrolled = op.post("/v1/engineers", &json!({"uid": engineer})).await?.1;
    let totp_secret = enrolled["totp_secret"]
        .as_str()
        .context("no TOTP secret")?
        .to_string();
    write_0600(&dir.join("engineer.totp"), &format!("{totp_secret}\n"))?;
    let approver_pw = password();
    let approver = op
        .post("/v1/accounts", &json!({"username": "acme-approver", "role": "approver", "customer": "acme", "password": approver_pw}))
        .await?
        .1;
    let reviewer_pw = password();
    let reviewer = op
        .post(
            "/v1/accounts",
            &json!({"username": "reviewer", "role": "reviewer", "password": reviewer_pw}),
        )
        .await?
        .1;
    let token = |v: Value| v["token"].as_str().unwrap_or_default().to_string();
    let reviewer_token = token(
        op.post(
            "/v1/tokens",
            &json!({"name": "demo-reviewer", "role": "reviewer"}),
        )
        .await?
        .1,
    );
    let ticket_token = token(
        op.post(
            "/v1/tokens",
            &json!({"name": "demo-tickets", "role": "ticket_system", "all_customers": true}),
        )
        .await?
        .1,
    );
    let approver_token = token(
        op.post(
            "/v1/tokens",
            &json!({"name": "demo-approver", "role": "approver", "customer": "acme"}),
        )
        .await?
        .1,
    );
    let tickets = Client::new(&url, Some(ticket_token.clone()), None)?;
    tickets
        .put(
            "/v1/tickets/SUP-1234",
            &json!({"customer": "acme", "cluster": "acme-prod", "assignee": engineer, "status": "open", "title": "Disk full on node1"}),
        )
        .await?;
    let approvers = Client::new(&url, Some(approver_token.clone()), None)?;
    approvers
        .post(
            "/v1/approvals",
            &json!({"cluster": "acme-prod", "group": "support-l2", "logins": [login], "max_session_secs": 8 * 3600,
                    "valid_until": now_secs() + 30 * 86_400}),
        )
        .await?;

    // Data plane: the edge, a gateway that enrolls with a join token, and the node (the local
    // OpenSSH sshd, trusting only the gateway's node CA).
    let (stop_plane_tx, stop_plane_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The edge's own API token: its refusals and sessions are audited at the broker, and it
    // checks per-session TOTP codes there.
    let edge_token = token(
        op.post("/v1/tokens", &json!({"name": "demo-edge", "role": "edge"}))
            .await?
            .1,
    );
    let edge_token_file = dir.join("edge.token");
    // The store is fresh each run: so is the edge's audit chain.
    let _ = std::fs::remove_dir_all(dir.join("edge").join("spool"));
    write_0600(&edge_token_file, &format!("{edge_token}\n"))?;
    // A demo broker may have a new user CA: the edge takes it afresh (a real edge refuses a CA
    // set that no CA it trusts signed).
    let _ = std::fs::remove_file(dir.join("edge").join("user_cas.pub"));
    let edge_cfg: sallyport_bastion::config::EdgeConfig = serde_json::from_value(json!({
        "listen": format!("127.0.0.1:{edge_port}"),
        "tunnel_listen": format!("127.0.0.1:{tunnel_port}"),
        "data_dir": dir.join("edge"),
        "broker": url,
        "refresh_secs": 2,
        "max_connections": 100,
        "shutdown_grace_secs": 0,
        "name": "demo-edge",
        "token_file": edge_token_file,
    }))?;
    let edge = sallyport_bastion::edge::Edge::new(edge_cfg)?;
    tokio::spawn(sallyport_bastion::edge::run(
        edge,
        stopped(stop_plane_rx.clone()),
    ));
    let join = op
        .post(
            "/v1/clusters/acme-prod/gateways",
            &json!({"name": "demo-gateway"}),
        )
        .await?
        .1;
    // The gateway's config as an operator writes it: what is not named takes its default.
    let gw_cfg: sallyport_bastion::config::GatewayConfig = serde_json::from_value(json!({
        "data_dir": dir.join("gateway"),
        "broker": url,
        "join_token": join["join_token"],
        "edges": [{"address": format!("127.0.0.1:{tunnel_port}"), "host_key": edge_pub}],
        "session_cert_ttl_secs": 600,
        "refresh_secs": 2,
        "config_refresh_secs": 10,
    }))?;
    let _ = std::fs::remove_dir_all(dir.join("gateway"));
    let gateway = sallyport_bastion::gateway::open(gw_cfg).await?;
    let node_ca = gateway.node_ca.public_key().to_openssh()?;
    tokio::spawn(sallyport_bastion::gateway::run(
        gateway,
        stopped(stop_plane_rx),
    ));
    let node = start_node(&dir.join("node"), &node_ca, &login);
    let node_port = match &node {
        Ok((_, port)) => *port,
        Err(e) => {
            eprintln!("no node: {e:#}");
            22
        }
    };
    // The node's host key, registered: the gateway accepts no other (no trust on first use).
    let node_host_keys: Vec<String> = match &node {
        Ok(_) => vec![
            sallyport_ca::keys::load_private_key(&dir.join("node").join("host_key"))?
                .public_key()
                .to_openssh()?,
        ],
        Err(_) => Vec::new(),
    };
    op.post(
        "/v1/clusters/acme-prod/nodes",
        &json!({"name": "node1", "address": "127.0.0.1", "port": node_port,
                "host_keys": node_host_keys}),
    )
    .await?;

    let env = [
        ("SALLYPORT_BROKER", url.clone()),
        ("DEMO_ENGINEER", engineer.to_string()),
        ("DEMO_PASSWORD", engineer_pw.clone()),
        ("DEMO_TOTP_SECRET", totp_secret.clone()),
        ("DEMO_TICKET", "SUP-1234".into()),
        ("DEMO_CLUSTER", "acme-prod".into()),
        ("DEMO_NODE", "node1.acme-prod".into()),
        ("DEMO_LOGIN", login.clone()),
        ("DEMO_REVIEWER", "reviewer".into()),
        ("DEMO_REVIEWER_PASSWORD", reviewer_pw),
        (
            "DEMO_REVIEWER_TOTP_SECRET",
            reviewer["totp_secret"].as_str().unwrap_or_default().into(),
        ),
        ("DEMO_APPROVER", "acme-approver".into()),
        ("DEMO_APPROVER_PASSWORD", approver_pw),
        (
            "DEMO_APPROVER_TOTP_SECRET",
            approver["totp_secret"].as_str().unwrap_or_default().into(),
        ),
        ("DEMO_OPERATOR_TOKEN", operator_token),
        ("DEMO_REVIEWER_TOKEN", reviewer_token),
        ("DEMO_APPROVER_TOKEN", approver_token),
        ("DEMO_TICKET_TOKEN", ticket_token),
        ("DEMO_DIR", dir.display().to_string()),
        ("DEMO_CONSOLE", format!("{url}/console/")),
    ];
    let text: String = env.iter().map(|(k, v)| format!("{k}={}\n", q(v))).collect();
    // Complete or absent: scripts wait for demo.env to appear, then read it.
    write_0600(&dir.join("demo.env.tmp"), &text)?;
    std::fs::rename(dir.join("demo.env.tmp"), dir.join("demo.env"))?;

    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sallyport".into());
    println!(
        "sallyport demo is running (broker {url}); files in {}",
        dir.display()
    );
    println!();
    println!("In another shell, log in as the demo engineer ({engineer}, password {engineer_pw}):");
    println!();
    println!("  set -a; . {}/demo.env; set +a", dir.display());
    println!("  export SALLYPORT_HOME={}/home", dir.display());
    println!(
        "  echo \"$DEMO_PASSWORD\" | {me} login --user \"$DEMO_ENGINEER\" --password-stdin \\"
    );
    println!(
        "      --totp \"$({me} totp --secret-file {}/engineer.totp)\" --ticket \"$DEMO_TICKET\"",
        dir.display()
    );
    println!("  {me} status");
    println!("  ssh-keygen -L -f \"$SALLYPORT_HOME/acme-prod-cert.pub\"");
    println!();
    if node.is_ok() {
        println!("Then reach the node through the edge and the gateway, with plain OpenSSH:");
        println!(
            "  ssh -F \"$SALLYPORT_HOME/ssh_config\" node1.acme-prod 'echo hi; exit 3'; echo $?"
        );
        println!("  ssh -F \"$SALLYPORT_HOME/ssh_config\" node1.acme-prod");
        println!();
    }
    println!("Then, as a reviewer:");
    println!("  SALLYPORT_TOKEN=\"$DEMO_REVIEWER_TOKEN\" {me} audit search --json");
    println!("  SALLYPORT_TOKEN=\"$DEMO_REVIEWER_TOKEN\" {me} audit verify");
    println!();
    println!("The web console for approvers and reviewers: {url}/console/");
    println!("  reviewer:  user \"$DEMO_REVIEWER\", password \"$DEMO_REVIEWER_PASSWORD\",");
    println!("             code: {me} totp --secret \"$DEMO_REVIEWER_TOTP_SECRET\"");
    println!("  approver:  user \"$DEMO_APPROVER\", password \"$DEMO_APPROVER_PASSWORD\",");
    println!("             code: {me} totp --secret \"$DEMO_APPROVER_TOTP_SECRET\"");
    println!();
    println!("Press Ctrl-C to stop.");

    crate::shutdown_signal().await;
    eprintln!("stopping the demo");
    let _ = stop_plane_tx.send(true);
    if let Ok((mut child, _)) = node {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The demo's node: the local OpenSSH sshd on a loopback port, trusting only the gateway's node
/// CA, admitting `login`. Installs nothing: says how when sshd is missing.
fn start_node(
    dir: &Path,
    node_ca: &str,
    login: &str,
) -> anyhow::Result<(std::process::Child, u16)> {
    let sshd = Path::new("/usr/sbin/sshd");
    anyhow::ensure!(
        sshd.exists(),
        "OpenSSH's sshd is not installed, so the demo runs without a node: install it (Debian: `apt-get install openssh-server`) and run the demo again"
    );
    std::fs::create_dir_all(dir.join("principals"))?;
    let host_key = dir.join("host_key");
    if !host_key.exists() {
        let key = sallyport_ca::keys::generate_ed25519("sallyport demo node")?;
        sallyport_ca::keys::save_private_key(&key, &host_key)?;
    }
    std::fs::write(dir.join("node_ca.pub"), format!("{}\n", node_ca.trim()))?;
    std::fs::write(dir.join("principals").join(login), format!("{login}\n"))?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "# The demo node: trusts only the gateway's node CA.\nListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile {}\nTrustedUserCAKeys {}\nAuthorizedPrincipalsFile {}/%u\nAuthorizedKeysFile none\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("node_ca.pub").display(),
            dir.join("principals").display(),
        ),
    )?;
    // sshd's privilege separation directory (no systemd tmpfiles to make it on a bare machine).
    let _ = std::fs::create_dir_all("/run/sshd");
    let log = std::fs::File::create(dir.join("sshd.log"))?;
    let child = std::process::Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()?;
    for _ in 0..100 {
        if std::fs::read_to_string(dir.join("sshd.log"))
            .is_ok_and(|l| l.contains("Server listening"))
        {
            return Ok((child, port));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    anyhow::bail!(
        "the demo node's sshd did not start; see {}",
        dir.join("sshd.log").display()
    )
}
