//! A secret in a request body: sent by a client, never printed (`SecretString`'s `Debug` is
//! redacted).

use secrecy::{ExposeSecret, SecretString};
use serde::Serializer;

/// Serialize a secret as the plain string the broker reads.
pub(crate) fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}
