//! Audit ingest: a gateway or an edge ships batches of its own hash-chained, signed audit
//! chain; each batch is checked (writer, chain, signature) before anything is stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use crate::api::{Body, not_the_caller, permit, refuse, refuse_by};
use crate::audit::{AuditEvent, AuditRecord, GENESIS};
use crate::auth::Caller;
use crate::authz::{Action, Scope};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::IngestRefusal;
use sallyport_api::gateways::{AuditBatch, BatchStored};
use sallyport_audit::writers::Writer;

/// The audit chain a caller may write, and what bounds what it may say in it
/// ([`sallyport_audit::writers`]): a gateway writes `gateway:<id>` about its own cluster; an
/// edge writes `edge:<name>` about its own connections (of every cluster: engineers of all
/// clusters pass through it). Everyone else is refused.
async fn chain_writer(b: &Broker, caller: &Caller, action: Action) -> ApiResult<Writer> {
    permit(b, caller, action, Scope::None).await?;
    match caller {
        Caller::Gateway { id, cluster } => Ok(Writer::Gateway {
            id: id.clone(),
            cluster: cluster.clone(),
        }),
        Caller::Edge { name } => Ok(Writer::Edge { name: name.clone() }),
        Caller::Operator { .. }
        | Caller::Reviewer { .. }
        | Caller::Approver { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. } => Err(not_the_caller(action)),
    }
}

/// Store a batch of the caller's own chain (a gateway's or an edge's). The batch must be
/// consecutive and chained, and its first record must continue what is stored (or start the
/// chain at seq 1 from 64 zeros). Each record must be of a kind its writer may write, with
/// subject fields it may set ([`sallyport_audit::writers::check`]), and the batch's last record
/// must be signed by the chain's pinned key. Records already stored identically are
/// acknowledged again; a different record at a stored sequence number is a fork: 409, audited.
/// A refusal names the record and the reason, is audited, and stores nothing.
pub(super) async fn ingest(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<AuditBatch>,
) -> ApiResult<Json<BatchStored>> {
    const ACTION: &str = "audit_ingest";
    let writer = chain_writer(&b, &caller, Action::AuditIngest).await?;
    let source = writer.source();
    let cluster = match &writer {
        Writer::Gateway { cluster, .. } => Some(cluster.clone()),
        Writer::Edge { .. } => None,
    };
    let records = req.records;
    if let Some(head) = req.head {
        b.store.report_audit_head(&source, head).await?;
    }
    let refused = |reason: String, error: ApiError| {
        let b = b.clone();
        let caller = caller.clone();
        let cluster = cluster.clone();
        async move {
            refuse_by(
                &b,
                &caller.label(),
                ACTION,
                &reason,
                None,
                cluster.as_deref(),
                error,
            )
            .await
        }
    };
    if records.iter().any(|r| r.source != source) {
        return Err(refuse(
            &b,
            &caller,
            ACTION,
            &format!("a gateway or an edge may only write its own chain (source {source:?})"),
            None,
            cluster.as_deref(),
        )
        .await);
    }
    for r in &records {
        let bad = |m: String| ApiError::BadRequest(format!("record {}: {m}", r.seq));
        if r.seq == 0 {
            return Err(bad("sequence numbers start at 1".into()));
        }
        if r.compute_hash() != r.hash {
            return Err(bad("hash does not match the record's contents".into()));
        }
        // What this source may say: its kinds, its subject fields, valid names, its own
        // cluster (a gateway) or its own connections (an edge).
        if let Err(why) = sallyport_audit::writers::check(&writer, &r.kind, &r.data) {
            let reason = format!("record {} of {source} refused: {why}", r.seq);
            return Err(refused(reason.clone(), ApiError::Forbidden(reason)).await);
        }
    }
    for w in records.windows(2) {
        if w[1].seq != w[0].seq + 1 {
            return Err(ApiError::BadRequest(format!(
                "record {} follows record {}: send consecutive records in order",
                w[1].seq, w[0].seq
            )));
        }
    }
    let fork = |seq: u64, why: &str| {
        let reason = format!("record {seq} of {source} {why}");
        refused(reason.clone(), ApiError::Conflict(reason))
    };
    for w in records.windows(2) {
        if w[1].prev_hash != w[0].hash {
            return Err(fork(
                w[1].seq,
                "does not continue the record before it (prev_hash)",
            )
            .await);
        }
    }
    if let Some(first) = records.first() {
        let want = if first.seq == 1 {
            Some(GENESIS.to_string())
        } else {
            b.store.audit_hash(&source, first.seq - 1).await?
        };
        match want {
            None => {
                let head = b.store.audit_head(&source).await?.map_or(0, |(s, _)| s);
                return Err(ApiError::Conflict(format!(
                    "the broker holds {source} through record {head}: send from record {}",
                    head + 1
                )));
            }
            Some(h) if h != first.prev_hash => {
                return Err(fork(
                    first.seq,
                    "does not continue the stored chain (prev_hash): the chain forks",
                )
                .await);
            }
            Some(_) => {}
        }
    }
    // The batch's last record, signed by the chain's key: it covers the whole batch (and every
    // stored record before it) through the hash chain checked above.
    let signature = match records.last() {
        Some(last) => {
            match check_signature(&b, &source, last, &req.signature, &req.public_key).await? {
                Ok(sig) => Some(sig),
                Err((reason, error)) => return Err(refused(reason, error).await),
            }
        }
        None => None,
    };
    let stored = match b.store.ingest(&records).await {
        Ok(n) => n,
        Err(e) => match e.downcast_ref::<IngestRefusal>() {
            Some(IngestRefusal::Fork { seq, .. }) => {
                return Err(fork(*seq, "differs from the stored one: the chain forks").await);
            }
            Some(IngestRefusal::BadHash { seq, .. }) => {
                return Err(ApiError::BadRequest(format!(
                    "record {seq}: hash does not match the record's contents"
                )));
            }
            None => return Err(ApiError::Internal(e)),
        },
    };
    if let (Some(last), Some(signature)) = (records.last(), signature) {
        b.store
            .store_signature(&source, last.seq, &last.hash, &signature)
            .await?;
    }
    // Every stored record's predecessor was stored first, so the head is contiguous from 1.
    let head = b.store.audit_head(&source).await?.map_or(0, |(s, _)| s);
    Ok(Json(BatchStored {
        stored,
        acknowledged_through: head,
    }))
}

