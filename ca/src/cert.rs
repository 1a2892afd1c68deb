//! Certificate contents: what the CA signs for an engineer (only from a [`Grant`]), the host
//! certificates a gateway presents for `<node>.<cluster>`, and the per-session certificates a
//! gateway uses to reach a node. Checking a presented engineer certificate is in [`check`].
//!
//! Engineer certificates never carry agent forwarding, X11 forwarding or user-rc, whatever the
//! grant says; `permit-pty` always; `permit-port-forwarding` only when the grant allows it.

mod check;

use russh::keys::key::safe_rng;
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::rand_core::Rng;
use russh::keys::ssh_key::{Certificate, PrivateKey, PublicKey};

pub use check::{CertIdentity, CertRefusal, check_user_cert};

use crate::cidr::Cidr;
use crate::error::CaError;
use crate::grant::Grant;
use crate::keyid::{KeyId, SessionKeyId};

/// Extension carrying the grant id (value: the id).
pub const EXT_GRANT: &str = "grant@sallyport.dev";
/// Extension carrying the ticket (value: the ticket).
pub const EXT_TICKET: &str = "ticket@sallyport.dev";
/// Extension carrying the cluster (value: the cluster).
pub const EXT_CLUSTER: &str = "cluster@sallyport.dev";
/// Extension carrying the access group the approval names (value: the group), so that the
/// gateway's channel policy knows which of the engineer's groups this access came through.
pub const EXT_GROUP: &str = "group@sallyport.dev";
/// Present (empty value) when each session must confirm a TOTP code at the edge.
pub const EXT_MFA: &str = "mfa@sallyport.dev";
/// Present (empty value) when each session waits at the gateway until a customer approver
/// watches it (a moderated session).
pub const EXT_OBSERVER: &str = "observer@sallyport.dev";

pub const EXT_PERMIT_PTY: &str = "permit-pty";
pub const EXT_PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";
/// Standard extensions sallyport never grants; a certificate carrying one is refused.
pub const FORBIDDEN_EXTENSIONS: [&str; 3] = [
    "permit-agent-forwarding",
    "permit-X11-forwarding",
    "permit-user-rc",
];

pub const OPT_SOURCE_ADDRESS: &str = "source-address";

/// Longest login or host name accepted in a principal.
const MAX_NAME_LEN: usize = 253;

/// A random non-zero serial from a CSPRNG.
pub fn random_serial() -> u64 {
    let mut rng = safe_rng();
    loop {
        let serial = rng.next_u64();
        if serial != 0 {
            return serial;
        }
    }
}

/// The engineer certificate for `subject`, signed by the user CA, from a Grant.
pub fn build_user_cert(
    ca: &PrivateKey,
    subject: &PublicKey,
    grant: &Grant,
) -> Result<Certificate, CaError> {
    if grant.serial() == 0 {
        return Err(CaError::ZeroSerial {
            grant: grant.id().to_owned(),
        });
    }
    let key_id = KeyId::new(
        grant.engineer(),
        grant.ticket(),
        grant.id(),
        grant.cluster(),
    )?;
    validate_name("cluster", grant.cluster())?;
    if grant.logins().is_empty() {
        return Err(request_error("the grant names no login"));
    }
    let mut principals: Vec<String> = Vec::with_capacity(grant.logins().len());
    for login in grant.logins() {
        validate_name("login", login)?;
        let principal = format!("{}:{login}", grant.cluster());
        if !principals.contains(&principal) {
            principals.push(principal);
        }
    }
    let mut networks = Vec::with_capacity(grant.source_networks().len());
    for network in grant.source_networks() {
        network.parse::<Cidr>()?;
        networks.push(network.as_str());
    }

    let mut b = builder(
        ca,
        subject,
        CertType::User,
        grant.serial(),
        grant.valid_after(),
        grant.valid_before(),
    )?;
    let key_id = key_id.to_string();
    wrap(b.key_id(key_id.as_str()))?;
    wrap(b.comment(key_id.as_str()))?;
    for principal in principals {
        wrap(b.valid_principal(principal))?;
    }
    if !networks.is_empty() {
        wrap(b.critical_option(OPT_SOURCE_ADDRESS, networks.join(",")))?;
    }
    wrap(b.extension(EXT_PERMIT_PTY, ""))?;
    if grant.permit_port_forwarding() {
        wrap(b.extension(EXT_PERMIT_PORT_FORWARDING, ""))?;
    }
    wrap(b.extension(EXT_GRANT, grant.id()))?;
    wrap(b.extension(EXT_TICKET, grant.ticket()))?;
    wrap(b.extension(EXT_CLUSTER, grant.cluster()))?;
    if !grant.group().is_empty() {
        validate_free_text("group", grant.group())?;
        wrap(b.extension(EXT_GROUP, grant.group()))?;
    }
    if grant.per_session_mfa() {
        wrap(b.extension(EXT_MFA, ""))?;
    }
    if grant.observer_required() {
        wrap(b.extension(EXT_OBSERVER, ""))?;
    }
    sign(b, ca)
}

