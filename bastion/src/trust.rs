//! What the edge and the gateway trust, pulled from the broker and kept on disk so that both keep
//! working from their last copy while the broker is down: the user CA keys and the KRL.
//!
//! A change of the user CA set that no CA trusted now signed is refused, logged at every refresh
//! and audited (`edge_user_cas_refused` by an edge, `user_cas_refused` by a gateway): once per
//! offered set and hour, the next event counting the refreshes in between (`suppressed`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use russh::keys::{Certificate, PublicKey};
use sallyport_api::certificates::CaKeys;
use sallyport_audit::writers::ChainKind;
use sallyport_ca::clock::now_secs;
use sallyport_ca::{Krl, TrustedCas};
use serde_json::{Value, json};

use crate::broker_client::BrokerClient;
use crate::spool::Spool;
use crate::throttle::Throttle;

/// One event per offered set of user CAs refused, per this many seconds.
const UNSIGNED_CHANGE_WINDOW_SECS: u64 = 3600;

/// A change of the trusted user CAs that no CA trusted now signed: refused, the last set kept.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "refused a change of the trusted user CAs that no CA trusted now signed; keeping the last set \
     (pin them with user_ca_keys, or rotate through the broker: see docs/config.md)"
)]
pub struct UnsignedCaChange {
    /// SHA-256 fingerprints of the CAs trusted now.
    pub trusted: Vec<String>,
    /// ... and of those the broker (or whoever answered) offered.
    pub offered: Vec<String>,
    /// Whether the offer carried a signature at all (one that no trusted CA made).
    pub signed: bool,
}

impl UnsignedCaChange {
    /// The fields of its audit event.
    pub fn event(&self) -> Value {
        let added: Vec<&String> = self
            .offered
            .iter()
            .filter(|f| !self.trusted.contains(f))
            .collect();
        let removed: Vec<&String> = self
            .trusted
            .iter()
            .filter(|f| !self.offered.contains(f))
            .collect();
        json!({
            "code": "user_cas_unsigned",
            "reason": self.to_string(),
            "trusted": self.trusted,
            "offered": self.offered,
            "added": added,
            "removed": removed,
            "signature": if self.signed { "by no trusted CA" } else { "none" },
        })
    }
}

/// Where an edge or a gateway audits a refused change of its user CAs: its spool, the kind its
/// role writes it as, and the fields every such event carries.
pub struct CaAudit<K: ChainKind> {
    pub spool: Arc<Spool<K>>,
    pub kind: K,
    pub fields: Value,
}

pub struct Trust {
    cas: RwLock<TrustedCas>,
    krl: RwLock<Option<Krl>>,
    dir: PathBuf,
    /// From the configuration: the broker's word on user CAs is not taken.
    pinned: bool,
}

/// The configured user CA keys (`user_ca_keys`), or an error naming the bad line.
pub fn pinned_cas(lines: &[String]) -> anyhow::Result<Option<TrustedCas>> {
    if lines.is_empty() {
        return Ok(None);
    }
    let mut set = TrustedCas::new([]);
    for (i, l) in lines.iter().enumerate() {
        let key = PublicKey::from_openssh(l.trim()).map_err(|e| {
            anyhow::anyhow!("user_ca_keys[{i}] is not an OpenSSH public key line: {e}")
        })?;
        set.insert(key);
    }
    Ok(Some(set))
}

impl Trust {
    /// Load the cached copies from `dir` (if any); `pinned` (from the configuration) replaces
    /// the user CAs for good.
    pub fn load(dir: &Path, pinned: Option<TrustedCas>) -> Arc<Trust> {
        let cached = || {
            std::fs::read_to_string(dir.join("user_cas.pub"))
                .ok()
                .and_then(|t| TrustedCas::parse(&t, &dir.join("user_cas.pub")).ok())
                .unwrap_or_else(|| TrustedCas::new([]))
        };
        let is_pinned = pinned.is_some();
        let cas = pinned.unwrap_or_else(cached);
        let krl = std::fs::read(dir.join("krl"))
            .ok()
            .and_then(|b| Krl::from_bytes(&b).ok());
        Arc::new(Trust {
            cas: RwLock::new(cas),
            krl: RwLock::new(krl),
            dir: dir.to_path_buf(),
            pinned: is_pinned,
        })
    }

