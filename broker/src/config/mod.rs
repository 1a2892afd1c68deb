//! The broker's TOML configuration. Every key is documented in `docs/config.md`.
//! The `[section]`s are in their own modules, what is checked before a start in `checks.rs`.

mod checks;
mod console;
mod login;
mod sections;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use checks::{read_secret_file, split_host_port};
pub use console::{ConsoleConfig, RelyingParty};
pub use login::{GroupMode, LdapConfig, LoginConfig};
pub use sections::{CaConfig, JwtConfig, RecordingsConfig, Storage, TlsConfig, WebhooksConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for keys and the default SQLite store.
    pub data_dir: PathBuf,
    /// `sqlite://FILE` (default: `data_dir/broker.db`) or `postgres://...`.
    #[serde(default)]
    pub database: Option<String>,
    /// SHA-256 (hex) of the operator's API token. Generate with `sallyport admin hash-token`.
    pub operator_token_sha256: String,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub ca: CaConfig,
    #[serde(default)]
    pub jwt: JwtConfig,
    #[serde(default)]
    pub login: LoginConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub recordings: RecordingsConfig,
    /// LDAP directory of engineers. Without it, `directory` must name an embedded directory file.
    #[serde(default)]
    pub ldap: Option<LdapConfig>,
    /// Embedded directory file (TOML: engineers with argon2 hashes and groups).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// Largest batch of audit records a gateway or an edge may ship in one request, in bytes
    /// (`POST /v1/audit/records`; senders keep their batches under 1 MiB and halve them on 413).
    #[serde(default = "default_ingest_limit")]
    pub max_ingest_bytes: usize,
    /// Largest session recording a gateway may upload, in bytes (streamed to disk, not held in
    /// memory).
    #[serde(default = "default_recording_limit")]
    pub max_recording_bytes: u64,
    /// How long a gateway's one-time join token may be used after the operator made it, seconds.
    #[serde(default = "default_join_token_ttl")]
    pub gateway_join_token_ttl_secs: u64,
    /// The key that seals engineers' and accounts' TOTP secrets in the database (32 random bytes,
    /// 0600; made at first start). Default `data_dir/totp.key`; replicas must share it.
    #[serde(default)]
    pub totp_key_file: Option<PathBuf>,
    /// The key that opens what gateways seal of the lines typed without echo at password
    /// prompts (`input_hidden`): 32 random bytes, 0600, made at first start; its public half
    /// goes to every gateway. Default `data_dir/hidden_input.key`; replicas must share it.
    #[serde(default)]
    pub hidden_input_key_file: Option<PathBuf>,
    /// The key that signs the broker's own audit chain (an Ed25519 OpenSSH key, 0600; made at
    /// first start). Default `data_dir/audit_key`; replicas must share it.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
    /// The public `host:port` of the edge engineers' ssh connects to (`ProxyJump`). Sent with
    /// each certificate so that `sallyport login` writes the jump into ssh_config.
    #[serde(default)]
    pub edge_address: Option<String>,
    /// More edges engineers may dial (`host:port` each), after `edge_address`: with two or more
    /// in all, `sallyport login` writes a jump that tries them in turn, so that new sessions go
    /// through whichever edge answers.
    #[serde(default)]
    pub edge_addresses: Vec<String>,
    /// The edge's host public keys (OpenSSH lines), sent with each certificate so that
    /// `sallyport login` pins them in known_hosts for the jump hop.
    #[serde(default)]
    pub edge_host_keys: Vec<String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_ingest_limit() -> usize {
    8 << 20
}
fn default_join_token_ttl() -> u64 {
    24 * 3600
}

fn default_recording_limit() -> u64 {
    256 * 1024 * 1024
}

impl BrokerConfig {
    /// The edge addresses handed to engineers: `edge_address`, then `edge_addresses`, each once.
    pub fn edges(&self) -> Vec<String> {
        let mut edges: Vec<String> = Vec::new();
        for e in self.edge_address.iter().chain(&self.edge_addresses) {
            if !edges.contains(e) {
                edges.push(e.clone());
            }
        }
        edges
    }

    pub fn load(path: &Path) -> anyhow::Result<BrokerConfig> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the broker config {}", path.display()))?;
        let mut cfg: BrokerConfig = toml::from_str(&text)
            .with_context(|| format!("parsing the broker config {}", path.display()))?;
        // Every path in the file is relative to the file, whatever the working directory.
        if let Some(base) = path.parent() {
            cfg.anchor_paths(base);
        }
        for key in &cfg.edge_host_keys {
            russh::keys::PublicKey::from_openssh(key.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "edge_host_keys in {}: not an OpenSSH public key ({e})",
                    path.display()
                )
            })?;
        }
        for edge in cfg.edge_address.iter().chain(&cfg.edge_addresses) {
            split_host_port(edge).with_context(|| {
                format!(
                    "edge address {edge:?} in {}: expected \"host:port\"",
                    path.display()
                )
            })?;
        }
        if let Some(ldap) = &cfg.ldap {
            ldap.check()
                .with_context(|| format!("in the broker config {}", path.display()))?;
        }
        let w = &cfg.webhooks;
        // An attempt must end well within the claim on its delivery (60 s), or another replica
        // could send it again meanwhile.
        anyhow::ensure!(
            w.retry_secs >= 1 && (1..=30).contains(&w.timeout_secs) && w.poll_millis >= 50,
            "[webhooks] in {}: retry_secs must be at least 1, timeout_secs between 1 and 30, \
             poll_millis at least 50",
            path.display()
        );
        anyhow::ensure!(
            (1..=20).contains(&w.max_attempts),
            "[webhooks] max_attempts in {} must be between 1 and 20",
            path.display()
        );
        Ok(cfg)
    }

    /// Make every relative path of the config relative to `base` (the config file's directory).
    fn anchor_paths(&mut self, base: &Path) {
        let anchor = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        anchor(&mut self.data_dir);
        if let Some(p) = &mut self.directory {
            anchor(p);
        }
        if let Some(p) = &mut self.totp_key_file {
            anchor(p);
        }
        if let Some(p) = &mut self.hidden_input_key_file {
            anchor(p);
        }
        if let Some(p) = &mut self.audit_key_file {
            anchor(p);
        }
        if let Some(tls) = &mut self.tls {
            anchor(&mut tls.cert);
            anchor(&mut tls.key);
        }
        if let Some(p) = &mut self.ca.user_ca_key {
            anchor(p);
        }
        self.ca.extra_trusted.iter_mut().for_each(anchor);
        if let Some(p) = &mut self.jwt.secret_file {
            anchor(p);
        }
        if let Some(ldap) = &mut self.ldap {
            if let Some(p) = &mut ldap.ca_file {
                anchor(p);
            }
            anchor(&mut ldap.bind_password_file);
        }
    }

    /// Where new recordings are kept: `[recordings] storage`, or its default for the store.
    pub fn recording_storage(&self) -> Storage {
        match self.recordings.storage {
            Some(s) => s,
            None if self.database_url().starts_with("postgres") => Storage::Database,
            None => Storage::DataDir,
        }
    }

    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("broker.db").display()),
        }
    }

    pub fn user_ca_key(&self) -> PathBuf {
        self.ca
            .user_ca_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("user_ca"))
    }

    /// The key that signs the broker's own audit chain: a file (never in the database), shared
    /// by every replica like the user CA key.
    pub fn audit_key_file(&self) -> PathBuf {
        self.audit_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit_key"))
    }

    pub fn totp_key_file(&self) -> PathBuf {
        self.totp_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("totp.key"))
    }

    pub fn hidden_input_key_file(&self) -> PathBuf {
        self.hidden_input_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("hidden_input.key"))
    }

    pub fn jwt_secret_file(&self) -> PathBuf {
        self.jwt
            .secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt.secret"))
    }
}
