//! Sealing what must be kept but not read in passing: a line typed without echo at a prompt
//! asking for a secret (`input_hidden`). The gateway cannot tell a password typed at sudo's
//! prompt from a command typed at a shell whose own prompt was made to read like one, so it
//! drops neither: it seals the line to the broker's hidden-input key, and only the broker can
//! open it, for a reviewer who asks with a reason (an audited act).
//!
//! HPKE (RFC 9180) in base mode: X25519-HKDF-SHA256, HKDF-SHA256, ChaCha20-Poly1305. The
//! associated data binds a sealed line to its place (the session and line it was typed on), so
//! a sealed value copied into another event does not open there. Forms:
//! - public key: `sallyport-seal-x25519 <base64 of 32 bytes>`; its id is the first 16 hex
//!   digits of its SHA-256;
//! - sealed value: `hpke1:` + base64(encapsulated key ‖ ciphertext ‖ tag);
//! - private key: 32 random bytes in a 0600 file kept by the broker.

use base64::Engine as _;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sha2::{Digest, Sha256};

type Kem = X25519HkdfSha256;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

const INFO: &[u8] = b"sallyport hidden input v1";
const SEALED_PREFIX: &str = "hpke1:";
const KEY_PREFIX: &str = "sallyport-seal-x25519 ";
/// The encapsulated key of X25519: 32 bytes in front of the ciphertext.
const ENC_LEN: usize = 32;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a hidden-input key (expected `sallyport-seal-x25519 <base64>`)")]
    BadPublicKey,
    #[error("the hidden-input key file must hold at least 32 bytes")]
    BadPrivateKey,
    #[error("not a sealed value (expected `hpke1:<base64>`)")]
    Malformed,
    #[error(
        "the sealed value does not open with this key (sealed to another key, moved to another \
         event, or edited)"
    )]
    DoesNotOpen,
    #[error("sealing failed")]
    SealFailed,
}

/// The public half: what a gateway seals to.
#[derive(Clone)]
pub struct SealKey {
    public: PublicKey,
    id: String,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey({})", self.id)
    }
}

impl PartialEq for SealKey {
    fn eq(&self, other: &SealKey) -> bool {
        self.id == other.id
    }
}

impl SealKey {
    fn of(public: PublicKey) -> SealKey {
        let id = hex::encode(&Sha256::digest(public.to_bytes())[..8]);
        SealKey { public, id }
    }

    /// Read the text form (`sallyport-seal-x25519 <base64>`).
    pub fn parse(text: &str) -> Result<SealKey, SealError> {
        let b64 = text
            .trim()
            .strip_prefix(KEY_PREFIX)
            .ok_or(SealError::BadPublicKey)?;
        let bytes = B64
            .decode(b64.trim())
            .map_err(|_| SealError::BadPublicKey)?;
        let public = PublicKey::from_bytes(&bytes).map_err(|_| SealError::BadPublicKey)?;
        Ok(SealKey::of(public))
    }

    pub fn to_text(&self) -> String {
        format!("{KEY_PREFIX}{}", B64.encode(self.public.to_bytes()))
    }

    /// Names the key in the events sealed to it (16 hex digits of its SHA-256).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seal `plaintext`, bound to `place` (it must be given again to open it).
    pub fn seal(&self, plaintext: &[u8], place: &[u8]) -> Result<String, SealError> {
        let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeS::Base,
            &self.public,
            INFO,
            plaintext,
            place,
        )
        .map_err(|_| SealError::SealFailed)?;
        let mut out = enc.to_bytes().to_vec();
        out.extend_from_slice(&ct);
        Ok(format!("{SEALED_PREFIX}{}", B64.encode(out)))
    }
}

/// The private half, kept by the broker: opens what was sealed to [`OpenKey::seal_key`].
pub struct OpenKey {
    private: PrivateKey,
    public: SealKey,
}

impl std::fmt::Debug for OpenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpenKey({})", self.public.id)
    }
}

