//! The audit log's pages: the chains' state, search, and the access report.

use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::text;
use crate::audit::sanitize;
use crate::authz::{Action, Scope};
use crate::error::ApiError;
use crate::state::Broker;
use crate::store::AuditQuery;
use crate::web::{Viewer, When, api_error, message, render};

/// One chain's state on the chain page.
pub(crate) struct ChainRow {
    pub source: String,
    pub ok: bool,
    pub events: String,
    pub signed_through: String,
    pub reported: String,
    pub verdict: String,
}

#[derive(Template)]
#[template(path = "chains.html")]
struct ChainsPage<'a> {
    nav: Option<&'a Viewer>,
    chains: Vec<ChainRow>,
    all_ok: bool,
}

/// Every source's chain verified now: intact, signed through which record, behind its reported
/// head. Reviewers only (a chain mixes the sessions of every customer of its gateway or edge).
pub async fn chains(State(b): State<Arc<Broker>>, viewer: Viewer) -> Response {
    let allowed = crate::api::decide(&b, &viewer.caller, Action::ConsoleChains, Scope::None).await;
    if !matches!(allowed, Ok(Ok(()))) {
        return message(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "Not allowed",
            "Only the vendor's reviewers see the audit chains. Your sessions' events are on each session's page.".into(),
            "/console/",
            "Go to the overview",
        );
    }
    let result: anyhow::Result<Vec<ChainRow>> = async {
        let heads: std::collections::HashMap<String, u64> = b
            .store
            .audit_heads()
            .await?
            .into_iter()
            .map(|(s, n, _)| (s, n))
            .collect();
        let mut pinned: std::collections::HashMap<String, String> = b
            .store
            .audit_keys()
            .await?
            .into_iter()
            .map(|k| (k.source, k.public_key))
            .collect();
        if let Some(k) = b.store.broker_audit_key() {
            let mut k = k.clone();
            k.set_comment("");
            if let Ok(line) = k.to_openssh() {
                pinned.insert(crate::store::BROKER_SOURCE.to_string(), line);
            }
        }
        let mut sources = b.store.audit_sources().await?;
        for s in heads.keys() {
            if !sources.contains(s) {
                sources.push(s.clone());
            }
        }
        sources.sort();
        let mut rows = Vec::new();
        for s in sources {
            let chain = crate::chains::load(&b.store, &s, pinned.get(&s).cloned()).await?;
            let reported = heads.get(&s).copied();
            let v = tokio::task::spawn_blocking(move || {
                crate::chains::judge(&chain, reported, None, false)
            })
            .await?;
            rows.push(ChainRow {
                source: sanitize(&s),
                ok: v.ok,
                events: v.json["events"].to_string(),
                signed_through: v.json["signed_through"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
                reported: reported
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "—".into()),
                verdict: sanitize(&v.text),
            });
        }
        Ok(rows)
    }
    .await;
    match result {
        Ok(chains) => render(&ChainsPage {
            nav: Some(&viewer),
            all_ok: chains.iter().all(|c| c.ok),
            chains,
        }),
        Err(e) => api_error(&viewer, ApiError::Internal(e), "/console/"),
    }
}

/// The search form's fields (all optional).
#[derive(Deserialize, Default)]
pub struct SearchForm {
    #[serde(default)]
    q: String,
    #[serde(default)]
    engineer: String,
    #[serde(default)]
    ticket: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    before: String,
}

/// A search hit.
pub(crate) struct Hit {
    pub when: When,
    pub kind: String,
    pub engineer: String,
    pub ticket: String,
    pub place: String,
    pub text: String,
    pub session: Option<String>,
    pub replay: Option<String>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    nav: Option<&'a Viewer>,
    f: SearchForm,
    searched: bool,
    hits: Vec<Hit>,
    next: Option<String>,
}

