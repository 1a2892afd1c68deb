//! Who is calling: API tokens (operator, reviewer, customer approver, ticket system, edge), JWT
//! sessions (engineers after LDAP + TOTP; approvers and reviewers after password + TOTP) and
//! gateway credentials (`spg_...`, from enrollment).
//!
//! JWTs are HS256 only (the algorithm is pinned: `alg: none` or any other algorithm is refused),
//! with `exp`, `aud`, `iss` and `sub` required and checked.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use sallyport_ca::clock::now_secs;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::Broker;

/// The role a credential holds: stored with API tokens, accounts and console sessions, and
/// signed into session tokens. Parsed once where it is read ([`Role::parse`]); the text is the
/// same everywhere (`ticket_system`, not `TicketSystem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Operator,
    Reviewer,
    Approver,
    TicketSystem,
    Edge,
    Engineer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Reviewer => "reviewer",
            Role::Approver => "approver",
            Role::TicketSystem => "ticket_system",
            Role::Edge => "edge",
            Role::Engineer => "engineer",
        }
    }

    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Operator,
        Role::Reviewer,
        Role::Approver,
        Role::TicketSystem,
        Role::Edge,
        Role::Engineer,
    ];

    /// The role this text names, if any.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The caller of a request, proven by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator {
        name: String,
    },
    Reviewer {
        name: String,
    },
    Approver {
        name: String,
        customer: String,
    },
    TicketSystem {
        name: String,
        /// Set: it may only write tickets of this customer.
        customer: Option<String>,
    },
    Engineer {
        uid: String,
        groups: Vec<String>,
        mfa: bool,
    },
    /// An enrolled, non-revoked gateway of `cluster`. It may only read its own configuration,
    /// ship its own audit chain and upload its cluster's recordings.
    Gateway {
        id: String,
        cluster: String,
    },
    /// An edge, by the name of its API token (role `edge`). It may only ship its own audit chain
    /// (source `edge:<name>`) and check engineers' per-session TOTP codes.
    Edge {
        name: String,
    },
}

impl Caller {
    /// How the caller is named in the audit log.
    pub fn label(&self) -> String {
        match self {
            Caller::Operator { name } => format!("operator:{name}"),
            Caller::Reviewer { name } => format!("reviewer:{name}"),
            Caller::Approver { name, customer } => format!("approver:{customer}:{name}"),
            Caller::TicketSystem { name, .. } => format!("ticket-system:{name}"),
            Caller::Engineer { uid, .. } => format!("engineer:{uid}"),
            Caller::Gateway { id, .. } => format!("gateway:{id}"),
            Caller::Edge { name } => format!("edge:{name}"),
        }
    }
}

impl Caller {
    /// The customer the caller is bound to: an approver's, or a customer's ticket system's.
    pub fn customer(&self) -> Option<&str> {
        match self {
            Caller::Approver { customer, .. } => Some(customer),
            Caller::TicketSystem { customer, .. } => customer.as_deref(),
            Caller::Operator { .. } | Caller::Reviewer { .. } | Caller::Engineer { .. } => None,
            Caller::Gateway { .. } | Caller::Edge { .. } => None,
        }
    }

    /// The gateway's id and cluster, when the caller is a gateway.
    pub fn gateway(&self) -> Option<(&str, &str)> {
        match self {
            Caller::Gateway { id, cluster } => Some((id, cluster)),
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Edge { .. } => None,
        }
    }

    /// The engineer's uid, when the caller is an engineer.
    pub fn engineer(&self) -> Option<&str> {
        match self {
            Caller::Engineer { uid, .. } => Some(uid),
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// engineer | approver | reviewer
    pub role: Role,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub mfa: bool,
    pub iat: u64,
    pub exp: u64,
    pub aud: String,
    pub iss: String,
    pub jti: String,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: u64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, ttl: u64) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = 5;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.into(),
            audience: audience.into(),
            ttl,
        }
    }

    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        groups: Vec<String>,
        customer: Option<String>,
        mfa: bool,
    ) -> anyhow::Result<(String, u64)> {
        let now = now_secs();
        let claims = Claims {
            sub: sub.into(),
            role,
            groups,
            customer,
            mfa,
            iat: now,
            exp: now + self.ttl,
            aud: self.audience.clone(),
            iss: self.issuer.clone(),
            jti: random_id(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims.exp))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| {
                ApiError::Forbidden(format!(
                    "the session token is not valid ({e}); log in again"
                ))
            })
    }
}

/// 128 random bits, hex.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A new API token: shown once, stored as its SHA-256.
pub fn new_api_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("spt_{}", hex::encode(b))
}

