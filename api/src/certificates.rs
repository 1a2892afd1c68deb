//! `POST /v1/certificates`: an engineer asks for a certificate; `POST /v1/revocations`: they
//! are revoked; `GET /v1/ca`: the user CAs they are signed by.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The engineer's public key, OpenSSH format. The private key never leaves the laptop.
    pub public_key: String,
    pub ticket: String,
    /// Defaults to the ticket's cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Defaults to every login of the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logins: Option<Vec<String>>,
    /// Ask for a shorter lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// The certificate, and what the engineer's SSH client needs to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub certificate: String,
    pub serial: String,
    pub key_id: String,
    pub grant: String,
    pub engineer: String,
    pub ticket: String,
    pub customer: String,
    pub cluster: String,
    pub logins: Vec<String>,
    pub valid_after: u64,
    pub valid_before: u64,
    pub permit_port_forwarding: bool,
    pub per_session_mfa: bool,
    /// The edge's public `host:port` (config `edge_address`, else the address an edge
    /// registered), for the client's `ProxyJump`.
    #[serde(default)]
    pub edge: Option<String>,
    /// Every edge address engineers may dial (`edge` first): with more than one, the client
    /// tries them in turn (`sallyport connect`), so that one edge down moves new sessions to
    /// another.
    #[serde(default)]
    pub edges: Vec<String>,
    /// The cluster's host CA keys (of its enrolled gateways), for the client's known_hosts
    /// `@cert-authority *.<cluster>` lines.
    #[serde(default)]
    pub host_ca_public_keys: Vec<String>,
    /// The edges' host keys (config `edge_host_keys` and those edges registered), pinned by
    /// the client for the jump hop.
    #[serde(default)]
    pub edge_host_keys: Vec<String>,
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeScope {
    Serial,
    Grant,
    Engineer,
    Approval,
    Ticket,
}

impl RevokeScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeScope::Serial => "serial",
            RevokeScope::Grant => "grant",
            RevokeScope::Engineer => "engineer",
            RevokeScope::Approval => "approval",
            RevokeScope::Ticket => "ticket",
        }
    }
}

/// `POST /v1/revocations`: revoke every certificate whose `scope` is `value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub scope: RevokeScope,
    pub value: String,
    pub reason: String,
}

/// A certificate revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub serial: String,
    pub grant: String,
    pub engineer: String,
    pub key_id: String,
}

/// The answer to `POST /v1/revocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocations {
    pub revoked: Vec<Revoked>,
}

/// `GET /v1/ca`: the user CA that signs certificates now, every user CA edges and gateways
/// trust, and that set signed by the signing CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaKeys {
    pub user_ca: String,
    pub trusted_user_cas: Vec<String>,
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn certificate_bodies_round_trip() {
        for v in [
            json!({"public_key": "ssh-ed25519 AAAA", "ticket": "SUP-1"}),
            json!({"public_key": "ssh-ed25519 AAAA", "ticket": "SUP-1", "cluster": "acme-prod",
                   "logins": ["ubuntu"], "ttl_secs": 1800}),
        ] {
            let r: IssueRequest = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
        let v = json!({"certificate": "ssh-ed25519-cert-v01@openssh.com AAAA", "serial": "42",
            "key_id": "k", "grant": "g", "engineer": "alice", "ticket": "SUP-1",
            "customer": "acme", "cluster": "acme-prod", "logins": ["ubuntu"],
            "valid_after": 1, "valid_before": 2, "permit_port_forwarding": false,
            "per_session_mfa": true, "edge": "edge.example:2222",
            "edges": ["edge.example:2222", "edge-b.example:2222"],
            "host_ca_public_keys": ["ssh-ed25519 B"], "edge_host_keys": []});
        let issued: Issued = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&issued).unwrap(), v);
        let v = json!({"scope": "approval", "value": "ap-1", "reason": "r"});
        let r: RevokeRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        let v = json!({"user_ca": "ssh-ed25519 A", "trusted_user_cas": ["ssh-ed25519 A"],
                       "signature": "sig"});
        let k: CaKeys = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap(), v);
    }
}