fn non_empty(s: &str) -> Option<String> {
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Search the audit log by text and filters: the API's own search (same authorization), newest
/// first, each hit linked to its session and to its moment in the replay.
pub async fn search(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(f): Query<SearchForm>,
) -> Response {
    let searched = [&f.q, &f.engineer, &f.ticket, &f.cluster, &f.kind]
        .iter()
        .any(|v| !v.trim().is_empty());
    let mut hits = Vec::new();
    let mut next = None;
    if searched {
        let q = AuditQuery {
            q: non_empty(&f.q),
            engineer: non_empty(&f.engineer),
            ticket: non_empty(&f.ticket),
            cluster: non_empty(&f.cluster),
            kind: non_empty(&f.kind),
            // Newest first, in pages: a cursor when paging on, else the far future.
            before: non_empty(&f.before),
            limit: Some(50),
            ..Default::default()
        };
        let q = if q.q.is_none() && q.before.is_none() {
            AuditQuery {
                before: Some(format!("{}:~:0", sallyport_ca::clock::now_ms() + 60_000)),
                ..q
            }
        } else {
            q
        };
        let Json(v) = match crate::api::audit::search(
            State(b.clone()),
            viewer.caller.clone(),
            Query(q),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return api_error(&viewer, e, "/console/search"),
        };
        next = v.next;
        for e in v
            .events
            .iter()
            .map(|e| serde_json::Value::Object(e.to_map()))
        {
            let e = &e;
            let t = |k: &str| sanitize(&text(e, k));
            let main = super::sessions::MAIN_FIELDS
                .iter()
                .map(|k| t(k))
                .find(|s| !s.is_empty())
                .unwrap_or_default();
            let session = non_empty(&t("session"));
            let replay = e["recording"].as_str().and_then(|rec| {
                let at = e["at"].as_f64()?;
                let find = match e["command"].as_str().or(e["shown"].as_str()) {
                    Some(c) => format!("&find={}", super::replay::find_param(c)),
                    None => String::new(),
                };
                Some(format!(
                    "/console/recordings/{}?t={at}{find}",
                    sanitize(rec)
                ))
            });
            hits.push(Hit {
                when: When::ms(e["time_ms"].as_u64().unwrap_or(0)),
                kind: t("kind").replace('_', " "),
                engineer: t("engineer"),
                ticket: t("ticket"),
                place: match (non_empty(&t("node")), non_empty(&t("cluster"))) {
                    (Some(n), Some(c)) => format!("{n}.{c}"),
                    (None, Some(c)) => c,
                    _ => String::new(),
                },
                text: main,
                session,
                replay,
            });
        }
    }
    render(&SearchPage {
        nav: Some(&viewer),
        f,
        searched,
        hits,
        next,
    })
}

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage<'a> {
    nav: Option<&'a Viewer>,
    rows: Vec<crate::api::report::ReportRow>,
    chart: crate::api::report::Chart,
    chart_h: u32,
    clusters: Vec<String>,
    cluster: String,
    days: u64,
    query: String,
}

/// Who reached which node when, under which ticket, and what they did: for a customer's own
/// clusters (a reviewer: every cluster), as a page, CSV or JSON (`api::report` builds it).
pub async fn report(
    State(b): State<Arc<Broker>>,
    viewer: Viewer,
    Query(q): Query<crate::api::report::ReportQuery>,
) -> Response {
    let r = match crate::api::report::build(&b, &viewer.caller, &q).await {
        Ok(r) => r,
        Err(ApiError::NotFound(_)) => {
            return message(
                StatusCode::NOT_FOUND,
                Some(&viewer),
                "Cluster not found",
                "No cluster with this name is yours to report on.".into(),
                "/console/report",
                "All your clusters",
            );
        }
        Err(e) => return api_error(&viewer, e, "/console/"),
    };
    if q.format == "csv" || q.format == "json" {
        return crate::api::report::download(&r, &q.format);
    }
    let cluster = q.cluster.trim().to_string();
    let days = r.days();
    render(&ReportPage {
        nav: Some(&viewer),
        query: format!(
            "cluster={}&days={days}",
            url::form_urlencoded::byte_serialize(cluster.as_bytes()).collect::<String>()
        ),
        chart: r.chart(),
        chart_h: crate::api::report::CHART_H,
        rows: r.rows,
        clusters: r.clusters,
        cluster,
        days,
    })
}
