//! Reading the audit log: search (one JSON object per event) and chains for verification.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::refuse;
use crate::audit::{AuditRecord, SUBJECT_FIELDS};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::state::Broker;
use crate::store::AuditQuery;

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/audit/events", get(search))
        .route("/v1/audit/sources", get(sources))
        .route("/v1/audit/chain", get(chain))
}

async fn reviewer(b: &Broker, caller: &Caller, action: &str) -> ApiResult<()> {
    match caller {
        Caller::Reviewer { .. } | Caller::Operator { .. } => Ok(()),
        Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Gateway { .. }
        | Caller::Edge { .. } => Err(refuse(
            b,
            caller,
            action,
            "only reviewers and the operator may read the audit log",
            None,
            None,
        )
        .await),
    }
}

/// An event as search prints it: `kind`, `time` (RFC 3339), the subject fields (null when the
/// event has none), then the event's own fields.
pub fn flatten(r: &AuditRecord) -> Value {
    let mut out = serde_json::Map::new();
    if let Value::Object(m) = &r.data {
        for (k, v) in m {
            out.insert(k.clone(), v.clone());
        }
    }
    for f in SUBJECT_FIELDS.iter().chain(["command"].iter()) {
        out.entry(f.to_string()).or_insert(Value::Null);
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.time);
    out.insert("kind".into(), json!(r.kind));
    out.insert(
        "time".into(),
        json!(humantime::format_rfc3339_millis(time).to_string()),
    );
    out.insert("time_ms".into(), json!(r.time));
    out.insert("source".into(), json!(r.source));
    out.insert("seq".into(), json!(r.seq));
    out.insert("hash".into(), json!(r.hash));
    Value::Object(out)
}

async fn search(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    reviewer(&b, &caller, "audit_search").await?;
    let records = b.store.audit_search(&q).await?;
    Ok(Json(
        json!({"events": records.iter().map(flatten).collect::<Vec<_>>()}),
    ))
}

async fn sources(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<Value>> {
    reviewer(&b, &caller, "audit_sources").await?;
    let heads: Vec<Value> = b
        .store
        .audit_heads()
        .await?
        .into_iter()
        .map(|(source, reported, at)| json!({"source": source, "reported": reported, "reported_at": at}))
        .collect();
    Ok(Json(
        json!({"sources": b.store.audit_sources().await?, "heads": heads}),
    ))
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
) -> ApiResult<Json<Value>> {
    reviewer(&b, &caller, "audit_chain").await?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let records = b.store.audit_chain(&q.source, q.after_seq, limit).await?;
    Ok(Json(json!({"records": records})))
}
