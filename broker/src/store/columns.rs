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

/// Rows per multi-row statement at most.
pub(super) const RUN_ROWS: usize = 64;

/// `items` cut into runs of 64, 32, 16, ... 1 rows, the longest first: one multi-row statement
/// per run, and so at most seven statement texts per table, each prepared once per connection
/// (statement caches keep them; a run of any length would make a new statement each time).
pub(super) fn runs<T>(mut items: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut size = RUN_ROWS;
    while !items.is_empty() {
        while size > items.len() {
            size /= 2;
        }
        let (run, rest) = items.split_at(size);
        out.push(run);
        items = rest;
    }
    out
}

/// `($1, $2), ($3, $4)` for `rows` rows of `cols` columns.
pub(super) fn placeholders(rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(rows * cols * 5);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=cols {
            if k > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(i * cols + k).to_string());
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::{RUN_ROWS, placeholders, runs};

    #[test]
    fn runs_cover_every_item_once_in_order_with_few_lengths() {
        for n in 0..300usize {
            let items: Vec<usize> = (0..n).collect();
            let cut = runs(&items);
            let joined: Vec<usize> = cut.iter().flat_map(|r| r.iter().copied()).collect();
            assert_eq!(joined, items, "{n}");
            for r in &cut {
                assert!(
                    r.len().is_power_of_two() && r.len() <= RUN_ROWS,
                    "{n}: {}",
                    r.len()
                );
            }
            // Longest first, and never two short runs where one longer would do.
            for w in cut.windows(2) {
                assert!(w[0].len() >= w[1].len(), "{n}");
                assert!(w[0].len() == RUN_ROWS || w[0].len() > w[1].len(), "{n}");
            }
        }
    }

    #[test]
    fn placeholders_number_every_parameter() {
        assert_eq!(placeholders(1, 1), "($1)");
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
