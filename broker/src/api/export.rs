//! Evidence an outsider can check: `GET /v1/audit/export` answers a signed bundle (.tar.gz) of the
//! events of a ticket, a session or a customer, the recordings they name and the chain links and
//! signatures that prove them; `GET /v1/audit/key` publishes the broker's audit public key.
//! The layout and what each file proves: `sallyport_audit::bundle` and docs/audit.md.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use russh::keys::ssh_key::HashAlg;
use sallyport_api::audit::BrokerAuditKey;
use sallyport_audit::bundle::{
    self as layout, FORMAT, HeadLine, Manifest, MissingRecording, RECORDING_KINDS, Selection,
};
use sallyport_audit::writers::valid_session;
use serde::Deserialize;
use serde_json::Value;

use super::audit::reviewer;
use super::check_name;
use crate::audit::{AuditEvent, AuditRecord};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{AuditQuery, BROKER_SOURCE};

/// At most this many selected events in one bundle: narrow a larger export by time.
const MAX_EVENTS: usize = 100_000;

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/key", get(key))
}

/// The broker's audit public key as published: (OpenSSH line without comment, fingerprint).
fn broker_key(b: &Broker) -> ApiResult<(String, String)> {
    let k = b
        .store
        .broker_audit_key()
        .ok_or_else(|| ApiError::Unavailable("this broker has no audit key".into()))?;
    let mut k = k.clone();
    k.set_comment("");
    let line = k
        .to_openssh()
        .map_err(|e| ApiError::Internal(e.into()))?
        .trim()
        .to_string();
    Ok((line, k.fingerprint(HashAlg::Sha256).to_string()))
}

/// Public: the key that signs the broker's chain and every bundle's manifest. Compare its
/// fingerprint with the one the broker logs at start, and pin it (`audit verify --keys`).
async fn key(State(b): State<Arc<Broker>>) -> ApiResult<Json<BrokerAuditKey>> {
    let (public_key, fingerprint) = broker_key(&b)?;
    Ok(Json(BrokerAuditKey {
        source: BROKER_SOURCE.into(),
        public_key,
        fingerprint,
    }))
}

#[derive(Deserialize)]
pub(crate) struct ExportQuery {
    pub(crate) ticket: Option<String>,
    pub(crate) session: Option<String>,
    pub(crate) customer: Option<String>,
    /// Unix ms, inclusive.
    pub(crate) since: Option<u64>,
    /// Unix ms, exclusive.
    pub(crate) until: Option<u64>,
}

fn selection(q: ExportQuery) -> ApiResult<Selection> {
    let named = [&q.ticket, &q.session, &q.customer]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if named != 1 {
        return Err(ApiError::BadRequest(
            "name exactly one of ticket, session or customer".into(),
        ));
    }
    if let Some(t) = &q.ticket {
        check_name("ticket", t)?;
    }
    if let Some(c) = &q.customer {
        check_name("customer", c)?;
    }
    if let Some(s) = &q.session
        && !valid_session(s)
    {
        return Err(ApiError::BadRequest(format!(
            "invalid session id {:?}: use letters, digits, '_' and '-' (at most 64)",
            crate::audit::sanitize(s)
        )));
    }
    Ok(Selection {
        ticket: q.ticket,
        session: q.session,
        customer: q.customer,
        since_ms: q.since,
        until_ms: q.until,
    })
}

/// The events a selection names, then the `recording_stored` events of the recordings they
/// name; ordered by time, source and sequence number.
async fn select(b: &Broker, sel: &Selection) -> ApiResult<Vec<AuditRecord>> {
    let base = AuditQuery {
        since: sel.since_ms,
        until: sel.until_ms,
        limit: Some(MAX_EVENTS as u64 + 1),
        ..AuditQuery::default()
    };
    let mut queries = Vec::new();
    if let Some(t) = &sel.ticket {
        queries.push(AuditQuery {
            ticket: Some(t.clone()),
            ..base.clone()
        });
    }
    if let Some(s) = &sel.session {
        queries.push(AuditQuery {
            session: Some(s.clone()),
            ..base.clone()
        });
    }
    if let Some(c) = &sel.customer {
        if !b.store.customer_exists(c).await? {
            return Err(ApiError::NotFound(format!("customer {c}")));
        }
        for cl in b.store.clusters(Some(c.as_str())).await? {
            queries.push(AuditQuery {
                cluster: Some(cl.id),
                ..base.clone()
            });
        }
    }
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut out: Vec<AuditRecord> = Vec::new();
    let mut keep = |r: AuditRecord, out: &mut Vec<AuditRecord>| {
        if seen.insert((r.source.clone(), r.seq)) {
            out.push(r);
        }
    };
    for q in queries {
        for r in b.store.audit_search(&q).await? {
            keep(r, &mut out);
        }
        if out.len() > MAX_EVENTS {
            return Err(ApiError::Rejected(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "more than {MAX_EVENTS} events: export a shorter time range (since, until)"
                ),
            ));
        }
    }
    // What binds each recording: the broker's record of storing it, with its SHA-256.
    for id in recording_ids(&out).0 {
        let q = AuditQuery {
            source: Some(BROKER_SOURCE.into()),
            kind: Some("recording_stored".into()),
            session: Some(id),
            ..AuditQuery::default()
        };
        for r in b.store.audit_search(&q).await? {
            keep(r, &mut out);
        }
    }
    out.sort_by(|a, b| (a.time, &a.source, a.seq).cmp(&(b.time, &b.source, b.seq)));
    Ok(out)
}

