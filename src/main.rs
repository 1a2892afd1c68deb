//! `sallyport`: one binary, subcommands for engineers, the broker, reviewers and the operator.

mod admin;
mod audit_cmd;
mod client;
mod demo;
mod login;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sallyport",
    version,
    about = "Approved, short-lived, recorded SSH access into customers' clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Get a short-lived SSH certificate for a ticket (LDAP password + TOTP).
    Login(login::LoginArgs),
    /// Show your certificates and their remaining time.
    Status(status::StatusArgs),
    /// Run the broker (control plane: API, CA, store).
    Broker {
        /// The broker's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
    },
    /// Run the public edge: checks engineers' certificates and forwards into gateways' tunnels.
    Edge {
        /// The edge's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
    },
    /// Run a gateway inside the customer's network: terminates, records, connects to nodes.
    Gateway {
        /// The gateway's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
    },
    /// Search and verify the audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Operator, approver and ticket-system commands.
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Run a complete local system on loopback and print what to type.
    Demo(demo::DemoArgs),
    /// Print the current TOTP code for a base32 secret (demo and test helper).
    Totp {
        #[arg(
            long,
            conflicts_with = "secret_file",
            required_unless_present = "secret_file"
        )]
        secret: Option<String>,
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn valid_name(s: &str) -> bool {
    sallyport_broker::directory::valid_uid(s)
}

fn main() {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_level = match cli.cmd {
        Cmd::Broker { .. } | Cmd::Demo(_) | Cmd::Edge { .. } | Cmd::Gateway { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli.cmd)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cmd: Cmd) -> anyhow::Result<i32> {
    match cmd {
        Cmd::Login(a) => login::run(a).await.map(|_| 0),
        Cmd::Status(a) => status::run(a).map(|_| 0),
        Cmd::Broker { config } => {
            let cfg = sallyport_broker::BrokerConfig::load(&config)?;
            let listen = cfg.listen;
            // Refuse before opening the store, binding or announcing "listening on".
            anyhow::ensure!(
                cfg.tls.is_some() || listen.ip().is_loopback(),
                "refusing plain HTTP on {listen}: configure [tls] (cert, key) or listen on 127.0.0.1"
            );
            let broker = sallyport_broker::Broker::open(cfg).await?;
            let listener = std::net::TcpListener::bind(listen)
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            println!("listening on {}", listener.local_addr()?);
            sallyport_broker::serve(broker, listener, shutdown_signal()).await?;
            Ok(0)
        }
        Cmd::Edge { config } => {
            let cfg: sallyport_bastion::config::EdgeConfig =
                sallyport_bastion::config::load(&config)?;
            let edge = sallyport_bastion::edge::Edge::new(cfg)?;
            // The first signal starts the grace period; a second one ends it at once (what is
            // audited is already on disk and ships at the next start).
            let first = async {
                shutdown_signal().await;
                tokio::spawn(async {
                    shutdown_signal().await;
                    tracing::warn!("second signal: exiting without waiting for the grace period");
                    std::process::exit(1);
                });
            };
            sallyport_bastion::edge::run(edge, first).await?;
            Ok(0)
        }
        Cmd::Gateway { config } => {
            let cfg: sallyport_bastion::config::GatewayConfig =
                sallyport_bastion::config::load(&config)?;
            let gw = sallyport_bastion::gateway::open(cfg).await?;
            sallyport_bastion::gateway::run(gw, shutdown_signal()).await?;
            Ok(0)
        }
        Cmd::Audit(c) => audit_cmd::run(c).await,
        Cmd::Admin(c) => admin::run(c).await.map(|_| 0),
        Cmd::Demo(a) => demo::run(a).await.map(|_| 0),
        Cmd::Totp {
            secret,
            secret_file,
        } => {
            let secret = match (secret, secret_file) {
                (Some(s), _) => s,
                (None, Some(f)) => std::fs::read_to_string(&f)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?
                    .trim()
                    .to_string(),
                (None, None) => anyhow::bail!("give --secret or --secret-file"),
            };
            let code = sallyport_broker::totp::code(&secret, now())
                .ok_or_else(|| anyhow::anyhow!("not a base32 TOTP secret"))?;
            println!("{code}");
            Ok(0)
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
