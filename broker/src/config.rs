//! The broker's TOML configuration. Every key is documented in `docs/config.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// The public `host:port` of the edge engineers' ssh connects to (`ProxyJump`). Sent with
    /// each certificate so that `sallyport login` writes the jump into ssh_config.
    #[serde(default)]
    pub edge_address: Option<String>,
    /// The edge's host public keys (OpenSSH lines), sent with each certificate so that
    /// `sallyport login` pins them in known_hosts for the jump hop.
    #[serde(default)]
    pub edge_host_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Private key of the user CA (OpenSSH format, 0600). Generated on first start if missing.
    #[serde(default)]
    pub user_ca_key: Option<PathBuf>,
    /// Extra trusted user CA public keys (rotation): certificates signed by these still check.
    #[serde(default)]
    pub extra_trusted: Vec<PathBuf>,
    /// Longest certificate lifetime, seconds.
    #[serde(default = "default_max_ttl")]
    pub max_ttl_secs: u64,
}

impl Default for CaConfig {
    fn default() -> Self {
        CaConfig {
            user_ca_key: None,
            extra_trusted: vec![],
            max_ttl_secs: default_max_ttl(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// File with the HMAC secret (>= 32 bytes). Generated on first start if missing.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default = "default_jwt_ttl")]
    pub ttl_secs: u64,
    #[serde(default = "default_issuer")]
    pub issuer: String,
    #[serde(default = "default_audience")]
    pub audience: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            secret_file: None,
            ttl_secs: default_jwt_ttl(),
            issuer: default_issuer(),
            audience: default_audience(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Failed logins of one user before the lockout starts.
    #[serde(default = "default_max_failures")]
    pub max_failures: i64,
    /// How long a locked-out user waits, seconds.
    #[serde(default = "default_lockout")]
    pub lockout_secs: u64,
    /// TOTP time steps accepted before and after the current one.
    #[serde(default = "default_skew")]
    pub totp_skew: u16,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures: default_max_failures(),
            lockout_secs: default_lockout(),
            totp_skew: default_skew(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupMode {
    /// Read the user entry's `memberOf` attribute.
    Memberof,
    /// Search `group_base` with `group_filter`.
    Search,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA that signed the LDAP server's certificate (LDAPS/StartTLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN to bind as, with `{uid}` replaced by the escaped user name, e.g.
    /// `uid={uid},ou=people,dc=example,dc=com`.
    pub user_dn_template: String,
    /// `memberof` or `search`.
    #[serde(default = "default_group_mode")]
    pub group_mode: GroupMode,
    /// Base DN of groups (group_mode = search).
    #[serde(default)]
    pub group_base: Option<String>,
    /// Filter for the groups of a user; `{dn}` is the escaped user DN, `{uid}` the escaped uid.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// Attribute naming a group (the AccessGroup name).
    #[serde(default = "default_group_attr")]
    pub group_attr: String,
    /// Only these groups count (empty = all groups of the user).
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// Seconds before an LDAP operation is given up (fail closed).
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
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
fn default_max_ttl() -> u64 {
    8 * 3600
}
fn default_jwt_ttl() -> u64 {
    600
}
fn default_issuer() -> String {
    "sallyport-broker".into()
}
fn default_audience() -> String {
    "sallyport".into()
}
fn default_max_failures() -> i64 {
    5
}
fn default_lockout() -> u64 {
    300
}
fn default_skew() -> u16 {
    1
}
fn default_group_mode() -> GroupMode {
    GroupMode::Memberof
}
fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".into()
}
fn default_group_attr() -> String {
    "cn".into()
}
fn default_ldap_timeout() -> u64 {
    5
}

/// Split `host:port` (`[v6addr]:port` for IPv6). The host is a DNS name or an IP address:
/// letters, digits, `.`, `-`, `_` (and `:` inside brackets); the port is 1-65535.
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow::anyhow!("the port must be 1-65535"))?;
    let (host, v6) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => (h, true),
        None => (host, false),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (v6 && c == ':'));
    anyhow::ensure!(ok, "the host must be a DNS name or an IP address");
    Ok((host.to_string(), port))
}

impl BrokerConfig {
    pub fn load(path: &Path) -> anyhow::Result<BrokerConfig> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the broker config {}", path.display()))?;
        let mut cfg: BrokerConfig = toml::from_str(&text)
            .with_context(|| format!("parsing the broker config {}", path.display()))?;
        for key in &cfg.edge_host_keys {
            russh::keys::PublicKey::from_openssh(key.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "edge_host_keys in {}: not an OpenSSH public key ({e})",
                    path.display()
                )
            })?;
        }
        if let Some(edge) = &cfg.edge_address {
            split_host_port(edge).with_context(|| {
                format!(
                    "edge_address {edge:?} in {}: expected \"host:port\"",
                    path.display()
                )
            })?;
        }
        if cfg.data_dir.is_relative()
            && let Some(dir) = path.parent()
        {
            cfg.data_dir = dir.join(&cfg.data_dir);
        }
        Ok(cfg)
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

    pub fn totp_key_file(&self) -> PathBuf {
        self.totp_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("totp.key"))
    }

    pub fn jwt_secret_file(&self) -> PathBuf {
        self.jwt
            .secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt.secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("edge.vendor.example:2222").unwrap(),
            ("edge.vendor.example".into(), 2222)
        );
        assert_eq!(split_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
        for bad in [
            "edge",
            "edge:0",
            "edge:70000",
            ":22",
            "::1:22",
            "a b:22",
            "-oProxyCommand=x:22",
            "edge\n:22",
        ] {
            assert!(split_host_port(bad).is_err(), "{bad:?}");
        }
    }
}