    pub fn cas(&self) -> TrustedCas {
        self.cas
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|_| TrustedCas::new([]))
    }

    pub fn set_cas(&self, keys: Vec<PublicKey>) {
        let cas = TrustedCas::new(keys);
        if let Ok(text) = cas.to_openssh() {
            let _ = write_atomic(&self.dir.join("user_cas.pub"), text.as_bytes());
        }
        if let Ok(mut c) = self.cas.write() {
            *c = cas;
        }
    }

    /// Revoked per the last KRL. Without any KRL yet, nothing is trusted (fail closed).
    pub fn is_revoked(&self, cert: &Certificate) -> bool {
        match self.krl.read() {
            Ok(k) => match k.as_ref() {
                Some(krl) => krl.is_revoked(cert),
                None => true,
            },
            Err(_) => true,
        }
    }

    pub fn has_krl(&self) -> bool {
        self.krl.read().map(|k| k.is_some()).unwrap_or(false)
    }

    fn set_krl(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let krl = Krl::from_bytes(bytes)?;
        write_atomic(&self.dir.join("krl"), bytes)?;
        if let Ok(mut k) = self.krl.write() {
            *k = Some(krl);
        }
        Ok(())
    }

    /// One refresh from the broker.
    pub async fn refresh(&self, broker: &BrokerClient) -> anyhow::Result<()> {
        let ca = broker.get_json("/v1/ca").await?;
        let user_cas = if self.pinned {
            Ok(())
        } else {
            serde_json::from_value::<CaKeys>(ca)
                .map_err(anyhow::Error::from)
                .and_then(|ca| self.offered_cas(&ca))
        };
        let bytes = broker.krl().await?;
        self.set_krl(&bytes)?;
        user_cas
    }

    /// Take the broker's set of user CAs if it may be taken: on first contact (nothing trusted
    /// yet) when one of its own keys signed it; later only when a CA trusted now signed it. A
    /// set nobody trusted vouches for (an on-path attacker's, a broker's database rewritten) is
    /// refused and the last set kept.
    pub fn offered_cas(&self, ca: &CaKeys) -> anyhow::Result<()> {
        let mut offered = TrustedCas::new([]);
        for line in &ca.trusted_user_cas {
            let key = PublicKey::from_openssh(line)
                .map_err(|_| anyhow::anyhow!("the broker sent a user CA that is not a key"))?;
            offered.insert(key);
        }
        if offered.is_empty() {
            anyhow::bail!("the broker named no user CA; keeping the last set");
        }
        let current = self.cas();
        if offered.signed_message() == current.signed_message() {
            return Ok(());
        }
        let signature = ca.signature.as_str();
        let vouched_by = if current.is_empty() {
            &offered
        } else {
            &current
        };
        if !offered.signed_by(signature, vouched_by) {
            let fingerprints = |set: &TrustedCas| -> Vec<String> {
                set.fingerprints().iter().map(|f| f.to_string()).collect()
            };
            return Err(UnsignedCaChange {
                trusted: fingerprints(&current),
                offered: fingerprints(&offered),
                signed: !signature.is_empty(),
            }
            .into());
        }
        if current.is_empty() {
            tracing::warn!(
                cas = ?offered.fingerprints().iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                "trusting the broker's user CAs on first contact (pin them with user_ca_keys)"
            );
        } else {
            tracing::info!(
                cas = ?offered.fingerprints().iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                "the trusted user CAs changed, signed by a CA trusted before"
            );
        }
        self.set_cas(offered.keys().to_vec());
        Ok(())
    }

    /// Refresh every `every`, keeping the last copy when the broker is unreachable. A refused
    /// change of the user CAs is audited through `audit` (when there is a spool to write to).
    pub async fn refresh_forever<K: ChainKind>(
        self: Arc<Self>,
        broker: BrokerClient,
        every: Duration,
        audit: Option<CaAudit<K>>,
    ) {
        let refusals: Throttle = Throttle::new(UNSIGNED_CHANGE_WINDOW_SECS, 1);
        loop {
            if let Err(e) = self.refresh(&broker).await {
                tracing::warn!(error = %e, "cannot refresh the KRL and CA keys from the broker; keeping the last copy");
                if let (Some(audit), Some(change)) = (&audit, e.downcast_ref::<UnsignedCaChange>())
                {
                    let mut data = audit.fields.clone();
                    crate::merge(&mut data, change.event());
                    let key = change.offered.join(",");
                    if let Some(n) = refusals.admit(&key, now_secs(), &data) {
                        crate::throttle::note_suppressed(&mut data, n);
                        if let Err(e) = audit.spool.append(audit.kind, data).await {
                            tracing::error!(error = %e, "audit spool unwritable");
                        }
                    }
                }
            }
            if let Some(audit) = &audit {
                for f in refusals.due(now_secs()) {
                    if let Err(e) = audit.spool.append(audit.kind, f.into_event()).await {
                        tracing::error!(error = %e, "audit spool unwritable");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

pub use crate::private::write_atomic;

/// `node1.acme-prod` -> (`node1`, `acme-prod`).
pub fn split_target(host: &str) -> Option<(&str, &str)> {
    let (node, cluster) = host.split_once('.')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    (ok(node) && ok(cluster)).then_some((node, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sallyport_ca::keys::generate_ed25519;
    use serde_json::json;

    fn offer(keys: &[&russh::keys::PrivateKey], signer: &russh::keys::PrivateKey) -> CaKeys {
        let set = TrustedCas::new(keys.iter().map(|k| k.public_key().clone()));
        let lines: Vec<String> = set.keys().iter().map(|k| k.to_openssh().unwrap()).collect();
        CaKeys {
            user_ca: signer.public_key().to_openssh().unwrap(),
            trusted_user_cas: lines,
            signature: set.sign(signer).unwrap(),
        }
    }

    #[test]
    fn user_cas_change_only_when_a_trusted_ca_signed_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate_ed25519("old").unwrap();
        let new = generate_ed25519("new").unwrap();
        let evil = generate_ed25519("evil").unwrap();
        let t = Trust::load(dir.path(), None);
        // First contact: a set signed by one of its own keys.
        t.offered_cas(&offer(&[&old], &old)).unwrap();
        assert!(t.cas().contains(old.public_key()));
        // An attacker's key added, signed by the attacker: refused, the last set kept.
        let e = t.offered_cas(&offer(&[&old, &evil], &evil)).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        // Typed, for its audit event: what was trusted, what was offered, what it would add.
        let change = e.downcast_ref::<UnsignedCaChange>().unwrap();
        let fp = |k: &russh::keys::PrivateKey| {
            k.public_key()
                .fingerprint(russh::keys::HashAlg::Sha256)
                .to_string()
        };
        assert_eq!(change.trusted, vec![fp(&old)]);
        let event = change.event();
        assert_eq!(event["code"], "user_cas_unsigned");
        assert_eq!(event["added"], json!([fp(&evil)]));
        assert_eq!(event["removed"], json!([]));
        assert_eq!(event["signature"], "by no trusted CA");
        let mut unsigned = offer(&[&old, &evil], &evil);
        unsigned.signature = String::new();
        let e = t.offered_cas(&unsigned).unwrap_err();
        assert_eq!(
            e.downcast_ref::<UnsignedCaChange>().unwrap().event()["signature"],
            "none"
        );
        assert!(!t.cas().contains(evil.public_key()));
        // Rotation through the broker: the new CA announced under the old one, then signing.
        t.offered_cas(&offer(&[&old, &new], &old)).unwrap();
        t.offered_cas(&offer(&[&new], &new)).unwrap();
        assert!(t.cas().contains(new.public_key()));
        assert!(!t.cas().contains(old.public_key()));
        // The cached set is what a restart trusts.
        let again = Trust::load(dir.path(), None);
        assert!(again.cas().contains(new.public_key()));
        assert_eq!(again.cas().len(), 1);
    }

    #[test]
    fn pinned_user_cas_ignore_the_broker() {
        let dir = tempfile::tempdir().unwrap();
        let mine = generate_ed25519("mine").unwrap();
        let line = mine.public_key().to_openssh().unwrap();
        let t = Trust::load(dir.path(), pinned_cas(&[line]).unwrap());
        assert!(t.pinned);
        assert!(t.cas().contains(mine.public_key()));
        assert!(pinned_cas(&["not a key".into()]).is_err());
        assert!(pinned_cas(&[]).unwrap().is_none());
    }

    #[test]
    fn targets() {
        assert_eq!(
            split_target("node1.acme-prod"),
            Some(("node1", "acme-prod"))
        );
        for bad in ["node1", ".acme", "node1.", "a.b.c", "n/1.c", "n 1.c", ""] {
            assert_eq!(split_target(bad), None, "{bad}");
        }
    }
}
