//! The access report: who reached which node when, under which ticket, and what they did there
//! (commands, files with size and SHA-256, refusals), for a period and a cluster or all the
//! caller may see: a customer approver its own clusters, reviewers and the operator every one.
//! `GET /v1/report` (JSON or CSV) and the console's report page are built here.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sallyport_ca::clock::now_ms;
use serde::Deserialize;
use serde_json::Value;

use super::{permit, permit_or_hide};
use crate::audit::sanitize;
use crate::auth::Caller;
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::AuditQuery;

pub fn router() -> Router<Arc<Broker>> {
    Router::new().route("/v1/report", get(report))
}

/// A report's query: a cluster (empty: every cluster the caller may see), the period (the last
/// `days` days, 30 by default, or `since`..`until` in unix seconds), and the format (`json` or
/// `csv`; the console also shows it as a page).
#[derive(Deserialize, Default)]
pub struct ReportQuery {
    #[serde(default)]
    pub cluster: String,
    pub days: Option<u64>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    #[serde(default)]
    pub format: String,
}

use sallyport_api::report::AccessReport;
pub use sallyport_api::report::ReportRow;

/// A built report.
pub struct Report {
    /// The cluster reported on, or `all`.
    pub scope: String,
    /// Unix ms, inclusive .. exclusive.
    pub since_ms: u64,
    pub until_ms: u64,
    /// The clusters the caller may report on.
    pub clusters: Vec<String>,
    pub rows: Vec<ReportRow>,
}

impl Report {
    /// Whole days the period spans (for names and the page).
    pub fn days(&self) -> u64 {
        (self.until_ms.saturating_sub(self.since_ms)).div_ceil(86_400_000)
    }

    /// The name a downloaded copy gets.
    pub fn file_name(&self, ext: &str) -> String {
        format!(
            "sallyport-access-{}-{}d.{ext}",
            self.scope
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
            self.days()
        )
    }

    pub fn to_json(&self) -> AccessReport {
        AccessReport {
            cluster: self.scope.clone(),
            days: self.days(),
            since: rfc3339(self.since_ms),
            until: rfc3339(self.until_ms),
            sessions: self.rows.clone(),
        }
    }

    /// CSV, one row per session; every cell quoted, none a spreadsheet formula.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "session,started,ended,engineer,ticket,cluster,node,login,duration_secs,commands,files,refusals\r\n",
        );
        for r in &self.rows {
            let cells = [
                r.session.clone(),
                r.started.clone(),
                r.ended.clone().unwrap_or_default(),
                r.engineer.clone(),
                r.ticket.clone(),
                r.cluster.clone(),
                r.node.clone(),
                r.login.clone(),
                r.duration_secs.to_string(),
                r.commands.join(" ; "),
                r.files.join(" ; "),
                r.refusals.to_string(),
            ];
            out.push_str(
                &cells
                    .iter()
                    .map(|c| csv_cell(c))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push_str("\r\n");
        }
        out
    }
}

