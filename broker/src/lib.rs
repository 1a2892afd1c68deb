//! sallyport-broker: the control plane. HTTP API (axum), store (sqlx: SQLite or PostgreSQL),
//! engineers' directory (LDAP or an embedded file), TOTP, tickets, approvals, access requests,
//! the policy decision's I/O, the CA's issuing, revocation, the audit store and the web console.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod bundle;
pub mod chains;
pub mod config;
pub mod directory;
pub mod error;
pub mod ocsf;
pub mod passkeys;
pub mod recordings;
pub mod replay;
pub mod secretbox;
pub mod state;
pub mod store;
pub mod throttle;
pub mod timefmt;
pub mod totp;
pub mod web;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

pub use config::BrokerConfig;
pub use state::Broker;

/// Serve the API until `shutdown` resolves. HTTPS when `[tls]` is configured; plain HTTP only on
/// a loopback address.
pub async fn serve(
    broker: Arc<Broker>,
    listener: std::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = api::router(broker.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    // The webhook worker runs while the server does.
    let stop_webhooks = tokio_util::sync::CancellationToken::new();
    tokio::spawn(webhooks::run(broker.clone(), stop_webhooks.clone()));
    let _stop_webhooks = stop_webhooks.clone().drop_guard();
    tokio::spawn(async move {
        shutdown.await;
        stop_webhooks.cancel();
        h2.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    listener.set_nonblocking(true)?;
    match &broker.cfg.tls {
        Some(tls) => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let certs = load_certs(&tls.cert)?;
            let key = load_key(&tls.key)?;
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("loading the broker's TLS certificate and key")?;
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
            tracing::info!(%addr, "broker listening (https)");
            axum_server::from_tcp_rustls(listener, config)
                .handle(handle)
                .serve(app)
                .await?;
        }
        None => {
            anyhow::ensure!(
                addr.ip().is_loopback(),
                "refusing plain HTTP on {addr}: configure [tls] (cert, key) or listen on 127.0.0.1"
            );
            tracing::info!(%addr, "broker listening (http, loopback only)");
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await?;
        }
    }
    Ok(())
}

fn load_certs(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", path.display()))
}

fn load_key(path: &std::path::Path) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading the private key {}", path.display()))
}
