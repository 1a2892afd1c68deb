//! `POST /v1/certificates`: an engineer asks for a certificate.

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
    }
}
