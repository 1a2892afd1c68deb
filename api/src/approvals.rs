//! A customer's approvals of access groups (`/v1/approvals`) and its own forbid policies
//! (`/v1/customers/{customer}/policies`).

use serde::{Deserialize, Serialize};

/// An approval as an approver makes or changes it (`POST /v1/approvals`,
/// `PUT /v1/approvals/{approval}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalInput {
    pub cluster: String,
    pub group: String,
    pub logins: Vec<String>,
    /// Longest certificate lifetime under this approval, seconds.
    pub max_session_secs: u64,
    /// Unix seconds.
    pub valid_until: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<u64>,
    #[serde(default)]
    pub just_in_time: bool,
    #[serde(default)]
    pub per_session_mfa: bool,
    /// Each session waits at the gateway until an approver of the customer watches it.
    #[serde(default)]
    pub observer_required: bool,
    #[serde(default)]
    pub port_forwarding: bool,
    #[serde(default)]
    pub source_networks: Vec<String>,
    /// Distinct approvers who must approve each just-in-time request (1 to 5).
    #[serde(default = "one")]
    pub approvers_required: u64,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub customer: String,
    pub cluster: String,
    pub group: String,
    pub logins: Vec<String>,
    pub max_session_secs: u64,
    pub valid_from: u64,
    pub valid_until: u64,
    pub just_in_time: bool,
    pub per_session_mfa: bool,
    pub port_forwarding: bool,
    pub source_networks: Vec<String>,
    pub created_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub withdrawn_at: Option<u64>,
    pub withdrawn_by: Option<String>,
    /// Distinct approvers who must approve each just-in-time request (a quorum).
    pub approvers_required: u64,
    /// Each session waits at the gateway until an approver of the customer watches it.
    #[serde(default)]
    pub observer_required: bool,
}

/// A customer's policy, as saved (`PUT /v1/customers/{customer}/policies/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Cedar text: forbid rules about the customer's own clusters.
    pub body: String,
}

/// `DELETE /v1/customers/{customer}/policies/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDeleted {
    /// The policy's name.
    pub deleted: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerPolicy {
    pub id: String,
    pub customer: String,
    pub name: String,
    pub body: String,
    pub created_by: String,
    pub created_at: u64,
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
    fn approval_bodies_round_trip() {
        let a: ApprovalInput = round_trips(json!({"cluster": "acme-prod", "group": "support-l2",
            "logins": ["ubuntu"], "max_session_secs": 3600, "valid_until": 2000000000,
            "just_in_time": true, "per_session_mfa": false, "observer_required": false,
            "port_forwarding": false, "source_networks": ["10.0.0.0/8"],
            "approvers_required": 2}));
        assert_eq!(a.valid_from, None);
        let least: ApprovalInput = serde_json::from_value(json!({"cluster": "c", "group": "g",
            "logins": ["l"], "max_session_secs": 60, "valid_until": 1}))
        .unwrap();
        assert_eq!(least.approvers_required, 1);
        round_trips::<Approval>(
            json!({"id": "ap-1", "customer": "acme", "cluster": "acme-prod",
            "group": "support-l2", "logins": ["ubuntu"], "max_session_secs": 3600,
            "valid_from": 1, "valid_until": 2, "just_in_time": false, "per_session_mfa": false,
            "port_forwarding": false, "source_networks": [], "created_by": "approver:a",
            "created_at": 1, "updated_at": 1, "withdrawn_at": null, "withdrawn_by": null,
            "approvers_required": 1, "observer_required": false}),
        );
        round_trips::<PolicyInput>(json!({"body": "forbid(principal, action, resource);"}));
        round_trips::<CustomerPolicy>(json!({"id": "p", "customer": "acme", "name": "n",
            "body": "b", "created_by": "approver:a", "created_at": 1}));
    }
}
