//! `index.html` of a bundle: one self-contained page (no network, no external assets) that lists
//! the sessions and events of the bundle and plays its recordings' output. The data is embedded
//! as JSON; the page never loads anything.

use serde_json::{Value, json};

use super::Contents;

/// The page's code and style; the data goes between them.
const HEAD: &str = include_str!("viewer_head.html");
const TAIL: &str = include_str!("viewer_tail.html");

/// JSON that is safe inside a `<script>` element: no `<`, `>` or `&` as such.
fn script_safe(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

pub fn index_html(c: &Contents, recordings: &[(String, Vec<u8>)]) -> String {
    let events: Vec<Value> = c
        .events
        .iter()
        .map(|r| {
            json!({"source": r.source, "seq": r.seq, "time": r.time, "kind": r.kind,
                   "data": r.data, "hash": r.hash})
        })
        .collect();
    let recs: Vec<Value> = recordings
        .iter()
        .map(|(id, bytes)| json!({"id": id, "cast": String::from_utf8_lossy(bytes)}))
        .collect();
    let data = json!({
        "selection": c.manifest.selection.describe(),
        "created": c.manifest.created,
        "by": c.manifest.by,
        "broker_key": c.manifest.broker_key_fingerprint,
        "events": events,
        "recordings": recs,
    });
    format!("{HEAD}{}{TAIL}", script_safe(&data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_the_script() {
        let v = json!({"x": "</script><img src=x onerror=alert(1)>&"});
        let s = script_safe(&v);
        assert!(
            !s.contains('<') && !s.contains('>') && !s.contains('&'),
            "{s}"
        );
        let back: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }
}
