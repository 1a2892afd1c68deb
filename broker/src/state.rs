//! The broker's shared state: config, store, directory, policy engine, CA keys, JWT keys.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::RngCore;
use russh::keys::PrivateKey;
use sallyport_ca::TrustedCas;
use sallyport_ca::keys::{generate_ed25519, load_private_key, load_public_key, save_private_key};
use sallyport_ca::policy::Engine;

use crate::auth::JwtKeys;
use crate::config::BrokerConfig;
use crate::directory::Directory;
use crate::store::Store;

pub struct Broker {
    pub cfg: BrokerConfig,
    pub store: Store,
    pub directory: Directory,
    pub engine: Engine,
    /// Signs engineers' certificates.
    pub user_ca: PrivateKey,
    /// The signing key plus the keys kept for rotation.
    pub trusted: TrustedCas,
    pub jwt: JwtKeys,
    pub operator_token_sha256: String,
    /// Seals TOTP secrets in the store.
    pub totp_box: crate::secretbox::SecretBox,
}

impl Broker {
    pub async fn open(cfg: BrokerConfig) -> anyhow::Result<Arc<Broker>> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
        let store = Store::connect(&cfg.database_url()).await?;
        let directory = match (&cfg.ldap, &cfg.directory) {
            (Some(ldap), _) => Directory::ldap(ldap)?,
            (None, Some(file)) => Directory::from_file(file)?,
            (None, None) => anyhow::bail!(
                "the broker config names no engineer directory: set [ldap] or `directory = \"FILE\"`"
            ),
        };
        let engine = Engine::new().context("loading the shipped policies")?;
        let user_ca = load_or_create_key(&cfg.user_ca_key(), "sallyport user CA")?;
        let mut trusted = TrustedCas::new([user_ca.public_key().clone()]);
        for path in &cfg.ca.extra_trusted {
            trusted.insert(load_public_key(path)?);
        }
        let totp_key = load_or_create_secret(&cfg.totp_key_file())?;
        let totp_box = crate::secretbox::SecretBox::new(&totp_key)
            .with_context(|| format!("{}", cfg.totp_key_file().display()))?;
        let secret = load_or_create_secret(&cfg.jwt_secret_file())?;
        let jwt = JwtKeys::new(
            &secret,
            &cfg.jwt.issuer,
            &cfg.jwt.audience,
            cfg.jwt.ttl_secs,
        );
        let operator_token_sha256 = cfg.operator_token_sha256.trim().to_ascii_lowercase();
        anyhow::ensure!(
            operator_token_sha256.len() == 64
                && operator_token_sha256.chars().all(|c| c.is_ascii_hexdigit()),
            "operator_token_sha256 must be 64 hex digits: make one with `sallyport admin hash-token`"
        );
        Ok(Arc::new(Broker {
            cfg,
            store,
            directory,
            engine,
            user_ca,
            trusted,
            jwt,
            operator_token_sha256,
            totp_box,
        }))
    }
}

fn load_or_create_key(path: &Path, comment: &str) -> anyhow::Result<PrivateKey> {
    if path.exists() {
        return Ok(load_private_key(path)?);
    }
    let key = generate_ed25519(comment)?;
    save_private_key(&key, path)?;
    tracing::info!(path = %path.display(), "generated a new user CA key");
    Ok(key)
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() {
        let meta = std::fs::metadata(path)?;
        anyhow::ensure!(
            meta.permissions().mode() & 0o077 == 0,
            "{} is readable by others: chmod 600 it",
            path.display()
        );
        let s = std::fs::read(path)?;
        anyhow::ensure!(
            s.len() >= 32,
            "{} holds fewer than 32 bytes",
            path.display()
        );
        return Ok(s);
    }
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&s)?;
    f.sync_all()?;
    Ok(s)
}
