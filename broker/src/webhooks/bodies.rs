//! What a receiver gets: the generic and the Slack bodies, the sentence about an event, the
//! signature.

use ring::hmac;
use serde_json::{Value, json};

use crate::audit::{AuditRecord, sanitize};

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
