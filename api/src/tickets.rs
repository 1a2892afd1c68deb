//! Tickets, as the ticket system pushes them (`PUT /v1/tickets/{ticket}`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketInput {
    pub customer: String,
    pub cluster: String,
    /// The engineer it is assigned to.
    pub assignee: String,
    /// `open`, or anything else (which ends what was issued for it).
    pub status: String,
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub customer: String,
    pub cluster: String,
    pub assignee: String,
    pub status: String,
    pub title: String,
    pub updated_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ticket_bodies_round_trip() {
        let v = json!({"customer": "acme", "cluster": "acme-prod", "assignee": "alice",
                       "status": "open", "title": "disk full"});
        let t: TicketInput = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
        let untitled: TicketInput = serde_json::from_value(json!({"customer": "a",
            "cluster": "c", "assignee": "e", "status": "open"}))
        .unwrap();
        assert_eq!(untitled.title, "");
        let v = json!({"id": "SUP-1", "customer": "acme", "cluster": "acme-prod",
                       "assignee": "alice", "status": "closed", "title": "", "updated_at": 9});
        let t: Ticket = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }
}
