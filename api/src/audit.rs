//! Reading the audit log: search (`GET /v1/audit/events`), the chains and their signed heads
//! for verification (`GET /v1/audit/sources`, `/v1/audit/chain`, `/v1/audit/signatures`), and
//! the keys that sign them (`GET /v1/audit/keys`).

use sallyport_audit::AuditRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `GET /v1/audit/events`: each event flat (`kind`, `time`, `time_ms`, `source`, `seq`, `hash`,
/// the subject fields, then the event's own fields: as many as its kind has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvents {
    pub events: Vec<Map<String, Value>>,
    /// The cursor of the next page (`before`), when a newest-first page was full.
    pub next: Option<String>,
}

/// How far a source says its chain goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub source: String,
    pub reported: u64,
    /// Unix seconds.
    pub reported_at: u64,
}

/// `GET /v1/audit/sources`: the chains stored, and the heads their sources reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSources {
    pub sources: Vec<String>,
    pub heads: Vec<AuditHead>,
}

/// `GET /v1/audit/chain`: a page of one chain, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditChain {
    pub records: Vec<AuditRecord>,
}

/// A signed head of a chain: record `seq` had `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadSignature {
    pub seq: u64,
    pub hash: String,
    pub signature: String,
}

/// `GET /v1/audit/signatures`: a page of one chain's signed heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSignatures {
    pub source: String,
    pub signatures: Vec<HeadSignature>,
}

/// A key that signs a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    pub source: String,
    /// OpenSSH line.
    pub public_key: String,
    pub fingerprint: String,
    /// Unix seconds; none for the broker's own key (it lives in its data_dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<u64>,
    pub pinned_by: String,
}

/// `GET /v1/audit/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKeys {
    pub keys: Vec<AuditKey>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audit_bodies_round_trip() {
        let v = json!({"keys": [
            {"source": "broker", "public_key": "ssh-ed25519 A", "fingerprint": "SHA256:x",
             "pinned_by": "data_dir"},
            {"source": "gateway:g", "public_key": "ssh-ed25519 B", "fingerprint": "SHA256:y",
             "pinned_at": 5, "pinned_by": "enrollment"}]});
        let k: AuditKeys = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap(), v);
        let v = json!({"events": [{"kind": "revoked", "seq": 1, "command": null}], "next": null});
        let e: AuditEvents = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), v);
    }
}
