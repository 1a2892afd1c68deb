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

pub use cert::{CertIdentity, CertRefusal, build_user_cert, check_user_cert};
pub use error::CaError;
pub use grant::Grant;
pub use keyid::{KeyId, SessionKeyId};
pub use keys::TrustedCas;
pub use krl::Krl;

/// The configuration of this crate's property tests: `cases` generated inputs each, or
/// `PROPTEST_CASES` when set (a longer run). A failing input is kept, shrunk, under
/// `proptest-regressions/` next to the crate's sources and tried first on every later run.
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        cases,
        ..proptest::test_runner::Config::default()
    }
}
