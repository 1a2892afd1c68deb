//! The LDAP directory: the engineer's own bind at login, and the service account's read of an
//! engineer's groups at each certificate issuance (reused for `groups_cache_secs` when set; by default read every time).
//!
//! TLS (`ldaps://` or StartTLS) is checked against `ca_file` only and never falls back to plain
//! LDAP; passwords (the engineer's, the service account's) are sent only inside it when it is
//! configured. A group counts only when its whole DN is `<group_attr>=<name>,<group_base>`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap as LdapHandle, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use ldap3::{dn_escape, ldap_escape};
use secrecy::{ExposeSecret, SecretString};

use super::DirectoryError;
use super::dn::{Dn, group_name};
use crate::config::{GroupMode, LdapConfig};

pub struct Ldap {
    cfg: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    group_base: Dn,
    service_password: SecretString,
    /// uid -> (read at, groups), filled by the service account's reads only, emptied for an
    /// engineer by their login.
    cache: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// The service account's connection, bound, kept for the next reads of groups (LDAP runs
    /// several operations at once on one connection); forgotten when a read on it fails.
    service: Mutex<Option<LdapHandle>>,
}

impl Ldap {
    /// From a checked config (`LdapConfig::check`): reads `ca_file` and `bind_password_file`.
    pub fn new(cfg: &LdapConfig) -> anyhow::Result<Ldap> {
        use anyhow::Context;
        cfg.check()?;
        let tls = if cfg.uses_tls() {
            let ca = cfg
                .ca_file
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("[ldap] ca_file is required with TLS"))?;
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading [ldap] ca_file {}", ca.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(&pem)? {
                roots.add(cert).with_context(|| {
                    format!("[ldap] ca_file {}: a certificate is unusable", ca.display())
                })?;
            }
            anyhow::ensure!(
                !roots.is_empty(),
                "[ldap] ca_file {} holds no PEM certificate",
                ca.display()
            );
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        } else {
            None
        };
        let group_base = cfg
            .group_base
            .as_deref()
            .and_then(Dn::parse)
            .ok_or_else(|| anyhow::anyhow!("[ldap] group_base is not a DN"))?;
        let service_password = crate::config::read_secret_file(&cfg.bind_password_file)
            .context("[ldap] bind_password_file")?;
        Ok(Ldap {
            cfg: cfg.clone(),
            tls,
            group_base,
            service_password,
            cache: Mutex::new(HashMap::new()),
            service: Mutex::new(None),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.timeout_secs.max(1))
    }

    fn user_dn(&self, uid: &str) -> String {
        self.cfg.user_dn_template.replace("{uid}", &dn_escape(uid))
    }

    /// Bind as the engineer and read their groups with that bind. A successful login drops the
    /// engineer's cached groups (on this broker).
    pub async fn login(
        &self,
        uid: &str,
        password: &SecretString,
    ) -> Result<Vec<String>, DirectoryError> {
        let groups = self
            .within_timeout(async {
                let dn = self.user_dn(uid);
                let mut ldap = self.connect().await?;
                let bind = ldap
                    .with_timeout(self.timeout())
                    .simple_bind(&dn, password.expose_secret())
                    .await
                    .map_err(classify)?;
                match bind.rc {
                    0 => {}
                    // invalidCredentials, and noSuchObject / inappropriateAuthentication for odd
                    // servers
                    49 | 32 | 48 | 50 => return Err(DirectoryError::BadCredentials),
                    rc => {
                        return Err(DirectoryError::Unavailable(format!(
                            "the engineer's bind answered rc={rc}"
                        )));
                    }
                }
                let groups = self.read_groups(&mut ldap, uid, &dn).await;
                let _ = ldap.unbind().await;
                groups?.ok_or(DirectoryError::BadCredentials)
            })
            .await;
        if groups.is_ok() {
            // A login reads the groups afresh: the next issuance must not use an older read.
            self.cache_lock().remove(uid);
        }
        groups
    }

    /// The engineer's groups as the directory lists them now, read with the service account, or
    /// from a read at most `groups_cache_secs` old.
    pub async fn current_groups(&self, uid: &str) -> Result<Vec<String>, DirectoryError> {
        let ttl = Duration::from_secs(self.cfg.groups_cache_secs);
        if !ttl.is_zero()
            && let Some((at, groups)) = self.cache_lock().get(uid)
            && at.elapsed() < ttl
        {
            return Ok(groups.clone());
        }
        let groups = self.read_current_groups(uid).await?;
        if !ttl.is_zero() {
            let mut cache = self.cache_lock();
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            cache.insert(uid.to_string(), (Instant::now(), groups.clone()));
        }
        Ok(groups)
    }

    /// The groups read with the kept service connection; when that read fails (the server
    /// closed the connection, restarted...), once more on a new connection, bound as the service
    /// account, which is kept when the read on it succeeds. A kept connection that times out is
    /// forgotten and not tried again: the directory is too slow, and the caller is refused now.
    async fn read_current_groups(&self, uid: &str) -> Result<Vec<String>, DirectoryError> {
        let dn = self.user_dn(uid);
        let kept = self.service_lock().clone();
        if let Some(mut ldap) = kept {
            let read =
                tokio::time::timeout(self.timeout() * 2, self.read_groups(&mut ldap, uid, &dn))
                    .await;
            match read {
                Ok(Ok(groups)) => return groups.ok_or(DirectoryError::NotInDirectory),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "the kept LDAP connection failed: a new one");
                    self.service_lock().take();
                }
                Err(_) => {
                    self.service_lock().take();
                    return Err(DirectoryError::Unavailable("timed out".into()));
                }
            }
        }
        self.within_timeout(async {
            let mut ldap = self.connect().await?;
            let bind = ldap
                .with_timeout(self.timeout())
                .simple_bind(&self.cfg.bind_dn, self.service_password.expose_secret())
                .await
                .map_err(classify)?;
            if bind.rc != 0 {
                let _ = ldap.unbind().await;
                return Err(DirectoryError::Unavailable(format!(
                    "the service account's bind ([ldap] bind_dn) was refused (rc={}): check \
                     bind_dn and bind_password_file",
                    bind.rc
                )));
            }
            let groups = self.read_groups(&mut ldap, uid, &dn).await?;
            *self.service_lock() = Some(ldap);
            groups.ok_or(DirectoryError::NotInDirectory)
        })
        .await
    }

    fn service_lock(&self) -> std::sync::MutexGuard<'_, Option<LdapHandle>> {
        // A panic while holding it leaves plain data behind: keep using it.
        self.service.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Vec<String>)>> {
        // A panic while holding it leaves plain data behind: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn within_timeout<T>(
        &self,
        work: impl Future<Output = Result<T, DirectoryError>>,
    ) -> Result<T, DirectoryError> {
        match tokio::time::timeout(self.timeout() * 2, work).await {
            Ok(r) => r,
            Err(_) => Err(DirectoryError::Unavailable("timed out".into())),
        }
    }

    /// A connection, with TLS (LDAPS or StartTLS) established and checked when configured.
    async fn connect(&self) -> Result<LdapHandle, DirectoryError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout())
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.cfg.url)
            .await
            .map_err(classify)?;
        ldap3::drive!(conn);
        Ok(ldap)
    }

    /// The groups of the user entry `dn` (`uid`), with the current bind. `None` when the entry
    /// does not exist.
    async fn read_groups(
        &self,
        ldap: &mut LdapHandle,
        uid: &str,
        dn: &str,
    ) -> Result<Option<Vec<String>>, DirectoryError> {
        let timeout = self.timeout();
        let attr = self.cfg.group_attr.as_str();
        // The user entry first: gone means no groups at all, not an empty list.
        let own = match self.cfg.group_mode {
            GroupMode::Memberof => vec!["memberOf"],
            GroupMode::Search => vec!["1.1"],
        };
        let user = ldap
            .with_timeout(timeout)
            .search(dn, Scope::Base, "(objectClass=*)", own)
            .await
            .map_err(classify)?;
        match user.1.rc {
            0 => {}
            32 => return Ok(None),
            rc => {
                return Err(DirectoryError::Unavailable(format!(
                    "reading the engineer's entry answered rc={rc}"
                )));
            }
        }
        if user.0.is_empty() {
            return Ok(None);
        }
        let dns: Vec<String> = match self.cfg.group_mode {
            GroupMode::Memberof => user
                .0
                .into_iter()
                .flat_map(|e| {
                    let mut e = SearchEntry::construct(e);
                    e.attrs.remove("memberOf").unwrap_or_default()
                })
                .collect(),
            GroupMode::Search => {
                let filter = self
                    .cfg
                    .group_filter
                    .replace("{dn}", &ldap_escape(dn))
                    .replace("{uid}", &ldap_escape(uid));
                let base = self.cfg.group_base.clone().unwrap_or_default();
                let found = ldap
                    .with_timeout(timeout)
                    .search(&base, Scope::OneLevel, &filter, vec!["1.1"])
                    .await
                    .map_err(classify)?;
                if found.1.rc != 0 {
                    return Err(DirectoryError::Unavailable(format!(
                        "searching the groups answered rc={}",
                        found.1.rc
                    )));
                }
                found
                    .0
                    .into_iter()
                    .map(|e| SearchEntry::construct(e).dn)
                    .collect()
            }
        };
        let mut groups: Vec<String> = dns
            .iter()
            .filter_map(|g| {
                let name = group_name(g, &self.group_base, attr);
                if name.is_none() {
                    tracing::debug!(group = %g, "a group outside [ldap] group_base is ignored");
                }
                name
            })
            .filter(|g| self.cfg.access_groups.is_empty() || self.cfg.access_groups.contains(g))
            .collect();
        groups.sort();
        groups.dedup();
        Ok(Some(groups))
    }
}

fn pem_certs(pem: &[u8]) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("reading the LDAP CA file: {e}"))
}

/// An LDAP client error as a DirectoryError: a refused TLS handshake is `Tls` with what was
/// wrong, anything else `Unavailable`.
fn classify(e: ldap3::LdapError) -> DirectoryError {
    let rustls_error = match &e {
        ldap3::LdapError::Rustls { source, .. } => Some(source),
        ldap3::LdapError::Io { source, .. } => source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error {
        Some(err) => DirectoryError::Tls(tls_detail(err)),
        None => DirectoryError::Unavailable(e.to_string()),
    }
}

fn tls_detail(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    let what = match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "the LDAP server's certificate is not signed by the CA in [ldap] ca_file"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the LDAP server's certificate is not for the host name in [ldap] url"
            }
            C::Expired | C::ExpiredContext { .. } => "the LDAP server's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the LDAP server's certificate is not valid yet"
            }
            _ => "the LDAP server's certificate was refused",
        },
        _ => "the TLS handshake with the LDAP server failed",
    };
    format!("{what} ({e})")
}
