//! Signatures of audit chain heads: each gateway and edge (and the broker, for its own chain)
//! signs the head of its chain with an Ed25519 key of its own; the broker pins the public key and
//! `sallyport audit verify` checks the signatures. The signed text is
//! [`sallyport_audit::writers::head_message`] (source, sequence number, hash of that record);
//! a signature is an OpenSSH SSHSIG (namespace [`NAMESPACE`], SHA-512), so it can also be
//! checked with `ssh-keygen -Y verify -n sallyport-audit`.

use russh::keys::ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::error::CaError;

/// The SSHSIG namespace of chain head signatures.
pub const NAMESPACE: &str = "sallyport-audit";

/// Sign the head of `source`'s chain: record `seq` has hash `hash`. An armored SSHSIG.
pub fn sign_head(key: &PrivateKey, source: &str, seq: u64, hash: &str) -> Result<String, CaError> {
    let msg = sallyport_audit::writers::head_message(source, seq, hash);
    let sig = key
        .sign(NAMESPACE, HashAlg::Sha512, msg.as_bytes())
        .map_err(|source| CaError::Ssh {
            what: "signing an audit chain head",
            source,
        })?;
    sig.to_pem(LineEnding::LF).map_err(|source| CaError::Ssh {
        what: "encoding an audit chain head signature",
        source,
    })
}

/// The SSHSIG namespace of an evidence bundle's manifest (`manifest.sig`).
pub const BUNDLE_NAMESPACE: &str = "sallyport-audit-bundle";

/// Sign an evidence bundle's `manifest.json` (its bytes) with the broker's audit key: an armored
/// SSHSIG (`ssh-keygen -Y verify -n sallyport-audit-bundle` can check it too).
pub fn sign_manifest(key: &PrivateKey, manifest: &[u8]) -> Result<String, CaError> {
    let sig = key
        .sign(BUNDLE_NAMESPACE, HashAlg::Sha512, manifest)
        .map_err(|source| CaError::Ssh {
            what: "signing a bundle manifest",
            source,
        })?;
    sig.to_pem(LineEnding::LF).map_err(|source| CaError::Ssh {
        what: "encoding a bundle manifest signature",
        source,
    })
}

/// Does `signature` sign `manifest` with `key`? The reason in words when not.
pub fn verify_manifest(key: &PublicKey, manifest: &[u8], signature: &str) -> Result<(), String> {
    let sig = SshSig::from_pem(signature.trim())
        .map_err(|_| "the signature is not an SSH signature (SSHSIG)".to_string())?;
    if sig.public_key() != key.key_data() {
        return Err(format!(
            "the manifest was signed with another key ({}) than the broker key",
            PublicKey::from(sig.public_key().clone()).fingerprint(HashAlg::Sha256)
        ));
    }
    key.verify(BUNDLE_NAMESPACE, manifest, &sig).map_err(|_| {
        "the signature does not verify: manifest.json is not the file that was signed".to_string()
    })
}

/// Does `signature` sign the head (`source`, `seq`, `hash`) with `key`? The reason in words when not.
pub fn verify_head(
    key: &PublicKey,
    source: &str,
    seq: u64,
    hash: &str,
    signature: &str,
) -> Result<(), String> {
    let sig = SshSig::from_pem(signature.trim())
        .map_err(|_| "the signature is not an SSH signature (SSHSIG)".to_string())?;
    if sig.public_key() != key.key_data() {
        return Err(
            "the signature was made with another key than the one pinned for this chain".into(),
        );
    }
    let msg = sallyport_audit::writers::head_message(source, seq, hash);
    key.verify(NAMESPACE, msg.as_bytes(), &sig)
        .map_err(|_| "the signature does not verify: the signed head is not this one".to_string())
}

/// A chain's signing public key as sent and pinned: one OpenSSH line, Ed25519, without comment;
/// with its SHA-256 fingerprint.
pub fn audit_public_key(line: &str) -> Result<(PublicKey, String, String), String> {
    let line = line.trim();
    if line.is_empty() || line.len() > 1024 || line.contains(['\n', '\r']) {
        return Err("the audit key must be one OpenSSH public key line".into());
    }
    let mut key = PublicKey::from_openssh(line)
        .map_err(|_| "the audit key is not an OpenSSH public key".to_string())?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(format!(
            "the audit key is a {} key: it must be Ed25519 (ssh-ed25519)",
            key.algorithm()
        ));
    }
    key.set_comment("");
    let text = key
        .to_openssh()
        .map_err(|_| "the audit key cannot be encoded".to_string())?;
    let fp = key.fingerprint(HashAlg::Sha256).to_string();
    Ok((key, text.trim().to_string(), fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_signature_verifies_only_for_its_head_and_key() {
        let k = crate::keys::generate_ed25519("gw audit").unwrap();
        let other = crate::keys::generate_ed25519("other").unwrap();
        let sig = sign_head(&k, "gateway:gw-1", 7, "ab").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"));
        let pk = k.public_key();
        assert_eq!(verify_head(pk, "gateway:gw-1", 7, "ab", &sig), Ok(()));
        for (source, seq, hash) in [
            ("gateway:gw-2", 7, "ab"),
            ("gateway:gw-1", 8, "ab"),
            ("gateway:gw-1", 7, "ac"),
        ] {
            assert!(
                verify_head(pk, source, seq, hash, &sig).is_err(),
                "{source} {seq} {hash}"
            );
        }
        let e = verify_head(other.public_key(), "gateway:gw-1", 7, "ab", &sig).unwrap_err();
        assert!(e.contains("another key"), "{e}");
        assert!(verify_head(pk, "gateway:gw-1", 7, "ab", "garbage").is_err());
        let line = pk.to_openssh().unwrap();
        let (_, text, fp) = audit_public_key(&line).unwrap();
        assert!(text.starts_with("ssh-ed25519 ") && !text.contains("gw audit"));
        assert!(fp.starts_with("SHA256:"));
        assert!(audit_public_key("nope").is_err());
    }

    #[test]
    fn a_manifest_signature_verifies_only_for_its_bytes_and_key() {
        let k = crate::keys::generate_ed25519("broker audit").unwrap();
        let other = crate::keys::generate_ed25519("other").unwrap();
        let sig = sign_manifest(&k, b"{\"a\":1}").unwrap();
        assert_eq!(verify_manifest(k.public_key(), b"{\"a\":1}", &sig), Ok(()));
        let e = verify_manifest(k.public_key(), b"{\"a\":2}", &sig).unwrap_err();
        assert!(e.contains("not the file that was signed"), "{e}");
        let e = verify_manifest(other.public_key(), b"{\"a\":1}", &sig).unwrap_err();
        assert!(e.contains("another key"), "{e}");
        // A head signature is not a manifest signature (another namespace).
        let head = sign_head(&k, "broker", 1, "ab").unwrap();
        assert!(verify_manifest(k.public_key(), b"x", &head).is_err());
    }
}
