//! Who is calling (`GET /v1/whoami`), and what an edge says of itself (`POST /v1/edge/self`).

use serde::{Deserialize, Serialize};

/// The caller the broker sees behind a credential, by role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Whoami {
    Operator {
        name: String,
    },
    Reviewer {
        name: String,
    },
    Approver {
        name: String,
        customer: String,
    },
    TicketSystem {
        name: String,
        /// Set: it may only write tickets of this customer.
        customer: Option<String>,
    },
    Engineer {
        name: String,
        groups: Vec<String>,
        mfa: bool,
    },
    Gateway {
        /// The gateway's id.
        name: String,
        cluster: String,
    },
    Edge {
        name: String,
    },
}

impl Whoami {
    /// The role, as the API names it.
    pub fn role(&self) -> &'static str {
        match self {
            Whoami::Operator { .. } => "operator",
            Whoami::Reviewer { .. } => "reviewer",
            Whoami::Approver { .. } => "approver",
            Whoami::TicketSystem { .. } => "ticket_system",
            Whoami::Engineer { .. } => "engineer",
            Whoami::Gateway { .. } => "gateway",
            Whoami::Edge { .. } => "edge",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Whoami::Operator { name }
            | Whoami::Reviewer { name }
            | Whoami::Approver { name, .. }
            | Whoami::TicketSystem { name, .. }
            | Whoami::Engineer { name, .. }
            | Whoami::Gateway { name, .. }
            | Whoami::Edge { name } => name,
        }
    }
}

/// An edge registers its host key and the address engineers dial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSelf {
    /// The edge's SSH host public key (OpenSSH line): engineers pin it for the jump hop.
    pub host_key: String,
    /// `host:port` engineers dial (the edge's `public_address`), if it knows it.
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRegistered {
    pub name: String,
    pub host_key_fingerprint: String,
    pub address: Option<String>,
    /// Whether the key or the address changed (then audited).
    pub changed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whoami_round_trips_for_every_role() {
        for v in [
            json!({"role": "operator", "name": "op"}),
            json!({"role": "reviewer", "name": "rev"}),
            json!({"role": "approver", "name": "a", "customer": "acme"}),
            json!({"role": "ticket_system", "name": "jira", "customer": null}),
            json!({"role": "ticket_system", "name": "jira", "customer": "acme"}),
            json!({"role": "engineer", "name": "alice", "groups": ["g"], "mfa": true}),
            json!({"role": "gateway", "name": "gw-1", "cluster": "acme-prod"}),
            json!({"role": "edge", "name": "edge-eu1"}),
        ] {
            let w: Whoami = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(v["role"], w.role());
            assert_eq!(v["name"], w.name());
            assert_eq!(serde_json::to_value(&w).unwrap(), v);
        }
    }

    #[test]
    fn edge_registration_round_trips() {
        for v in [
            json!({"host_key": "ssh-ed25519 AAAA", "address": "edge.example:2222"}),
            json!({"host_key": "ssh-ed25519 AAAA", "address": null}),
        ] {
            let r: EdgeSelf = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
        let v = json!({"name": "edge-eu1", "host_key_fingerprint": "SHA256:x",
                       "address": null, "changed": true});
        let r: EdgeRegistered = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
    }
}
