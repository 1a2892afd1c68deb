//! Notifications: webhooks of a customer (set by its approvers) or vendor-wide (set by the
//! operator) for the events people want to hear about at once — access requested, request
//! decided, certificate issued, session started, ended and terminated, revocation and a burst of
//! refused logins.
//!
//! A delivery is queued in the store in the same transaction that stores its audit event
//! ([`crate::store::enqueue_deliveries`]), so nothing is lost and no login or session waits for a
//! receiver. [`run`] (started with the server, one per replica) claims due deliveries with a
//! conditional UPDATE, POSTs them (5 s timeout), and retries with backoff; the last failure is an
//! audit event (`webhook_failed`). The pure parts — which events are notified, the bodies, the
//! signature, the URL rules, the backoff — are here with their tests.
//!
//! Generic form (`json`): the event as JSON, signed with HMAC-SHA256 over `"<t>.<body>"` in
//! `X-Sallyport-Signature: t=<unix secs>,v1=<hex>`; receivers check it and refuse a `t` more
//! than 5 minutes away (docs/webhooks.md). Slack form (`slack`): `{"text": "..."}`, a sentence
//! for a Slack incoming webhook (signed the same way, which Slack ignores).

use std::sync::Arc;
use std::time::Duration;

use ring::hmac;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, AuditRecord, sanitize};
use crate::state::Broker;
use crate::store::{Delivery, now_secs};
use sallyport_audit::writers::{ChainKind, EdgeKind, GatewayKind, Role};

/// The event kinds a webhook can be told about.
pub const NOTIFIED: [&str; 8] = [
    "access_request_created",
    "access_request_decided",
    "certificate_issued",
    "session_started",
    "session_ended",
    "session_terminated",
    "revoked",
    "refusal_burst",
];

/// Whether a record of `kind` written by `source` is notified. The data plane's kinds are
/// matched exhaustively, so a new kind has to decide here.
pub fn notified(source: &str, kind: &str) -> bool {
    match Role::of(source) {
        Some((Role::Broker, _)) => matches!(
            kind,
            "access_request_created"
                | "access_request_decided"
                | "certificate_issued"
                | "revoked"
                | "refusal_burst"
        ),
        Some((Role::Gateway, _)) => GatewayKind::ALL
            .iter()
            .find(|k| k.as_str() == kind)
            .is_some_and(|k| gateway_notified(*k)),
        Some((Role::Edge, _)) => EdgeKind::ALL
            .iter()
            .find(|k| k.as_str() == kind)
            .is_some_and(|k| edge_notified(*k)),
        None => false,
    }
}

fn gateway_notified(k: GatewayKind) -> bool {
    match k {
        GatewayKind::SessionStarted
        | GatewayKind::SessionEnded
        | GatewayKind::SessionTerminated => true,
        GatewayKind::SessionRefused
        | GatewayKind::NodeUnreachable
        | GatewayKind::NodeKeyRefused
        | GatewayKind::NodeKeyPinned
        | GatewayKind::ObserverJoined
        | GatewayKind::ChannelRefused
        | GatewayKind::ForwardRefused
        | GatewayKind::ChannelExit
        | GatewayKind::Env
        | GatewayKind::Shell
        | GatewayKind::Command
        | GatewayKind::LineEntered
        | GatewayKind::InputHidden
        | GatewayKind::FullScreen
        | GatewayKind::FullScreenSuppressed
        | GatewayKind::OutputRecorded
        | GatewayKind::SftpStarted
        | GatewayKind::FileTransfer
        | GatewayKind::FileOp
        | GatewayKind::Forward
        | GatewayKind::ForwardFailed
        | GatewayKind::RecordingFinished
        | GatewayKind::RecordingFailed
        | GatewayKind::RecordingRecovered
        | GatewayKind::RecordingUnreadable
        | GatewayKind::UserCasRefused
        | GatewayKind::GatewayConfigReloaded
        | GatewayKind::GatewayConfigReloadRefused => false,
    }
}

fn edge_notified(k: EdgeKind) -> bool {
    match k {
        EdgeKind::EdgeSession
        | EdgeKind::EdgeRefused
        | EdgeKind::EdgeDisconnected
        | EdgeKind::EdgeShutdown
        | EdgeKind::EdgeStopped
        | EdgeKind::EdgeUserCasRefused
        | EdgeKind::EdgeConfigReloaded
        | EdgeKind::EdgeConfigReloadRefused => false,
    }
}

