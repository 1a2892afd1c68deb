//! An engineer's authentication at the edge: a certificate and, when it asks for per-session
//! MFA, a TOTP code by keyboard-interactive (`mfa.rs`).
//!
//! Each decision is a pure step over plain facts (`certificate_step`, `russh_refusal`,
//! `plain_key_step` here, `code_step`, `verdict_step` and `mfa_verdict` in `mfa.rs`), tested with
//! tables in `tests.rs`; the handler's methods gather the facts, audit and answer russh.
//!
//! The states of a connection: nothing tried; a certificate reached the edge's check
//! (`certificate_seen`: its refusal, or a plain key's, is audited once); a certificate passed and
//! asks for a code (`pending_mfa`, at most `MFA_TRIES` wrong codes); authenticated (`identity`).

use std::sync::atomic::Ordering;

use russh::keys::{Certificate, HashAlg};
use russh::server::Auth;
use russh::{MethodKind, MethodSet};
use sallyport_ca::clock::now_secs;
use sallyport_ca::{CertIdentity, check_user_cert};
use serde_json::{Value, json};

use super::handler::EngineerHandler;
use super::listener::full_reason;
use super::mfa::PendingMfa;

const MFA_UNAVAILABLE: &str = "the certificate asks for per-session MFA, and this edge has no \
                               broker token (token_file) to check TOTP codes with";

/// What becomes of a certificate that passed russh's checks (the client holds its key), on a
/// connection that has a slot.
#[derive(Debug, PartialEq)]
pub(super) enum CertificateStep<I> {
    /// Refused, audited with this code.
    Refuse { code: &'static str, reason: String },
    /// A partial success: keyboard-interactive, and only it, asks for the TOTP code next.
    AskCode(I),
    /// Authenticated.
    Accept(I),
}

/// `check`: the edge's own check of the certificate (`Ok`: the identity, and whether it asks for
/// per-session MFA; `Err`: the refusal's code and reason); `has_token`: the edge can ask the
/// broker about TOTP codes.
pub(super) fn certificate_step<I>(
    check: Result<(I, bool), (&'static str, String)>,
    has_token: bool,
) -> CertificateStep<I> {
    match check {
        Ok((_, true)) if !has_token => CertificateStep::Refuse {
            code: "mfa_unavailable",
            reason: MFA_UNAVAILABLE.to_string(),
        },
        Ok((id, true)) => CertificateStep::AskCode(id),
        Ok((id, false)) => CertificateStep::Accept(id),
        Err((code, reason)) => CertificateStep::Refuse { code, reason },
    }
}

/// The code and reason audited for a certificate russh refused itself, from the edge's own check
/// of it (`Ok`: russh's clock and ours disagree by a second at the edge of the window).
pub(super) fn russh_refusal(check: Result<(), (&'static str, String)>) -> (&'static str, String) {
    match check {
        Err(refusal) => refusal,
        Ok(()) => (
            "outside_validity",
            "the certificate is outside its validity window".to_string(),
        ),
    }
}

/// What becomes of a plain key (not a certificate) whose signature verified: refused always.
#[derive(Debug, PartialEq)]
pub(super) enum PlainKeyStep {
    /// The edge is full: audited once per connection as `edge_full`.
    Full,
    /// Audited as `not_a_certificate` (once: no certificate reached the check before).
    NotACertificate,
    /// Refused without a word (a certificate's refusal was audited already).
    Reject,
}

pub(super) fn plain_key_step(full: bool, certificate_seen: bool) -> PlainKeyStep {
    match (full, certificate_seen) {
        (true, _) => PlainKeyStep::Full,
        (false, false) => PlainKeyStep::NotACertificate,
        (false, true) => PlainKeyStep::Reject,
    }
}

impl EngineerHandler {
    /// The edge's own check of a certificate, as plain facts for the steps.
    fn check(&self, cert: &Certificate) -> Result<CertIdentity, sallyport_ca::CertRefusal> {
        let trust = &self.edge.trust;
        check_user_cert(
            cert,
            &trust.cas(),
            now_secs(),
            &|c| trust.is_revoked(c),
            self.peer.map(|p| p.ip()),
        )
    }

    /// The edge is full: audit it (once per connection, naming the key the client offered),
    /// and have the connection's task disconnect it with the message the banner showed.
    pub(super) async fn refuse_full(&mut self, key_id: Option<&str>, extra: Value) -> Auth {
        if !self.conn.full_audited.swap(true, Ordering::SeqCst) {
            tracing::warn!(peer = ?self.peer, login = self.login, key_id, "edge full: connection refused");
            let max = self.edge.cfg.max_connections;
            let mut extra = extra;
            crate::merge(&mut extra, json!({"max_connections": max}));
            self.refused(key_id, "edge_full", &full_reason(max), extra)
                .await;
        }
        self.conn.kick.notify_one();
        Auth::reject()
    }

    pub(super) async fn on_certificate(&mut self, user: &str, cert: &Certificate) -> Auth {
        self.auth_request(user);
        self.certificate_seen = true;
        self.pending_mfa = None;
        let key_id = cert.key_id().to_string();
        let serial = json!({"serial": cert.serial().to_string()});
        if self.permit.is_none() {
            return self.refuse_full(Some(&key_id), serial).await;
        }
        let result = self.check(cert);
        if result.is_ok()
            && let Ok(mut kept) = self.conn.cert.lock()
        {
            *kept = Some(cert.clone());
        }
        let check = result
            .map(|id| {
                let mfa = id.per_session_mfa();
                (id, mfa)
            })
            .map_err(|r| (r.code(), r.to_string()));
        match certificate_step(check, self.edge.authed.is_some()) {
            CertificateStep::AskCode(id) => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "certificate accepted at the edge; asking for the per-session TOTP code");
                self.identity = None;
                self.pending_mfa = Some(PendingMfa {
                    user: user.to_string(),
                    id,
                    failures: 0,
                });
                Auth::Reject {
                    proceed_with_methods: Some(MethodSet::from(
                        &[MethodKind::KeyboardInteractive][..],
                    )),
                    partial_success: true,
                }
            }
            CertificateStep::Accept(id) => {
                tracing::info!(peer = ?self.peer, user, engineer = id.engineer(), ticket = id.ticket(), cluster = id.cluster(), "engineer authenticated at the edge");
                self.authenticated(id);
                Auth::Accept
            }
            CertificateStep::Refuse { code, reason } => {
                tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "certificate refused at the edge");
                self.refused(Some(&key_id), code, &reason, serial).await;
                Auth::reject()
            }
        }
    }

