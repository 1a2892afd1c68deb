//! The broker's shared state: config, store, directory, policy engine, CA keys, JWT keys.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rand::RngCore;
use russh::keys::PrivateKey;
use sallyport_ca::TrustedCas;
use sallyport_ca::keys::load_public_key;
use sallyport_ca::policy::Engine;

use crate::auth::JwtKeys;
use crate::config::BrokerConfig;
use crate::directory::Directory;
use crate::store::Store;

pub struct Broker {
    /// The config the broker started with; what a SIGHUP changed since is in [`Broker::live`].
    pub cfg: BrokerConfig,
    pub store: Store,
    live: std::sync::RwLock<Arc<Live>>,
    pub engine: Engine,
    /// Signs engineers' certificates.
    pub user_ca: PrivateKey,
    /// The signing key plus the keys kept for rotation.
    pub trusted: TrustedCas,
    pub jwt: JwtKeys,
    pub operator_token_sha256: String,
    /// Seals TOTP secrets in the store.
    pub totp_box: crate::secretbox::SecretBox,
    /// Opens the lines gateways sealed (`input_hidden`); its public half is sent to them.
    pub hidden_input: sallyport_ca::seal::OpenKey,
    /// Refusals anyone can repeat without a credential, audited once a minute per key.
    pub refusals: crate::throttle::Throttle,
    /// Passkey (WebAuthn) checks for console logins, bound to `[console]`'s relying party.
    pub passkeys: crate::passkeys::Passkeys,
    /// Where recordings' bytes are kept and read (`[recordings] storage`).
    pub recordings: crate::recordings::Recordings,
}

/// What a SIGHUP can change while the broker runs: the engineer directory (the file is read
/// again, or the `[ldap]` settings taken anew) and the jump host handed out at login.
pub struct Live {
    pub directory: Arc<Directory>,
    /// The edges' addresses (`edge_address`, then `edge_addresses`).
    pub edges: Vec<String>,
    pub edge_host_keys: Vec<String>,
}

