//! `sallyport audit verify --bundle`: an unpacked bundle checked offline against the keys it
//! carries (and the ones the reviewer trusts), file by file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use russh::keys::PublicKey;
use sallyport_audit::bundle::{
    self as layout, ChainReport, CheckedHead, FORMAT, HeadLine, Manifest, Problem, RecordingReport,
    check_chains, check_files, check_recordings, parse_records,
};
use serde_json::json;
use sha2::{Digest, Sha256};

/// `<source> <public key>` lines, `#` comments: source → key.
pub fn parse_keys(text: &str, name: &str) -> anyhow::Result<HashMap<String, PublicKey>> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (source, key) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("{name}:{}: expected `<source> <public key>`", n + 1))?;
        let (key, _, _) = sallyport_ca::chainsig::audit_public_key(key)
            .map_err(|e| anyhow::anyhow!("{name}:{}: {e}", n + 1))?;
        out.insert(source.to_string(), key);
    }
    Ok(out)
}

fn fingerprint(k: &PublicKey) -> String {
    k.fingerprint(russh::keys::ssh_key::HashAlg::Sha256)
        .to_string()
}

/// Every file under `dir` but the manifest and its signature: relative path → (size, SHA-256).
/// Anything that is not a plain file is a problem.
fn walk(
    dir: &Path,
    rel: &str,
    found: &mut BTreeMap<String, (u64, String)>,
    problems: &mut Vec<Problem>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), &path, found, problems)?;
        } else if t.is_file() {
            if rel.is_empty() && (path == layout::MANIFEST || path == layout::MANIFEST_SIG) {
                continue;
            }
            let bytes = std::fs::read(e.path())?;
            found.insert(
                path,
                (bytes.len() as u64, hex::encode(Sha256::digest(&bytes))),
            );
        } else {
            problems.push(Problem::file(
                &path,
                "not a plain file (a link?): a bundle holds only files",
            ));
        }
    }
    Ok(())
}

/// What verify found.
struct Findings {
    problems: Vec<Problem>,
    /// Said but not failures.
    notes: Vec<String>,
    manifest: Option<Manifest>,
    key_from: &'static str,
    broker_key: Option<String>,
    files: usize,
    chains: Vec<ChainReport>,
    recordings: Vec<RecordingReport>,
}

fn read_text(dir: &Path, name: &str, problems: &mut Vec<Problem>) -> String {
    match std::fs::read(dir.join(name)) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            problems.push(Problem::file(name, format!("cannot be read: {e}")));
            String::new()
        }
    }
}

