//! Columns several aggregates share: lists stored as JSON text, optional numbers.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::to_u64;

pub(super) fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

pub(super) fn list_json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(super) fn opt_u64(row: &AnyRow, col: &str) -> Option<u64> {
    row.get::<Option<i64>, _>(col).map(to_u64)
}