/// The broker's own events that are notified, by their typed kind (exhaustive: a new event
/// kind has to decide here; [`notified`] must agree, which a test checks).
pub fn event_notified(e: &AuditEvent) -> bool {
    match e {
        AuditEvent::AccessRequestCreated { .. }
        | AuditEvent::AccessRequestDecided { .. }
        | AuditEvent::CertificateIssued { .. }
        | AuditEvent::Revoked { .. }
        | AuditEvent::RefusalBurst { .. } => true,
        AuditEvent::LoginSucceeded { .. }
        | AuditEvent::LoginFailed { .. }
        | AuditEvent::AccountLoginSucceeded { .. }
        | AuditEvent::AccountLoginFailed { .. }
        | AuditEvent::CertificateDenied { .. }
        | AuditEvent::ApprovalSaved { .. }
        | AuditEvent::ApprovalWithdrawn { .. }
        | AuditEvent::CustomerPolicySaved { .. }
        | AuditEvent::TicketSaved { .. }
        | AuditEvent::AdminChange { .. }
        | AuditEvent::GatewayEnrolled { .. }
        | AuditEvent::AuditKeyPinned { .. }
        | AuditEvent::RecordingStored { .. }
        | AuditEvent::RecordingRead { .. }
        | AuditEvent::SessionMfaVerified { .. }
        | AuditEvent::SessionMfaFailed { .. }
        | AuditEvent::SessionTerminationRequested { .. }
        | AuditEvent::SessionWatched { .. }
        | AuditEvent::ConsoleLogout { .. }
        | AuditEvent::AuditExported { .. }
        | AuditEvent::WebhookCreated { .. }
        | AuditEvent::WebhookDeleted { .. }
        | AuditEvent::WebhookFailed { .. }
        | AuditEvent::Refused { .. } => false,
    }
}

/// A webhook's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Slack,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "slack" => Some(Format::Slack),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

/// The id receivers see for an event: `<source>#<seq>` (`broker#57`, `gateway:gw-1#12`), the
/// same for every webhook told about it.
pub fn event_id(r: &AuditRecord) -> String {
    format!("{}#{}", r.source, r.seq)
}

fn text(data: &Value, field: &str) -> Option<String> {
    data.get(field).and_then(Value::as_str).map(sanitize)
}

/// The generic form's body.
pub fn json_body(r: &AuditRecord, customer: Option<&str>) -> String {
    let time = crate::timefmt::millis(r.time);
    json!({
        "id": event_id(r),
        "kind": r.kind,
        "time": time,
        "time_ms": r.time,
        "source": r.source,
        "seq": r.seq,
        "customer": customer,
        "cluster": r.subject("cluster"),
        "node": r.subject("node"),
        "engineer": r.subject("engineer"),
        "session": r.subject("session"),
        "ticket": r.subject("ticket"),
        "summary": summary(r),
        "data": r.data,
    })
    .to_string()
}

/// The Slack form's body: `{"text": ...}` with `&`, `<` and `>` escaped as Slack asks (so a
/// name or a reason cannot make a link or a mention).
pub fn slack_body(r: &AuditRecord, customer: Option<&str>) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let whose = customer.map(|c| format!(" [{c}]")).unwrap_or_default();
    json!({"text": format!("sallyport{}: {}", escape(&whose), escape(&summary(r)))}).to_string()
}

