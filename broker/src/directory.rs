//! The engineers' directory: LDAP (bind as the engineer at login and read the groups; re-read
//! the groups with the service account at each certificate issuance) or the embedded directory
//! file used when no LDAP is configured (the demo).

use std::path::Path;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::LdapConfig;

pub mod dn;
mod ldap;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Unknown user or wrong password: one answer for both.
    #[error("wrong user name or password")]
    BadCredentials,
    /// Fail closed: nobody gets in while the directory cannot be asked.
    #[error(
        "the engineer directory (LDAP) cannot be reached; try again later or tell the operator"
    )]
    Unavailable(String),
    /// The LDAP server's TLS was refused (its certificate is not from `ca_file`, or not for the
    /// host name of `url`...): fail closed, never a fallback to plain LDAP.
    #[error(
        "the engineer directory (LDAP) cannot be reached securely: its TLS certificate was \
         refused; tell the operator"
    )]
    Tls(String),
    /// The engineer's entry is no longer in the directory (issuance, after the login).
    #[error("you are no longer in the engineer directory: ask the operator")]
    NotInDirectory,
}

impl DirectoryError {
    /// The audit code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            DirectoryError::BadCredentials => "bad_credentials",
            DirectoryError::Unavailable(_) => "directory_unavailable",
            DirectoryError::Tls(_) => "directory_tls_refused",
            DirectoryError::NotInDirectory => "not_in_directory",
        }
    }

    /// For the audit log and the broker's log: what went wrong, in the operator's terms. Never
    /// holds a password.
    pub fn detail(&self) -> String {
        match self {
            DirectoryError::BadCredentials | DirectoryError::NotInDirectory => self.to_string(),
            DirectoryError::Unavailable(d) | DirectoryError::Tls(d) => format!("{self}: {d}"),
        }
    }
}

/// A user name the broker accepts: letters, digits, `.`, `_`, `-`, at most 64, starting with a
/// letter or digit. Checked before any directory is asked; values are escaped all the same.
pub fn valid_uid(uid: &str) -> bool {
    sallyport_audit::valid_name(uid)
}

pub enum Directory {
    Ldap(Box<ldap::Ldap>),
    File(Vec<FileEngineer>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEngineer {
    pub uid: String,
    /// argon2 PHC string.
    pub password_argon2: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectoryFile {
    #[serde(default)]
    engineer: Vec<FileEngineer>,
}

impl Directory {
    pub fn from_file(path: &Path) -> anyhow::Result<Directory> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the directory file {}", path.display()))?;
        let file: DirectoryFile = toml::from_str(&text)
            .with_context(|| format!("parsing the directory file {}", path.display()))?;
        for e in &file.engineer {
            anyhow::ensure!(valid_uid(&e.uid), "directory file: invalid uid {:?}", e.uid);
            PasswordHash::new(&e.password_argon2)
                .map_err(|err| anyhow::anyhow!("directory file: bad hash for {}: {err}", e.uid))?;
        }
        Ok(Directory::File(file.engineer))
    }

    pub fn ldap(cfg: &LdapConfig) -> anyhow::Result<Directory> {
        Ok(Directory::Ldap(Box::new(ldap::Ldap::new(cfg)?)))
    }

    /// Check the password and return the engineer's AccessGroups.
    pub async fn authenticate(
        &self,
        uid: &str,
        password: &SecretString,
    ) -> Result<Vec<String>, DirectoryError> {
        if !valid_uid(uid) || password.expose_secret().is_empty() {
            // An empty password would be an anonymous bind in LDAP: never a login.
            return Err(DirectoryError::BadCredentials);
        }
        match self {
            Directory::File(list) => {
                let Some(e) = list.iter().find(|e| e.uid == uid) else {
                    // Same work as a real check, so timing does not tell who exists.
                    let _ = verify_argon2(DUMMY_HASH, password.expose_secret());
                    return Err(DirectoryError::BadCredentials);
                };
                if verify_argon2(&e.password_argon2, password.expose_secret()) {
                    Ok(e.groups.clone())
                } else {
                    Err(DirectoryError::BadCredentials)
                }
            }
            Directory::Ldap(l) => l.login(uid, password).await,
        }
    }

    /// The engineer's AccessGroups now (at a certificate issuance), not as at login: LDAP is
    /// asked with the service account (or a read at most `[ldap] groups_cache_secs` old); the
    /// embedded file is what the broker read at start.
    pub async fn current_groups(&self, uid: &str) -> Result<Vec<String>, DirectoryError> {
        if !valid_uid(uid) {
            return Err(DirectoryError::NotInDirectory);
        }
        match self {
            Directory::File(list) => list
                .iter()
                .find(|e| e.uid == uid)
                .map(|e| e.groups.clone())
                .ok_or(DirectoryError::NotInDirectory),
            Directory::Ldap(l) => l.current_groups(uid).await,
        }
    }
}

const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsbHlwb3J0ZHVtbXk$8oW3L2o0Fh8wQ7xq4YQk3u8a0cX1bq3h1F5y2J0a6pI";

pub fn verify_argon2(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

pub fn hash_argon2(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_rules() {
        for ok in ["alice", "a.b-c_d", "x1", "1abc"] {
            assert!(valid_uid(ok), "{ok}");
        }
        for bad in [
            "",
            "*)(uid=*",
            "a b",
            "-x",
            "a,b",
            "a=b",
            "a;b",
            "a\\b",
            &"x".repeat(65),
            "é",
        ] {
            assert!(!valid_uid(bad), "{bad}");
        }
    }

    #[test]
    fn argon2_roundtrip() {
        let h = hash_argon2("pw").unwrap();
        assert!(verify_argon2(&h, "pw"));
        assert!(!verify_argon2(&h, "pw2"));
        assert!(!verify_argon2(DUMMY_HASH, "anything"));
    }
}
