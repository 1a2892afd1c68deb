//! The engineer's certificate, checked again at the gateway, the session limits, and the watch
//! that ends a live session once its certificate expires or is revoked, or a reviewer or an
//! approver ends it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use russh::keys::Certificate;
use russh::server::{Auth, Session};
use sallyport_audit::writers::GatewayKind;
use sallyport_ca::check_user_cert;
use sallyport_ca::clock::now_secs;
use serde_json::json;

use super::EngineerSession;

/// Why a certificate the trusted CAs signed is still refused at this gateway, as (code, reason),
/// or `None` (pure): it must be for this gateway's cluster and name the login asked for.
pub(super) fn refusal_here(
    cert_cluster: &str,
    allows_login: bool,
    cluster: &str,
    login: &str,
) -> Option<(String, String)> {
    if cert_cluster != cluster {
        return Some((
            "other_cluster".to_string(),
            "the certificate is for another cluster".to_string(),
        ));
    }
    if !allows_login {
        return Some((
            "login_not_in_certificate".to_string(),
            format!("the certificate does not allow the login {login}"),
        ));
    }
    None
}

/// Why a live session must end now, or `None` (pure): ended by someone (who, why), or its
/// certificate expired or was revoked. Someone's word is told first: it says the most.
pub(super) fn end_reason(
    expired: bool,
    revoked: bool,
    ended_by: Option<&(String, String)>,
) -> Option<String> {
    match ended_by {
        Some((by, why)) => Some(format!("the session was ended by {by}: {why}")),
        None if expired => Some("the certificate expired".to_string()),
        None if revoked => Some("the certificate was revoked".to_string()),
        None => None,
    }
}

impl EngineerSession {
    /// Check the engineer's certificate (again: the edge did too) and take the session's place
    /// under the gateway's limits.
    pub(super) async fn certificate(&mut self, user: &str, cert: &Certificate) -> Auth {
        let trust = &self.gw.trust;
        // The edge names the engineer's address as the originator of the tunnel channel (it is
        // authenticated and pinned, so its word is taken): `source-address` is checked here too.
        let peer_ip = self
            .peer
            .rsplit_once(':')
            .and_then(|(ip, _)| ip.trim_matches(['[', ']']).parse().ok());
        let checked = check_user_cert(
            cert,
            &trust.cas(),
            now_secs(),
            &|c| trust.is_revoked(c),
            peer_ip,
        );
        let refusal = match &checked {
            Ok(id) => refusal_here(id.cluster(), id.allows_login(user), &self.gw.cluster, user),
            Err(r) => Some((r.code().to_string(), r.to_string())),
        };
        self.login = crate::sanitize_login(user);
        if let Some((code, reason)) = refusal {
            self.audit(
                GatewayKind::SessionRefused,
                json!({"key_id": cert.key_id(), "code": code, "reason": reason, "peer": self.peer}),
            )
            .await;
            return Auth::reject();
        }
        let Ok(id) = checked else {
            return Auth::reject();
        };
        match self.gw.session_slots(id.engineer()) {
            Ok(slots) => self.slots = slots,
            Err((code, reason, limit)) => {
                tracing::warn!(
                    engineer = id.engineer(),
                    code,
                    limit,
                    "refused: session limit"
                );
                // Anyone holding a certificate can repeat it: a few events a minute per
                // engineer and limit, the others counted.
                self.gw
                    .audit_repeatable(
                        &format!("engineer:{}:{code}", id.engineer()),
                        GatewayKind::SessionRefused,
                        self.fields(json!({"key_id": cert.key_id(), "engineer": id.engineer(),
                                           "code": code, "reason": reason, "limit": limit,
                                           "peer": self.peer})),
                    )
                    .await;
                // Accepted only to say why: no identity, so nothing is served, and the session
                // is ended at once with the reason (a refused key would only read "Permission
                // denied").
                self.over_limit = Some(format!("sallyport: {reason}"));
                return Auth::Accept;
            }
        }
        // A moderated session: nothing runs until an approver of the customer watches it.
        let observer_required = id.observer_required();
        self.released.store(!observer_required, Ordering::SeqCst);
        tracing::Span::current().record("engineer", tracing::field::display(id.engineer()));
        self.identity = Some(id);
        self.cert = Some(cert.clone());
        // If this cannot be written, the session is still let in: every channel request needs its
        // own durable event first, and is refused with a message saying why.
        self.audit(GatewayKind::SessionStarted, json!({"key_id": cert.key_id(), "serial": cert.serial().to_string(), "peer": self.peer, "observer_required": observer_required})).await;
        self.gw.session_opened(&self.sid, &self.fields(json!({})));
        tracing::info!(
            key_id = cert.key_id(),
            login = self.login,
            "session started"
        );
        Auth::Accept
    }

