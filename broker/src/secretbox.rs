//! Sealing of secrets the broker must read back (engineers' and accounts' TOTP secrets), so that
//! a copy of the database alone does not let anyone make codes.
//!
//! ChaCha20-Poly1305 (ring) with a 32-byte key kept outside the database (`totp_key_file`,
//! default `data_dir/totp.key`, 0600; every replica of a highly available broker needs the same
//! file). Each value is bound to its row by the associated data (`engineer:<uid>`,
//! `account:<name>`), so a sealed secret copied to another row does not open. Stored form:
//! `enc1:` + base64(nonce ‖ ciphertext ‖ tag). A value without the prefix (a secret stored in
//! clear by an older version) does not open: the start that makes the key seals such values,
//! once ([`crate::store::Store::seal_clear_secrets`]), so a clear value found later was written
//! by someone without the key — planting a TOTP secret they know — and is refused.

use base64::Engine as _;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

const PREFIX: &str = "enc1:";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the key must be 32 bytes")]
    BadKey,
    #[error(
        "a sealed secret does not open with this broker's key (another totp_key_file, or the \
         value was moved or edited)"
    )]
    DoesNotOpen,
    #[error(
        "a secret is stored in clear: the broker sealed the secrets it found in clear once, when \
         it made its key, so this one was written without the key and is refused (enroll the \
         TOTP again)"
    )]
    NotSealed,
}

/// Whether a stored value is sealed (else a secret in clear, from an older version).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

pub struct SecretBox {
    key: LessSafeKey,
}

impl SecretBox {
    pub fn new(key: &[u8]) -> Result<SecretBox, SealError> {
        let key = key.get(..32).ok_or(SealError::BadKey)?;
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| SealError::BadKey)?;
        Ok(SecretBox {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Seal `secret` for the row named by `context`.
    pub fn seal(&self, context: &str, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let mut buf = secret.as_bytes().to_vec();
        // Sealing only fails for inputs larger than ring's limit (far beyond any secret).
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            buf.clear();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    /// Open a stored value for the row named by `context`.
    pub fn open(&self, context: &str, stored: &str) -> Result<String, SealError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Err(SealError::NotSealed);
        };
        let mut raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .map_err(|_| SealError::DoesNotOpen)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::DoesNotOpen);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&raw[..NONCE_LEN]);
        let sealed = &mut raw[NONCE_LEN..];
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                sealed,
            )
            .map_err(|_| SealError::DoesNotOpen)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::DoesNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_with_the_key_and_the_row_they_were_made_for() {
        let b = SecretBox::new(&[7u8; 32]).unwrap();
        let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
        let sealed = b.seal("engineer:alice", secret);
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains(secret));
        // A fresh nonce each time.
        assert_ne!(sealed, b.seal("engineer:alice", secret));
        assert_eq!(b.open("engineer:alice", &sealed).unwrap(), secret);
        // Moved to another row, another key, edited, cut short: refused.
        assert!(b.open("engineer:mallory", &sealed).is_err());
        let other = SecretBox::new(&[8u8; 32]).unwrap();
        assert!(other.open("engineer:alice", &sealed).is_err());
        let mut edited = sealed.clone().into_bytes();
        let last = edited.len() - 3;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        assert!(
            b.open("engineer:alice", &String::from_utf8(edited).unwrap())
                .is_err()
        );
        assert!(b.open("engineer:alice", "enc1:AAAA").is_err());
        assert!(b.open("engineer:alice", "enc1:!!").is_err());
        // A value in clear (planted by someone without the key) does not open.
        assert!(matches!(
            b.open("engineer:alice", secret),
            Err(SealError::NotSealed)
        ));
        assert!(SecretBox::new(&[1u8; 16]).is_err());
    }
}
