//! Reading the audit log: search (one JSON object per event) and chains for verification.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use sallyport_api::audit::{
    AuditChain, AuditEntry, AuditEvents, AuditHead, AuditKey, AuditKeys, AuditSignatures,
    AuditSources, UnsealRequest, Unsealed,
};
use serde::Deserialize;

use super::permit;
use crate::audit::{AuditEvent, AuditRecord};
use crate::auth::Caller;
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{AuditCursor, AuditQuery};

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/audit/events", get(search))
        .route("/v1/audit/sources", get(sources))
        .route("/v1/audit/chain", get(chain))
        .route("/v1/audit/signatures", get(signatures))
        .route("/v1/audit/keys", get(keys))
        .route("/v1/audit/unseal", post(unseal))
}

/// Open a line a gateway sealed: only an `input_hidden` event, only with a reason, only for a
/// reviewer; the act is in the broker's own chain before the text is given out.
pub(crate) async fn unseal(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Json(req): Json<UnsealRequest>,
) -> ApiResult<Json<Unsealed>> {
    permit(&b, &caller, Action::OpenHiddenInput, Scope::None).await?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::BadRequest(
            "give the reason for opening it (1 to 500 characters): it is kept in the audit log"
                .into(),
        ));
    }
    let not_found = || ApiError::NotFound(format!("audit event {}#{}", req.source, req.seq));
    let record = b
        .store
        .audit_chain(&req.source, req.seq.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|r| r.seq == req.seq)
        .ok_or_else(not_found)?;
    if record.kind != "input_hidden" {
        return Err(ApiError::Unprocessable(format!(
            "{}#{} is a {} event: only input_hidden events hold a sealed line",
            req.source, req.seq, record.kind
        )));
    }
    let field = |k: &str| record.data.get(k);
    let text_of = |k: &str| field(k).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(session), Some(channel), Some(line)) = (
        text_of("session"),
        field("channel").and_then(|v| v.as_u64()),
        field("line").and_then(|v| v.as_u64()),
    ) else {
        return Err(ApiError::Unprocessable(
            "the event does not say where the line was typed (session, channel, line)".into(),
        ));
    };
    let Some(sealed) = text_of("sealed") else {
        return Err(ApiError::Unprocessable(
            "the event holds no sealed line (written by a gateway of an older version, which \
             kept nothing of it)"
                .into(),
        ));
    };
    let place = sallyport_ca::seal::hidden_line_place(&session, channel, line);
    let text = b.hidden_input.open(&sealed, &place).map_err(|e| {
        ApiError::Unprocessable(format!(
            "the sealed line does not open with this broker's hidden-input key: {e}"
        ))
    })?;
    b.store
        .audit(&AuditEvent::HiddenInputOpened {
            session: session.clone(),
            event: format!("{}#{}", req.source, req.seq),
            by: caller.label(),
            reason: reason.to_string(),
            cluster: text_of("cluster"),
            engineer: text_of("engineer"),
            node: text_of("node"),
        })
        .await?;
    Ok(Json(Unsealed {
        source: req.source,
        seq: req.seq,
        session,
        line,
        text: String::from_utf8_lossy(&text).into_owned(),
    }))
}

/// The audit log's readers: reviewers and the operator.
pub(super) async fn reviewer(b: &Broker, caller: &Caller, action: Action) -> ApiResult<()> {
    permit(b, caller, action, Scope::None).await
}

/// An event as search prints it: `kind`, `time` (RFC 3339), the subject fields (null when the
/// event has none), then the event's own fields.
pub fn flatten(r: &AuditRecord) -> AuditEntry {
    AuditEntry::of(r, crate::timefmt::millis(r.time))
}

pub(crate) async fn search(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(mut q): Query<AuditQuery>,
) -> ApiResult<Json<AuditEvents>> {
    // Reviewers and the operator see every customer; a customer's approver the events on its
    // own clusters (the same search, narrowed here).
    permit(&b, &caller, Action::SearchAudit, Scope::None).await?;
    q.customer = customer_view(&caller).map(str::to_string);
    q.check()
        .map_err(|e| crate::error::ApiError::BadRequest(e.to_string()))?;
    let records = b.store.audit_search(&q).await?;
    // A newest-first page that is full may have more after it: `next` is its cursor (`before`).
    let full = records.len() as u64 == q.page_size();
    let next = match records.last() {
        Some(last) if q.newest_first() && full => Some(AuditCursor::of(last).to_string()),
        _ => None,
    };
    Ok(Json(AuditEvents {
        events: records.iter().map(flatten).collect(),
        next,
    }))
}

async fn sources(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<AuditSources>> {
    reviewer(&b, &caller, Action::AuditSources).await?;
    let heads = b
        .store
        .audit_heads()
        .await?
        .into_iter()
        .map(|(source, reported, reported_at)| AuditHead {
            source,
            reported,
            reported_at,
        })
        .collect();
    Ok(Json(AuditSources {
        sources: b.store.audit_sources().await?,
        heads,
    }))
}

#[derive(Deserialize)]
struct ChainQuery {
    source: String,
    #[serde(default)]
    after_seq: u64,
    limit: Option<u64>,
}

async fn chain(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ChainQuery>,
) -> ApiResult<Json<AuditChain>> {
    reviewer(&b, &caller, Action::AuditChain).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let records = b.store.audit_chain(&q.source, q.after_seq, limit).await?;
    Ok(Json(AuditChain { records }))
}

async fn signatures(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ChainQuery>,
) -> ApiResult<Json<AuditSignatures>> {
    reviewer(&b, &caller, Action::AuditSignatures).await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let signatures = b
        .store
        .audit_signatures(&q.source, q.after_seq, limit)
        .await?;
    Ok(Json(AuditSignatures {
        source: q.source,
        signatures,
    }))
}

/// The public keys that sign each chain: the broker's own (from its data_dir) and those pinned
/// for gateways and edges. `sallyport audit keys` writes them as a file for `audit verify --keys`.
async fn keys(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<AuditKeys>> {
    reviewer(&b, &caller, Action::AuditKeys).await?;
    let mut keys = Vec::new();
    if let Some(k) = b.store.broker_audit_key() {
        let mut k = k.clone();
        k.set_comment("");
        let line = k
            .to_openssh()
            .map_err(|e| crate::error::ApiError::Internal(e.into()))?;
        keys.push(AuditKey {
            source: crate::store::BROKER_SOURCE.into(),
            public_key: line,
            fingerprint: k
                .fingerprint(russh::keys::ssh_key::HashAlg::Sha256)
                .to_string(),
            pinned_at: None,
            pinned_by: "data_dir".into(),
        });
    }
    keys.extend(b.store.audit_keys().await?);
    Ok(Json(AuditKeys { keys }))
}
