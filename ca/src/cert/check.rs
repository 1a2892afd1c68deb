//! Checking an engineer certificate presented to the edge or the gateway.
//!
//! russh only checks that a certificate is signed by the key written inside it and that its
//! validity window contains the system clock. Everything that makes a certificate *ours* is
//! checked here, offline, against the clock the caller passes: the type, a trusted CA, the
//! signature, the window, the serial, revocation, the key id and the custom extensions agreeing
//! with it, the principals, and the critical options (unknown ones refuse, as OpenSSH does).

use std::fmt;
use std::net::IpAddr;

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{Certificate, Fingerprint, HashAlg};

use super::{
    EXT_CLUSTER, EXT_GRANT, EXT_GROUP, EXT_MFA, EXT_OBSERVER, EXT_PERMIT_PORT_FORWARDING,
    EXT_TICKET, FORBIDDEN_EXTENSIONS, OPT_SOURCE_ADDRESS,
};
use crate::cidr::Cidr;
use crate::keyid::KeyId;
use crate::keys::TrustedCas;

/// Who a checked certificate names and what it allows. Only [`check_user_cert`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    key_id: KeyId,
    logins: Vec<String>,
    serial: u64,
    valid_after: u64,
    valid_before: u64,
    permit_port_forwarding: bool,
    per_session_mfa: bool,
    observer_required: bool,
    group: Option<String>,
    ca_fingerprint: Fingerprint,
}

impl CertIdentity {
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    pub fn engineer(&self) -> &str {
        self.key_id.engineer()
    }
    pub fn ticket(&self) -> &str {
        self.key_id.ticket()
    }
    pub fn grant(&self) -> &str {
        self.key_id.grant()
    }
    pub fn cluster(&self) -> &str {
        self.key_id.cluster()
    }
    /// The logins of the principals, without the `<cluster>:` prefix.
    pub fn logins(&self) -> &[String] {
        &self.logins
    }
    pub fn allows_login(&self, login: &str) -> bool {
        self.logins.iter().any(|l| l == login)
    }
    pub fn serial(&self) -> u64 {
        self.serial
    }
    pub fn valid_after(&self) -> u64 {
        self.valid_after
    }
    pub fn valid_before(&self) -> u64 {
        self.valid_before
    }
    pub fn permit_port_forwarding(&self) -> bool {
        self.permit_port_forwarding
    }
    pub fn per_session_mfa(&self) -> bool {
        self.per_session_mfa
    }
    /// Each session must wait at the gateway until a customer approver watches it.
    pub fn observer_required(&self) -> bool {
        self.observer_required
    }
    /// The access group the approval behind this certificate names, when the certificate says.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }
    /// SHA-256 fingerprint of the CA that signed the certificate.
    pub fn ca_fingerprint(&self) -> &Fingerprint {
        &self.ca_fingerprint
    }
}

/// Why a certificate was refused: a message for people (Display) and a stable `code()` for the
/// audit log and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertRefusal {
    NotUserCertificate,
    UntrustedCa {
        fingerprint: String,
    },
    BadSignature,
    NotYetValid {
        valid_after: u64,
        now: u64,
    },
    Expired {
        valid_before: u64,
        now: u64,
    },
    ZeroSerial,
    Revoked {
        serial: u64,
    },
    BadKeyId {
        key_id: String,
        reason: String,
    },
    MissingExtension {
        name: &'static str,
    },
    ExtensionMismatch {
        name: &'static str,
        extension: String,
        key_id: String,
    },
    ForbiddenExtension {
        name: String,
    },
    NoPrincipals,
    ForeignPrincipal {
        principal: String,
        cluster: String,
    },
    UnknownCriticalOption {
        name: String,
    },
    BadSourceAddress {
        value: String,
        reason: String,
    },
    SourceAddressMismatch {
        peer: Option<IpAddr>,
        allowed: String,
    },
}