/// A host certificate for `host_key`, valid for the host `names` (e.g. `node1.acme-prod`).
pub fn build_host_cert(
    ca: &PrivateKey,
    host_key: &PublicKey,
    names: &[String],
    valid_after: u64,
    valid_before: u64,
    key_id: &str,
) -> Result<Certificate, CaError> {
    if names.is_empty() {
        return Err(request_error("a host certificate needs at least one name"));
    }
    for name in names {
        validate_name("host name", name)?;
    }
    validate_free_text("key id", key_id)?;
    let mut b = builder(
        ca,
        host_key,
        CertType::Host,
        random_serial(),
        valid_after,
        valid_before,
    )?;
    wrap(b.key_id(key_id))?;
    for name in names {
        wrap(b.valid_principal(name.as_str()))?;
    }
    sign(b, ca)
}

/// The short-lived certificate a gateway presents to a node's sshd (signed by the cluster's node
/// CA): principal = `login`, key id naming session, engineer and ticket, `permit-pty`, and
/// `permit-port-forwarding` when asked.
pub fn build_session_cert(
    node_ca: &PrivateKey,
    subject: &PublicKey,
    login: &str,
    key_id: &SessionKeyId,
    valid_after: u64,
    valid_before: u64,
    permit_port_forwarding: bool,
) -> Result<Certificate, CaError> {
    validate_name("login", login)?;
    let mut b = builder(
        node_ca,
        subject,
        CertType::User,
        random_serial(),
        valid_after,
        valid_before,
    )?;
    wrap(b.key_id(key_id.to_string()))?;
    wrap(b.valid_principal(login))?;
    wrap(b.extension(EXT_PERMIT_PTY, ""))?;
    if permit_port_forwarding {
        wrap(b.extension(EXT_PERMIT_PORT_FORWARDING, ""))?;
    }
    sign(b, node_ca)
}

fn builder(
    ca: &PrivateKey,
    subject: &PublicKey,
    cert_type: CertType,
    serial: u64,
    valid_after: u64,
    valid_before: u64,
) -> Result<Builder, CaError> {
    check_subject_key(ca, subject)?;
    if valid_after >= valid_before {
        return Err(request_error(format!(
            "empty validity window: valid_after {valid_after} >= valid_before {valid_before}"
        )));
    }
    let mut b = wrap(Builder::new_with_random_nonce(
        &mut safe_rng(),
        subject.key_data().clone(),
        valid_after,
        valid_before,
    ))?;
    wrap(b.cert_type(cert_type))?;
    wrap(b.serial(serial))?;
    Ok(b)
}

fn sign(builder: Builder, ca: &PrivateKey) -> Result<Certificate, CaError> {
    builder.sign(ca).map_err(|source| CaError::Ssh {
        what: "signing a certificate",
        source,
    })
}

fn wrap<T>(r: Result<T, russh::keys::ssh_key::Error>) -> Result<T, CaError> {
    r.map_err(|source| CaError::Ssh {
        what: "building a certificate",
        source,
    })
}

fn request_error(msg: impl Into<String>) -> CaError {
    CaError::CertificateRequest(msg.into())
}

/// Subject keys: modern algorithms only, never a certificate, never the CA's own key.
fn check_subject_key(ca: &PrivateKey, subject: &PublicKey) -> Result<(), CaError> {
    let ok = match subject.key_data() {
        KeyData::Ed25519(_)
        | KeyData::SkEd25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEcdsaSha2NistP256(_) => true,
        KeyData::Rsa(rsa) => rsa.key_size() >= 2048,
        _ => false,
    };
    if !ok {
        return Err(request_error(format!(
            "refusing to certify a {} key (use Ed25519, ECDSA or RSA of 2048 bits or more)",
            subject.algorithm()
        )));
    }
    if subject.key_data() == ca.public_key().key_data() {
        return Err(request_error("refusing to certify the CA's own key"));
    }
    Ok(())
}

/// Logins, clusters and host names: non-empty, bounded, and without the characters that separate
/// principals (`,`), cluster from login (`:`), or that a log or a shell could misread.
fn validate_name(what: &str, value: &str) -> Result<(), CaError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN {
        return Err(request_error(format!(
            "{what} {value:?} must be 1 to {MAX_NAME_LEN} bytes"
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, ',' | ':' | '*' | '?' | '!') || c.is_whitespace() || c.is_control())
    {
        return Err(request_error(format!(
            "{what} {value:?} contains the forbidden character {c:?}"
        )));
    }
    Ok(())
}

fn validate_free_text(what: &str, value: &str) -> Result<(), CaError> {
    if value.is_empty() || value.chars().any(char::is_control) {
        return Err(request_error(format!(
            "{what} {value:?} must be non-empty without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
