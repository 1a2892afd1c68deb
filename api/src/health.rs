//! `GET /v1/health`: the broker is up (no authentication).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

impl Health {
    pub fn ok() -> Health {
        Health {
            status: "ok".into(),
        }
    }
}
