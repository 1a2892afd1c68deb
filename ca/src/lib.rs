//! sallyport-ca: key handling, certificate building and checking, KRL, key ids, and the pure
//! policy decision that is the only maker of a [`Grant`].
//!
//! The policy engine lives here rather than in the broker so that the `Grant` proof type can be
//! sealed (only `policy::decide` constructs one) and so that the gateway can ask the same engine
//! per channel request without depending on the broker.

pub mod cert;
pub mod chainsig;
pub mod cidr;
pub mod clock;
pub mod error;
pub mod grant;
pub mod keyid;
pub mod keys;
pub mod krl;
pub mod policy;
pub mod seal;

pub use cert::{CertIdentity, CertRefusal, build_user_cert, check_user_cert};
pub use error::CaError;
pub use grant::Grant;
pub use keyid::{KeyId, SessionKeyId};
pub use keys::TrustedCas;
pub use krl::Krl;
