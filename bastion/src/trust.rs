//! What the edge and the gateway trust, pulled from the broker and kept on disk so that both keep
//! working from their last copy while the broker is down: the user CA keys and the KRL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use russh::keys::{Certificate, PublicKey};
use sallyport_ca::{Krl, TrustedCas};

use crate::broker_client::BrokerClient;

pub struct Trust {
    cas: RwLock<TrustedCas>,
    krl: RwLock<Option<Krl>>,
    dir: PathBuf,
}

impl Trust {
    /// Load the cached copies from `dir` (if any).
    pub fn load(dir: &Path) -> Arc<Trust> {
        let cas = std::fs::read_to_string(dir.join("user_cas.pub"))
            .ok()
            .and_then(|t| TrustedCas::parse(&t, &dir.join("user_cas.pub")).ok())
            .unwrap_or_else(|| TrustedCas::new([]));
        let krl = std::fs::read(dir.join("krl"))
            .ok()
            .and_then(|b| Krl::from_bytes(&b).ok());
        Arc::new(Trust {
            cas: RwLock::new(cas),
            krl: RwLock::new(krl),
            dir: dir.to_path_buf(),
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
        let keys: Vec<PublicKey> = ca["trusted_user_cas"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|v| v.as_str())
                    .filter_map(|s| PublicKey::from_openssh(s).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !keys.is_empty() {
            self.set_cas(keys);
        }
        let bytes = broker.krl().await?;
        self.set_krl(&bytes)
    }

    /// Refresh every `every`, keeping the last copy when the broker is unreachable.
    pub async fn refresh_forever(self: Arc<Self>, broker: BrokerClient, every: Duration) {
        loop {
            if let Err(e) = self.refresh(&broker).await {
                tracing::warn!(error = %e, "cannot refresh the KRL and CA keys from the broker; keeping the last copy");
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
    #[test]
    fn targets() {
        assert_eq!(
            super::split_target("node1.acme-prod"),
            Some(("node1", "acme-prod"))
        );
        for bad in ["node1", ".acme", "node1.", "a.b.c", "n/1.c", "n 1.c", ""] {
            assert_eq!(super::split_target(bad), None, "{bad}");
        }
    }
}