fn check(dir: &Path, trusted: Option<&HashMap<String, PublicKey>>) -> anyhow::Result<Findings> {
    let mut f = Findings {
        problems: Vec::new(),
        notes: Vec::new(),
        manifest: None,
        key_from: if trusted.is_some() {
            "keys_file"
        } else {
            "bundle"
        },
        broker_key: None,
        files: 0,
        chains: Vec::new(),
        recordings: Vec::new(),
    };
    let manifest_bytes = std::fs::read(dir.join(layout::MANIFEST)).with_context(|| {
        format!(
            "{} is not a bundle: it has no {}",
            dir.display(),
            layout::MANIFEST
        )
    })?;
    let manifest: Option<Manifest> = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            f.problems.push(Problem::file(
                layout::MANIFEST,
                format!("not a bundle manifest: {e}"),
            ));
            None
        }
    };
    if let Some(m) = &manifest
        && m.format != FORMAT
    {
        f.problems.push(Problem::file(
            layout::MANIFEST,
            format!("format {:?}, expected {FORMAT:?}", m.format),
        ));
    }
    // The keys: the bundle's own, and the trusted ones when given.
    let keys_text = read_text(dir, layout::KEYS, &mut f.problems);
    let bundle_keys = match parse_keys(&keys_text, layout::KEYS) {
        Ok(k) => k,
        Err(e) => {
            f.problems
                .push(Problem::file(layout::KEYS, format!("{e:#}")));
            HashMap::new()
        }
    };
    if let Some(t) = trusted {
        for (source, k) in &bundle_keys {
            if let Some(tk) = t.get(source)
                && tk.key_data() != k.key_data()
            {
                f.problems.push(Problem::file(
                    layout::KEYS,
                    format!(
                        "KEY REPLACED: the bundle's key for {} is {}, the trusted key is {}",
                        sallyport_audit::sanitize(source),
                        fingerprint(k),
                        fingerprint(tk)
                    ),
                ));
            }
        }
    }
    let keys: &HashMap<String, PublicKey> = trusted.unwrap_or(&bundle_keys);
    // The manifest's signature, with the broker's key.
    let broker = keys.get(sallyport_broker::store::BROKER_SOURCE);
    match broker {
        None => f.problems.push(Problem::file(
            layout::MANIFEST_SIG,
            if trusted.is_some() {
                "the trusted keys have no key for broker: the manifest's signature cannot be checked"
            } else {
                "keys.txt has no key for broker: the manifest's signature cannot be checked"
            },
        )),
        Some(k) => {
            f.broker_key = Some(fingerprint(k));
            if let Some(m) = &manifest {
                let named = sallyport_ca::chainsig::audit_public_key(&m.broker_key)
                    .map(|(k, _, _)| k)
                    .ok();
                if named.as_ref().map(|n| n.key_data()) != Some(k.key_data()) {
                    f.problems.push(Problem::file(
                        layout::MANIFEST,
                        format!(
                            "names the broker key {}, but the key checked is {}",
                            named
                                .as_ref()
                                .map_or_else(|| "(unreadable)".to_string(), fingerprint),
                            fingerprint(k)
                        ),
                    ));
                }
            }
            let sig = read_text(dir, layout::MANIFEST_SIG, &mut f.problems);
            if let Err(e) = sallyport_ca::chainsig::verify_manifest(k, &manifest_bytes, &sig) {
                f.problems.push(Problem::file(layout::MANIFEST_SIG, e));
            }
        }
    }
    // Every file against the manifest.
    let mut found = BTreeMap::new();
    walk(dir, "", &mut found, &mut f.problems)?;
    f.files = found.len();
    if let Some(m) = &manifest {
        f.problems.extend(check_files(&m.files, &found));
    }
    // Every record, the links between them, and the signed heads.
    let (mut records, p) = parse_records(
        layout::EVENTS,
        &read_text(dir, layout::EVENTS, &mut f.problems),
        true,
    );
    f.problems.extend(p);
    let (links, p) = parse_records(
        layout::LINKS,
        &read_text(dir, layout::LINKS, &mut f.problems),
        false,
    );
    f.problems.extend(p);
    records.extend(links);
    let mut heads = Vec::new();
    for (i, line) in read_text(dir, layout::SIGNATURES, &mut f.problems)
        .lines()
        .enumerate()
    {
        if line.trim().is_empty() {
            continue;
        }
        let head: HeadLine = match serde_json::from_str(line) {
            Ok(h) => h,
            Err(e) => {
                f.problems.push(Problem {
                    file: Some(layout::SIGNATURES.into()),
                    line: Some(i + 1),
                    source: None,
                    seq: None,
                    problem: format!("not a signed head: {e}"),
                });
                continue;
            }
        };
        let problem = match keys.get(&head.source) {
            None => Some("no key for this chain: the signature cannot be checked".to_string()),
            Some(k) => sallyport_ca::chainsig::verify_head(
                k,
                &head.source,
                head.seq,
                &head.hash,
                &head.signature,
            )
            .err(),
        };
        heads.push(CheckedHead {
            head,
            line: i + 1,
            problem,
        });
    }
    let (chains, p) = check_chains(&records, &heads);
    f.problems.extend(p);
    f.chains = chains;
    // Recordings.
    let recording_files: BTreeMap<String, (u64, String)> = found
        .iter()
        .filter_map(|(path, v)| {
            let id = path.strip_prefix("recordings/")?.strip_suffix(".cast")?;
            Some((id.to_string(), v.clone()))
        })
        .collect();
    let missing = manifest
        .as_ref()
        .map(|m| m.missing_recordings.clone())
        .unwrap_or_default();
    let (recs, p) = check_recordings(&records, &recording_files, &missing);
    f.problems.extend(p);
    f.recordings = recs;
    if trusted.is_none() {
        f.notes.push(
            "the keys were taken from the bundle itself (keys.txt): this proves the bundle is \
             whole and consistent, not who made it; pin the keys you hold out of band with \
             --keys FILE (sallyport audit keys, or GET /v1/audit/key for the broker's)"
                .into(),
        );
    }
    f.manifest = manifest;
    Ok(f)
}

