//! What `audit verify` and the console's chain page say of one stored chain: intact or broken
//! at which link, signed through which record (with the pinned key or a trusted one), tampered,
//! behind the head its source reported, or with an unsigned tail. Pure: the callers read the
//! chain (from the store or through the API).

use std::collections::HashMap;

use russh::keys::PublicKey;
use sallyport_audit::signed::{SignedHead, coverage};
use serde_json::{Value, json};

use crate::audit::{AuditRecord, verify_chain};
use crate::store::HeadSignature;

/// One chain as read for verification.
pub struct Chain {
    pub source: String,
    pub records: Vec<AuditRecord>,
    pub heads: Vec<HeadSignature>,
    /// The key the broker pinned (or the broker's own), as an OpenSSH line.
    pub pinned: Option<String>,
}

pub fn fingerprint(k: &PublicKey) -> String {
    k.fingerprint(russh::keys::ssh_key::HashAlg::Sha256)
        .to_string()
}

/// What verify says of one chain.
pub struct Verdict {
    pub ok: bool,
    pub text: String,
    pub json: Value,
}

pub fn judge(
    chain: &Chain,
    reported: Option<u64>,
    trusted: Option<&HashMap<String, PublicKey>>,
    require_signed: bool,
) -> Verdict {
    let source = sallyport_audit::sanitize(&chain.source);
    let n = match verify_chain(&chain.records) {
        Ok(n) => n,
        Err(b) => {
            return Verdict {
                ok: false,
                text: format!("{source}: BROKEN at event #{}: {}", b.seq, b.problem),
                json: json!({"source": chain.source, "ok": false, "seq": b.seq, "problem": b.problem}),
            };
        }
    };
    let mut ok = true;
    let mut notes: Vec<String> = Vec::new();
    let mut json = json!({"source": chain.source, "events": n});
    // The key to check signatures with: the trusted one from --keys, else the pinned one.
    let pinned = chain
        .pinned
        .as_deref()
        .and_then(|l| sallyport_ca::chainsig::audit_public_key(l).ok())
        .map(|(k, _, _)| k);
    let key = match trusted {
        Some(t) => {
            let k = t.get(&chain.source).cloned();
            match (&k, &pinned) {
                (None, _) => {
                    ok = false;
                    notes.push("NO TRUSTED KEY: --keys has no key for this chain".into());
                }
                (Some(k), Some(p)) if k.key_data() != p.key_data() => {
                    ok = false;
                    notes.push(format!(
                        "KEY REPLACED: the broker's pinned key {} is not the trusted key {}",
                        fingerprint(p),
                        fingerprint(k)
                    ));
                    json["pinned_key"] = json!(fingerprint(p));
                }
                (Some(_), _) => {}
            }
            json["key_from"] = json!("keys_file");
            k
        }
        None => {
            json["key_from"] = json!("broker");
            pinned
        }
    };
    match &key {
        Some(k) => json["key"] = json!(fingerprint(k)),
        None if trusted.is_none() && !chain.heads.is_empty() => {
            ok = false;
            notes
                .push("NO KEY: the chain has signatures but the broker names no key for it".into());
        }
        None => {}
    }
    let heads: Vec<SignedHead> = chain
        .heads
        .iter()
        .map(|h| SignedHead {
            seq: h.seq,
            hash: h.hash.clone(),
            signature_holds: key.as_ref().is_some_and(|k| {
                sallyport_ca::chainsig::verify_head(k, &chain.source, h.seq, &h.hash, &h.signature)
                    .is_ok()
            }),
        })
        .collect();
    let c = coverage(&chain.records, &heads);
    json["signed_through"] = json!(c.signed_through);
    if let Some((from, to)) = c.tampered {
        ok = false;
        let why = c
            .bad
            .iter()
            .map(|b| format!("signature of #{}: {}", b.seq, b.problem))
            .collect::<Vec<_>>()
            .join("; ");
        notes.push(format!(
            "TAMPERED: events #{from}..#{to} have a valid hash but no valid signature ({why})"
        ));
        json["tampered"] = json!([from, to]);
    } else if !c.bad.is_empty() {
        ok = false;
        for b in &c.bad {
            notes.push(format!("BAD SIGNATURE of #{}: {}", b.seq, b.problem));
        }
    }
    if !c.bad.is_empty() {
        json["bad_signatures"] = json!(
            c.bad
                .iter()
                .map(|b| json!({"seq": b.seq, "problem": b.problem}))
                .collect::<Vec<_>>()
        );
    }
    if let Some((from, to)) = c.unsigned {
        if require_signed {
            ok = false;
        }
        notes.push(format!(
            "UNSIGNED: events #{from}..#{to} carry no signature yet"
        ));
        json["unsigned"] = json!([from, to]);
    }
    // The broker holds an intact chain, but the source wrote more than it holds: records are
    // missing at the tail (shipping is behind, or they were lost).
    if let Some(head) = reported.filter(|h| *h > n) {
        ok = false;
        let missing = head - n;
        notes.insert(
            0,
            format!(
                "INCOMPLETE: {n} events intact, but the source reported {head}: the last \
                 {missing} have not reached the broker"
            ),
        );
        json["incomplete"] = json!(true);
        json["reported_head"] = json!(head);
        json["missing"] = json!(missing);
    }
    json["ok"] = json!(ok);
    let signed = if c.signed_through > 0 {
        format!(", signed through #{}", c.signed_through)
    } else {
        String::new()
    };
    let text = if notes.is_empty() {
        format!("{source}: {n} events, chain intact{signed}")
    } else if ok {
        format!(
            "{source}: {n} events, chain intact{signed}; {}",
            notes.join("; ")
        )
    } else {
        format!("{source}: {}", notes.join("; "))
    };
    Verdict { ok, text, json }
}

/// One source's chain as the store holds it, with its signed heads and `pinned` key.
pub async fn load(
    store: &crate::store::Store,
    source: &str,
    pinned: Option<String>,
) -> anyhow::Result<Chain> {
    // Signatures first: each is stored after its records, so every one read signs a record that
    // the read below finds (unless records were deleted).
    let mut heads: Vec<HeadSignature> = Vec::new();
    loop {
        let after = heads.last().map(|h| h.seq).unwrap_or(0);
        let page = store.audit_signatures(source, after, 5000).await?;
        if page.is_empty() {
            break;
        }
        heads.extend(page);
    }
    let mut records: Vec<AuditRecord> = Vec::new();
    loop {
        let after = records.last().map(|r| r.seq).unwrap_or(0);
        let page = store.audit_chain(source, after, 5000).await?;
        if page.is_empty() {
            break;
        }
        records.extend(page);
    }
    Ok(Chain {
        source: source.to_string(),
        records,
        heads,
        pinned,
    })
}
