//! Shipping spooled records to the broker, in batches signed at their head, until acknowledged.

use std::sync::Arc;

use sallyport_audit::writers::ChainKind;

use super::{MAX_BATCH_BYTES, Spool};

/// Why a batch did not reach the broker.
#[derive(Debug)]
pub enum ShipError {
    /// 413: the batch is over the broker's limit; send a smaller one.
    TooLarge,
    /// The broker refused the batch (400, 403, 409): its records or its signature are not what
    /// this chain's writer may send. The data plane never writes such a record, so this is a
    /// bug or tampering (or a broker older than the data plane): said loudly, retried slowly,
    /// and the records stay spooled (nothing is dropped).
    Refused(String),
    Other(anyhow::Error),
}

/// The longest wait between two tries of a batch the broker refused.
const REFUSED_BACKOFF: std::time::Duration = std::time::Duration::from_secs(60);

/// Ship spooled records to the broker until acknowledged; runs forever. Batches are sized in
/// bytes ([`MAX_BATCH_BYTES`]) and halved when the broker says one is too large (down to a
/// single record), so no record and no backlog can wedge shipping. Each batch carries the
/// signature of its last record's hash (the chain's head as of that batch, which covers every
/// earlier record) and the spool's head; when a batch cannot be sent, the head alone is
/// reported, so the broker knows how far behind it is. A batch the broker refuses is never
/// dropped: it is logged as an error (with the broker's reason) and tried again, and the head
/// report makes `sallyport audit verify` show the chain as INCOMPLETE meanwhile.
pub async fn ship<K: ChainKind>(spool: Arc<Spool<K>>, broker: crate::broker_client::BrokerClient) {
    let mut backoff = std::time::Duration::from_millis(200);
    let mut budget = MAX_BATCH_BYTES;
    let mut reported = None;
    let public_key = match spool.public_key().to_openssh() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the audit key: nothing is shipped");
            return;
        }
    };
    // What the broker acknowledged in this run: when the `acked` file cannot be written (a full
    // disk), shipping goes on from here rather than sending the same batch again and again.
    let mut acked_here = 0;
    loop {
        let acked = spool.acked().max(acked_here);
        let head = spool.head();
        let batch = match spool.pending(acked, budget) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "audit spool unreadable");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                reported = Some(head);
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), spool.appended.notified())
                    .await;
            continue;
        }
        let (last, last_hash) = batch
            .last()
            .map(|r| (r.seq, r.hash.clone()))
            .unwrap_or_default();
        let signature = match spool.sign_head(last, &last_hash) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign the audit chain's head: records stay spooled");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        match broker
            .post_records(&batch, head, Some((&signature, &public_key)))
            .await
        {
            Ok(()) => {
                reported = Some(head);
                acked_here = last;
                budget = (budget * 2).min(MAX_BATCH_BYTES);
                if let Err(e) = spool.set_acked(last, &last_hash) {
                    // The records are safe at the broker (a restart sends them again, and the
                    // broker takes a record it has once); their segments stay until the
                    // acknowledgement can be written. Not a loop: wait before the next batch.
                    tracing::error!(error = %e, "cannot record the broker's acknowledgement");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                } else {
                    backoff = std::time::Duration::from_millis(200);
                }
            }
            Err(ShipError::TooLarge) if batch.len() > 1 => {
                budget = (budget / 2).max(1);
                tracing::warn!(
                    records = batch.len(),
                    budget,
                    "the broker refused a batch as too large: sending smaller ones"
                );
            }
            Err(ShipError::Refused(reason)) => {
                tracing::error!(
                    source = spool.source(),
                    first = batch[0].seq,
                    last,
                    reason,
                    "the broker REFUSED audit records of this chain: they stay spooled and are \
                     tried again; this is a bug or tampering (or a broker older than this \
                     gateway or edge): tell the operator"
                );
                if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                    reported = Some(head);
                }
                backoff = REFUSED_BACKOFF.min(backoff.max(std::time::Duration::from_secs(5)) * 2);
                tokio::time::sleep(backoff).await;
            }
            Err(e) => {
                let e = match e {
                    ShipError::TooLarge => anyhow::anyhow!(
                        "record {} alone is larger than the broker's max_ingest_bytes",
                        batch[0].seq
                    ),
                    ShipError::Refused(reason) => anyhow::anyhow!(reason),
                    ShipError::Other(e) => e,
                };
                tracing::warn!(error = %e, pending = head.saturating_sub(acked), "audit records not shipped yet: they stay spooled");
                if reported != Some(head) && broker.post_records(&[], head, None).await.is_ok() {
                    reported = Some(head);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
}