impl CertRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotUserCertificate => "not_user_certificate",
            Self::UntrustedCa { .. } => "untrusted_ca",
            Self::BadSignature => "bad_signature",
            Self::NotYetValid { .. } => "not_yet_valid",
            Self::Expired { .. } => "expired",
            Self::ZeroSerial => "zero_serial",
            Self::Revoked { .. } => "revoked",
            Self::BadKeyId { .. } => "bad_key_id",
            Self::MissingExtension { .. } => "missing_extension",
            Self::ExtensionMismatch { .. } => "extension_mismatch",
            Self::ForbiddenExtension { .. } => "forbidden_extension",
            Self::NoPrincipals => "no_principals",
            Self::ForeignPrincipal { .. } => "foreign_principal",
            Self::UnknownCriticalOption { .. } => "unknown_critical_option",
            Self::BadSourceAddress { .. } => "bad_source_address",
            Self::SourceAddressMismatch { .. } => "source_address_mismatch",
        }
    }
}

impl fmt::Display for CertRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUserCertificate => write!(f, "this is not a user certificate"),
            Self::UntrustedCa { fingerprint } => write!(
                f,
                "the certificate is signed by CA {fingerprint}, which is not trusted here"
            ),
            Self::BadSignature => write!(f, "the certificate's signature is invalid"),
            Self::NotYetValid { valid_after, now } => write!(
                f,
                "the certificate is not valid yet (valid from {valid_after}, now {now}); \
                 check the clocks"
            ),
            Self::Expired { valid_before, now } => write!(
                f,
                "the certificate expired (valid until {valid_before}, now {now}); \
                 run `sallyport login` again"
            ),
            Self::ZeroSerial => write!(f, "the certificate has serial 0, which cannot be revoked"),
            Self::Revoked { serial } => write!(f, "the certificate (serial {serial}) was revoked"),
            Self::BadKeyId { key_id, reason } => {
                write!(
                    f,
                    "the certificate's key id {key_id:?} is not sallyport's: {reason}"
                )
            }
            Self::MissingExtension { name } => {
                write!(f, "the certificate lacks the extension {name}")
            }
            Self::ExtensionMismatch {
                name,
                extension,
                key_id,
            } => write!(
                f,
                "the certificate's extension {name} says {extension:?} but its key id says \
                 {key_id:?}"
            ),
            Self::ForbiddenExtension { name } => {
                write!(
                    f,
                    "the certificate carries {name}, which sallyport never grants"
                )
            }
            Self::NoPrincipals => write!(f, "the certificate names no principal"),
            Self::ForeignPrincipal { principal, cluster } => write!(
                f,
                "the certificate's principal {principal:?} is not a login of cluster {cluster}"
            ),
            Self::UnknownCriticalOption { name } => {
                write!(
                    f,
                    "the certificate has the unknown critical option {name:?}"
                )
            }
            Self::BadSourceAddress { value, reason } => {
                write!(
                    f,
                    "the certificate's source-address {value:?} is invalid: {reason}"
                )
            }
            Self::SourceAddressMismatch {
                peer: Some(peer),
                allowed,
            } => write!(
                f,
                "the certificate may only be used from {allowed}, not from {peer}"
            ),
            Self::SourceAddressMismatch {
                peer: None,
                allowed,
            } => write!(
                f,
                "the certificate may only be used from {allowed}, and the client's address is \
                 unknown"
            ),
        }
    }
}

impl std::error::Error for CertRefusal {}

