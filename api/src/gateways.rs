//! Gateways: made by the operator (`POST /v1/clusters/{cluster}/gateways`), enrolled with their
//! join token (`POST /v1/gateways/enroll`), shown (`GET /v1/clusters/{cluster}/gateways`); and
//! the audit chains gateways and edges ship (`POST /v1/audit/records`).

use sallyport_audit::AuditRecord;
use serde::{Deserialize, Serialize};

/// The operator makes a gateway of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGateway {
    pub name: String,
}

/// A gateway made, with its one-time join token (shown once: only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayCreated {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub join_token: String,
    /// Unix seconds.
    pub join_token_expires_at: u64,
}

/// A gateway as the broker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    pub id: String,
    pub cluster: String,
    pub name: String,
    pub created_at: u64,
    pub enrolled_at: Option<u64>,
    pub node_ca_public_key: Option<String>,
    pub host_ca_public_key: Option<String>,
    pub revoked_at: Option<u64>,
}

/// A gateway enrolls: its join token is the credential; the keys were made in the customer's
/// network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub join_token: String,
    pub node_ca_public_key: String,
    pub host_ca_public_key: String,
    /// The key that will sign the gateway's audit chain (Ed25519, OpenSSH line).
    pub audit_public_key: String,
}

/// The gateway's credential (shown once: only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub gateway: String,
    pub cluster: String,
    pub credential: String,
    pub audit_key_fingerprint: String,
}

/// A batch of the caller's own audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditBatch {
    #[serde(default)]
    pub records: Vec<AuditRecord>,
    /// The highest sequence number in the sender's spool: what the broker should hold once
    /// shipping catches up. Sent with every batch, and alone when a batch cannot be sent.
    #[serde(default)]
    pub head: Option<u64>,
    /// The sender's signature (armored SSHSIG) of its chain's head at the batch's last record:
    /// required with every non-empty batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The public key that made it (OpenSSH line): pinned at the chain's first signed batch when
    /// no key is pinned yet (an edge), else it must be the pinned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// What a batch stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStored {
    /// Records of the batch stored now (those stored before are acknowledged again).
    pub stored: u64,
    /// The chain is stored from 1 through this sequence number.
    pub acknowledged_through: u64,
}

/// `PUT /v1/recordings/{session}`: a recording stored (`201`), or the same bytes stored before
/// (`200`, `stored: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingStored {
    pub session: String,
    pub size: u64,
    /// Hex.
    pub sha256: String,
    pub stored: bool,
}

/// `GET /v1/clusters/{cluster}/host-ca`: the host CA keys of the cluster's enrolled gateways,
/// for an engineer's known_hosts and the edge's check of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCa {
    pub cluster: String,
    pub host_ca_public_keys: Vec<String>,
}

/// A node of the gateway's cluster, as the gateway reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayNode {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// The host keys the operator registered (OpenSSH lines); only these are accepted.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// Without registered keys: pin the node's first key (`known_nodes`) instead of refusing.
    #[serde(default)]
    pub trust_on_first_use: bool,
}

/// One of the customer's own policies, as the gateway asks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPolicy {
    pub name: String,
    /// Cedar text.
    pub body: String,
}

/// `GET /v1/gateway/self`: what the calling gateway needs of its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewaySelf {
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub customer: Option<String>,
    pub nodes: Vec<GatewayNode>,
    pub policies: Vec<NamedPolicy>,
    /// The user CAs trusted now (OpenSSH lines).
    pub user_ca: Vec<String>,
    /// The broker's hidden-input key (`sallyport-seal-x25519 <base64>`): what is typed without
    /// echo at a password prompt is sealed to it. A pty channel is refused until the gateway
    /// has one.
    #[serde(default)]
    pub hidden_input_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn round_trips<T: Serialize + serde::de::DeserializeOwned>(v: Value) {
        let t: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }

    #[test]
    fn gateway_bodies_round_trip() {
        round_trips::<NewGateway>(json!({"name": "gw1"}));
        round_trips::<GatewayCreated>(json!({"id": "gw-1", "name": "gw1",
            "cluster": "acme-prod", "join_token": "spj_x", "join_token_expires_at": 86400}));
        round_trips::<Gateway>(json!({"id": "gw-1", "cluster": "acme-prod", "name": "gw1",
            "created_at": 1, "enrolled_at": null, "node_ca_public_key": null,
            "host_ca_public_key": "ssh-ed25519 A", "revoked_at": null}));
        round_trips::<EnrollRequest>(json!({"join_token": "spj_x", "node_ca_public_key": "a",
            "host_ca_public_key": "b", "audit_public_key": "c"}));
        round_trips::<Enrolled>(json!({"gateway": "gw-1", "cluster": "acme-prod",
            "credential": "spg_x", "audit_key_fingerprint": "SHA256:x"}));
        round_trips::<GatewaySelf>(json!({"id": "gw-1", "name": "gw1", "cluster": "acme-prod",
            "customer": "acme", "nodes": [{"name": "n1", "address": "10.0.0.1", "port": 22,
            "host_keys": [], "trust_on_first_use": false}],
            "policies": [{"name": "p", "body": "forbid(principal, action, resource);"}],
            "user_ca": ["ssh-ed25519 A"], "hidden_input_key": "sallyport-seal-x25519 AAAA"}));
    }

    #[test]
    fn audit_batches_round_trip() {
        let record = json!({"source": "gateway:gw-1", "seq": 1, "time": 1000,
            "kind": "session_started", "data": {"cluster": "acme-prod"},
            "prev_hash": "0".repeat(64), "hash": "a".repeat(64)});
        round_trips::<AuditBatch>(json!({"records": [record], "head": 1,
            "signature": "-----BEGIN SSH SIGNATURE-----", "public_key": "ssh-ed25519 A"}));
        round_trips::<AuditBatch>(json!({"records": [], "head": 7}));
        let empty: AuditBatch = serde_json::from_value(json!({})).unwrap();
        assert_eq!((empty.records.len(), empty.head), (0, None));
        round_trips::<BatchStored>(json!({"stored": 3, "acknowledged_through": 9}));
    }
}