/// Check the signature of a batch's last record against the key pinned for `source` (pinned
/// here, audited, when the chain has none yet: an edge's first signed batch, or a gateway
/// enrolled before chains were signed). `Ok(Err((reason, answer)))`: refused.
async fn check_signature(
    b: &Broker,
    source: &str,
    last: &AuditRecord,
    signature: &Option<String>,
    public_key: &Option<String>,
) -> ApiResult<Result<String, (String, ApiError)>> {
    use sallyport_ca::chainsig::{audit_public_key, verify_head};
    let bad = |m: String| Ok(Err((m.clone(), ApiError::BadRequest(m))));
    let forbidden = |m: String| Ok(Err((m.clone(), ApiError::Forbidden(m))));
    let seq = last.seq;
    let Some(signature) = signature else {
        return bad(format!(
            "record {seq}: the batch is not signed: a batch of {source} carries the signature of \
             its last record by the chain's key (signature, public_key)"
        ));
    };
    if signature.len() > 4096 {
        return bad(format!("record {seq}: the signature is too long"));
    }
    let offered = match public_key.as_deref().map(audit_public_key) {
        None => None,
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => return bad(format!("record {seq}: public_key: {e}")),
    };
    let pinned = b.store.audit_key(source).await?;
    let (key, to_pin) = match (pinned, offered) {
        (Some((line, fp)), offered) => {
            if let Some((_, offered_line, offered_fp)) = &offered
                && *offered_line != line
            {
                return forbidden(format!(
                    "record {seq}: the batch is signed by the key {offered_fp}, not by the key \
                     pinned for {source} ({fp})"
                ));
            }
            let Ok((key, _, _)) = audit_public_key(&line) else {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "the key pinned for {source} does not parse"
                )));
            };
            (key, None)
        }
        (None, Some((key, line, fp))) => (key, Some((line, fp))),
        (None, None) => {
            return bad(format!(
                "record {seq}: no key is pinned for {source} yet: send the chain's public_key \
                 with the batch"
            ));
        }
    };
    if let Err(e) = verify_head(&key, source, seq, &last.hash, signature) {
        return forbidden(format!(
            "record {seq}: the signature of {source}'s head does not hold: {e}"
        ));
    }
    if let Some((line, fp)) = to_pin {
        if b.store
            .pin_audit_key(source, &line, &fp, "first_batch")
            .await?
        {
            b.store
                .audit(&AuditEvent::AuditKeyPinned {
                    chain: source.to_string(),
                    fingerprint: fp,
                    pinned_by: "first_batch".into(),
                })
                .await?;
        } else if b.store.audit_key(source).await?.map(|(l, _)| l) != Some(line) {
            return forbidden(format!(
                "record {seq}: another key was pinned for {source} meanwhile"
            ));
        }
    }
    Ok(Ok(signature.clone()))
}
