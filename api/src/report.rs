//! The access report (`GET /v1/report`, JSON): who reached which node when, under which
//! ticket, and what they did there.

use serde::{Deserialize, Serialize};

/// One session in the access report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRow {
    pub session: String,
    /// RFC 3339.
    pub started: String,
    pub ended: Option<String>,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub node: String,
    pub login: String,
    pub duration_secs: u64,
    pub commands: Vec<String>,
    /// `path (size bytes, sha256 …)`.
    pub files: Vec<String>,
    pub refusals: u64,
}

/// `GET /v1/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessReport {
    /// The cluster reported on, or `all`.
    pub cluster: String,
    /// Whole days the period spans.
    pub days: u64,
    /// RFC 3339, inclusive.
    pub since: String,
    /// RFC 3339, exclusive.
    pub until: String,
    pub sessions: Vec<ReportRow>,
}