/// The recordings events name: (every id named, those whose file exists by an event's word).
fn recording_ids(events: &[AuditRecord]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut named = BTreeSet::new();
    let mut expected = BTreeSet::new();
    for r in events {
        let s = |k: &str| r.data.get(k).and_then(Value::as_str).map(str::to_string);
        let id = if r.kind == "recording_stored" && r.source == BROKER_SOURCE {
            s("session")
        } else {
            s("recording")
        };
        if let Some(id) = id.filter(|id| valid_session(id)) {
            if RECORDING_KINDS.contains(&r.kind.as_str()) {
                expected.insert(id.clone());
            }
            named.insert(id);
        }
    }
    (named, expected)
}

/// For each chain, the records that link each selected event to the first signed head at or
/// after it, and those heads. An event with no signed head after it gets no links.
async fn links(b: &Broker, events: &[AuditRecord]) -> ApiResult<(Vec<AuditRecord>, Vec<HeadLine>)> {
    let mut by_source: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for r in events {
        by_source
            .entry(r.source.as_str())
            .or_default()
            .insert(r.seq);
    }
    let mut links = Vec::new();
    let mut heads = Vec::new();
    for (source, seqs) in &by_source {
        let mut covered = 0u64;
        for &seq in seqs {
            if seq <= covered {
                continue;
            }
            let Some(head) = b
                .store
                .audit_signatures(source, seq - 1, 1)
                .await?
                .into_iter()
                .next()
            else {
                // The unsigned tail: nothing later to link to.
                break;
            };
            if head.seq > seq {
                for r in b.store.audit_chain(source, seq, head.seq - seq).await? {
                    if !seqs.contains(&r.seq) {
                        links.push(r);
                    }
                }
            }
            covered = head.seq;
            heads.push(HeadLine {
                source: source.to_string(),
                seq: head.seq,
                hash: head.hash,
                signature: head.signature,
            });
        }
    }
    Ok((links, heads))
}

/// `keys.txt`: the broker's key and the key pinned for each chain of the bundle.
async fn keys_text(
    b: &Broker,
    broker_line: &str,
    broker_fp: &str,
    sources: &BTreeSet<String>,
) -> ApiResult<String> {
    let mut out = String::from(
        "# The keys that sign the chains of this bundle, as the broker holds them: `<source> \
         <public key>`.\n# Compare them with keys you hold out of band (sallyport audit keys), \
         or verify with --keys FILE.\n",
    );
    out.push_str(&format!(
        "# {BROKER_SOURCE} {broker_fp} (the broker's data_dir)\n{BROKER_SOURCE} {broker_line}\n"
    ));
    for s in sources.iter().filter(|s| *s != BROKER_SOURCE) {
        match b.store.audit_key(s).await? {
            Some((line, fp)) => out.push_str(&format!("# {s} {fp}\n{s} {line}\n")),
            None => out.push_str(&format!("# {s}: no key pinned: its chain is not signed\n")),
        }
    }
    Ok(out)
}

/// A name for the bundle's directory from the selection and the time.
fn root_name(sel: &Selection, created: &str) -> String {
    let what = match (&sel.ticket, &sel.session, &sel.customer) {
        (Some(t), _, _) => format!("ticket-{t}"),
        (_, Some(s), _) => format!("session-{s}"),
        (_, _, Some(c)) => format!("customer-{c}"),
        _ => "events".to_string(),
    };
    let stamp: String = created
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    format!("sallyport-audit-{what}-{stamp}")
}

