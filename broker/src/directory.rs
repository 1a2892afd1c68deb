//! The engineers' directory: LDAP (bind as the engineer, then read the groups) or the embedded
//! directory file used when no LDAP is configured (the demo).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, dn_escape, ldap_escape};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{GroupMode, LdapConfig};

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
}

/// A user name the broker accepts: letters, digits, `.`, `_`, `-`, at most 64, starting with a
/// letter or digit. Checked before any directory is asked; values are escaped all the same.
pub fn valid_uid(uid: &str) -> bool {
    sallyport_audit::valid_name(uid)
}

pub enum Directory {
    Ldap(Box<LdapConfig>, Option<Arc<rustls::ClientConfig>>),
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
        let tls = if cfg.url.starts_with("ldaps://") || cfg.starttls {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(ca) = &cfg.ca_file {
                let pem = std::fs::read(ca)?;
                for cert in rustls_pemfile_certs(&pem)? {
                    roots.add(cert)?;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        Ok(Directory::Ldap(Box::new(cfg.clone()), tls))
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
            Directory::Ldap(cfg, tls) => {
                let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
                match tokio::time::timeout(timeout * 2, ldap_login(cfg, tls.clone(), uid, password))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(DirectoryError::Unavailable("timed out".into())),
                }
            }
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

fn rustls_pemfile_certs(
    pem: &[u8],
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("reading the LDAP CA file: {e}"))
}

async fn ldap_login(
    cfg: &LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    uid: &str,
    password: &SecretString,
) -> Result<Vec<String>, DirectoryError> {
    let unavailable = |e: ldap3::LdapError| DirectoryError::Unavailable(e.to_string());
    let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(timeout)
        .set_starttls(cfg.starttls);
    if let Some(tls) = tls {
        settings = settings.set_config(tls);
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &cfg.url)
        .await
        .map_err(unavailable)?;
    ldap3::drive!(conn);
    let dn = cfg.user_dn_template.replace("{uid}", &dn_escape(uid));
    let bind = ldap
        .with_timeout(timeout)
        .simple_bind(&dn, password.expose_secret())
        .await
        .map_err(unavailable)?;
    match bind.rc {
        0 => {}
        // invalidCredentials, and noSuchObject / inappropriateAuthentication for odd servers
        49 | 32 | 48 | 50 => return Err(DirectoryError::BadCredentials),
        rc => {
            return Err(DirectoryError::Unavailable(format!(
                "bind answered rc={rc}"
            )));
        }
    }
    let groups = match cfg.group_mode {
        GroupMode::Memberof => {
            let (entries, _res) = ldap
                .with_timeout(timeout)
                .search(&dn, Scope::Base, "(objectClass=*)", vec!["memberOf"])
                .await
                .map_err(unavailable)?
                .success()
                .map_err(unavailable)?;
            let mut groups = Vec::new();
            for e in entries {
                let e = SearchEntry::construct(e);
                for g in e.attrs.get("memberOf").into_iter().flatten() {
                    if let Some(name) = first_rdn_value(g) {
                        groups.push(name);
                    }
                }
            }
            groups
        }
        GroupMode::Search => {
            let base = cfg.group_base.clone().unwrap_or_default();
            let filter = cfg
                .group_filter
                .replace("{dn}", &ldap_escape(&dn))
                .replace("{uid}", &ldap_escape(uid));
            let (entries, _res) = ldap
                .with_timeout(timeout)
                .search(
                    &base,
                    Scope::Subtree,
                    &filter,
                    vec![cfg.group_attr.as_str()],
                )
                .await
                .map_err(unavailable)?
                .success()
                .map_err(unavailable)?;
            entries
                .into_iter()
                .filter_map(|e| {
                    SearchEntry::construct(e)
                        .attrs
                        .get(&cfg.group_attr)
                        .and_then(|v| v.first().cloned())
                })
                .collect()
        }
    };
    let _ = ldap.unbind().await;
    let mut groups: Vec<String> = groups
        .into_iter()
        .filter(|g| cfg.access_groups.is_empty() || cfg.access_groups.contains(g))
        .collect();
    groups.sort();
    groups.dedup();
    Ok(groups)
}

/// `cn=support-l2,ou=groups,dc=example,dc=com` -> `support-l2`.
fn first_rdn_value(dn: &str) -> Option<String> {
    let first = dn.split(',').next()?;
    let (_, value) = first.split_once('=')?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
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
    fn rdn_value() {
        assert_eq!(
            first_rdn_value("cn=support-l2,ou=groups,dc=x").as_deref(),
            Some("support-l2")
        );
        assert_eq!(first_rdn_value("garbage"), None);
    }

    #[test]
    fn argon2_roundtrip() {
        let h = hash_argon2("pw").unwrap();
        assert!(verify_argon2(&h, "pw"));
        assert!(!verify_argon2(&h, "pw2"));
        assert!(!verify_argon2(DUMMY_HASH, "anything"));
    }
}