/// Build the report `q` asks for, as `caller` may see it. Another customer's cluster is "not
/// found" (audited).
pub async fn build(b: &Broker, caller: &Caller, q: &ReportQuery) -> ApiResult<Report> {
    const ACTION: Action = Action::Report;
    permit(b, caller, ACTION, Scope::Unread).await?;
    let clusters: Vec<String> = b
        .store
        .clusters(customer_view(caller))
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let cluster = q.cluster.trim().to_string();
    if !cluster.is_empty() {
        let owner = b.store.cluster(&cluster).await?.map(|c| c.customer);
        let scope = Scope::Cluster {
            customer: owner.as_deref(),
            cluster: &cluster,
        };
        permit_or_hide(
            b,
            caller,
            ACTION,
            scope,
            "a cluster with this name that is yours to report on",
        )
        .await?;
    }
    let now = now_ms();
    let until_ms = q.until.map_or(now, |s| s.saturating_mul(1000));
    let since_ms = match (q.since, q.days) {
        (Some(s), _) => s.saturating_mul(1000),
        (None, d) => until_ms.saturating_sub(d.unwrap_or(30).clamp(1, 366) * 86_400_000),
    };
    if since_ms >= until_ms {
        return Err(ApiError::BadRequest(
            "the period is empty: since must be before until".into(),
        ));
    }
    let sessions = b
        .store
        .session_summaries(customer_view(caller), false, 10_000)
        .await?;
    let mut rows = Vec::new();
    for s in sessions.iter().filter(|s| {
        s.started_ms >= since_ms
            && s.started_ms < until_ms
            && (cluster.is_empty() || s.cluster == cluster)
    }) {
        let events = b
            .store
            .audit_search(&AuditQuery {
                session: Some(s.session.clone()),
                limit: Some(10_000),
                ..Default::default()
            })
            .await?;
        let text = |v: &Value, k: &str| match v.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        rows.push(ReportRow {
            session: s.session.clone(),
            started: rfc3339(s.started_ms),
            ended: s.ended_ms.map(rfc3339),
            engineer: s.engineer.clone(),
            ticket: s.ticket.clone(),
            cluster: s.cluster.clone(),
            node: s.node.clone(),
            login: text(&s.data, "login"),
            duration_secs: s.ended_ms.unwrap_or(now).saturating_sub(s.started_ms) / 1000,
            commands: events
                .iter()
                .filter(|e| crate::audit::is_whole_command(e))
                .map(|e| sanitize(&text(&e.data, "command")))
                .collect(),
            files: events
                .iter()
                .filter(|e| e.kind == "file_transfer" || e.kind == "file_op")
                .filter_map(|e| {
                    let path = text(&e.data, "path");
                    (!path.is_empty()).then(|| {
                        sanitize(&format!(
                            "{path} ({} bytes, sha256 {})",
                            text(&e.data, "size"),
                            text(&e.data, "sha256")
                        ))
                    })
                })
                .collect(),
            refusals: events.iter().filter(|e| e.kind.contains("refused")).count() as u64,
        });
    }
    Ok(Report {
        scope: if cluster.is_empty() {
            "all".into()
        } else {
            cluster
        },
        since_ms,
        until_ms,
        clusters,
        rows,
    })
}

/// The report as JSON (default) or CSV (`format=csv`), as a download.
async fn report(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let r = build(&b, &caller, &q).await?;
    Ok(download(&r, &q.format))
}

/// The report in `format` (`csv`, else JSON), as an attachment.
pub fn download(r: &Report, format: &str) -> Response {
    if format == "csv" {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", r.file_name("csv")),
                ),
            ],
            r.to_csv(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", r.file_name("json")),
            )],
            Json(r.to_json()),
        )
            .into_response()
    }
}

/// A CSV cell: quoted, and a cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
/// CR) starts with `'`.
pub fn csv_cell(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    format!("\"{}\"", v.replace('"', "\"\""))
}

pub fn rfc3339(ms: u64) -> String {
    crate::timefmt::seconds(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        assert_eq!(csv_cell("plain"), "\"plain\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "\"'+1\"");
        assert_eq!(csv_cell("-rf"), "\"'-rf\"");
        assert_eq!(csv_cell("@sum"), "\"'@sum\"");
        assert_eq!(csv_cell("a,b\nc"), "\"a,b\nc\"");
    }
}

/// One day of the report's chart.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartDay {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub sessions: u64,
    pub commands: u64,
    /// Bar (sessions) and dot (commands per session) geometry in the SVG's units.
    pub x: u32,
    pub width: u32,
    pub bar_y: u32,
    pub bar_h: u32,
    pub dot_y: u32,
    pub per_session: String,
    /// The day is named under the axis (every seventh day, and the last when it has room);
    /// the last one's name ends at its bar.
    pub label: bool,
    pub label_x: u32,
    pub label_end: bool,
}

/// The chart under the report: sessions per day (bars) and commands per session (dots), every
/// day of the period shown, scaled to `CHART_H` units high.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub days: Vec<ChartDay>,
    pub max_sessions: u64,
    pub max_per_session: String,
    pub width: u32,
}

pub const CHART_H: u32 = 120;

