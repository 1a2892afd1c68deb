//! The URL rules: `https://` (or loopback `http://` when allowed), no private networks for a
//! customer's webhook (at creation and at each connection), and the URL as it may be shown.

use crate::audit::sanitize;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlRefused(pub String);

/// A webhook URL is `https://`, or `http://` to a loopback address when the broker allows it
/// (`[webhooks] allow_http_loopback`, for tests and a receiver on the broker's own host). No
/// user name or password in it, no fragment. A customer's webhook (`public_only`) may not name
/// an address inside a private network (loopback only as above); the names it gives are
/// checked the same way when they are resolved, at each delivery ([`PublicOnly`]). Checked at
/// creation and again at each delivery.
pub fn check_url(
    raw: &str,
    allow_http_loopback: bool,
    public_only: bool,
) -> Result<url::Url, UrlRefused> {
    let url = url::Url::parse(raw.trim()).map_err(|e| {
        UrlRefused(format!(
            "the webhook URL is not a URL ({e}): give one such as https://hooks.example.com/sallyport"
        ))
    })?;
    if raw.len() > 2048 {
        return Err(UrlRefused(
            "the webhook URL is longer than 2048 characters".into(),
        ));
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(UrlRefused(format!(
            "{:?} URLs are refused: a webhook URL starts with https://",
            sanitize(url.scheme())
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused(
            "the webhook URL carries a user name or password: put the credential in the path or \
             rely on the signature instead"
                .into(),
        ));
    }
    if url.fragment().is_some() {
        return Err(UrlRefused(
            "the webhook URL has a #fragment: remove it".into(),
        ));
    }
    let Some(host) = url.host() else {
        return Err(UrlRefused("the webhook URL names no host".into()));
    };
    let ip = match host {
        url::Host::Domain(_) => None,
        url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
    };
    let loopback = match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => ip.is_some_and(|ip| ip.is_loopback()),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback && allow_http_loopback => {}
        "http" if loopback => {
            return Err(UrlRefused(
            "http:// webhooks are refused: use https:// (plain http to a loopback receiver only \
             where the broker's [webhooks] allow_http_loopback is set)"
                .into(),
            ));
        }
        _ => {
            return Err(UrlRefused(
            "http:// webhooks are refused: events would cross the network in clear; use https://"
                .into(),
            ));
        }
    }
    if public_only
        && let Some(ip) = ip
        && !reachable(ip, allow_http_loopback)
    {
        return Err(UrlRefused(format!(
            "{ip} is an address inside a private network: a customer's webhook goes to a \
             receiver on the internet (give its public name or address)"
        )));
    }
    Ok(url)
}

/// Whether a customer's webhook may reach `ip`: a public unicast address (loopback too when
/// `allow_loopback`). Private, link-local (cloud metadata), shared, reserved, multicast and
/// unspecified addresses, and IPv6 unique-local and link-local ones, are inside someone's
/// network: a customer may not make the broker send requests there.
pub fn reachable(ip: std::net::IpAddr, allow_loopback: bool) -> bool {
    use std::net::IpAddr;
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18))
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return reachable(IpAddr::V4(v4), allow_loopback);
            }
            let first = a.segments()[0];
            !(a.is_unspecified()
                || a.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && a.segments()[1] == 0x0db8))
        }
    }
}

/// The resolver of customers' webhooks: a name is used only with the addresses it resolves to
/// that [`reachable`] allows, so a name cannot lead the broker into a private network (checked
/// at connection time, not only when the webhook was made).
pub(super) struct PublicOnly {
    pub(super) allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_loopback;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| reachable(a.ip(), allow))
                .collect();
            if ok.is_empty() {
                return Err(format!(
                    "{} resolves only to addresses inside a private network, where a \
                     customer's webhook may not go",
                    sanitize(&host)
                )
                .into());
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The URL as it may be shown to anyone (lists, pages, the audit log): scheme, host, port and
/// the first part of the path; the rest (a Slack webhook's secret, tokens in the query) is `…`.
pub fn shown_url(url: &url::Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(p) = url.port() {
        out.push_str(&format!(":{p}"));
    }
    let mut segments = url
        .path_segments()
        .map(|s| s.filter(|p| !p.is_empty()).collect::<Vec<_>>())
        .unwrap_or_default();
    let more = segments.len() > 1 || url.query().is_some();
    segments.truncate(1);
    if let Some(first) = segments.first() {
        out.push('/');
        out.push_str(first);
    }
    if more {
        out.push_str("/…");
    }
    out
}
