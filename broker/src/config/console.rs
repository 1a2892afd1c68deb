//! `[console]`: the console's sessions and the passkeys' relying party.

use serde::Deserialize;

use super::BrokerConfig;

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

fn default_console_session() -> u64 {
    8 * 3600
}

fn default_passkey_ceremony() -> u64 {
    120
}

fn default_console_idle() -> u64 {
    15 * 60
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
}
