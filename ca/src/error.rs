//! The one error type of the crate. Refusals of a presented certificate are not errors of ours but
//! data about the certificate: they live in [`crate::cert::CertRefusal`].

use std::path::PathBuf;

use russh::keys::ssh_key;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "private key {path} is accessible by group or others (mode {mode:04o}); \
         restrict it with `chmod 600 {path}`"
    )]
    InsecureKeyFile { path: PathBuf, mode: u32 },

    #[error(
        "private key {path} is protected by a passphrase; sallyport needs an unencrypted key \
         protected by file permissions (0600)"
    )]
    EncryptedKey { path: PathBuf },

    #[error("{path}: not an OpenSSH private key: {source}")]
    PrivateKeyFormat {
        path: PathBuf,
        #[source]
        source: ssh_key::Error,
    },

    #[error("{path}:{line}: not an OpenSSH public key: {source}")]
    PublicKeyFormat {
        path: PathBuf,
        line: usize,
        #[source]
        source: ssh_key::Error,
    },

    #[error("{path}: no trusted CA public key in the file")]
    NoTrustedCa { path: PathBuf },

    /// An SSH key or certificate operation failed (key generation, encoding, signing).
    #[error("{what}: {source}")]
    Ssh {
        what: &'static str,
        #[source]
        source: ssh_key::Error,
    },

    #[error("invalid key id: {0}")]
    KeyId(String),

    #[error("grant {grant} has serial 0; a certificate needs a non-zero serial")]
    ZeroSerial { grant: String },

    #[error("cannot issue certificate: {0}")]
    CertificateRequest(String),

    #[error("invalid network {value:?}: {reason}")]
    Network { value: String, reason: &'static str },

    #[error("cannot revoke: {0}")]
    Revocation(String),

    #[error("malformed KRL: {0}")]
    KrlFormat(String),
}