    /// A certificate russh refused itself, before our check ran: outside its validity window by
    /// this gateway's clock, or with a CA signature that does not verify. The edge let it
    /// through, so the edge's clock and this one disagree (or the edge is not checking):
    /// audited (once per connection, a few a minute per certificate) with our own check's code and reason ("not valid yet ...
    /// check the clocks"), the time it was refused at, and that key ownership is not proven.
    pub(super) async fn certificate_refused(&mut self, user: &str, cert: &Certificate) {
        if self.refused_seen {
            return;
        }
        self.refused_seen = true;
        let trust = &self.gw.trust;
        let now = now_secs();
        let (code, reason) = match check_user_cert(
            cert,
            &trust.cas(),
            now,
            &|c| trust.is_revoked(c),
            None,
        ) {
            Err(r) => (r.code().to_string(), r.to_string()),
            // russh's bounds are exclusive where ours are not: the second it changes.
            Ok(_) => (
                "outside_validity".to_string(),
                format!(
                    "the certificate is at the edge of its validity window (valid {} to {}, now {now}); check the clocks",
                    cert.valid_after(),
                    cert.valid_before()
                ),
            ),
        };
        self.login = crate::sanitize_login(user);
        tracing::warn!(
            peer = self.peer,
            user = self.login,
            key_id = cert.key_id(),
            code,
            reason,
            "certificate refused at the gateway"
        );
        // Whoever holds the certificate can repeat it: a few events a minute per certificate
        // and code, the others counted.
        self.gw
            .audit_repeatable(
                &format!("certificate:{}:{code}", cert.key_id()),
                GatewayKind::SessionRefused,
                self.fields(
                    json!({"key_id": cert.key_id(), "code": code, "reason": reason,
                                   "peer": self.peer, "gateway_time": now,
                                   "key_ownership": "not proven"}),
                ),
            )
            .await;
    }

    /// Logged in: a session over a limit is ended with its reason; any other is watched for
    /// as long as it runs (revocation reaches live sessions: the KRL is re-read every second).
    pub(super) fn authenticated(&mut self, session: &mut Session) -> Result<(), russh::Error> {
        if let Some(reason) = &self.over_limit {
            return session.disconnect(russh::Disconnect::ByApplication, reason, "en");
        }
        let Some(cert) = self.cert.clone() else {
            return Ok(());
        };
        let (handle, trust) = (session.handle(), self.gw.trust.clone());
        let fields = self.fields(json!({}));
        let closed = self.closed.clone();
        let (gw, sid) = (self.gw.clone(), self.sid.clone());
        crate::spawn_in_span(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let expired = cert.valid_before() <= now_secs();
                let ended_by = gw.termination(&sid);
                let revoked = !expired && ended_by.is_none() && trust.is_revoked(&cert);
                if let Some(reason) = end_reason(expired, revoked, ended_by.as_ref()) {
                    let mut data = fields.clone();
                    if let Some((by, _)) = &ended_by {
                        data["terminated_by"] = json!(by);
                    }
                    data["reason"] = json!(reason);
                    let _ = gw.spool.append(GatewayKind::SessionTerminated, data).await;
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            format!("sallyport: {reason}"),
                            "en".into(),
                        )
                        .await;
                    return;
                }
                if closed.load(Ordering::Relaxed) {
                    return;
                }
            }
        });
        Ok(())
    }
}
