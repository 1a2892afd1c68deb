//! Appending to the broker's own chain: many appends in one transaction (group commit).
//!
//! An append is queued, then its task waits for the writer's lock. Whoever holds the lock takes
//! everything queued, continues the stored head with it in one transaction — each record signed,
//! each with the rows that must be stored with it (the grant a `certificate_issued` tells of) —,
//! commits, and only then answers each appender with its record. So an appender is answered only
//! once its record is durable, and a grant is never stored without its event: a crash loses both
//! or neither. Appenders that arrive while a transaction is written are queued for the next one:
//! one durable write serves all of them.

use std::time::Duration;

use sallyport_ca::clock::now_ms;
use serde_json::Value;
use sqlx::Row;
use tokio::sync::oneshot;

use super::audit::{insert_records, insert_signatures};
use super::grants::{insert_grant_query, insert_grants};
use super::{BROKER_SOURCE, GrantRow, Store, to_u64};
use crate::audit::{AuditEvent, AuditRecord};

/// Records per transaction at most.
const MAX_GROUP: usize = 256;
/// Tries of a group (another replica may take the same sequence number first).
const ATTEMPTS: u64 = 50;

/// The queue of appends and the writer's lock, shared by the clones of a [`Store`].
#[derive(Default)]
pub(super) struct Appends {
    queue: std::sync::Mutex<Vec<Pending>>,
    writer: tokio::sync::Mutex<()>,
}

/// An append waiting for the writer.
struct Pending {
    kind: &'static str,
    data: Value,
    /// Stored in the event's transaction, before it.
    grant: Option<GrantRow>,
    reply: oneshot::Sender<anyhow::Result<AuditRecord>>,
}

impl Store {
    /// Append an event to the broker's chain; answered once it is durable.
    pub async fn audit(&self, event: &AuditEvent) -> anyhow::Result<AuditRecord> {
        self.append(event, None).await
    }

    /// Store a grant and the event that tells of it (`certificate_issued`) in one transaction:
    /// both or neither.
    pub async fn insert_grant_audited(
        &self,
        grant: &GrantRow,
        event: &AuditEvent,
    ) -> anyhow::Result<AuditRecord> {
        self.append(event, Some(grant.clone())).await
    }

