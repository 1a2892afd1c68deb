//! `sallyport`: one binary, subcommands for engineers, the broker, reviewers and the operator.

mod admin;
#[cfg(feature = "alloc-stats")]
mod alloc_stats;
mod audit_bundle;
mod audit_cmd;
mod audit_session;
mod audit_stream;
mod check;
mod client;
mod connect;
mod customer_cmd;
mod demo;
mod logging;
mod login;
mod node_config;
mod reload;
mod report_cmd;
mod sessions_cmd;
mod show;
mod status;
mod webhooks_cmd;

use std::path::PathBuf;

/// jemalloc, configured at build time (`.cargo/config.toml`: freed pages go back to the system
/// within a second, by a background thread), so that memory returns to its idle level after
/// sessions end; `_RJEM_MALLOC_CONF` overrides it at run time.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Join standard input and output to the first edge that answers (the jump hop's
    /// ProxyCommand that `login` writes when there are several edges).
    Connect(connect::ConnectArgs),
    /// Run the broker (control plane: API, CA, store).
    Broker {
        /// The broker's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        log: logging::LogArgs,
    },
    /// Run the public edge: checks engineers' certificates and forwards into gateways' tunnels.
    Edge {
        /// The edge's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        log: logging::LogArgs,
    },
    /// Run a gateway inside the customer's network: terminates, records, connects to nodes.
    Gateway {
        /// The gateway's TOML config (see docs/config.md).
        #[arg(long, env = "SALLYPORT_CONFIG")]
        config: PathBuf,
        #[command(flatten)]
        log: logging::LogArgs,
    },
    /// Search, stream and verify the audit log, show and replay sessions, export the keys that
    /// sign it, export OCSF events for a SIEM, and export and check evidence bundles.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Engineers' sessions: list them, end one (reviewers, customer approvers, the operator).
    #[command(subcommand)]
    Sessions(sessions_cmd::SessionsCmd),
    /// A customer's approvals: list, create, edit, withdraw (the customer's approver; reviewers
    /// and the operator may list).
    #[command(subcommand)]
    Approvals(customer_cmd::ApprovalsCmd),
    /// Just-in-time access requests: list, approve (optionally for less), deny (the customer's
    /// approver).
    #[command(subcommand)]
    Requests(customer_cmd::RequestsCmd),
    /// Webhooks that notify a customer's own systems (its approver) or the vendor's (the
    /// operator): list, create, delete, and their recent deliveries.
    #[command(subcommand)]
    Webhooks(webhooks_cmd::WebhooksCmd),
    /// The access report of a period: who reached which node when, under which ticket, and
    /// what they did (a customer approver's own clusters; reviewers and the operator: all).
    Report(report_cmd::ReportArgs),
    /// Operator, approver and ticket-system commands.
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Run a complete local system on loopback and print what to type.
    Demo(demo::DemoArgs),
    /// Print the current TOTP code for a base32 secret (demo and test helper).
    Totp {
        /// The base32 TOTP secret (as `admin engineer` printed it); prefer --secret-file, a
        /// secret on the command line is visible to other users of the machine.
        #[arg(
            long,
            conflicts_with = "secret_file",
            required_unless_present = "secret_file"
        )]
        secret: Option<String>,
        /// A file holding the base32 TOTP secret.
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
}

pub fn valid_name(s: &str) -> bool {
    sallyport_broker::directory::valid_uid(s)
}

fn main() {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let none = logging::LogArgs::default();
    let (service, default_level, log) = match &cli.cmd {
        Cmd::Broker { log, .. } => ("broker", "info", log),
        Cmd::Edge { log, .. } => ("edge", "info", log),
        Cmd::Gateway { log, .. } => ("gateway", "info", log),
        Cmd::Demo(a) => ("demo", "info", &a.log),
        Cmd::Login(_)
        | Cmd::Status(_)
        | Cmd::Connect(_)
        | Cmd::Audit(_)
        | Cmd::Sessions(_)
        | Cmd::Report(_)
        | Cmd::Approvals(_)
        | Cmd::Requests(_)
        | Cmd::Webhooks(_)
        | Cmd::Admin(_)
        | Cmd::Totp { .. } => ("sallyport", "warn", &none),
    };
    // A service logging to files says there, too, why it stopped.
    let to_files = log.log_dir.is_some();
    let guard = match logging::init(service, default_level, log) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    };
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
            if to_files {
                tracing::error!("{e:#}");
            }
            eprintln!("error: {e:#}");
            1
        }
    };
    drop(rt);
    // The last lines reach the log file before the process ends.
    drop(guard);
    std::process::exit(code);
}