/// Checks an engineer certificate at `now` (Unix seconds). `revoked` is asked only about a
/// certificate that is authentic (trusted CA, valid signature, within its window). `peer` is the
/// client's address, needed when the certificate restricts `source-address`.
pub fn check_user_cert(
    cert: &Certificate,
    trusted: &TrustedCas,
    now: u64,
    revoked: &dyn Fn(&Certificate) -> bool,
    peer: Option<IpAddr>,
) -> Result<CertIdentity, CertRefusal> {
    if cert.cert_type() != CertType::User {
        return Err(CertRefusal::NotUserCertificate);
    }
    let ca_fingerprint = cert.signature_key().fingerprint(HashAlg::Sha256);
    if !trusted.fingerprints().contains(&ca_fingerprint) {
        return Err(CertRefusal::UntrustedCa {
            fingerprint: ca_fingerprint.to_string(),
        });
    }
    check_signature_and_window(cert, &ca_fingerprint, now)?;
    if cert.serial() == 0 {
        return Err(CertRefusal::ZeroSerial);
    }
    if revoked(cert) {
        return Err(CertRefusal::Revoked {
            serial: cert.serial(),
        });
    }

    let key_id: KeyId =
        cert.key_id()
            .parse()
            .map_err(|e: crate::error::CaError| CertRefusal::BadKeyId {
                key_id: cert.key_id().to_owned(),
                reason: e.to_string(),
            })?;
    let extensions = cert.extensions();
    for (name, from_key_id) in [
        (EXT_CLUSTER, key_id.cluster()),
        (EXT_TICKET, key_id.ticket()),
        (EXT_GRANT, key_id.grant()),
    ] {
        let value = extensions
            .get(name)
            .ok_or(CertRefusal::MissingExtension { name })?;
        if value != from_key_id {
            return Err(CertRefusal::ExtensionMismatch {
                name,
                extension: value.clone(),
                key_id: from_key_id.to_owned(),
            });
        }
    }
    if let Some(name) = FORBIDDEN_EXTENSIONS
        .iter()
        .find(|name| extensions.contains_key(**name))
    {
        return Err(CertRefusal::ForbiddenExtension {
            name: (*name).to_owned(),
        });
    }

    let logins = logins_of(cert, key_id.cluster())?;
    check_critical_options(cert, peer)?;

    Ok(CertIdentity {
        logins,
        serial: cert.serial(),
        valid_after: cert.valid_after(),
        valid_before: cert.valid_before(),
        permit_port_forwarding: extensions.contains_key(EXT_PERMIT_PORT_FORWARDING),
        per_session_mfa: extensions.contains_key(EXT_MFA),
        observer_required: extensions.contains_key(EXT_OBSERVER),
        group: extensions.get(EXT_GROUP).filter(|g| !g.is_empty()).cloned(),
        ca_fingerprint,
        key_id,
    })
}

/// Signature first, so that a forged certificate is called forged rather than expired.
fn check_signature_and_window(
    cert: &Certificate,
    ca: &Fingerprint,
    now: u64,
) -> Result<(), CertRefusal> {
    let in_window = cert.valid_after() <= now && now < cert.valid_before();
    // `validate_at` checks signature, CA and window together; probe the signature at a moment
    // inside the window when `now` is outside it.
    let probe = if in_window { now } else { cert.valid_after() };
    let window_not_empty = cert.valid_after() < cert.valid_before();
    if (in_window || window_not_empty) && cert.validate_at(probe, [ca]).is_err() {
        return Err(CertRefusal::BadSignature);
    }
    if now < cert.valid_after() {
        return Err(CertRefusal::NotYetValid {
            valid_after: cert.valid_after(),
            now,
        });
    }
    if now >= cert.valid_before() {
        return Err(CertRefusal::Expired {
            valid_before: cert.valid_before(),
            now,
        });
    }
    Ok(())
}

/// Every principal must be `<cluster>:<login>` for the certificate's own cluster.
fn logins_of(cert: &Certificate, cluster: &str) -> Result<Vec<String>, CertRefusal> {
    let principals = cert.valid_principals();
    if principals.is_empty() {
        return Err(CertRefusal::NoPrincipals);
    }
    principals
        .iter()
        .map(|principal| {
            principal
                .strip_prefix(cluster)
                .and_then(|rest| rest.strip_prefix(':'))
                .filter(|login| !login.is_empty() && !login.contains(':'))
                .map(str::to_owned)
                .ok_or_else(|| CertRefusal::ForeignPrincipal {
                    principal: principal.clone(),
                    cluster: cluster.to_owned(),
                })
        })
        .collect()
}

fn check_critical_options(cert: &Certificate, peer: Option<IpAddr>) -> Result<(), CertRefusal> {
    for (name, value) in cert.critical_options().iter() {
        if name != OPT_SOURCE_ADDRESS {
            return Err(CertRefusal::UnknownCriticalOption { name: name.clone() });
        }
        let networks = value
            .split(',')
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertRefusal::BadSourceAddress {
                value: value.clone(),
                reason: e.to_string(),
            })?;
        if !peer.is_some_and(|ip| networks.iter().any(|n| n.contains(ip))) {
            return Err(CertRefusal::SourceAddressMismatch {
                peer,
                allowed: value.clone(),
            });
        }
    }
    Ok(())
}