/// One sentence about the event, for people (the Slack text, `summary` in the generic form).
pub fn summary(r: &AuditRecord) -> String {
    let d = &r.data;
    let t = |f: &str| text(d, f).unwrap_or_else(|| "?".into());
    let ticket = text(d, "ticket")
        .map(|t| format!(" (ticket {t})"))
        .unwrap_or_default();
    let logins = || {
        d.get("logins")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(sanitize)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let secs = |f: &str| d.get(f).and_then(Value::as_u64).unwrap_or(0);
    let on = || match (text(d, "node"), text(d, "cluster")) {
        (Some(n), Some(c)) => format!("{n}.{c}"),
        (None, Some(c)) => c,
        (Some(n), None) => n,
        (None, None) => "?".into(),
    };
    match r.kind.as_str() {
        "access_request_created" => format!(
            "{} asks for access to {} as {} for {}{ticket}: request {}, {} approver(s) needed",
            t("engineer"),
            t("cluster"),
            logins(),
            crate::web::duration(secs("ttl_secs") * 1000),
            t("request"),
            secs("approvers_required").max(1),
        ),
        "access_request_decided" => format!(
            "{} voted on {}'s request {} for {}{ticket}: the request is now {} ({} of {} approvals){}",
            t("decided_by"),
            t("engineer"),
            t("request"),
            t("cluster"),
            t("status"),
            secs("approvals"),
            secs("approvers_required").max(1),
            text(d, "reason")
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
        ),
        "certificate_issued" => format!(
            "certificate issued to {} for {} as {}, valid {}{ticket}",
            t("engineer"),
            t("cluster"),
            logins(),
            crate::web::duration(
                secs("valid_before")
                    .saturating_sub(secs("valid_after"))
                    .saturating_mul(1000)
            ),
        ),
        "session_started" => format!(
            "{} started session {} on {} as {}{ticket}",
            t("engineer"),
            t("session"),
            on(),
            t("login"),
        ),
        "session_ended" => format!(
            "{}'s session {} on {} ended{ticket}",
            t("engineer"),
            t("session"),
            on(),
        ),
        "session_terminated" => format!(
            "{}'s session {} on {} was ended{ticket}: {}",
            t("engineer"),
            t("session"),
            on(),
            t("reason"),
        ),
        "revoked" => format!(
            "{} revoked {} {}: {} ({} certificate(s))",
            t("by"),
            t("scope"),
            t("target"),
            t("reason"),
            d.get("serials")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
        ),
        "refusal_burst" => {
            let who = match text(d, "counter").as_deref() {
                Some("address") => format!(
                    "from {} (any user; the last one tried was {})",
                    t("source_ip"),
                    t("principal")
                ),
                Some("user_from_address") => {
                    format!("in a row for {} from {}", t("principal"), t("source_ip"))
                }
                _ => format!("in a row for {} (from any address)", t("principal")),
            };
            format!(
                "a burst of refused logins: {} failures {who}; locked out for {}",
                secs("failures"),
                crate::web::duration(secs("locked_secs") * 1000),
            )
        }
        other => format!("{} event {}", sanitize(other), event_id(r)),
    }
}

/// `X-Sallyport-Signature`: `t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

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
struct PublicOnly {
    allow_loopback: bool,
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

/// Seconds to wait before the next attempt after `attempts` failed ones (5 s, 30 s, 2 min,
/// 10 min, 1 h with `base` 5), or `None`: that was the last.
pub fn backoff(attempts: u64, base: u64, max_attempts: u64) -> Option<u64> {
    const STEPS: [u64; 5] = [1, 6, 24, 120, 720];
    if attempts >= max_attempts {
        return None;
    }
    let i = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
    Some(base.saturating_mul(STEPS[i.min(STEPS.len() - 1)]))
}

/// The context a webhook's sealed secret and URL are bound to.
pub fn secret_context(id: &str) -> String {
    format!("webhook-secret:{id}")
}

pub fn url_context(id: &str) -> String {
    format!("webhook-url:{id}")
}

/// A new signing secret: `whsec_` and 32 random bytes, hex.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    format!("whsec_{}", hex::encode(b))
}

/// How long a claimed delivery stays claimed: past it, another worker may take it again (the
/// replica that claimed it stopped half-way).
const LEASE_SECS: u64 = 60;
/// Deliveries sent at once by one replica.
const PARALLEL: usize = 8;

/// Deliver due notifications until `stop` is cancelled: every second, claim what is due and
/// send each (at most [`PARALLEL`] at once, so a receiver that hangs holds up no other).
pub async fn run(b: Arc<Broker>, stop: tokio_util::sync::CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = &b.cfg.webhooks;
    let builder = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .connect_timeout(Duration::from_secs(cfg.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sallyport-webhooks/", env!("CARGO_PKG_VERSION")))
    };
    // Vendor-wide webhooks may go anywhere the operator chose (a SIEM inside the vendor's
    // network); customers' only to public addresses.
    let clients = builder().build().and_then(|vendor| {
        builder()
            .dns_resolver(Arc::new(PublicOnly {
                allow_loopback: cfg.allow_http_loopback,
            }))
            .build()
            .map(|customer| Clients { vendor, customer })
    });
    let http = match clients {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "webhooks: cannot make an HTTP client; no notification is sent");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(b.cfg.webhooks.poll_millis)) => {}
        }
        let due = match b.store.due_deliveries(now_secs(), 32).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: cannot read the queue");
                continue;
            }
        };
        for d in due {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match b.store.claim_delivery(&d, now_secs() + LEASE_SECS).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot claim a delivery");
                    continue;
                }
            }
            let (b, http) = (b.clone(), http.clone());
            tokio::spawn(async move {
                deliver(&b, &http, d).await;
                drop(permit);
            });
        }
    }
}

