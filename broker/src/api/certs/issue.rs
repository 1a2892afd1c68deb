//! `POST /v1/certificates`: the facts gathered (the directory's groups now, the ticket, the
//! approvals, a just-in-time request), the policy's decision, then the certificate and its
//! grant, recorded with its event.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use russh::keys::PublicKey;
use russh::keys::ssh_key::HashAlg;
use sallyport_api::requests::IssuePending;
use sallyport_ca::clock::now_secs;
use sallyport_ca::policy::{
    ApprovalFacts, Decision, GrantIds, IssueFacts, RequestFacts, RequestStatus, TicketFacts,
};
use sallyport_ca::{KeyId, build_user_cert, cert::random_serial};

use super::denied::{denied, deny_reason, directory_refused};
use super::{IssueRequest, Issued};
use crate::api::{Body, check_name, not_the_caller, permit};
use crate::audit::AuditEvent;
use crate::auth::{Caller, random_id};
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{AccessRequest, GrantRow, RequestState};

pub(super) async fn issue(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<IssueRequest>,
) -> ApiResult<Response> {
    permit(&b, &caller, Action::IssueCertificate, Scope::None).await?;
    let Caller::Engineer { uid, groups, mfa } = &caller else {
        return Err(not_the_caller(Action::IssueCertificate));
    };
    let (uid, login_groups, mfa) = (uid.clone(), groups.clone(), *mfa);
    let public_key = PublicKey::from_openssh(req.public_key.trim())
        .map_err(|_| ApiError::BadRequest("public_key is not an OpenSSH public key".into()))?;
    check_name("ticket", &req.ticket)?;
    if let Some(c) = &req.cluster {
        check_name("cluster", c)?;
    }
    if let Some(ls) = &req.logins {
        for l in ls {
            check_name("login", l)?;
        }
    }
    // The groups the directory lists now, not those read at login: an engineer removed from a
    // group cannot mint certificates with a session token that is still valid.
    let groups = match b.directory().current_groups(&uid).await {
        Ok(g) => g,
        Err(e) => {
            let cluster = req.cluster.clone().unwrap_or_default();
            return Err(directory_refused(&b, &uid, &req.ticket, &cluster, e).await);
        }
    };
    let dropped: Vec<String> = login_groups
        .iter()
        .filter(|g| !groups.contains(g))
        .cloned()
        .collect();
    // The ticket, the cluster and its approvals in one read; the customer's policies and the
    // engineer's open request only when that read says there are any.
    let reads = b
        .store
        .issue_reads(&req.ticket, req.cluster.as_deref(), &uid)
        .await?;
    let Some(reads) = reads else {
        let cluster = req.cluster.clone().unwrap_or_default();
        return Err(denied(
            &b,
            &uid,
            &req.ticket,
            &cluster,
            vec![deny_reason(
                "ticket_unknown",
                "no such ticket: check the ticket id",
            )],
        )
        .await);
    };
    let ticket = reads.ticket;
    let cluster_id = req
        .cluster
        .clone()
        .unwrap_or_else(|| ticket.cluster.clone());
    let Some(cluster) = reads.cluster else {
        return Err(denied(
            &b,
            &uid,
            &ticket.id,
            &cluster_id,
            vec![deny_reason("cluster_unknown", "no such cluster")],
        )
        .await);
    };
    let approvals = reads.approvals;
    let request = if reads.open_request {
        b.store
            .latest_request(&uid, &ticket.id, &cluster.id)
            .await?
    } else {
        None
    };
    let stored_policies = if reads.customer_policies {
        b.store.policies(&cluster.customer).await?
    } else {
        Vec::new()
    };
    let customer_policies = {
        let mut out = Vec::new();
        for p in stored_policies {
            // Saved policies were checked when saved; one that no longer checks (a newer
            // schema) denies rather than being skipped.
            match b.engine.check_customer_policies(&p.body) {
                Ok(mut ps) => out.append(&mut ps),
                Err(e) => {
                    return Err(denied(
                        &b,
                        &uid,
                        &ticket.id,
                        &cluster.id,
                        vec![deny_reason(
                            "customer_policy_invalid",
                            &format!(
                                "the customer's policy {} is invalid ({e}); access is refused",
                                p.name
                            ),
                        )],
                    )
                    .await);
                }
            }
        }
        out
    };
    let facts = IssueFacts {
        engineer: uid.clone(),
        groups,
        mfa,
        customer: cluster.customer.clone(),
        cluster: cluster.id.clone(),
        ticket: TicketFacts {
            id: ticket.id.clone(),
            status: ticket.status.clone(),
            assignee: ticket.assignee.clone(),
            customer: ticket.customer.clone(),
            cluster: ticket.cluster.clone(),
        },
        approvals: approvals
            .iter()
            .map(|a| ApprovalFacts {
                id: a.id.clone(),
                group: a.group.clone(),
                cluster: a.cluster.clone(),
                logins: a.logins.clone(),
                valid_from: a.valid_from,
                valid_until: a.valid_until,
                withdrawn: a.withdrawn_at.is_some(),
                just_in_time: a.just_in_time,
                max_session_secs: a.max_session_secs,
                per_session_mfa: a.per_session_mfa,
                observer_required: a.observer_required,
                port_forwarding: a.port_forwarding,
                source_networks: a.source_networks.clone(),
            })
            .collect(),
        requested_logins: req.logins.clone(),
        request: request.as_ref().and_then(|r| {
            let status = match r.status {
                RequestState::Pending => RequestStatus::Pending,
                RequestState::Approved => RequestStatus::Approved,
                RequestState::Denied => RequestStatus::Denied,
                // Not a request the decision may use.
                RequestState::Void | RequestState::Superseded | RequestState::Used => {
                    return None;
                }
            };
            Some(RequestFacts {
                id: r.id.clone(),
                approval: r.approval.clone(),
                status,
                logins: r.logins.clone(),
                ttl_secs: r.ttl_secs,
            })
        }),
        now: now_secs(),
        max_ttl: b.cfg.ca.max_ttl_secs,
        requested_ttl: req.ttl_secs,
    };
    let ids = GrantIds {
        id: format!("g-{}", &random_id()[..16]),
        serial: random_serial(),
    };
    let grant = match b.engine.decide(&facts, &customer_policies, ids) {
        Decision::Allow(g) => g,
        Decision::Deny {
            reasons,
            needs_request: Some(approval),
        } => {
            // Just in time: wait for the customer's approvers. The request names what they
            // approve: the logins (asked for, else every login of the approval) and the
            // lifetime (asked for, else the longest the approval and the vendor allow). One
            // pending request per engineer, ticket and approval: asking again for the same
            // returns it; asking for something else replaces it.
            let Some(terms) = approvals.iter().find(|a| a.id == approval) else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "the policy named an approval that is not in the facts"
                )));
            };
            let logins = req.logins.clone().unwrap_or_else(|| terms.logins.clone());
            let ttl_secs = req
                .ttl_secs
                .unwrap_or(u64::MAX)
                .min(terms.max_session_secs)
                .min(b.cfg.ca.max_ttl_secs);
            let pending =
                request.filter(|r| r.status == RequestState::Pending && r.approval == approval);
            let same = pending
                .as_ref()
                .is_some_and(|r| r.logins == logins && r.ttl_secs == ttl_secs);
            let mut used = None;
            let r = match pending.filter(|_| same) {
                Some(r) => r,
                None => {
                    // The engineer's last request already gave its one certificate: the answer
                    // says so, and the refusal of a second certificate is audited.
                    used = b
                        .store
                        .last_request_used(&uid, &ticket.id, &cluster.id)
                        .await?;
                    b.store
                        .supersede_requests(&uid, &ticket.id, &cluster.id)
                        .await?;
                    let r = AccessRequest {
                        id: format!("rq-{}", &random_id()[..16]),
                        engineer: uid.clone(),
                        ticket: ticket.id.clone(),
                        cluster: cluster.id.clone(),
                        approval: approval.clone(),
                        status: RequestState::Pending,
                        created_at: now_secs(),
                        decided_by: None,
                        decided_at: None,
                        reason: None,
                        logins,
                        ttl_secs,
                        approvers_required: terms.approvers_required.max(1),
                        approved_by: Vec::new(),
                    };
                    b.store.create_request(&r).await?;
                    b.store
                        .audit(&AuditEvent::AccessRequestCreated {
                            request: r.id.clone(),
                            engineer: uid.clone(),
                            ticket: ticket.id.clone(),
                            cluster: cluster.id.clone(),
                            approval,
                            logins: r.logins.clone(),
                            ttl_secs: r.ttl_secs,
                            approvers_required: r.approvers_required,
                        })
                        .await?;
                    r
                }
            };
            let mut message = reasons
                .first()
                .map(|r| r.message.clone())
                .unwrap_or_default();
            if let Some(used) = &used {
                let why = format!(
                    "access request {used} already gave its one certificate: a new certificate \
                     needs a new request, and {} now waits for the customer's approvers",
                    r.id
                );
                let event = AuditEvent::CertificateDenied {
                    engineer: uid.clone(),
                    ticket: ticket.id.clone(),
                    cluster: cluster.id.clone(),
                    reasons: vec![deny_reason("request_used", &why)],
                };
                b.store.audit(&event).await?;
                message = format!("{why} ({message})");
            }
            return Ok((
                StatusCode::ACCEPTED,
                Json(IssuePending {
                    status: "pending".into(),
                    message,
                    request: r,
                    used_request: used,
                }),
            )
                .into_response());
        }
        Decision::Deny { mut reasons, .. } => {
            if !dropped.is_empty() {
                reasons.insert(
                    0,
                    deny_reason(
                        "groups_changed",
                        &format!(
                            "the directory no longer lists you in {} (groups are read again for \
                             each certificate)",
                            dropped.join(", ")
                        ),
                    ),
                );
            }
            return Err(denied(&b, &uid, &ticket.id, &cluster.id, reasons).await);
        }
    };
    // A just-in-time request yields one certificate: taken atomically, so two logins racing
    // on one approval (on any replica) get one certificate between them.
    if let Some(request) = grant.request()
        && !b.store.consume_request(request).await?
    {
        return Err(denied(
            &b,
            &uid,
            &ticket.id,
            &cluster.id,
            vec![deny_reason(
                "request_used",
                "this access request was already used for a certificate: log in again to ask the customer for a new one",
            )],
        )
        .await);
    }
    let cert = build_user_cert(&b.user_ca, &public_key, &grant)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let cert_text = cert
        .to_openssh()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let key_id = KeyId::new(
        grant.engineer(),
        grant.ticket(),
        grant.id(),
        grant.cluster(),
    )
    .map_err(|e| ApiError::Internal(e.into()))?
    .to_string();
    let public_text = public_key
        .to_openssh()
        .map_err(|e| ApiError::Internal(e.into()))?;
    let row = GrantRow {
        id: grant.id().into(),
        engineer: grant.engineer().into(),
        ticket: grant.ticket().into(),
        customer: grant.customer().into(),
        cluster: grant.cluster().into(),
        approval: grant.approval().into(),
        request: grant.request().map(str::to_string),
        logins: grant.logins().to_vec(),
        serial: grant.serial().to_string(),
        key_id: key_id.clone(),
        ca_fingerprint: b
            .user_ca
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string(),
        public_key: public_text.clone(),
        certificate: cert_text.clone(),
        valid_after: grant.valid_after(),
        valid_before: grant.valid_before(),
        created_at: now_secs(),
        revoked_at: None,
        revoked_reason: None,
    };
    // The grant and its event in one transaction: never a certificate without its record.
    let issued = AuditEvent::CertificateIssued {
        engineer: row.engineer.clone(),
        ticket: row.ticket.clone(),
        cluster: row.cluster.clone(),
        customer: row.customer.clone(),
        grant: row.id.clone(),
        approval: row.approval.clone(),
        request: row.request.clone(),
        serial: row.serial.clone(),
        key_id: key_id.clone(),
        logins: row.logins.clone(),
        valid_after: row.valid_after,
        valid_before: row.valid_before,
        public_key: public_key.fingerprint(HashAlg::Sha256).to_string(),
    };
    b.store.insert_grant_audited(&row, &issued).await?;
    let (host_ca_public_keys, registered) = b.store.jump_reads(&row.cluster).await?;
    let jump = crate::api::jump::Jump::of(&b.live(), &registered, now_secs());
    Ok(Json(Issued {
        certificate: cert_text,
        serial: row.serial,
        key_id,
        grant: row.id,
        engineer: row.engineer,
        ticket: row.ticket,
        customer: row.customer,
        cluster: row.cluster,
        logins: row.logins,
        valid_after: row.valid_after,
        valid_before: row.valid_before,
        permit_port_forwarding: grant.permit_port_forwarding(),
        per_session_mfa: grant.per_session_mfa(),
        edge: jump.edges.first().cloned(),
        edges: jump.edges,
        host_ca_public_keys,
        edge_host_keys: jump.host_keys,
    })
    .into_response())
}
