//! Just-in-time access requests: `GET /v1/access-requests[/{request}]`, an approver's decision
//! (`POST /v1/access-requests/{request}/decision`), and the engineer's wait for one (a `202` to
//! `POST /v1/certificates`).

use serde::{Deserialize, Serialize};

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for the customer's approvers.
    Pending,
    /// Approved: the engineer's next login may use it, once.
    Approved,
    Denied,
    /// Its approval was changed or withdrawn.
    Void,
    /// A newer request of the same engineer, ticket and cluster replaced it.
    Superseded,
    /// A certificate was issued under it.
    Used,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Void => "void",
            RequestStatus::Superseded => "superseded",
            RequestStatus::Used => "used",
        }
    }

    /// The status this text names, if any.
    pub fn parse(s: &str) -> Option<RequestStatus> {
        [
            RequestStatus::Pending,
            RequestStatus::Approved,
            RequestStatus::Denied,
            RequestStatus::Void,
            RequestStatus::Superseded,
            RequestStatus::Used,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub id: String,
    pub engineer: String,
    pub ticket: String,
    pub cluster: String,
    pub approval: String,
    pub status: RequestStatus,
    pub created_at: u64,
    pub decided_by: Option<String>,
    pub decided_at: Option<u64>,
    pub reason: Option<String>,
    /// What the approver sees and the one certificate may carry: these logins, at most this
    /// lifetime (seconds).
    pub logins: Vec<String>,
    pub ttl_secs: u64,
    /// Distinct approvers needed (the approval's quorum when the request was made).
    pub approvers_required: u64,
    /// Who approved so far.
    #[serde(default)]
    pub approved_by: Vec<String>,
}

/// An approver's decision on a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Approve only some of the logins asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logins: Option<Vec<String>>,
    /// Approve a shorter certificate lifetime than asked for (seconds, at least 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// The answer `202 Accepted` to `POST /v1/certificates`: a request waits for the customer's
/// approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuePending {
    /// `pending`.
    pub status: String,
    pub message: String,
    pub request: AccessRequest,
    /// The request that already gave its one certificate, when that is why this one waits.
    pub used_request: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> serde_json::Value {
        json!({"id": "rq-1", "engineer": "alice", "ticket": "SUP-1", "cluster": "acme-prod",
               "approval": "ap-1", "status": "pending", "created_at": 1, "decided_by": null,
               "decided_at": null, "reason": null, "logins": ["ubuntu"], "ttl_secs": 3600,
               "approvers_required": 2, "approved_by": ["acme-approver"]})
    }

    #[test]
    fn access_requests_round_trip() {
        let v = request();
        let r: AccessRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(r.status, RequestStatus::Pending);
        assert_eq!(serde_json::to_value(&r).unwrap(), v);
        for s in [
            "pending",
            "approved",
            "denied",
            "void",
            "superseded",
            "used",
        ] {
            let st: RequestStatus = serde_json::from_value(json!(s)).unwrap();
            assert_eq!(st.as_str(), s);
        }
        let v = json!({"status": "pending", "message": "waits", "request": request(),
                       "used_request": "rq-0"});
        let p: IssuePending = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
    }

    #[test]
    fn decisions_round_trip() {
        for v in [
            json!({"approve": false, "reason": "not now"}),
            json!({"approve": true, "logins": ["ubuntu"], "ttl_secs": 600}),
        ] {
            let d: Decision = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&d).unwrap(), v);
        }
    }
}