impl OpenKey {
    /// From the key file's bytes (its first 32: any 32 random bytes are an X25519 key).
    pub fn from_bytes(bytes: &[u8]) -> Result<OpenKey, SealError> {
        let private = bytes
            .get(..32)
            .and_then(|b| PrivateKey::from_bytes(b).ok())
            .ok_or(SealError::BadPrivateKey)?;
        let public = SealKey::of(Kem::sk_to_pk(&private));
        Ok(OpenKey { private, public })
    }

    pub fn seal_key(&self) -> &SealKey {
        &self.public
    }

    /// Open a value sealed by [`SealKey::seal`] at the same `place`.
    pub fn open(&self, sealed: &str, place: &[u8]) -> Result<Vec<u8>, SealError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .ok_or(SealError::Malformed)?;
        if bytes.len() < ENC_LEN {
            return Err(SealError::Malformed);
        }
        let (enc, ct) = bytes.split_at(ENC_LEN);
        let enc = EncappedKey::from_bytes(enc).map_err(|_| SealError::Malformed)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.private,
            &enc,
            INFO,
            ct,
            place,
        )
        .map_err(|_| SealError::DoesNotOpen)
    }
}

/// Where a hidden line was typed: what its seal is bound to.
pub fn hidden_line_place(session: &str, channel: u64, line: u64) -> Vec<u8> {
    format!("input_hidden session={session} channel={channel} line={line}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> OpenKey {
        OpenKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn opens_what_was_sealed_at_its_place_only() {
        let k = key(7);
        let place = hidden_line_place("s1", 0, 3);
        let sealed = k.seal_key().seal(b"touch /tmp/x", &place).unwrap();
        assert!(sealed.starts_with("hpke1:"));
        assert!(!sealed.contains("touch"));
        assert_eq!(k.open(&sealed, &place).unwrap(), b"touch /tmp/x");
        // Moved to another line, another session, or opened with another key: refused.
        for other in [hidden_line_place("s1", 0, 4), hidden_line_place("s2", 0, 3)] {
            assert_eq!(k.open(&sealed, &other), Err(SealError::DoesNotOpen));
        }
        assert_eq!(key(8).open(&sealed, &place), Err(SealError::DoesNotOpen));
        // Two seals of one text differ (a fresh encapsulated key each time).
        assert_ne!(sealed, k.seal_key().seal(b"touch /tmp/x", &place).unwrap());
    }

    #[test]
    fn edited_or_malformed_values_do_not_open() {
        let k = key(1);
        let place = b"p";
        let sealed = k.seal_key().seal(b"secret", place).unwrap();
        let mut raw = B64.decode(&sealed[SEALED_PREFIX.len()..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let edited = format!("{SEALED_PREFIX}{}", B64.encode(&raw));
        assert_eq!(k.open(&edited, place), Err(SealError::DoesNotOpen));
        for bad in ["", "hpke1:", "hpke1:!!", "plain", "hpke1:AAAA"] {
            assert_eq!(k.open(bad, place), Err(SealError::Malformed), "{bad}");
        }
        assert!(OpenKey::from_bytes(&[0u8; 31]).is_err());
    }

    #[test]
    fn public_key_text_round_trips_and_names_the_key() {
        let k = key(9);
        let text = k.seal_key().to_text();
        assert!(text.starts_with("sallyport-seal-x25519 "));
        let back = SealKey::parse(&text).unwrap();
        assert_eq!(back.id(), k.seal_key().id());
        assert_eq!(back.id().len(), 16);
        assert_ne!(back.id(), key(10).seal_key().id());
        for bad in [
            "",
            "sallyport-seal-x25519 ",
            "ssh-ed25519 AAAA",
            "sallyport-seal-x25519 AAAA",
        ] {
            assert_eq!(SealKey::parse(bad), Err(SealError::BadPublicKey), "{bad}");
        }
        // What the parsed key seals, the private key opens.
        let sealed = back.seal(b"x", b"here").unwrap();
        assert_eq!(k.open(&sealed, b"here").unwrap(), b"x");
    }
}