pub fn verify(
    dir: &Path,
    trusted: Option<&HashMap<String, PublicKey>>,
    require_signed: bool,
    json_out: bool,
) -> anyhow::Result<i32> {
    let mut f = check(dir, trusted)?;
    if require_signed {
        for c in &f.chains {
            for (a, b) in &c.unsigned {
                f.problems.push(Problem {
                    file: None,
                    line: None,
                    source: Some(c.source.clone()),
                    seq: Some(*a),
                    problem: format!(
                        "UNSIGNED: events #{a}..#{b} are covered by no signature of their chain \
                         (--require-signed)"
                    ),
                });
            }
        }
    }
    let ok = f.problems.is_empty();
    if json_out {
        println!(
            "{}",
            json!({
                "ok": ok,
                "bundle": dir.display().to_string(),
                "selection": f.manifest.as_ref().map(|m| &m.selection),
                "key_from": f.key_from,
                "broker_key": f.broker_key,
                "files": f.files,
                "chains": f.chains,
                "recordings": f.recordings,
                "problems": f.problems,
                "notes": f.notes,
            })
        );
        return Ok(if ok { 0 } else { 1 });
    }
    let s = sallyport_audit::sanitize;
    if let Some(m) = &f.manifest {
        println!(
            "bundle {}: {}, exported {} by {}",
            dir.display(),
            m.selection.describe(),
            s(&m.created),
            s(&m.by)
        );
    }
    if let Some(k) = &f.broker_key {
        println!(
            "manifest: signed with the broker key {k} ({})",
            if trusted.is_some() {
                "from --keys"
            } else {
                "taken from the bundle"
            }
        );
    }
    println!(
        "files: {} (sizes and SHA-256 checked against the manifest)",
        f.files
    );
    let n = |k: u64, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    for c in &f.chains {
        let mut line = format!(
            "{}: {}, {}, {}",
            s(&c.source),
            n(c.events, "event"),
            n(c.links, "linking record"),
            n(c.signatures, "signed head")
        );
        if c.unsigned.is_empty() {
            line.push_str(", every record signed");
        } else {
            let r: Vec<String> = c
                .unsigned
                .iter()
                .map(|(a, b)| format!("#{a}..#{b}"))
                .collect();
            line.push_str(&format!(
                "; UNSIGNED: {} (only the manifest's signature binds them)",
                r.join(", ")
            ));
        }
        println!("{line}");
    }
    for r in &f.recordings {
        let how = match (&r.stored_event, r.present) {
            (_, false) => "MISSING".to_string(),
            (Some(e), true) => format!("matches the SHA-256 the broker recorded ({e})"),
            (None, true) => "bound by the manifest's signature only".to_string(),
        };
        println!("recording {}: {how}", s(&r.id));
    }
    for n in &f.notes {
        println!("note: {n}");
    }
    if ok {
        println!("OK: the bundle verifies");
    } else {
        println!("FAILED: {} problems", f.problems.len());
        for p in &f.problems {
            println!("  {p}");
        }
    }
    Ok(if ok { 0 } else { 1 })
}
