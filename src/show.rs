//! Printing what the broker answered: one JSON object a line with `--json`, else a line of text.

use serde::Serialize;

/// `v` as one line: its JSON with `json`, else `line(v)`.
pub fn show<T: Serialize>(v: &T, json: bool, line: impl Fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else {
        println!("{}", line(v));
    }
    Ok(())
}

/// Each of `list` as [`show`] prints it; without `json`, `empty` on standard error when there
/// is none.
pub fn show_all<T: Serialize>(
    list: &[T],
    json: bool,
    empty: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if list.is_empty() && !json {
        eprintln!("{empty}");
    }
    for v in list {
        show(v, json, &line)?;
    }
    Ok(())
}
