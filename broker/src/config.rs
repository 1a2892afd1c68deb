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
    /// The key that signs the broker's own audit chain (an Ed25519 OpenSSH key, 0600; made at
    /// first start). Default `data_dir/audit_key`; replicas must share it.
    #[serde(default)]
    pub audit_key_file: Option<PathBuf>,
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

/// The web console's sessions (approvers and reviewers, at `/console/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Longest a console session lives after its login, seconds.
    #[serde(default = "default_console_session")]
    pub session_secs: u64,
    /// A console session unused for this long ends, seconds.
    #[serde(default = "default_console_idle")]
    pub idle_secs: u64,
    /// The WebAuthn relying party ID passkeys are bound to: the domain name (not an IP address)
    /// people reach the console at, or a parent domain of it. Default: `origin`'s host, else
    /// `localhost`.
    #[serde(default)]
    pub rp_id: Option<String>,
    /// The console's origin as the browser sees it (`https://access.example.com`); a passkey
    /// signs it, so an assertion made for any other site is refused. Default: `localhost` (over
    /// HTTPS when `[tls]` is set) on any port, for a broker tried on one machine.
    #[serde(default)]
    pub origin: Option<String>,
    /// How long a passkey registration or login may take from its challenge, seconds.
    #[serde(default = "default_passkey_ceremony")]
    pub passkey_ceremony_secs: u64,
}

/// Where passkeys are valid: the relying party the broker's WebAuthn checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub rp_id: String,
    pub origin: url::Url,
    /// No `origin` configured: `localhost` on any port.
    pub any_port: bool,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_secs: default_console_session(),
            idle_secs: default_console_idle(),
            rp_id: None,
            origin: None,
            passkey_ceremony_secs: default_passkey_ceremony(),
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

fn default_console_session() -> u64 {
    8 * 3600
}

fn default_passkey_ceremony() -> u64 {
    120
}

fn default_console_idle() -> u64 {
    15 * 60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Failed logins in a row of one user from one source address before that user is locked
    /// out from that address.
    #[serde(default = "default_max_failures")]
    pub max_failures: i64,
    /// Failed logins in a row from one source address, whatever the user, before the address
    /// is locked out.
    #[serde(default = "default_max_failures_per_source")]
    pub max_failures_per_source: i64,
    /// Failed logins in a row of one user from every address before the user is locked out
    /// everywhere (guessing from many addresses).
    #[serde(default = "default_max_failures_per_user")]
    pub max_failures_per_user: i64,
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
            max_failures_per_source: default_max_failures_per_source(),
            max_failures_per_user: default_max_failures_per_user(),
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
    /// `ldaps://host:port`, or `ldap://host:port` with `starttls = true`; plain `ldap://` only
    /// to a loopback address (passwords would cross the network in clear).
    pub url: String,
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA that signed the LDAP server's certificate (required with TLS; the only
    /// CA trusted for it).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN to bind as, with `{uid}` replaced by the escaped user name, e.g.
    /// `uid={uid},ou=people,dc=example,dc=com`.
    pub user_dn_template: String,
    /// The service account that re-reads an engineer's groups at each certificate issuance
    /// (read access to people and groups is enough).
    pub bind_dn: String,
    /// File holding the service account's password (owner-only, e.g. 0600; one line).
    pub bind_password_file: PathBuf,
    /// `memberof` or `search`.
    #[serde(default = "default_group_mode")]
    pub group_mode: GroupMode,
    /// Base DN of the groups: a group counts only when its DN is
    /// `<group_attr>=<name>,<group_base>` exactly (both modes).
    pub group_base: Option<String>,
    /// Filter for the groups of a user; `{dn}` is the escaped user DN, `{uid}` the escaped uid.
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// The attribute of a group's RDN, whose value is the AccessGroup name.
    #[serde(default = "default_group_attr")]
    pub group_attr: String,
    /// Only these groups count (empty = all groups of the user).
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// Seconds before an LDAP operation is given up (fail closed).
    #[serde(default = "default_ldap_timeout")]
    pub timeout_secs: u64,
    /// How long the groups read at an issuance are reused for the engineer's next issuances,
    /// seconds (0: read at every issuance; at most 3600).
    #[serde(default = "default_groups_cache")]
    pub groups_cache_secs: u64,
}

impl LdapConfig {
    /// LDAPS or StartTLS.
    pub fn uses_tls(&self) -> bool {
        self.url.starts_with("ldaps://") || self.starttls
    }

