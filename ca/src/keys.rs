//! Key files: generating Ed25519 keys, saving and loading them in OpenSSH format, and the set of
//! trusted CA public keys.
//!
//! Private keys are written 0600 from the first byte (the temporary file is created with that
//! mode, filled, synced, then renamed over the target), and loading refuses a key file that the
//! group or others may access, as OpenSSH does. Keys are unencrypted: the file permissions are
//! their protection, and services load them once at start.
//!
//! Rotation means trusting several CA keys at once: a [`TrustedCas`] holds all of them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh::keys::key::safe_rng;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::rand_core::Rng;
use russh::keys::ssh_key::{Algorithm, Fingerprint, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::error::CaError;

/// Generates a fresh Ed25519 key pair from a CSPRNG.
pub fn generate_ed25519(comment: &str) -> Result<PrivateKey, CaError> {
    let mut key =
        PrivateKey::random(&mut safe_rng(), Algorithm::Ed25519).map_err(|source| CaError::Ssh {
            what: "generating an Ed25519 key",
            source,
        })?;
    key.set_comment(comment);
    Ok(key)
}

/// The path of the public key written next to a private key: `<path>.pub`.
pub fn public_key_path(private_key_path: &Path) -> PathBuf {
    let mut name = private_key_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Saves `key` in OpenSSH format at `path` (mode 0600) and its public key at `<path>.pub`
/// (mode 0644). Each file is replaced atomically: a reader sees the old file or the new one.
pub fn save_private_key(key: &PrivateKey, path: &Path) -> Result<(), CaError> {
    save_key_pair(key, path, 0o644)
}

/// Loads the OpenSSH private key at `path` (see [`load_private_key`]); where there is no file,
/// makes an Ed25519 key with `comment` and saves it as [`save_private_key`] does, but with its
/// public key `<path>.pub` 0600 as well: in a service's data directory every file is its
/// owner's only. Returns the key, and whether it was made now.
pub fn load_or_create_key(path: &Path, comment: &str) -> Result<(PrivateKey, bool), CaError> {
    if path.exists() {
        return Ok((load_private_key(path)?, false));
    }
    let key = generate_ed25519(comment)?;
    save_key_pair(&key, path, 0o600)?;
    Ok((key, true))
}

fn save_key_pair(key: &PrivateKey, path: &Path, public_mode: u32) -> Result<(), CaError> {
    let pem = key
        .to_openssh(LineEnding::LF)
        .map_err(|source| CaError::Ssh {
            what: "encoding a private key",
            source,
        })?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|source| CaError::Ssh {
            what: "encoding a public key",
            source,
        })?;
    write_atomic(path, pem.as_bytes(), 0o600)?;
    write_atomic(
        &public_key_path(path),
        format!("{public}\n").as_bytes(),
        public_mode,
    )
}

/// Loads an unencrypted OpenSSH private key, refusing a file the group or others may access.
pub fn load_private_key(path: &Path) -> Result<PrivateKey, CaError> {
    let io_err = |source| CaError::Io {
        path: path.to_owned(),
        source,
    };
    // Check the mode of the file we actually read (not of the path, which could be swapped).
    let mut file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    let key = PrivateKey::read_openssh(&mut file).map_err(|source| CaError::PrivateKeyFormat {
        path: path.to_owned(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(CaError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

/// Loads one OpenSSH public key (`<algorithm> <base64> [comment]`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, CaError> {
    let text = fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })?;
    PublicKey::from_openssh(text.trim()).map_err(|source| CaError::PublicKeyFormat {
        path: path.to_owned(),
        line: 1,
        source,
    })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    write_file_atomic(path, bytes, mode).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory created with `mode`,
/// synced, then renamed over `path`; the directory is synced so the rename survives a crash.
/// Each call has a temporary name of its own (random): writers of one file at once do not
/// truncate or rename each other's. The one copy of this for every part of sallyport.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{:016x}", safe_rng().next_u64()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist (open failed) or may already be renamed.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The CA public keys a service trusts (several at once during a rotation).
#[derive(Debug, Clone, Default)]
pub struct TrustedCas {
    keys: Vec<PublicKey>,
    fingerprints: Vec<Fingerprint>,
}

impl TrustedCas {
    /// A set of the given keys; duplicates (same key material) are kept once.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut set = Self::default();
        for key in keys {
            set.insert(key);
        }
        set
    }

    /// Adds a key unless the same key material is already trusted.
    pub fn insert(&mut self, key: PublicKey) {
        let fp = key.fingerprint(HashAlg::Sha256);
        if !self.fingerprints.contains(&fp) {
            self.fingerprints.push(fp);
            self.keys.push(key);
        }
    }

    /// Reads a file of OpenSSH public key lines (as for sshd's `TrustedUserCAKeys`); blank lines
    /// and lines starting with `#` are ignored. A file with no key is an error: trusting nothing
    /// is never what the operator meant.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let text = fs::read_to_string(path).map_err(|source| CaError::Io {
            path: path.to_owned(),
            source,
        })?;
        let set = Self::parse(&text, path)?;
        if set.is_empty() {
            return Err(CaError::NoTrustedCa {
                path: path.to_owned(),
            });
        }
        Ok(set)
    }

    /// Parses OpenSSH public key lines; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, CaError> {
        let mut set = Self::default();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = PublicKey::from_openssh(line).map_err(|source| CaError::PublicKeyFormat {
                path: origin.to_owned(),
                line: index + 1,
                source,
            })?;
            set.insert(key);
        }
        Ok(set)
    }

    /// SHA-256 fingerprints of the trusted keys, in the order they were added.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Whether this key material is trusted (the comment does not matter).
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.contains_key_data(key.key_data())
    }

    pub fn contains_key_data(&self, key: &KeyData) -> bool {
        self.fingerprints
            .contains(&key.fingerprint(HashAlg::Sha256))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The set as OpenSSH public key lines, e.g. for a node's `TrustedUserCAKeys` file.
    pub fn to_openssh(&self) -> Result<String, CaError> {
        let mut out = String::new();
        for key in &self.keys {
            let line = key.to_openssh().map_err(|source| CaError::Ssh {
                what: "encoding a public key",
                source,
            })?;
            out.push_str(&line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// The SSHSIG namespace of a signed set of trusted user CAs.
pub const CA_SET_NAMESPACE: &str = "sallyport-user-cas@sallyport.dev";

impl TrustedCas {
    /// What a signature over the set covers: each key's `type base64` (no comment), sorted, one
    /// per line. Order and comments do not change it.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut lines: Vec<String> = self
            .keys
            .iter()
            .filter_map(|k| {
                let mut k = k.clone();
                k.set_comment("");
                k.to_openssh().ok()
            })
            .map(|l| l.trim().to_string())
            .collect();
        lines.sort();
        lines.join("\n").into_bytes()
    }

    /// Sign the set with `key` (the broker's current user CA): an armored SSHSIG.
    pub fn sign(&self, key: &PrivateKey) -> Result<String, CaError> {
        let sig = key
            .sign(CA_SET_NAMESPACE, HashAlg::Sha512, &self.signed_message())
            .map_err(|source| CaError::Ssh {
                what: "signing the trusted CA set",
                source,
            })?;
        sig.to_pem(LineEnding::LF).map_err(|source| CaError::Ssh {
            what: "encoding the trusted CA set's signature",
            source,
        })
    }

    /// Whether `signature` (armored SSHSIG) over `self` was made by a key of `by`: a data plane
    /// takes a new set only when a CA it already trusts vouches for it.
    pub fn signed_by(&self, signature: &str, by: &TrustedCas) -> bool {
        let Ok(sig) = russh::keys::ssh_key::SshSig::from_pem(signature) else {
            return false;
        };
        if sig.namespace() != CA_SET_NAMESPACE {
            return false;
        }
        let message = self.signed_message();
        by.keys().iter().any(|k| {
            k.key_data() == sig.public_key() && k.verify(CA_SET_NAMESPACE, &message, &sig).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_set_is_taken_only_when_a_trusted_ca_signed_it() {
        let old = generate_ed25519("old").unwrap();
        let new = generate_ed25519("new").unwrap();
        let evil = generate_ed25519("evil").unwrap();
        let current = TrustedCas::new([old.public_key().clone()]);
        let next = TrustedCas::new([new.public_key().clone(), old.public_key().clone()]);
        // Signed by the CA trusted now: taken (order and comments do not matter).
        let sig = next.sign(&old).unwrap();
        let reordered = TrustedCas::new([old.public_key().clone(), new.public_key().clone()]);
        assert!(reordered.signed_by(&sig, &current));
        // Signed by the new CA only, or by anyone else: not taken.
        assert!(!next.signed_by(&next.sign(&new).unwrap(), &current));
        let hostile = TrustedCas::new([old.public_key().clone(), evil.public_key().clone()]);
        assert!(!hostile.signed_by(&hostile.sign(&evil).unwrap(), &current));
        // A signature of another set does not carry over.
        assert!(!hostile.signed_by(&sig, &current));
        assert!(!next.signed_by("not a signature", &current));
    }

    #[test]
    fn save_and_load_round_trip_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user_ca");
        let key = generate_ed25519("user-ca@test").unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        save_private_key(&key, &path).unwrap();

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        let pub_path = public_key_path(&path);
        assert_eq!(pub_path, dir.path().join("user_ca.pub"));
        assert_eq!(mode(&pub_path) & 0o022, 0);

        let loaded = load_private_key(&path).unwrap();
        assert_eq!(loaded.public_key().key_data(), key.public_key().key_data());
        let public = load_public_key(&pub_path).unwrap();
        assert_eq!(public.key_data(), key.public_key().key_data());
        assert_eq!(public.comment().as_str_lossy(), "user-ca@test");

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Saving again replaces both files atomically.
        let other = generate_ed25519("").unwrap();
        save_private_key(&other, &path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let reloaded = load_private_key(&path).unwrap();
        assert_eq!(
            reloaded.public_key().key_data(),
            other.public_key().key_data()
        );
    }

    #[test]
    fn a_missing_key_is_made_with_both_files_the_owners_only_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_key");
        let (made, fresh) = load_or_create_key(&path, "host@test").unwrap();
        assert!(fresh);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&public_key_path(&path)), 0o600);
        let public = load_public_key(&public_key_path(&path)).unwrap();
        assert_eq!(public.key_data(), made.public_key().key_data());

        let (loaded, fresh) = load_or_create_key(&path, "other").unwrap();
        assert!(!fresh);
        assert_eq!(loaded.public_key().key_data(), made.public_key().key_data());
        // An existing key is checked like any other: readable by others, refused.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create_key(&path, "").is_err());
    }

    #[test]
    fn loading_refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        save_private_key(&generate_ed25519("").unwrap(), &path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = load_private_key(&path).unwrap_err();
            assert!(
                matches!(err, CaError::InsecureKeyFile { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(load_private_key(&path).is_ok());
    }

    #[test]
    fn loading_refuses_garbage_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        assert!(matches!(load_private_key(&path), Err(CaError::Io { .. })));
        write_atomic(&path, b"not a key\n", 0o600).unwrap();
        assert!(matches!(
            load_private_key(&path),
            Err(CaError::PrivateKeyFormat { .. })
        ));
        assert!(matches!(
            load_private_key(dir.path()),
            Err(CaError::Io { .. })
        ));
    }

    #[test]
    fn trusted_cas_from_a_file_with_several_keys() {
        let dir = tempfile::tempdir().unwrap();
        let old = generate_ed25519("old").unwrap();
        let new = generate_ed25519("new").unwrap();
        let stranger = generate_ed25519("stranger").unwrap();
        let text = format!(
            "# user CA keys\n\n{}\n   \n  {}  \n# duplicate with another comment:\n{}\n",
            old.public_key().to_openssh().unwrap(),
            new.public_key().to_openssh().unwrap(),
            PublicKey::new(old.public_key().key_data().clone(), "same key")
                .to_openssh()
                .unwrap(),
        );
        let path = dir.path().join("trusted");
        fs::write(&path, text).unwrap();
        let trusted = TrustedCas::load(&path).unwrap();
        assert_eq!(trusted.len(), 2);
        assert_eq!(
            trusted.fingerprints(),
            &[
                old.fingerprint(HashAlg::Sha256),
                new.fingerprint(HashAlg::Sha256)
            ]
        );
        assert!(trusted.contains(old.public_key()));
        assert!(trusted.contains(&PublicKey::new(new.public_key().key_data().clone(), "x")));
        assert!(!trusted.contains(stranger.public_key()));

        let again = TrustedCas::parse(&trusted.to_openssh().unwrap(), &path).unwrap();
        assert_eq!(again.fingerprints(), trusted.fingerprints());
    }

    #[test]
    fn trusted_cas_refuses_bad_lines_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trusted");
        let key = generate_ed25519("")
            .unwrap()
            .public_key()
            .to_openssh()
            .unwrap();
        fs::write(&path, format!("{key}\nssh-ed25519 AAAAnotbase64\n")).unwrap();
        let err = TrustedCas::load(&path).unwrap_err();
        assert!(
            matches!(err, CaError::PublicKeyFormat { line: 2, .. }),
            "{err}"
        );

        fs::write(&path, "# nothing here\n\n").unwrap();
        assert!(matches!(
            TrustedCas::load(&path),
            Err(CaError::NoTrustedCa { .. })
        ));
    }
}
