//! The config's smaller sections, with their defaults: `[tls]`, `[ca]`, `[jwt]`,
//! `[recordings]`, `[webhooks]`.

use std::path::PathBuf;

use serde::Deserialize;

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

/// Where the bytes of the recordings gateways upload are kept (`[recordings] storage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// A file in this broker's `data_dir/recordings/`: only this broker reads it.
    DataDir,
    /// Rows of the store (`recording_chunks`): every replica on the same database reads it.
    Database,
}

impl Storage {
    /// The value of the store's `recordings.storage` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Storage::DataDir => "data_dir",
            Storage::Database => "database",
        }
    }
}

/// Session recordings uploaded by gateways.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsConfig {
    /// Where new recordings are kept. Default: `database` when the store is PostgreSQL (so that
    /// every replica reads every recording), `data_dir` with SQLite. Recordings stored before
    /// are read from where they were stored, whatever this says.
    #[serde(default)]
    pub storage: Option<Storage>,
}

/// Notifications to webhooks (docs/webhooks.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Accept `http://` webhook URLs to a loopback address (a receiver on the broker's own host,
    /// tests). Every other URL must be `https://`.
    #[serde(default)]
    pub allow_http_loopback: bool,
    /// The first wait before a failed delivery is tried again, seconds; later waits grow
    /// (6, 24, 120 and 720 times this: 5 s, 30 s, 2 min, 10 min, 1 h by default).
    #[serde(default = "default_webhook_retry")]
    pub retry_secs: u64,
    /// Attempts at a delivery before it has failed (an audit event, `webhook_failed`).
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u64,
    /// How long one attempt may take (connecting and the answer), seconds.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: u64,
    /// How often each replica looks for due deliveries, milliseconds.
    #[serde(default = "default_webhook_poll")]
    pub poll_millis: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_http_loopback: false,
            retry_secs: default_webhook_retry(),
            max_attempts: default_webhook_attempts(),
            timeout_secs: default_webhook_timeout(),
            poll_millis: default_webhook_poll(),
        }
    }
}

fn default_webhook_retry() -> u64 {
    5
}

fn default_webhook_attempts() -> u64 {
    6
}

fn default_webhook_timeout() -> u64 {
    5
}

fn default_webhook_poll() -> u64 {
    1000
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