/// The HTTP clients of vendor-wide and of customers' webhooks.
struct Clients {
    vendor: reqwest::Client,
    customer: reqwest::Client,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Failed(Option<u16>, String),
}

/// One attempt at a claimed delivery, and its outcome recorded.
async fn deliver(b: &Broker, http: &Clients, d: Delivery) {
    let attempt = d.attempts + 1;
    let outcome = send(b, http, &d).await;
    let result = match outcome {
        Outcome::Delivered(status) => b.store.delivered(&d.id, attempt, status).await.map(|_| ()),
        Outcome::Failed(status, error) => {
            let cfg = &b.cfg.webhooks;
            match backoff(attempt, cfg.retry_secs, cfg.max_attempts) {
                Some(wait) => b
                    .store
                    .retry_delivery(&d.id, attempt, now_secs() + wait, status, &error)
                    .await
                    .map(|_| ()),
                None => give_up(b, &d, attempt, status, &error).await,
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(delivery = %d.id, error = %e, "webhooks: cannot record a delivery's outcome");
    }
}

async fn give_up(
    b: &Broker,
    d: &Delivery,
    attempt: u64,
    status: Option<u16>,
    error: &str,
) -> anyhow::Result<()> {
    if !b.store.fail_delivery(&d.id, attempt, status, error).await? {
        return Ok(());
    }
    tracing::warn!(webhook = %d.webhook, delivery = %d.id, attempts = attempt, error, "webhooks: giving up on a delivery");
    b.store
        .audit(&AuditEvent::WebhookFailed {
            webhook: d.webhook.clone(),
            customer: d.customer.clone(),
            url: d.url_shown.clone(),
            host: d.host.clone(),
            delivery: d.id.clone(),
            event: format!("{}#{}", d.source, d.seq),
            event_kind: d.kind.clone(),
            attempts: attempt,
            last_status: status.map(u64::from),
            last_error: error.to_string(),
        })
        .await?;
    Ok(())
}

async fn send(b: &Broker, clients: &Clients, d: &Delivery) -> Outcome {
    let open = |ctx: String, sealed: &str| b.totp_box.open(&ctx, sealed);
    let (url, secret) = match (
        open(url_context(&d.webhook), &d.url_sealed),
        open(secret_context(&d.webhook), &d.secret_sealed),
    ) {
        (Ok(u), Ok(s)) => (u, s),
        (Err(e), _) | (_, Err(e)) => {
            return Outcome::Failed(
                None,
                format!("the webhook's URL or secret does not open: {e}"),
            );
        }
    };
    // Checked again: the broker's rules may have changed since the webhook was made.
    let customer = d.customer.is_some();
    let url = match check_url(&url, b.cfg.webhooks.allow_http_loopback, customer) {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(None, e.0),
    };
    let http = if customer {
        &clients.customer
    } else {
        &clients.vendor
    };
    let t = now_secs();
    let res = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Sallyport-Signature", signature(&secret, t, &d.body))
        .header("X-Sallyport-Event", &d.kind)
        .header("X-Sallyport-Delivery", &d.id)
        .body(d.body.clone())
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => Outcome::Delivered(r.status().as_u16()),
        Ok(r) => Outcome::Failed(
            Some(r.status().as_u16()),
            format!("the receiver answered {}", r.status()),
        ),
        Err(e) => Outcome::Failed(e.status().map(|s| s.as_u16()), transport_error(&e)),
    }
}

/// A transport error in words, without the URL (which may hold a secret).
fn transport_error(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "no answer within the timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirected (redirects are not followed)"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {}", sanitize(&detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: &str, kind: &str, data: Value) -> AuditRecord {
        AuditRecord::next(source, None, 1_780_000_000_123, kind, data)
    }

    #[test]
    fn urls_are_https_or_loopback_http_when_allowed() {
        let cases: Vec<(&str, bool, Result<(), &str>)> = vec![
            ("https://hooks.example.com/x", false, Ok(())),
            ("https://203.0.113.1/x", false, Err("private network")),
            ("https://8.8.8.8/x", false, Ok(())),
            ("https://10.0.0.1/x", false, Err("private network")),
            (
                "https://169.254.169.254/latest",
                true,
                Err("private network"),
            ),
            ("https://[fd00::1]/x", false, Err("private network")),
            (
                "https://[::ffff:192.168.0.1]/x",
                false,
                Err("private network"),
            ),
            ("https://127.0.0.1/x", false, Err("private network")),
            ("https://127.0.0.1/x", true, Ok(())),
            ("http://127.0.0.1:8080/hook", true, Ok(())),
            ("http://localhost/hook", true, Ok(())),
            ("http://[::1]:9/hook", true, Ok(())),
            (
                "http://127.0.0.1:8080/hook",
                false,
                Err("allow_http_loopback"),
            ),
            ("http://hooks.example.com/x", true, Err("in clear")),
            ("http://192.168.1.5/x", true, Err("in clear")),
            ("ftp://hooks.example.com/x", true, Err("https://")),
            ("file:///etc/passwd", true, Err("https://")),
            (
                "https://user:pw@hooks.example.com/x",
                false,
                Err("password"),
            ),
            ("https://hooks.example.com/x#frag", false, Err("fragment")),
            ("not a url", false, Err("not a URL")),
        ];
        for (url, allow, want) in cases {
            match (check_url(url, allow, true), want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(word)) => assert!(e.0.contains(word), "{url}: {e}"),
                (got, want) => panic!("{url}: {got:?}, wanted {want:?}"),
            }
        }
        // The operator's vendor-wide webhooks may go to the vendor's own network.
        assert!(check_url("https://10.0.0.1/siem", false, false).is_ok());
        assert!(check_url("http://10.0.0.1/siem", true, false).is_err());
    }

    #[test]
    fn only_public_addresses_are_reachable_for_customers() {
        let cases = [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("2606:4700::1111", true),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("198.18.0.1", false),
            ("::", false),
            ("fe80::1", false),
            ("fc00::1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:8.8.8.8", true),
        ];
        for (ip, want) in cases {
            assert_eq!(reachable(ip.parse().unwrap(), false), want, "{ip}");
        }
        assert!(!reachable("127.0.0.1".parse().unwrap(), false));
        assert!(reachable("127.0.0.1".parse().unwrap(), true));
        assert!(reachable("::1".parse().unwrap(), true));
    }

    #[test]
    fn shown_urls_keep_no_secret() {
        let cases = [
            (
                "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
                "https://hooks.slack.com/services/…",
            ),
            (
                "https://siem.example.com/sallyport",
                "https://siem.example.com/sallyport",
            ),
            ("https://siem.example.com/", "https://siem.example.com"),
            (
                "https://siem.example.com/in?token=abc",
                "https://siem.example.com/in/…",
            ),
            ("http://127.0.0.1:8080/hook", "http://127.0.0.1:8080/hook"),
        ];
        for (url, want) in cases {
            let shown = shown_url(&url::Url::parse(url).unwrap());
            assert_eq!(shown, want);
            assert!(!shown.contains("SECRET") && !shown.contains("abc"));
        }
    }

    #[test]
    fn backoff_grows_then_gives_up() {
        let waits: Vec<Option<u64>> = (1..=7).map(|a| backoff(a, 5, 6)).collect();
        assert_eq!(
            waits,
            vec![
                Some(5),
                Some(30),
                Some(120),
                Some(600),
                Some(3600),
                None,
                None
            ]
        );
        assert_eq!(backoff(1, 1, 2), Some(1));
        assert_eq!(backoff(2, 1, 2), None);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // RFC 4231 test case 2 ("Jefe"), with the message split as "<t>.<body>".
        let sig = signature("Jefe", 12, "what do ya want for nothing?");
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let want = hex::encode(hmac::sign(&key, b"12.what do ya want for nothing?").as_ref());
        assert_eq!(sig, format!("t=12,v1={want}"));
        assert_ne!(signature("Jefe", 13, "what do ya want for nothing?"), sig);
        assert_ne!(signature("other", 12, "what do ya want for nothing?"), sig);
    }

    #[test]
    fn which_events_are_notified() {
        let cases = [
            ("broker", "certificate_issued", true),
            ("broker", "access_request_created", true),
            ("broker", "access_request_decided", true),
            ("broker", "revoked", true),
            ("broker", "refusal_burst", true),
            ("broker", "login_failed", false),
            ("broker", "webhook_failed", false),
            ("gateway:gw-1", "session_started", true),
            ("gateway:gw-1", "session_ended", true),
            ("gateway:gw-1", "session_terminated", true),
            ("gateway:gw-1", "command", false),
            // Only the broker writes its kinds: a gateway naming one is not a notice.
            ("gateway:gw-1", "certificate_issued", false),
            ("edge:e1", "edge_session", false),
            ("other", "session_started", false),
        ];
        for (source, kind, want) in cases {
            assert_eq!(notified(source, kind), want, "{source} {kind}");
        }
        for kind in NOTIFIED {
            assert!(
                notified("broker", kind) || notified("gateway:g", kind),
                "{kind}"
            );
        }
        let e = AuditEvent::RefusalBurst {
            principal: "engineer:alice".into(),
            engineer: Some("alice".into()),
            customer: None,
            source_ip: None,
            counter: "user".into(),
            failures: 5,
            locked_secs: 300,
        };
        // The broker's kinds by name agree with the typed decision.
        let others = [
            e,
            AuditEvent::Revoked {
                scope: "serial".into(),
                target: "1".into(),
                serials: vec![],
                by: "operator:o".into(),
                reason: "r".into(),
                engineer: None,
                ticket: None,
                cluster: None,
            },
            AuditEvent::LoginFailed {
                engineer: "alice".into(),
                code: "bad_credentials".into(),
                reason: "r".into(),
                source_ip: None,
            },
            AuditEvent::WebhookFailed {
                webhook: "wh-1".into(),
                customer: None,
                url: "https://x".into(),
                host: "x".into(),
                delivery: "wd-1".into(),
                event: "broker#1".into(),
                event_kind: "revoked".into(),
                attempts: 6,
                last_status: None,
                last_error: "e".into(),
            },
            AuditEvent::SessionTerminationRequested {
                session: "s-1".into(),
                cluster: "acme-prod".into(),
                customer: "acme".into(),
                by: "approver:acme:a".into(),
                reason: "r".into(),
            },
        ];
        let decided: Vec<bool> = others.iter().map(event_notified).collect();
        assert_eq!(decided, vec![true, true, false, false, false]);
        for e in &others {
            assert_eq!(
                notified("broker", e.kind()),
                event_notified(e),
                "{}",
                e.kind()
            );
        }
    }

    #[test]
    fn bodies_name_the_event_and_escape_for_slack() {
        let r = record(
            "gateway:gw-1",
            "session_terminated",
            json!({"session": "s-1", "engineer": "alice", "cluster": "acme-prod", "node": "node1",
                   "ticket": "T-1", "reason": "ended by <!channel> & co"}),
        );
        let body: Value = serde_json::from_str(&json_body(&r, Some("acme"))).unwrap();
        assert_eq!(body["id"], "gateway:gw-1#1");
        assert_eq!(body["kind"], "session_terminated");
        assert_eq!(body["customer"], "acme");
        assert_eq!(body["cluster"], "acme-prod");
        assert_eq!(body["session"], "s-1");
        assert_eq!(body["time"], "2026-05-28T20:26:40.123Z");
        assert_eq!(body["data"]["reason"], "ended by <!channel> & co");
        let slack: Value = serde_json::from_str(&slack_body(&r, Some("acme"))).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.contains("alice's session s-1 on node1.acme-prod was ended"),
            "{text}"
        );
        assert!(text.contains("&lt;!channel&gt; &amp; co"), "{text}");
        assert!(!text.contains('<'), "{text}");
    }
}