    async fn append(
        &self,
        event: &AuditEvent,
        grant: Option<GrantRow>,
    ) -> anyhow::Result<AuditRecord> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            kind: event.kind(),
            data: event.data(),
            grant,
            reply,
        };
        // In a task of its own: an appender that stops waiting (its request dropped) never
        // stops the write of the records queued with its own.
        let store = self.clone();
        tokio::spawn(async move { store.write_queued(pending).await });
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the audit append was abandoned"))?
    }

    /// Queue `pending`, then write what is queued once this task holds the writer's lock (an
    /// earlier writer may have taken `pending` with its own group already).
    async fn write_queued(&self, pending: Pending) {
        lock(&self.appends.queue).push(pending);
        let _writer = self.appends.writer.lock().await;
        let group: Vec<Pending> = {
            let mut queue = lock(&self.appends.queue);
            let n = queue.len().min(MAX_GROUP);
            queue.drain(..n).collect()
        };
        if !group.is_empty() {
            self.write_group(group).await;
        }
    }

    /// Write `group` in one transaction, again when another replica appended in between; an
    /// append whose own row the store refuses is answered with that and left out.
    async fn write_group(&self, mut group: Vec<Pending>) {
        let mut failed = 0;
        // The grants go in one statement per run of rows; once the store refused one of them,
        // the group is written again a grant at a time, to learn which.
        let mut one_by_one = false;
        while !group.is_empty() {
            match self.try_append(&group, one_by_one).await {
                Ok(records) => {
                    for (p, r) in group.into_iter().zip(records) {
                        let _ = p.reply.send(Ok(r));
                    }
                    return;
                }
                Err(Failed::Row(i, e)) => {
                    let p = group.remove(i);
                    let _ = p.reply.send(Err(e));
                }
                Err(Failed::Grants) => one_by_one = true,
                Err(Failed::Store(e)) => {
                    failed += 1;
                    if failed >= ATTEMPTS {
                        for p in group {
                            let _ = p.reply.send(Err(anyhow::anyhow!("{e:#}")));
                        }
                        return;
                    }
                    pause(failed).await;
                }
            }
        }
    }

    /// One transaction: the appends of `group` continue the stored head, in order. Each table
    /// gets one statement per run of rows (`columns::runs`), not one per append: the writer
    /// holds the chain's head while it writes, so its round trips are what every appender
    /// waits for.
    async fn try_append(
        &self,
        group: &[Pending],
        one_by_one: bool,
    ) -> Result<Vec<AuditRecord>, Failed> {
        let mut tx = self.pool.begin().await?;
        let head = sqlx::query(
            "SELECT seq, hash FROM audit_events WHERE source = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(BROKER_SOURCE)
        .fetch_optional(&mut *tx)
        .await?;
        let mut prev = match head {
            Some(r) => Some((
                to_u64(r.try_get::<i64, _>("seq")?),
                r.try_get::<String, _>("hash")?,
            )),
            None => None,
        };
        let grants: Vec<(usize, &GrantRow)> = group
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.grant.as_ref().map(|g| (i, g)))
            .collect();
        if one_by_one {
            for (i, grant) in &grants {
                if let Err(e) = insert_grant_query(grant).execute(&mut *tx).await {
                    return Err(if refused(&e) {
                        Failed::Row(*i, e.into())
                    } else {
                        e.into()
                    });
                }
            }
        } else {
            let rows: Vec<&GrantRow> = grants.iter().map(|(_, g)| *g).collect();
            if let Err(e) = insert_grants(&mut tx, &rows).await {
                return Err(match (refused(&e), grants.as_slice()) {
                    (true, [(i, _)]) => Failed::Row(*i, e.into()),
                    (true, _) => Failed::Grants,
                    (false, _) => e.into(),
                });
            }
        }
        let mut records = Vec::with_capacity(group.len());
        let mut heads = Vec::with_capacity(group.len());
        for p in group {
            let record = AuditRecord::next(
                BROKER_SOURCE,
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                now_ms(),
                p.kind,
                p.data.clone(),
            );
            // Each record of the broker's chain is signed as it is written, in the same
            // transaction: someone who can write the database but not read the key cannot make
            // a record whose hash chain leads to a signed head.
            if let Some(key) = &self.audit_key {
                let sig =
                    sallyport_ca::chainsig::sign_head(key, BROKER_SOURCE, record.seq, &record.hash)
                        .map_err(anyhow::Error::from)?;
                heads.push((record.seq, record.hash.clone(), sig));
            }
            prev = Some((record.seq, record.hash.clone()));
            records.push(record);
        }
        insert_records(&mut tx, &records).await?;
        insert_signatures(&mut tx, BROKER_SOURCE, &heads).await?;
        tx.commit().await?;
        Ok(records)
    }
}

/// Why a group was not stored.
enum Failed {
    /// The store refused the row of the append at this index (a grant whose serial is taken):
    /// that append fails, the others may be tried again without it.
    Row(usize, anyhow::Error),
    /// The store refused one of the grants written together: which one, writing them one at a
    /// time tells.
    Grants,
    /// Anything else: another replica appended first, the database was busy or away.
    Store(anyhow::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Failed {
        Failed::Store(e.into())
    }
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Failed {
        Failed::Store(e)
    }
}

/// The database refused the row itself (a constraint), as opposed to failing to store it.
fn refused(e: &sqlx::Error) -> bool {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::Database(db) => matches!(
            db.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        ),
        _ => false,
    }
}

/// After `failed` tries: 5 ms, then 3 ms longer after each.
async fn pause(failed: u64) {
    tokio::time::sleep(Duration::from_millis(2 + failed * 3)).await;
}