impl Broker {
    /// The config keys [`Broker::reload`] applies; the others need a restart.
    pub const RELOADABLE: &'static [&'static str] = &[
        "directory",
        "ldap",
        "edge_address",
        "edge_addresses",
        "edge_host_keys",
    ];

    /// The engineer directory now.
    pub fn directory(&self) -> Arc<Directory> {
        self.live().directory.clone()
    }

    /// The settings a SIGHUP may have changed.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a config read again on SIGHUP: the directory is always built anew (its file may
    /// have changed while the config did not), the jump host settings are taken; `applied` and
    /// `restart` (the changed keys this call applies and those it leaves until a restart) are
    /// audited (`admin_change`, action `config_reloaded`). A config that fails its preflight or
    /// whose directory cannot be built changes nothing and is audited as
    /// `config_reload_refused`.
    pub async fn reload(
        &self,
        new: BrokerConfig,
        applied: &[String],
        restart: &[String],
    ) -> anyhow::Result<()> {
        let built = {
            let problems = new.preflight();
            if problems.is_empty() {
                match (&new.ldap, &new.directory) {
                    (Some(ldap), _) => Directory::ldap(ldap),
                    (None, Some(file)) => Directory::from_file(file),
                    (None, None) => Err(anyhow::anyhow!(
                        "the config names no engineer directory: set [ldap] or `directory = \"FILE\"`"
                    )),
                }
                .map_err(|e| format!("{e:#}"))
            } else {
                Err(problems.join("; "))
            }
        };
        let directory = match built {
            Ok(d) => d,
            Err(problems) => {
                self.audit_reload("config_reload_refused", &problems)
                    .await?;
                anyhow::bail!("the new config is not usable, nothing changed: {problems}");
            }
        };
        let live = Live {
            directory: Arc::new(directory),
            edges: new.edges(),
            edge_host_keys: new.edge_host_keys.clone(),
        };
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        let list = |keys: &[String]| {
            if keys.is_empty() {
                "-".to_string()
            } else {
                keys.join(",")
            }
        };
        self.audit_reload(
            "config_reloaded",
            &format!(
                "applied: {} (directory read again); needs a restart: {}",
                list(applied),
                list(restart)
            ),
        )
        .await
    }

    /// A config that could not be read again on SIGHUP: audited, nothing changed.
    pub async fn reload_refused(&self, problem: &str) -> anyhow::Result<()> {
        self.audit_reload("config_reload_refused", problem).await?;
        anyhow::bail!("the new config is not usable, nothing changed: {problem}")
    }

    async fn audit_reload(&self, action: &str, target: &str) -> anyhow::Result<()> {
        self.store
            .audit(&crate::audit::AuditEvent::AdminChange {
                action: action.into(),
                target: target.into(),
                by: "operator (SIGHUP)".into(),
                customer: None,
                cluster: None,
                node: None,
                engineer: None,
            })
            .await?;
        Ok(())
    }

    pub async fn open(cfg: BrokerConfig) -> anyhow::Result<Arc<Broker>> {
        // What can be checked without creating anything is checked first: a config that fails
        // leaves no data directory or database behind.
        let problems = cfg.preflight();
        anyhow::ensure!(
            problems.is_empty(),
            "the broker config is not usable:\n  - {}",
            problems.join("\n  - ")
        );
        let passkeys = crate::passkeys::Passkeys::new(
            &cfg.relying_party().map_err(anyhow::Error::msg)?,
            cfg.console.passkey_ceremony_secs,
        )?;
        let directory = match (&cfg.ldap, &cfg.directory) {
            (Some(ldap), _) => Directory::ldap(ldap)?,
            (None, Some(file)) => Directory::from_file(file)?,
            (None, None) => anyhow::bail!(
                "the broker config names no engineer directory: set [ldap] or `directory = \"FILE\"`"
            ),
        };
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
        let audit_key = load_or_create_key(&cfg.audit_key_file(), "sallyport broker audit key")?;
        tracing::info!(
            audit_key = %audit_key.public_key().fingerprint(russh::keys::ssh_key::HashAlg::Sha256),
            "the broker signs its own audit chain with this key: record its fingerprint for `sallyport audit verify --keys`"
        );
        let store = Store::connect(&cfg.database_url())
            .await?
            .with_audit_key(audit_key);
        if let Some(seq) = store.broker_chain_signed_by_another_key().await? {
            tracing::error!(
                key = %cfg.audit_key_file().display(),
                last_signed = seq,
                "this broker's audit key did not sign its audit chain so far: another replica (or \
                 an earlier data_dir) signs with another key, and the records signed with this one \
                 will fail `sallyport audit verify --keys`. Every replica needs the same audit key: \
                 stop this one and give it the others' (`audit_key_file`, default \
                 <data_dir>/audit_key)"
            );
        }
        let engine = Engine::new().context("loading the shipped policies")?;
        let user_ca = load_or_create_key(&cfg.user_ca_key(), "sallyport user CA")?;
        let mut trusted = TrustedCas::new([user_ca.public_key().clone()]);
        for path in &cfg.ca.extra_trusted {
            trusted.insert(load_public_key(path)?);
        }
        let totp_key = TotpKey::load_or_begin(&cfg.totp_key_file())?;
        let totp_box = crate::secretbox::SecretBox::new(&totp_key.key)
            .with_context(|| format!("{}", cfg.totp_key_file().display()))?;
        if totp_key.first_start {
            seal_clear_secrets_once(&store, &totp_box).await?;
            totp_key.finish()?;
        } else {
            refuse_clear_secrets(&store).await?;
        }
        let hidden_input = sallyport_ca::seal::OpenKey::from_bytes(&load_or_create_secret(
            &cfg.hidden_input_key_file(),
        )?)
        .with_context(|| format!("{}", cfg.hidden_input_key_file().display()))?;
        let secret = load_or_create_secret(&cfg.jwt_secret_file())?;
        let jwt = JwtKeys::new(
            &secret,
            &cfg.jwt.issuer,
            &cfg.jwt.audience,
            cfg.jwt.ttl_secs,
        );
        // Its form was checked by `preflight` above.
        let operator_token_sha256 = cfg.operator_token_sha256.trim().to_ascii_lowercase();
        let live = Live {
            directory: Arc::new(directory),
            edges: cfg.edges(),
            edge_host_keys: cfg.edge_host_keys.clone(),
        };
        let recordings = crate::recordings::Recordings::new(
            cfg.recording_storage(),
            &cfg.data_dir,
            store.clone(),
        );
        Ok(Arc::new(Broker {
            cfg,
            store,
            recordings,
            live: std::sync::RwLock::new(Arc::new(live)),
            engine,
            user_ca,
            trusted,
            jwt,
            operator_token_sha256,
            totp_box,
            hidden_input,
            refusals: Default::default(),
            passkeys,
        }))
    }
}

/// The key that seals TOTP secrets. The start that makes it is the one upgrade from a version
/// that stored secrets in clear: only that start seals the secrets it finds in clear. Someone who
/// can write the database but not the broker's files cannot make a start do it again, so a
/// secret they plant in clear later is refused, never sealed.
///
/// A new key is written first as `<totp_key_file>.new` and takes its name only once the sealing
/// is done: a first start that stops half-way seals the rest with the same key at the next one.
struct TotpKey {
    key: Vec<u8>,
    path: std::path::PathBuf,
    /// This start made the key (or finishes the start that made it).
    first_start: bool,
}