/// A gateway's one-time join token: shown once to the operator, stored as its SHA-256.
pub fn new_join_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("spj_{}", hex::encode(b))
}

/// A gateway's credential, given once at enrollment, stored as its SHA-256.
pub fn new_gateway_credential() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("spg_{}", hex::encode(b))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time comparison of two hex digests.
pub fn digest_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// How lockouts, disabling and session revocations name who logs in: `engineer:<uid>` or
/// `account:<name>` (an approver's or a reviewer's). `kind`: `engineer`, or a role's name.
pub fn principal(kind: &str, name: &str) -> String {
    if kind == Role::Engineer.as_str() {
        format!("engineer:{name}")
    } else {
        format!("account:{name}")
    }
}

impl FromRequestParts<Arc<Broker>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Broker>,
    ) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthenticated)?;
        if token.starts_with("spt_") {
            let hash = token_hash(token);
            if digest_eq(&hash, &state.operator_token_sha256) {
                return Ok(Caller::Operator {
                    name: "config".into(),
                });
            }
            let Some((t, revoked)) = state.store.token_by_hash(&hash).await? else {
                return Err(refuse_unknown(
                    state,
                    parts,
                    "an API token that was never issued",
                    "unknown or revoked API token",
                )
                .await);
            };
            let caller = match (t.role, t.customer) {
                (Role::Operator, _) => Caller::Operator { name: t.name },
                (Role::Reviewer, _) => Caller::Reviewer { name: t.name },
                (Role::Approver, Some(customer)) => Caller::Approver {
                    name: t.name,
                    customer,
                },
                (Role::TicketSystem, customer) => Caller::TicketSystem {
                    name: t.name,
                    customer,
                },
                (Role::Edge, _) => Caller::Edge { name: t.name },
                (Role::Approver, None) | (Role::Engineer, _) => {
                    return Err(ApiError::Forbidden(
                        "this API token has no usable role".into(),
                    ));
                }
            };
            if revoked {
                return Err(refuse_revoked(
                    state,
                    parts,
                    &caller,
                    caller.customer(),
                    None,
                    "the API token was revoked",
                    "unknown or revoked API token",
                )
                .await);
            }
            return Ok(caller);
        }
        if token.starts_with("spg_") {
            let hash = token_hash(token);
            return match state.store.gateway_by_credential(&hash).await? {
                Some(g) if g.revoked_at.is_none() => Ok(Caller::Gateway {
                    id: g.id,
                    cluster: g.cluster,
                }),
                Some(g) => {
                    let customer = state.store.cluster(&g.cluster).await?.map(|c| c.customer);
                    let caller = Caller::Gateway {
                        id: g.id,
                        cluster: g.cluster.clone(),
                    };
                    Err(refuse_revoked(
                        state,
                        parts,
                        &caller,
                        customer.as_deref(),
                        Some(&g.cluster),
                        "the gateway was revoked",
                        "this gateway was revoked: create and enroll a new one",
                    )
                    .await)
                }
                None => Err(refuse_unknown(
                    state,
                    parts,
                    "a gateway credential that was never issued",
                    "unknown gateway credential",
                )
                .await),
            };
        }
        let claims = match state.jwt.verify(token) {
            Ok(c) => c,
            Err(e) => {
                // An expired session token is the everyday case (log in again), not an attack.
                let forged = !format!("{e}").to_lowercase().contains("expired");
                if forged {
                    let _ =
                        refuse_unknown(state, parts, "a session token the broker did not sign", "")
                            .await;
                }
                return Err(e);
            }
        };
        let revoked_at = state
            .store
            .sessions_revoked_at(&principal(claims.role.as_str(), &claims.sub))
            .await?;
        let caller = match (claims.role, claims.customer) {
            (Role::Engineer, _) => Caller::Engineer {
                uid: claims.sub,
                groups: claims.groups,
                mfa: claims.mfa,
            },
            (Role::Approver, Some(customer)) => Caller::Approver {
                name: claims.sub,
                customer,
            },
            (Role::Reviewer, _) => Caller::Reviewer { name: claims.sub },
            (Role::Approver, None) | (Role::Operator | Role::TicketSystem | Role::Edge, _) => {
                return Err(ApiError::Forbidden(
                    "the session token has no usable role".into(),
                ));
            }
        };
        if revoked_at.is_some_and(|at| claims.iat <= at) {
            // (A session token is never a ticket system's: the customer is an approver's.)
            return Err(refuse_revoked(
                state,
                parts,
                &caller,
                caller.customer(),
                None,
                "the session token was issued before its holder's sessions were revoked",
                "this session was revoked: log in again with `sallyport login`",
            )
            .await);
        }
        Ok(caller)
    }
}