/// The queue's lock (a panic while it was held leaves a queue that is still whole).
fn lock(queue: &std::sync::Mutex<Vec<Pending>>) -> std::sync::MutexGuard<'_, Vec<Pending>> {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::super::tests::empty_store;
    use super::super::{BROKER_SOURCE, GrantRow, Store};
    use crate::audit::AuditEvent;

    fn grant(id: &str, serial: &str) -> GrantRow {
        GrantRow {
            id: id.into(),
            engineer: "alice".into(),
            ticket: "SUP-1".into(),
            customer: "acme".into(),
            cluster: "acme-prod".into(),
            approval: "ap-1".into(),
            request: None,
            logins: vec!["ubuntu".into()],
            serial: serial.into(),
            key_id: format!("key-{id}"),
            ca_fingerprint: "SHA256:ca".into(),
            public_key: "ssh-ed25519 AAAA".into(),
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAA".into(),
            valid_after: 1,
            valid_before: u64::MAX >> 2,
            created_at: 1,
            revoked_at: None,
            revoked_reason: None,
        }
    }

    fn issued(g: &GrantRow) -> AuditEvent {
        AuditEvent::CertificateIssued {
            engineer: g.engineer.clone(),
            ticket: g.ticket.clone(),
            cluster: g.cluster.clone(),
            customer: g.customer.clone(),
            grant: g.id.clone(),
            approval: g.approval.clone(),
            request: None,
            serial: g.serial.clone(),
            key_id: g.key_id.clone(),
            logins: g.logins.clone(),
            valid_after: g.valid_after,
            valid_before: g.valid_before,
            public_key: "SHA256:pk".into(),
        }
    }

    /// Many appenders at once, several in one transaction: each is answered with its own
    /// record, the chain holds every one of them once, intact, every record signed; each grant
    /// is stored with its event, and a grant that cannot be stored (its serial taken) fails
    /// alone, leaving neither it nor its event, while those written with it are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_grouped_and_keep_the_chain_whole() {
        let dir = tempfile::tempdir().unwrap();
        let url = empty_store(dir.path()).await;
        let key = sallyport_ca::keys::generate_ed25519("audit").unwrap();
        let public = key.public_key().clone();
        let store = Store::connect(&url).await.unwrap().with_audit_key(key);
        let first = store
            .insert_grant_audited(&grant("g-0", "0"), &issued(&grant("g-0", "0")))
            .await
            .unwrap();
        assert_eq!(first.seq, 1);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 1..=200 {
            let store = store.clone();
            tasks.spawn(async move {
                // Every tenth reuses the first grant's serial: refused by the store.
                let serial = if i % 10 == 0 {
                    "0".into()
                } else {
                    i.to_string()
                };
                let g = grant(&format!("g-{i}"), &serial);
                if i % 2 == 0 {
                    (i, store.insert_grant_audited(&g, &issued(&g)).await)
                } else {
                    let event = AuditEvent::LoginFailed {
                        engineer: format!("e{i}"),
                        code: "bad_password".into(),
                        reason: "test".into(),
                        source_ip: None,
                    };
                    (i, store.audit(&event).await)
                }
            });
        }
        let mut answered = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (i, r) = r.unwrap();
            match r {
                Ok(record) => {
                    assert_ne!(i % 10, 0, "{i} stored with a serial already taken");
                    assert_eq!(record.source, BROKER_SOURCE);
                    answered.push(record);
                }
                Err(e) => assert_eq!(i % 10, 0, "{i}: {e:#}"),
            }
        }
        assert_eq!(answered.len(), 180);
        let chain = store.audit_chain(BROKER_SOURCE, 0, 1000).await.unwrap();
        assert_eq!(chain.len(), 181);
        sallyport_audit::verify_chain(&chain).unwrap();
        answered.sort_by_key(|r| r.seq);
        assert_eq!(answered[..], chain[1..]);
        let heads = store
            .audit_signatures(BROKER_SOURCE, 0, 1000)
            .await
            .unwrap();
        assert_eq!(heads.len(), 181);
        for (h, r) in heads.iter().zip(&chain) {
            assert_eq!((h.seq, &h.hash), (r.seq, &r.hash));
            sallyport_ca::chainsig::verify_head(
                &public,
                BROKER_SOURCE,
                h.seq,
                &h.hash,
                &h.signature,
            )
            .unwrap();
        }
        // Grants and their events: the same set.
        let grants: Vec<String> = sqlx::query("SELECT id FROM grants ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("id"))
            .collect();
        let mut told: Vec<String> = chain
            .iter()
            .filter(|r| r.kind == "certificate_issued")
            .map(|r| r.data["grant"].as_str().unwrap().to_string())
            .collect();
        told.sort();
        assert_eq!(grants, told);
        assert_eq!(grants.len(), 1 + 80);
    }
}