impl TotpKey {
    fn staged(path: &Path) -> std::path::PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        name.into()
    }

    fn load_or_begin(path: &Path) -> anyhow::Result<TotpKey> {
        if path.exists() {
            return Ok(TotpKey {
                key: load_or_create_secret(path)?,
                path: path.to_path_buf(),
                first_start: false,
            });
        }
        let staged = Self::staged(path);
        if staged.exists() {
            tracing::warn!(
                path = %staged.display(),
                "a first start with this TOTP key did not finish: finishing it"
            );
        }
        Ok(TotpKey {
            key: load_or_create_secret(&staged)?,
            path: path.to_path_buf(),
            first_start: true,
        })
    }

    /// The first start's sealing is done: the key takes its name.
    fn finish(&self) -> anyhow::Result<()> {
        let staged = Self::staged(&self.path);
        std::fs::rename(&staged, &self.path)
            .with_context(|| format!("renaming {} to {}", staged.display(), self.path.display()))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    }
}

/// At most this many secrets in clear are named in the log and the audit event of one start.
const NAMED: usize = 20;

/// The first start with a new TOTP key: seal the secrets an older version stored in clear, each
/// one an audit event (`admin_change`, `seal_totp_secret`).
async fn seal_clear_secrets_once(
    store: &Store,
    totp_box: &crate::secretbox::SecretBox,
) -> anyhow::Result<()> {
    let sealed = store.seal_clear_secrets(totp_box).await?;
    for principal in &sealed {
        store
            .audit(&crate::audit::AuditEvent::AdminChange {
                action: "seal_totp_secret".into(),
                target: principal.clone(),
                by: "broker".into(),
                customer: None,
                cluster: None,
                node: None,
                engineer: principal.strip_prefix("engineer:").map(str::to_string),
            })
            .await?;
    }
    if !sealed.is_empty() {
        tracing::info!(
            sealed = sealed.len(),
            "sealed the TOTP secrets an older version stored in clear (once: the first start \
             with a new TOTP key)"
        );
    }
    Ok(())
}

/// Any later start: a secret found in clear was written without the key (planted by someone who
/// can write the database). It stays refused at login; here it is logged and audited
/// (`refused`, action `use_clear_totp_secret`), naming at most `NAMED` of them.
async fn refuse_clear_secrets(store: &Store) -> anyhow::Result<()> {
    let clear = store.clear_secrets().await?;
    if clear.is_empty() {
        return Ok(());
    }
    // Names as the database holds them: escaped, whoever wrote them.
    let named = clear
        .iter()
        .take(NAMED)
        .map(|p| crate::audit::sanitize(p))
        .collect::<Vec<_>>()
        .join(", ");
    let more = clear.len().saturating_sub(NAMED);
    let names = if more > 0 {
        format!("{named} and {more} more")
    } else {
        named
    };
    tracing::error!(
        count = clear.len(),
        principals = %names,
        "TOTP secrets are stored in clear, which this broker never writes: someone wrote them \
         into the database without the key. They are refused (not sealed); enroll these \
         engineers and accounts again. (Upgrading from a version that stored secrets in clear? \
         That is sealed once, by the start that makes the TOTP key; see docs/config.md.)"
    );
    store
        .audit(&crate::audit::AuditEvent::Refused {
            by: "broker".into(),
            action: "use_clear_totp_secret".into(),
            reason: format!(
                "{} TOTP secret(s) stored in clear, written without the broker's key, are \
                 refused: {names}",
                clear.len()
            ),
            customer: None,
            cluster: None,
        })
        .await?;
    Ok(())
}

fn load_or_create_key(path: &Path, comment: &str) -> anyhow::Result<PrivateKey> {
    let (key, made) = sallyport_ca::keys::load_or_create_key(path, comment)?;
    if made {
        tracing::info!(path = %path.display(), "generated a new user CA key");
    }
    Ok(key)
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.exists() {
        let meta = std::fs::metadata(path)?;
        anyhow::ensure!(
            meta.permissions().mode() & 0o077 == 0,
            "{} is readable by others: chmod 600 it",
            path.display()
        );
        let s = std::fs::read(path)?;
        anyhow::ensure!(
            s.len() >= 32,
            "{} holds fewer than 32 bytes",
            path.display()
        );
        return Ok(s);
    }
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&s)?;
    f.sync_all()?;
    Ok(s)
}