/// A revoked credential was presented: refused (403 with `message`) and audited as `refused`,
/// naming the principal, the route and `reason`. Throttled per principal and route (one event a
/// minute, the next counting those in between), so replaying a revoked credential cannot fill
/// the log.
async fn refuse_revoked(
    state: &Broker,
    parts: &Parts,
    caller: &Caller,
    customer: Option<&str>,
    cluster: Option<&str>,
    reason: &str,
    message: &str,
) -> ApiError {
    let by = caller.label();
    let key = format!("revoked:{by}:{}", action_of(parts));
    refuse_credential(state, parts, by, (customer, cluster), key, reason, message).await
}

/// A credential the broker never issued was presented: refused (403 with `message`) and audited
/// as `refused` by `unknown@<address>`, throttled per address, route and kind, so guessing tokens
/// shows in the log without filling it.
async fn refuse_unknown(state: &Broker, parts: &Parts, reason: &str, message: &str) -> ApiError {
    let addr = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or_else(|| "unknown address".to_string(), |c| c.0.ip().to_string());
    let key = format!("unknown:{addr}:{}:{reason}", action_of(parts));
    let by = format!("unknown@{addr}");
    refuse_credential(state, parts, by, (None, None), key, reason, message).await
}

/// The route as the router matched it (a bounded set), not the path as sent: `GET /v1/...`.
fn action_of(parts: &Parts) -> String {
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or("(no route)", |m| m.as_str());
    format!("{} {route}", parts.method)
}

/// Refuse a credential (403 with `message`) and audit it as `refused` by `by`, throttled under
/// `key`.
async fn refuse_credential(
    state: &Broker,
    parts: &Parts,
    by: String,
    (customer, cluster): (Option<&str>, Option<&str>),
    key: String,
    reason: &str,
    message: &str,
) -> ApiError {
    let action = action_of(parts);
    tracing::warn!(by, action, reason, "refused a credential");
    let event = |why: &str| crate::audit::AuditEvent::Refused {
        by: by.clone(),
        action: action.clone(),
        reason: why.into(),
        customer: customer.map(str::to_string),
        cluster: cluster.map(str::to_string),
    };
    match crate::api::throttled(state, &key, event, reason).await {
        Ok(()) => ApiError::Forbidden(message.into()),
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7u8; 32], "sallyport-broker", "sallyport", 600)
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys();
        let (t, _) = k
            .issue("alice", Role::Engineer, vec!["g".into()], None, true)
            .unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert!(c.mfa);
    }

    #[test]
    fn hostile_tokens_are_refused() {
        let k = keys();
        let other = JwtKeys::new(&[8u8; 32], "sallyport-broker", "sallyport", 600);
        let (forged, _) = other
            .issue("alice", Role::Engineer, vec![], None, true)
            .unwrap();
        assert!(k.verify(&forged).is_err(), "signed with another key");
        // A token from the same key for another audience, or from another issuer.
        for (iss, aud) in [("sallyport-broker", "other"), ("evil", "sallyport")] {
            let wrong = JwtKeys::new(&[7u8; 32], iss, aud, 600);
            let token = wrong
                .issue("a", Role::Engineer, vec![], None, true)
                .unwrap()
                .0;
            assert!(k.verify(&token).is_err(), "issuer {iss}, audience {aud}");
        }
        // alg: none
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = now_secs();
        let payload = serde_json::json!({"sub": "alice", "role": "engineer", "mfa": true, "iat": now,
            "exp": now + 600, "aud": "sallyport", "iss": "sallyport-broker", "jti": "x", "groups": []});
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(payload.to_string())
        );
        assert!(k.verify(&none).is_err(), "alg none");
        // expired
        let mut c = k
            .verify(&k.issue("a", Role::Engineer, vec![], None, true).unwrap().0)
            .unwrap();
        c.exp = now - 100;
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &c, &k.encoding).unwrap();
        assert!(k.verify(&t).is_err(), "expired");
        // HS512 with the right key is still refused: the algorithm is pinned
        let c = k
            .verify(&k.issue("a", Role::Engineer, vec![], None, true).unwrap().0)
            .unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &c, &k.encoding).unwrap();
        assert!(k.verify(&t).is_err(), "other algorithm");
    }

    #[test]
    fn roles_read_back_as_written() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::json!(r), serde_json::json!(r.as_str()));
        }
        assert_eq!(Role::parse("TicketSystem"), None);
    }

    #[test]
    fn digest_compare() {
        assert!(digest_eq("abcd", "abcd"));
        assert!(!digest_eq("abcd", "abce"));
        assert!(!digest_eq("abc", "abcd"));
    }
}