pub(crate) async fn export(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    reviewer(&b, &caller, crate::authz::Action::ExportAudit).await?;
    let sel = selection(q)?;
    let (broker_line, broker_fp) = broker_key(&b)?;
    let events = select(&b, &sel).await?;
    let (links, heads) = links(&b, &events).await?;
    let sources: BTreeSet<String> = events.iter().map(|r| r.source.clone()).collect();
    let keys = keys_text(&b, &broker_line, &broker_fp, &sources).await?;
    // The recordings: every one an event names that the broker holds; those an event says
    // exist but the broker does not hold are listed as missing.
    let (named, expected) = recording_ids(&events);
    let mut recordings = Vec::new();
    let mut missing = Vec::new();
    for id in &named {
        let held = b.store.recording(id).await?;
        match held {
            Some(r) if b.recordings.exists(&r).await? => recordings.push(r),
            Some(_) => missing.push(MissingRecording {
                id: id.clone(),
                reason: "the broker lists it but its file is missing".into(),
            }),
            None if expected.contains(id) => missing.push(MissingRecording {
                id: id.clone(),
                reason: "the broker does not hold it (not uploaded yet?)".into(),
            }),
            None => {}
        }
    }
    let now = std::time::SystemTime::now();
    let created_ms = sallyport_ca::clock::unix_ms(now);
    let created = humantime::format_rfc3339_seconds(now).to_string();
    let manifest = Manifest {
        format: FORMAT.into(),
        created: created.clone(),
        created_ms,
        by: caller.label(),
        selection: sel.clone(),
        broker_key: broker_line,
        broker_key_fingerprint: broker_fp,
        events: events.len() as u64,
        links: links.len() as u64,
        missing_recordings: missing,
        files: Vec::new(),
    };
    let root = root_name(&sel, &created);
    let contents = crate::bundle::Contents {
        root: root.clone(),
        manifest,
        events,
        links,
        heads,
        keys,
        recordings,
    };
    let tmp = b.cfg.data_dir.join("exports");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    let store = b.store.clone();
    let broker = b.clone();
    let runtime = tokio::runtime::Handle::current();
    let written = tokio::task::spawn_blocking(move || {
        // The recordings are read from where they are kept (a file, or the database's rows)
        // as they are written into the bundle, one at a time.
        let open = |r: &crate::store::Recording| -> anyhow::Result<crate::bundle::Opened> {
            let opened = runtime
                .block_on(broker.recordings.open(r))?
                .ok_or_else(|| anyhow::anyhow!("the recording {} is gone", r.session))?;
            Ok(crate::bundle::Opened {
                size: opened.size,
                reader: Box::new(crate::recordings::Blocking::new(
                    opened.reader,
                    runtime.clone(),
                )),
            })
        };
        crate::bundle::write(
            contents,
            &|bytes: &[u8]| store.sign_bundle_manifest(bytes),
            &open,
            &tmp,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))??;
    let m = &written.manifest;
    b.store
        .audit(&AuditEvent::AuditExported {
            by: caller.label(),
            selection: sel,
            events: m.events,
            links: m.links,
            recordings: m
                .files
                .iter()
                .filter(|f| f.path.starts_with(layout::RECORDINGS))
                .count() as u64,
            missing_recordings: m.missing_recordings.len() as u64,
            manifest_sha256: written.manifest_sha256.clone(),
        })
        .await?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(written.file),
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_LENGTH, written.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{root}.tar.gz\""),
            ),
            (
                header::HeaderName::from_static("x-sallyport-manifest-sha256"),
                written.manifest_sha256,
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_selector_of_plain_names() {
        let q = |t: Option<&str>, s: Option<&str>, c: Option<&str>| ExportQuery {
            ticket: t.map(str::to_string),
            session: s.map(str::to_string),
            customer: c.map(str::to_string),
            since: None,
            until: None,
        };
        assert!(selection(q(Some("SUP-1"), None, None)).is_ok());
        assert!(selection(q(None, Some("s-1_a"), None)).is_ok());
        assert!(selection(q(None, None, Some("acme"))).is_ok());
        assert!(selection(q(None, None, None)).is_err());
        assert!(selection(q(Some("SUP-1"), Some("s"), None)).is_err());
        assert!(selection(q(None, Some("../x"), None)).is_err());
        assert!(selection(q(Some("a b"), None, None)).is_err());
        let name = root_name(
            &Selection {
                ticket: Some("SUP-1".into()),
                ..Selection::default()
            },
            "2026-01-02T03:04:05Z",
        );
        assert_eq!(name, "sallyport-audit-ticket-SUP-1-20260102T030405");
    }
}
