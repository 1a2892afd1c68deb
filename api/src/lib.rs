//! The bodies of the broker's HTTP API under `/v1/`, as plain serde types: the broker answers
//! and reads them, its clients (the `sallyport` CLI, the edge and the gateway) send and read the
//! same ones. Pure: serde, and the audit record's own type for the audit ingest.
//!
//! The OpenAPI document the broker serves (`broker/openapi.json`) is checked against these types
//! by the broker's tests.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod certificates;
pub mod error;
pub mod gateways;
pub mod health;
pub mod identity;
pub mod login;
pub mod report;
pub mod requests;
pub mod sessions;
pub mod tickets;
pub mod webhooks;

mod secret;

pub use error::{ErrorBody, ErrorDetail, Reason};

/// The type of the secrets in request bodies (a password, a TOTP code): never printed.
pub use secrecy::SecretString;
