//! Webhooks: set up (`POST /v1/webhooks`), listed, deleted, and their deliveries
//! (`GET /v1/webhooks/deliveries`, `GET /v1/webhooks/{webhook}/deliveries`).

use serde::{Deserialize, Serialize};

/// A webhook to set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    pub url: String,
    /// `json` (default) or `slack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Event kinds to be told about; empty or `["*"]`: every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The signing secret (at least 24 characters); without it the broker makes one and
    /// answers it once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Only the operator: a customer's webhook (without it, the operator's is vendor-wide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// A webhook as listed: never its URL in full nor its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    /// `None`: vendor-wide (the operator's), told about every customer's events.
    pub customer: Option<String>,
    /// Scheme, host and the first part of the path.
    pub url: String,
    pub format: String,
    /// Event kinds, or `["*"]` for all that are notified.
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: u64,
    pub enabled: bool,
}

/// The answer `201 Created`: the webhook, and the secret when the broker made it (shown once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: Webhook,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    pub webhooks: Vec<Webhook>,
}

/// `DELETE /v1/webhooks/{webhook}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    pub id: String,
    pub deleted: bool,
    /// Deliveries still queued for it, now cancelled.
    pub cancelled_deliveries: u64,
}

/// A delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub webhook: String,
    pub customer: Option<String>,
    pub url: String,
    /// The event: `<source>#<seq>`.
    pub event: String,
    pub kind: String,
    /// pending | delivered | failed | cancelled
    pub status: String,
    pub attempts: u64,
    /// Unix seconds of the next attempt (pending only).
    pub next_at: Option<u64>,
    pub last_error: Option<String>,
    pub last_status: Option<u64>,
    pub created_at: u64,
    pub delivered_at: Option<u64>,
}

/// `GET /v1/webhooks/deliveries`, `GET /v1/webhooks/{webhook}/deliveries`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn webhook_bodies_round_trip() {
        let hook = json!({"id": "wh-1", "customer": null, "url": "https://x/", "format": "json",
            "events": ["*"], "created_by": "operator:op", "created_at": 1, "enabled": true});
        let mut created = hook.clone();
        created["secret"] = json!("s".repeat(24));
        for v in [hook.clone(), created] {
            let w: WebhookCreated = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(serde_json::to_value(&w).unwrap(), v);
        }
        let v = json!({"url": "https://x/hook", "events": ["revoked"]});
        let i: WebhookInput = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&i).unwrap(), v);
    }
}