async fn run(cmd: Cmd) -> anyhow::Result<i32> {
    #[cfg(feature = "alloc-stats")]
    alloc_stats::on_sigusr1();
    match cmd {
        Cmd::Login(a) => login::run(a).await.map(|_| 0),
        Cmd::Status(a) => status::run(a).map(|_| 0),
        Cmd::Connect(a) => connect::run(a),
        Cmd::Broker { config, .. } => {
            let cfg = sallyport_broker::BrokerConfig::load(&config)?;
            let listen = cfg.listen;
            // Refuse before opening the store, binding or announcing "listening on".
            anyhow::ensure!(
                cfg.tls.is_some() || listen.ip().is_loopback(),
                "refusing plain HTTP on {listen}: configure [tls] (cert, key) or listen on 127.0.0.1"
            );
            let broker = sallyport_broker::Broker::open(cfg).await?;
            {
                let (broker, path) = (broker.clone(), config.clone());
                reload::watch(
                    config.clone(),
                    sallyport_broker::Broker::RELOADABLE,
                    move |changes| {
                        let (broker, path) = (broker.clone(), path.clone());
                        async move {
                            match changes.and_then(|s| {
                                sallyport_broker::BrokerConfig::load(&path)
                                    .map(|cfg| (cfg, s))
                                    .map_err(|e| format!("{e:#}"))
                            }) {
                                Ok((cfg, s)) => broker.reload(cfg, &s.applied, &s.restart).await,
                                Err(problem) => broker.reload_refused(&problem).await,
                            }
                        }
                    },
                )?;
            }
            let listener = std::net::TcpListener::bind(listen)
                .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
            let stop = shutdown_signal();
            println!("listening on {}", listener.local_addr()?);
            sallyport_broker::serve(broker, listener, stop).await?;
            tracing::info!("broker stopped");
            Ok(0)
        }
        Cmd::Edge { config, .. } => {
            let cfg: sallyport_bastion::config::EdgeConfig =
                sallyport_bastion::config::load(&config)?;
            let edge = sallyport_bastion::edge::Edge::new(cfg)?;
            {
                let (edge, path) = (edge.clone(), config.clone());
                reload::watch(
                    config.clone(),
                    sallyport_bastion::edge::Edge::RELOADABLE,
                    move |changes| {
                        let (edge, path) = (edge.clone(), path.clone());
                        async move {
                            let (new, s) = loaded(
                                changes,
                                &path,
                                sallyport_bastion::config::EdgeConfig::preflight,
                            );
                            edge.reload(new, &s.applied, &s.restart).await
                        }
                    },
                )?;
            }
            // The first signal starts the grace period; a second one ends it at once (what is
            // audited is already on disk and ships at the next start).
            let signal = shutdown_signal();
            let first = async {
                signal.await;
                tokio::spawn(async {
                    shutdown_signal().await;
                    tracing::warn!("second signal: exiting without waiting for the grace period");
                    std::process::exit(1);
                });
            };
            sallyport_bastion::edge::run(edge, first).await?;
            Ok(0)
        }
        Cmd::Gateway { config, .. } => {
            let cfg: sallyport_bastion::config::GatewayConfig =
                sallyport_bastion::config::load(&config)?;
            let stop = shutdown_signal();
            let gw = sallyport_bastion::gateway::open(cfg).await?;
            {
                let (gw, path) = (gw.clone(), config.clone());
                reload::watch(
                    config.clone(),
                    sallyport_bastion::gateway::Gateway::RELOADABLE,
                    move |changes| {
                        let (gw, path) = (gw.clone(), path.clone());
                        async move {
                            let (new, s) = loaded(
                                changes,
                                &path,
                                sallyport_bastion::config::GatewayConfig::preflight,
                            );
                            gw.reload(new, &s.applied, &s.restart).await
                        }
                    },
                )?;
            }
            sallyport_bastion::gateway::run(gw, stop).await?;
            Ok(0)
        }
        Cmd::Audit(c) => audit_cmd::run(c).await,
        Cmd::Sessions(c) => sessions_cmd::run(c).await,
        Cmd::Report(a) => report_cmd::run(a).await,
        Cmd::Approvals(c) => customer_cmd::approvals(c).await,
        Cmd::Requests(c) => customer_cmd::requests(c).await,
        Cmd::Webhooks(c) => webhooks_cmd::webhooks(c).await,
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
            let code = sallyport_broker::totp::code(&secret, sallyport_ca::clock::now_secs())
                .ok_or_else(|| anyhow::anyhow!("not a base32 TOTP secret"))?;
            println!("{code}");
            Ok(0)
        }
    }
}

/// An edge's or gateway's config read again on SIGHUP and checked whole (`preflight`), with its
/// changed keys; or why it is not usable.
fn loaded<T: serde::de::DeserializeOwned + sallyport_bastion::config::Paths>(
    changes: Result<reload::Split, String>,
    path: &std::path::Path,
    preflight: fn(&T) -> Vec<String>,
) -> (Result<T, String>, reload::Split) {
    let s = match changes {
        Ok(s) => s,
        Err(e) => return (Err(e), reload::Split::default()),
    };
    let checked = sallyport_bastion::config::load(path)
        .map_err(|e| format!("{e:#}"))
        .and_then(|cfg: T| {
            let problems = preflight(&cfg);
            if problems.is_empty() {
                Ok(cfg)
            } else {
                Err(problems.join("; "))
            }
        });
    (checked, s)
}

/// Ctrl-C or SIGTERM. SIGTERM is caught from the moment this is called (not from the first
/// poll), so a service told to stop right after it announced itself still stops gracefully.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        match term {
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
}