    /// Refuse what would fail open or make no sense, with what to change.
    pub fn check(&self) -> anyhow::Result<()> {
        use anyhow::{bail, ensure};
        let url = url::Url::parse(&self.url)
            .map_err(|e| anyhow::anyhow!("[ldap] url {:?} is not a URL ({e})", self.url))?;
        ensure!(
            matches!(url.scheme(), "ldap" | "ldaps"),
            "[ldap] url: the scheme must be ldap:// or ldaps://, not {}://",
            url.scheme()
        );
        let host = url
            .host()
            .ok_or_else(|| anyhow::anyhow!("[ldap] url {:?} names no host", self.url))?;
        ensure!(
            url.path().is_empty() || url.path() == "/",
            "[ldap] url {:?}: give only ldap[s]://host:port (the DNs are separate keys)",
            self.url
        );
        let loopback = match host {
            // ldap:// is not a "special" URL scheme: its IPv4 hosts come as names
            url::Host::Domain(d) => {
                d.eq_ignore_ascii_case("localhost")
                    || d.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            url::Host::Ipv4(ip) => ip.is_loopback(),
            url::Host::Ipv6(ip) => ip.is_loopback(),
        };
        match (url.scheme(), self.starttls) {
            ("ldaps", true) => bail!(
                "[ldap] starttls = true with an ldaps:// url: use one of them (ldaps:// is TLS \
                 from the first byte; starttls upgrades an ldap:// connection)"
            ),
            ("ldaps", false) | ("ldap", true) => {}
            ("ldap", false) => ensure!(
                loopback,
                "[ldap] url {:?} is plain LDAP to another machine: the engineers' and the \
                 service account's passwords would cross the network in clear. Use ldaps://, or \
                 set starttls = true (with ca_file)",
                self.url
            ),
            (other, _) => {
                bail!("[ldap] url: the scheme must be ldap:// or ldaps://, not {other}://")
            }
        }
        if self.uses_tls() {
            ensure!(
                self.ca_file.is_some(),
                "[ldap] ca_file is required with ldaps:// or starttls: the PEM file of the CA that \
                 signed the LDAP server's certificate"
            );
        }
        ensure!(
            self.user_dn_template.contains("{uid}"),
            "[ldap] user_dn_template must contain {{uid}}, e.g. \"uid={{uid}},ou=people,dc=example,dc=com\""
        );
        ensure!(!self.bind_dn.trim().is_empty(), "[ldap] bind_dn is empty");
        let base = self.group_base.as_deref().unwrap_or("");
        let parsed = crate::directory::dn::Dn::parse(base);
        ensure!(
            parsed.as_ref().is_some_and(|d| !d.is_root()),
            "[ldap] group_base is required and must be a DN, e.g. \"ou=groups,dc=example,dc=com\": \
             a group counts only when its DN is <group_attr>=<name>,<group_base>"
        );
        ensure!(
            !self.group_attr.is_empty()
                && self
                    .group_attr
                    .starts_with(|c: char| c.is_ascii_alphabetic())
                && self
                    .group_attr
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "[ldap] group_attr must be an attribute name such as \"cn\""
        );
        ensure!(
            self.groups_cache_secs <= 3600,
            "[ldap] groups_cache_secs is at most 3600: groups are re-read at issuance so that \
             removing an engineer from a group takes effect soon"
        );
        Ok(())
    }
}

/// Read a secret from a file only its owner may read: one line, trailing newline dropped.
pub fn read_secret_file(path: &Path) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        meta.permissions().mode() & 0o077 == 0,
        "{} must be readable by its owner only (chmod 600 {})",
        path.display(),
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    Ok(secrecy::SecretString::from(secret.to_string()))
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
fn default_max_failures_per_source() -> i64 {
    20
}
fn default_max_failures_per_user() -> i64 {
    50
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
fn default_groups_cache() -> u64 {
    60
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
    /// The WebAuthn relying party from `[console] rp_id` and `origin`, or why it is not usable.
    pub fn relying_party(&self) -> Result<RelyingParty, String> {
        let c = &self.console;
        let (origin, any_port) = match &c.origin {
            Some(o) => {
                let u = url::Url::parse(o.trim()).map_err(|e| {
                    format!(
                        "[console] origin = {o:?} is not a URL ({e}): write the address people \
                         open the console at, e.g. \"https://access.example.com\""
                    )
                })?;
                if !matches!(u.scheme(), "https" | "http")
                    || u.host_str().is_none()
                    || u.path() != "/"
                    || u.query().is_some()
                {
                    return Err(format!(
                        "[console] origin = {o:?} must be only a scheme, host and optional port, \
                         e.g. \"https://access.example.com\""
                    ));
                }
                (u, false)
            }
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let u = url::Url::parse(&format!("{scheme}://localhost"))
                    .map_err(|e| format!("the default console origin: {e}"))?;
                (u, true)
            }
        };
        let host = origin.host_str().unwrap_or_default().to_ascii_lowercase();
        let rp_id = c
            .rp_id
            .as_deref()
            .map(|r| r.trim().to_ascii_lowercase())
            .unwrap_or_else(|| host.clone());
        if rp_id.parse::<std::net::IpAddr>().is_ok()
            || rp_id
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok()
        {
            return Err(format!(
                "[console] rp_id {rp_id:?} is an IP address, which WebAuthn does not accept as a \
                 relying party ID: passkeys need a domain name; set [console] origin (and rp_id) \
                 to the name people open the console at, e.g. \"https://access.example.com\""
            ));
        }
        if rp_id.is_empty()
            || !rp_id
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
        {
            return Err(format!(
                "[console] rp_id {rp_id:?} is not a domain name: use letters, digits, '-' and '.'"
            ));
        }
        if !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
            return Err(format!(
                "[console] rp_id {rp_id:?} must be the host of [console] origin ({host}) or a \
                 parent domain of it"
            ));
        }
        if origin.scheme() == "http" && host != "localhost" && !host.ends_with(".localhost") {
            return Err(format!(
                "[console] origin {origin} is plain HTTP: browsers allow passkeys only over \
                 HTTPS (or on localhost); use an https:// origin"
            ));
        }
        Ok(RelyingParty {
            rp_id,
            origin,
            any_port,
        })
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
        if let Some(edge) = &cfg.edge_address {
            split_host_port(edge).with_context(|| {
                format!(
                    "edge_address {edge:?} in {}: expected \"host:port\"",
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

    /// Everything about the config that can be checked without creating or changing anything:
    /// each problem as a sentence that says what to do. The broker refuses to start on any
    /// (before it makes its data directory, keys or database); `sallyport admin check` prints
    /// them.
    pub fn preflight(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let hash = self.operator_token_sha256.trim();
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(
                "operator_token_sha256 must be 64 hex digits: make one with `sallyport admin \
                 hash-token`"
                    .to_string(),
            );
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "listen = {} without [tls]: the broker refuses plain HTTP off this machine; \
                 configure [tls] (cert, key) or listen on 127.0.0.1",
                self.listen
            ));
        }
        if let Err(e) = self.relying_party() {
            problems.push(e);
        }
        if self.console.passkey_ceremony_secs == 0 {
            problems.push(
                "[console] passkey_ceremony_secs = 0 leaves no time to use a passkey: use e.g. 120"
                    .to_string(),
            );
        }
        let readable = |what: &str, p: &Path, problems: &mut Vec<String>| {
            if let Err(e) = std::fs::File::open(p) {
                problems.push(format!("{what} {}: {e}", p.display()));
            }
        };
        if let Some(tls) = &self.tls {
            readable("[tls] cert", &tls.cert, &mut problems);
            readable("[tls] key", &tls.key, &mut problems);
        }
        match (&self.ldap, &self.directory) {
            (Some(ldap), _) => {
                readable(
                    "[ldap] bind_password_file",
                    &ldap.bind_password_file,
                    &mut problems,
                );
                if let Some(ca) = &ldap.ca_file {
                    readable("[ldap] ca_file", ca, &mut problems);
                }
            }
            (None, Some(file)) => {
                if let Err(e) = crate::directory::Directory::from_file(file) {
                    problems.push(format!("directory {}: {e:#}", file.display()));
                }
            }
            (None, None) => problems.push(
                "no engineer directory: set [ldap], or `directory = \"FILE\"` naming a file of \
                 engineers (`sallyport admin hash-password` prints an entry)"
                    .to_string(),
            ),
        }
        for p in &self.ca.extra_trusted {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    if russh::keys::PublicKey::from_openssh(text.trim()).is_err() {
                        problems.push(format!(
                            "ca.extra_trusted {}: not an OpenSSH public key",
                            p.display()
                        ));
                    }
                }
                Err(e) => problems.push(format!("ca.extra_trusted {}: {e}", p.display())),
            }
        }
        match std::fs::metadata(&self.data_dir) {
            Ok(m) if !m.is_dir() => problems.push(format!(
                "data_dir {} is not a directory",
                self.data_dir.display()
            )),
            Ok(_) => {
                // Key files the broker would read: present ones must be readable.
                for (what, p) in [
                    ("the user CA key", self.user_ca_key()),
                    ("the TOTP key", self.totp_key_file()),
                    ("the JWT secret", self.jwt_secret_file()),
                    ("the audit key", self.audit_key_file()),
                ] {
                    if p.exists() {
                        readable(what, &p, &mut problems);
                    }
                }
            }
            Err(_) => {
                let parent = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty());
                if parent.is_some_and(|p| !p.is_dir()) {
                    problems.push(format!(
                        "data_dir {}: neither it nor its parent directory exists (the broker \
                         makes the data_dir, not the directories above it)",
                        self.data_dir.display()
                    ));
                }
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "database must be sqlite://FILE or postgres://...: {}",
                url.split('@').next_back().unwrap_or_default()
            ));
        }
        problems
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

    pub fn jwt_secret_file(&self) -> PathBuf {
        self.jwt
            .secret_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt.secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::{LdapConfig, split_host_port};

    fn ldap(lines: &str) -> anyhow::Result<()> {
        let text = format!(
            "user_dn_template = \"uid={{uid}},ou=people,dc=example,dc=com\"\n\
             bind_dn = \"cn=sallyport,ou=services,dc=example,dc=com\"\n\
             bind_password_file = \"/etc/sallyport/ldap.pw\"\n{lines}"
        );
        let cfg: LdapConfig = toml::from_str(&text)?;
        cfg.check()
    }

    #[test]
    fn every_relative_path_is_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc").join("broker.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndirectory = \"directory.toml\"\n\
             operator_token_sha256 = \"00\"\ntotp_key_file = \"/abs/totp.key\"\naudit_key_file = \"keys/audit\"\n\
             [ca]\nextra_trusted = [\"old_ca.pub\"]\n[jwt]\nsecret_file = \"keys/jwt\"\n",
        )
        .unwrap();
        let cfg = super::BrokerConfig::load(&path).unwrap();
        let etc = path.parent().unwrap();
        assert_eq!(cfg.data_dir, etc.join("data"));
        assert_eq!(
            cfg.directory.as_deref(),
            Some(etc.join("directory.toml").as_path())
        );
        assert_eq!(cfg.ca.extra_trusted, vec![etc.join("old_ca.pub")]);
        assert_eq!(cfg.jwt_secret_file(), etc.join("keys/jwt"));
        // Absolute paths stay as they are.
        assert_eq!(
            cfg.totp_key_file(),
            std::path::PathBuf::from("/abs/totp.key")
        );
        assert_eq!(cfg.audit_key_file(), etc.join("keys/audit"));
    }

    #[test]
    fn the_passkey_relying_party_is_a_domain_of_the_origin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        let rp = |console: &str| {
            std::fs::write(
                &path,
                format!(
                    "data_dir = \"data\"\ndirectory = \"d.toml\"\noperator_token_sha256 = \"00\"\n[console]\n{console}"
                ),
            )
            .unwrap();
            super::BrokerConfig::load(&path).unwrap().relying_party()
        };
        let d = rp("").unwrap();
        assert_eq!(
            (d.rp_id.as_str(), d.origin.as_str()),
            ("localhost", "http://localhost/")
        );
        assert!(d.any_port);
        let e = rp("origin = \"https://access.example.com:8443\"").unwrap();
        assert_eq!(e.rp_id, "access.example.com");
        assert!(!e.any_port);
        let p = rp("origin = \"https://access.example.com\"\nrp_id = \"example.com\"").unwrap();
        assert_eq!(p.rp_id, "example.com");
        for (bad, why) in [
            ("origin = \"https://10.0.0.5\"", "IP address"),
            ("origin = \"https://[::1]:8443\"", "IP address"),
            ("rp_id = \"127.0.0.1\"", "IP address"),
            ("origin = \"http://access.example.com\"", "plain HTTP"),
            (
                "origin = \"https://access.example.com\"\nrp_id = \"other.com\"",
                "parent domain",
            ),
            (
                "origin = \"https://access.example.com/console\"",
                "only a scheme",
            ),
            ("origin = \"access\"", "not a URL"),
            ("rp_id = \"bad name\"", "not a domain name"),
        ] {
            let err = rp(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn webhook_settings_have_defaults_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        let load = |extra: &str| {
            std::fs::write(
                &path,
                format!(
                    "data_dir = \"data\"\ndirectory = \"d.toml\"\noperator_token_sha256 = \"00\"\n{extra}"
                ),
            )
            .unwrap();
            super::BrokerConfig::load(&path)
        };
        let w = load("").unwrap().webhooks;
        assert!(!w.allow_http_loopback);
        assert_eq!(
            (w.retry_secs, w.max_attempts, w.timeout_secs, w.poll_millis),
            (5, 6, 5, 1000)
        );
        let w = load("[webhooks]\nallow_http_loopback = true\nretry_secs = 1\n")
            .unwrap()
            .webhooks;
        assert!(w.allow_http_loopback);
        assert_eq!(w.retry_secs, 1);
        for (bad, why) in [
            ("timeout_secs = 61", "timeout_secs"),
            ("retry_secs = 0", "retry_secs"),
            ("max_attempts = 0", "max_attempts"),
            ("poll_millis = 1", "poll_millis"),
            ("allow_http = true", "unknown field"),
        ] {
            let err = format!("{:#}", load(&format!("[webhooks]\n{bad}\n")).unwrap_err());
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn ldap_settings() {
        let base = "group_base = \"ou=groups,dc=example,dc=com\"\n";
        let ca = "ca_file = \"/etc/sallyport/ldap-ca.pem\"\n";
        for ok in [
            format!("url = \"ldaps://ldap.vendor.example\"\n{ca}{base}"),
            format!("url = \"ldaps://10.0.0.5:636\"\n{ca}{base}"),
            format!("url = \"ldap://ldap.vendor.example:389\"\nstarttls = true\n{ca}{base}"),
            // plain LDAP only where no network is crossed
            format!("url = \"ldap://127.0.0.1:389\"\n{base}"),
            format!("url = \"ldap://localhost\"\n{base}"),
            format!("url = \"ldap://[::1]:389\"\n{base}"),
            format!("url = \"ldap://127.0.0.1:389\"\n{base}groups_cache_secs = 0\n"),
            format!("url = \"ldap://127.0.0.1:389\"\n{base}groups_cache_secs = 3600\n"),
        ] {
            ldap(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            (
                format!("url = \"ldap://ldap.vendor.example\"\n{base}"),
                "in clear",
            ),
            (
                format!("url = \"ldap://10.0.0.5:389\"\n{ca}{base}"),
                "in clear",
            ),
            (
                format!("url = \"ldaps://ldap.vendor.example\"\n{base}"),
                "ca_file is required",
            ),
            (
                format!("url = \"ldap://ldap.vendor.example\"\nstarttls = true\n{base}"),
                "ca_file is required",
            ),
            (
                format!("url = \"ldaps://ldap.vendor.example\"\nstarttls = true\n{ca}{base}"),
                "use one of them",
            ),
            (
                format!("url = \"ldapi:///run/slapd.sock\"\n{base}"),
                "scheme",
            ),
            (format!("url = \"http://127.0.0.1\"\n{base}"), "scheme"),
            (format!("url = \"127.0.0.1:389\"\n{base}"), "url"),
            (
                format!("url = \"ldap://127.0.0.1/dc=example,dc=com\"\n{base}"),
                "only ldap[s]://host:port",
            ),
            (
                "url = \"ldap://127.0.0.1\"\n".to_string(),
                "group_base is required",
            ),
            (
                "url = \"ldap://127.0.0.1\"\ngroup_base = \"not a dn\"\n".to_string(),
                "group_base is required",
            ),
            (
                format!("url = \"ldap://127.0.0.1\"\n{base}groups_cache_secs = 3601\n"),
                "at most 3600",
            ),
            (
                format!("url = \"ldap://127.0.0.1\"\n{base}group_attr = \"c n\"\n"),
                "group_attr",
            ),
        ] {
            let err = ldap(&bad).expect_err(&bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // the service account is required
        let no_service: anyhow::Result<LdapConfig> =
            toml::from_str("url = \"ldap://127.0.0.1\"\nuser_dn_template = \"uid={uid},dc=x\"\n")
                .map_err(Into::into);
        assert!(no_service.is_err());
    }

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
