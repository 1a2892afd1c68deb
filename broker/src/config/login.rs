//! `[login]` (lockouts, TOTP skew) and `[ldap]` (the directory), with the LDAP settings' check.

use std::path::PathBuf;

use serde::Deserialize;

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
    /// seconds (0, the default: read at every issuance, so that no certificate is issued while
    /// the directory cannot be asked; at most 3600).
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
    0
}
