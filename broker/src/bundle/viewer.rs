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
    // Each recording as the console's player gets it: the screen's changed rows at each
    // moment, computed here with the same terminal model, so that the page plays a terminal
    // (full-screen programs too) offline, with no player of its own to trust.
    let recs: Vec<Value> = recordings
        .iter()
        .map(|(id, bytes)| {
            let text = String::from_utf8_lossy(bytes);
            match crate::replay::replay(&text) {
                Ok(r) => json!({"id": id, "pty": r.pty, "width": r.width, "height": r.height,
                                "duration": r.duration, "title": r.title, "frames": r.frames,
                                "stream": r.stream}),
                Err(e) => json!({"id": id, "error": e}),
            }
        })
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
    fn recordings_are_embedded_as_screens_and_a_bad_one_says_why() {
        let c = Contents {
            root: "b".into(),
            manifest: sallyport_audit::bundle::Manifest {
                format: sallyport_audit::bundle::FORMAT.into(),
                created: "2026-01-01T00:00:00Z".into(),
                created_ms: 0,
                by: "reviewer:r".into(),
                selection: Default::default(),
                broker_key: String::new(),
                broker_key_fingerprint: String::new(),
                events: 0,
                links: 0,
                missing_recordings: vec![],
                files: vec![],
            },
            events: vec![],
            links: vec![],
            heads: vec![],
            keys: String::new(),
            recordings: vec![],
        };
        let cast = "{\"version\": 2, \"width\": 20, \"height\": 3}\n[0.5, \"o\", \"\\u001b[2Jhello\\r\\nworld\"]\n";
        let html = index_html(
            &c,
            &[
                ("s-1-c0".into(), cast.as_bytes().to_vec()),
                ("s-1-c1".into(), b"not a recording".to_vec()),
            ],
        );
        let start = html.find("id=\"data\">").unwrap() + "id=\"data\">".len();
        let end = html[start..].find("</script>").unwrap() + start;
        let data: Value = serde_json::from_str(&html[start..end]).unwrap();
        let recs = data["recordings"].as_array().unwrap();
        assert_eq!(recs[0]["pty"], true);
        assert_eq!(recs[0]["width"], 20);
        let shown = recs[0]["frames"].to_string();
        assert!(
            shown.contains("hello") && shown.contains("world"),
            "{shown}"
        );
        assert!(
            !shown.contains("[2J"),
            "escape sequences are played, not shown: {shown}"
        );
        assert!(recs[1]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }

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
