//! What is checked before the broker starts: the whole config (`preflight`), secret files,
//! `host:port` addresses.

use std::path::Path;

use super::BrokerConfig;

/// Read a secret from a file only its owner may read: one line, trailing newline dropped.
pub fn read_secret_file(path: &Path) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        meta.permissions().mode() & 0o077 == 0,
        "{} must be readable by its owner only (chmod 600 {})",
        path.display(),
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
    Ok(secrecy::SecretString::from(secret.to_string()))
}

/// Split `host:port` (`[v6addr]:port` for IPv6). The host is a DNS name or an IP address:
/// letters, digits, `.`, `-`, `_` (and `:` inside brackets); the port is 1-65535.
pub fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| anyhow::anyhow!("the port must be 1-65535"))?;
    let (host, v6) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => (h, true),
        None => (host, false),
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (v6 && c == ':'));
    anyhow::ensure!(ok, "the host must be a DNS name or an IP address");
    Ok((host.to_string(), port))
}

impl BrokerConfig {
    /// Everything about the config that can be checked without creating or changing anything:
    /// each problem as a sentence that says what to do. The broker refuses to start on any
    /// (before it makes its data directory, keys or database); `sallyport admin check` prints
    /// them.
    pub fn preflight(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let hash = self.operator_token_sha256.trim();
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(
                "operator_token_sha256 must be 64 hex digits: make one with `sallyport admin \
                 hash-token`"
                    .to_string(),
            );
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "listen = {} without [tls]: the broker refuses plain HTTP off this machine; \
                 configure [tls] (cert, key) or listen on 127.0.0.1",
                self.listen
            ));
        }
        if let Err(e) = self.relying_party() {
            problems.push(e);
        }
        if self.console.passkey_ceremony_secs == 0 {
            problems.push(
                "[console] passkey_ceremony_secs = 0 leaves no time to use a passkey: use e.g. 120"
                    .to_string(),
            );
        }
        let readable = |what: &str, p: &Path, problems: &mut Vec<String>| {
            if let Err(e) = std::fs::File::open(p) {
                problems.push(format!("{what} {}: {e}", p.display()));
            }
        };
        if let Some(tls) = &self.tls {
            readable("[tls] cert", &tls.cert, &mut problems);
            readable("[tls] key", &tls.key, &mut problems);
        }
        match (&self.ldap, &self.directory) {
            (Some(ldap), _) => {
                readable(
                    "[ldap] bind_password_file",
                    &ldap.bind_password_file,
                    &mut problems,
                );
                if let Some(ca) = &ldap.ca_file {
                    readable("[ldap] ca_file", ca, &mut problems);
                }
            }
            (None, Some(file)) => {
                if let Err(e) = crate::directory::Directory::from_file(file) {
                    problems.push(format!("directory {}: {e:#}", file.display()));
                }
            }
            (None, None) => problems.push(
                "no engineer directory: set [ldap], or `directory = \"FILE\"` naming a file of \
                 engineers (`sallyport admin hash-password` prints an entry)"
                    .to_string(),
            ),
        }
        for p in &self.ca.extra_trusted {
            match std::fs::read_to_string(p) {
                Ok(text) => {
                    if russh::keys::PublicKey::from_openssh(text.trim()).is_err() {
                        problems.push(format!(
                            "ca.extra_trusted {}: not an OpenSSH public key",
                            p.display()
                        ));
                    }
                }
                Err(e) => problems.push(format!("ca.extra_trusted {}: {e}", p.display())),
            }
        }
        match std::fs::metadata(&self.data_dir) {
            Ok(m) if !m.is_dir() => problems.push(format!(
                "data_dir {} is not a directory",
                self.data_dir.display()
            )),
            Ok(_) => {
                // Key files the broker would read: present ones must be readable.
                for (what, p) in [
                    ("the user CA key", self.user_ca_key()),
                    ("the TOTP key", self.totp_key_file()),
                    ("the hidden-input key", self.hidden_input_key_file()),
                    ("the JWT secret", self.jwt_secret_file()),
                    ("the audit key", self.audit_key_file()),
                ] {
                    if p.exists() {
                        readable(what, &p, &mut problems);
                    }
                }
            }
            Err(_) => {
                let parent = self.data_dir.parent().filter(|p| !p.as_os_str().is_empty());
                if parent.is_some_and(|p| !p.is_dir()) {
                    problems.push(format!(
                        "data_dir {}: neither it nor its parent directory exists (the broker \
                         makes the data_dir, not the directories above it)",
                        self.data_dir.display()
                    ));
                }
            }
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "database must be sqlite://FILE or postgres://...: {}",
                url.split('@').next_back().unwrap_or_default()
            ));
        }
        problems
    }
}