    /// A certificate russh refused itself (expired, not yet valid, or a CA signature that does
    /// not verify): refused whatever happens here; audited once per connection with the code our
    /// own check gives (a certificate from an untrusted CA is called that, an expired one of
    /// ours `expired`). The client has not proven it holds the key yet.
    pub(super) async fn on_certificate_refused(&mut self, user: &str, cert: &Certificate) {
        self.auth_request(user);
        if self.certificate_seen || self.permit.is_none() {
            return;
        }
        self.certificate_seen = true;
        let (code, reason) = russh_refusal(
            self.check(cert)
                .map(|_| ())
                .map_err(|r| (r.code(), r.to_string())),
        );
        let key_id = cert.key_id().to_string();
        tracing::warn!(peer = ?self.peer, user, key_id, code, reason, "certificate refused at the edge");
        self.refused(
            Some(&key_id),
            code,
            &reason,
            json!({"serial": cert.serial().to_string(), "key_ownership": "not proven"}),
        )
        .await;
    }

    /// A plain key (not a certificate) whose signature verified. Refused; audited when no
    /// certificate reached the edge's check on this connection.
    pub(super) async fn on_plain_key(&mut self, user: &str, key: &russh::keys::PublicKey) -> Auth {
        self.auth_request(user);
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match plain_key_step(self.permit.is_none(), self.certificate_seen) {
            PlainKeyStep::Full => {
                return self
                    .refuse_full(None, json!({"fingerprint": fingerprint}))
                    .await;
            }
            PlainKeyStep::NotACertificate => {
                tracing::warn!(peer = ?self.peer, user, fingerprint, "plain key refused at the edge: no valid certificate was presented");
                let public_key = key
                    .to_openssh()
                    .ok()
                    .map(|k| k.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
                self.refused(
                    None,
                    "not_a_certificate",
                    "only sallyport certificates are accepted: a plain key was offered without a \
                     certificate; run `sallyport login`",
                    json!({"fingerprint": fingerprint, "public_key": public_key}),
                )
                .await;
                // One event per connection is enough.
                self.certificate_seen = true;
            }
            PlainKeyStep::Reject => {}
        }
        Auth::reject()
    }
}