impl Report {
    /// Sessions per day and commands per session, for each UTC day of the period (at most the
    /// last 92 days, so bars stay readable).
    pub fn chart(&self) -> Chart {
        const DAY: u64 = 86_400_000;
        let first =
            (self.since_ms / DAY).max((self.until_ms.saturating_sub(1) / DAY).saturating_sub(91));
        let last = self.until_ms.saturating_sub(1) / DAY;
        let n = (last + 1).saturating_sub(first).max(1) as usize;
        let mut sessions = vec![0u64; n];
        let mut commands = vec![0u64; n];
        for r in &self.rows {
            let Ok(t) = humantime::parse_rfc3339(&r.started) else {
                continue;
            };
            let ms = sallyport_ca::clock::unix_ms(t);
            let Some(i) = (ms / DAY).checked_sub(first).map(|i| i as usize) else {
                continue;
            };
            if i < n {
                sessions[i] += 1;
                commands[i] += r.commands.len() as u64;
            }
        }
        let max_sessions = sessions.iter().copied().max().unwrap_or(0).max(1);
        let per = |i: usize| {
            if sessions[i] == 0 {
                0.0
            } else {
                commands[i] as f64 / sessions[i] as f64
            }
        };
        let max_per = (0..n).map(per).fold(0.0_f64, f64::max).max(1.0);
        let slot = 24u32;
        let days = (0..n)
            .map(|i| {
                let h = (sessions[i] * u64::from(CHART_H) / max_sessions) as u32;
                let day_ms = (first + i as u64) * DAY;
                ChartDay {
                    day: rfc3339(day_ms)[..10].to_string(),
                    sessions: sessions[i],
                    commands: commands[i],
                    x: i as u32 * slot,
                    width: slot - 6,
                    bar_y: CHART_H - h,
                    bar_h: h,
                    dot_y: CHART_H - (per(i) / max_per * f64::from(CHART_H)).round() as u32,
                    per_session: format!("{:.1}", per(i)),
                    label: i % 7 == 0 || (i + 1 == n && i % 7 >= 4),
                    label_x: if i + 1 == n && i > 0 {
                        i as u32 * slot + slot - 6
                    } else {
                        i as u32 * slot
                    },
                    label_end: i + 1 == n && i > 0,
                }
            })
            .collect();
        Chart {
            days,
            max_sessions,
            max_per_session: format!("{max_per:.1}"),
            width: n as u32 * slot,
        }
    }
}

#[cfg(test)]
mod chart_tests {
    use super::*;

    const DAY_MS: u64 = 86_400_000;

    /// A report on every cluster from day 20,000 (since the epoch) until day `until_day`.
    fn report(until_day: u64, rows: Vec<ReportRow>) -> Report {
        Report {
            scope: "all".into(),
            since_ms: 20_000 * DAY_MS,
            until_ms: until_day * DAY_MS,
            clusters: vec![],
            rows,
        }
    }

    fn row(started: &str, commands: usize) -> ReportRow {
        ReportRow {
            session: "s".into(),
            started: started.into(),
            ended: None,
            engineer: "alice".into(),
            ticket: "T".into(),
            cluster: "c".into(),
            node: "n".into(),
            login: "l".into(),
            duration_secs: 1,
            commands: vec!["x".into(); commands],
            files: vec![],
            refusals: 0,
        }
    }

    #[test]
    fn the_chart_counts_sessions_and_commands_per_day_over_the_whole_period() {
        let day = DAY_MS;
        let r = report(
            20_003,
            vec![
                row(&rfc3339(20_000 * day + 5), 4),
                row(&rfc3339(20_000 * day + 3_600_000), 2),
                row(&rfc3339(20_002 * day + 1), 0),
            ],
        );
        let c = r.chart();
        assert_eq!(c.days.len(), 3);
        let got: Vec<(&str, u64, u64, &str)> = c
            .days
            .iter()
            .map(|d| {
                (
                    d.day.as_str(),
                    d.sessions,
                    d.commands,
                    d.per_session.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (rfc3339(20_000 * day)[..10].as_ref(), 2, 6, "3.0"),
                (rfc3339(20_001 * day)[..10].as_ref(), 0, 0, "0.0"),
                (rfc3339(20_002 * day)[..10].as_ref(), 1, 0, "0.0"),
            ]
        );
        // The busiest day is the full height; an empty day has no bar.
        assert_eq!(c.days[0].bar_h, CHART_H);
        assert_eq!(c.days[0].bar_y, 0);
        assert_eq!(c.days[1].bar_h, 0);
        assert_eq!(c.days[2].bar_h, CHART_H / 2);
        assert_eq!(c.max_sessions, 2);
        assert_eq!(c.days[0].dot_y, 0);
        assert_eq!(c.width, 72);
    }

    #[test]
    fn a_long_period_charts_its_last_92_days() {
        assert_eq!(report(20_366, vec![]).chart().days.len(), 92);
    }
}
