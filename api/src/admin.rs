//! The operator's API: customers, clusters and their nodes, engineers' and accounts'
//! enrollment, disabling, and API tokens.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    pub id: String,
    /// Defaults to the id.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub name: String,
}

/// `POST /v1/clusters` takes a cluster as it answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub id: String,
    pub customer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    pub name: String,
    pub address: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// The node's SSH host public keys (OpenSSH lines); the gateway accepts only these.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// Let the gateway pin the first key of a node that has no registered key (audited).
    #[serde(default)]
    pub trust_on_first_use: bool,
}

fn default_port() -> u16 {
    22
}

/// What `PATCH /v1/clusters/{cluster}/nodes/{node}` changes; the rest stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replaces the registered keys (`[]` removes them all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_keys: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_on_first_use: Option<bool>,
}

impl NodeChange {
    pub fn is_empty(&self) -> bool {
        self == &NodeChange::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub cluster: String,
    pub name: String,
    pub address: String,
    pub port: u16,
    /// The node's registered SSH host public keys (OpenSSH lines, no comment).
    pub host_keys: Vec<String>,
    /// Whether the gateway may pin the first key of a node without registered keys.
    pub trust_on_first_use: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollEngineer {
    pub uid: String,
    /// Replace an existing enrollment (a lost authenticator).
    #[serde(default)]
    pub replace: bool,
}

/// A TOTP enrollment, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub user: String,
    pub totp_secret: String,
    pub otpauth_uri: String,
}

/// `POST /v1/{engineers,accounts}/{name}/disable`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableInput {
    #[serde(default)]
    pub reason: Option<String>,
}

/// An engineer or account disabled (`disabled: true`, with the reason and the certificates
/// revoked) or enabled again (`disabled: false`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engineer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_revoked: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub username: String,
    /// `approver` or `reviewer`.
    pub role: String,
    /// An approver's customer.
    pub customer: Option<String>,
    #[serde(serialize_with = "crate::secret::expose")]
    pub password: SecretString,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    pub customer: Option<String>,
    /// A ticket-system token for every customer's tickets (the vendor's own ticket system):
    /// an explicit choice, named in the audit event; otherwise it needs `customer`.
    #[serde(default)]
    pub all_customers: bool,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub role: String,
    pub customer: Option<String>,
    pub name: String,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<Token>,
}

/// A token made: its secret is shown once (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    pub name: String,
    pub role: String,
    pub customer: Option<String>,
    pub token: String,
}

/// A token revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    pub id: String,
    pub name: String,
    pub role: String,
    pub customer: Option<String>,
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn round_trips<T: Serialize + serde::de::DeserializeOwned>(v: Value) -> T {
        let t: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        t
    }

    #[test]
    fn admin_bodies_round_trip() {
        round_trips::<NewCustomer>(json!({"id": "acme", "name": null}));
        round_trips::<Customer>(json!({"id": "acme", "name": "Acme"}));
        round_trips::<Cluster>(json!({"id": "acme-prod", "customer": "acme"}));
        round_trips::<NewNode>(json!({"name": "node1", "address": "10.0.0.5", "port": 22,
            "host_keys": ["ssh-ed25519 A"], "trust_on_first_use": false}));
        let least: NewNode = serde_json::from_value(json!({"name": "n", "address": "a"})).unwrap();
        assert_eq!((least.port, least.host_keys.len()), (22, 0));
        let change: NodeChange = round_trips(json!({"host_keys": []}));
        assert!(!change.is_empty() && NodeChange::default().is_empty());
        round_trips::<Node>(
            json!({"cluster": "c", "name": "n", "address": "a", "port": 2222,
            "host_keys": [], "trust_on_first_use": true}),
        );
        round_trips::<EnrollEngineer>(json!({"uid": "alice", "replace": false}));
        round_trips::<Enrollment>(json!({"user": "alice", "totp_secret": "S",
            "otpauth_uri": "otpauth://totp/x"}));
        round_trips::<DisableInput>(json!({"reason": "left"}));
        round_trips::<Disabled>(json!({"engineer": "alice", "disabled": true,
            "reason": "left", "certificates_revoked": 2}));
        round_trips::<Disabled>(json!({"account": "a", "disabled": false}));
        round_trips::<NewAccount>(json!({"username": "a", "role": "approver",
            "customer": "acme", "password": "long enough password"}));
        round_trips::<NewToken>(json!({"name": "jira", "role": "ticket_system",
            "customer": null, "all_customers": true}));
        round_trips::<Tokens>(json!({"tokens": [{"id": "t", "role": "edge",
            "customer": null, "name": "edge-eu1", "created_at": 1, "revoked_at": null}]}));
        round_trips::<TokenCreated>(json!({"id": "t", "name": "n", "role": "reviewer",
            "customer": null, "token": "spt_x"}));
        round_trips::<TokenRevoked>(json!({"id": "t", "name": "n", "role": "reviewer",
            "customer": null, "revoked": true}));
    }
}
