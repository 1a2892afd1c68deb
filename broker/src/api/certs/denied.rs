//! Refusals of a certificate: audited, then answered.

use crate::audit::AuditEvent;
use crate::error::ApiError;
use crate::state::Broker;

pub(super) fn deny_reason(code: &str, message: &str) -> sallyport_ca::policy::DenyReason {
    sallyport_ca::policy::DenyReason {
        code: code.into(),
        message: message.into(),
    }
}

pub(super) async fn denied(
    b: &Broker,
    engineer: &str,
    ticket: &str,
    cluster: &str,
    reasons: Vec<sallyport_ca::policy::DenyReason>,
) -> ApiError {
    let event = AuditEvent::CertificateDenied {
        engineer: engineer.into(),
        ticket: crate::audit::sanitize(ticket),
        cluster: crate::audit::sanitize(cluster),
        reasons: reasons.clone(),
    };
    if let Err(e) = b.store.audit(&event).await {
        return ApiError::Internal(e);
    }
    ApiError::Denied(reasons)
}

/// The directory could not tell the engineer's groups now: refused (fail closed) and audited.
/// Down or TLS refused: 503, the audit reason says what went wrong in the operator's terms; the
/// engineer gone from the directory: a denial.
pub(super) async fn directory_refused(
    b: &Broker,
    engineer: &str,
    ticket: &str,
    cluster: &str,
    e: crate::directory::DirectoryError,
) -> ApiError {
    use crate::directory::DirectoryError as E;
    match &e {
        E::Unavailable(_) | E::Tls(_) => {
            tracing::warn!(engineer, detail = %e.detail(), "directory unavailable at issuance");
            let event = AuditEvent::CertificateDenied {
                engineer: engineer.into(),
                ticket: crate::audit::sanitize(ticket),
                cluster: crate::audit::sanitize(cluster),
                reasons: vec![deny_reason(e.code(), &e.detail())],
            };
            if let Err(err) = b.store.audit(&event).await {
                return ApiError::Internal(err);
            }
            ApiError::Unavailable(format!(
                "{e} (your groups are read again for each certificate)"
            ))
        }
        E::NotInDirectory | E::BadCredentials => {
            denied(
                b,
                engineer,
                ticket,
                cluster,
                vec![deny_reason(
                    E::NotInDirectory.code(),
                    &E::NotInDirectory.to_string(),
                )],
            )
            .await
        }
    }
}
