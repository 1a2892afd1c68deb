//! OpenSSH key revocation lists (KRL), as specified in OpenSSH's `PROTOCOL.krl`.
//!
//! The broker writes one (sshd's `RevokedKeys` and `ssh-keygen -Q` read it); edges and gateways
//! pull it and check certificates against it in process with [`Krl::is_revoked`].
//!
//! Written: one `KRL_SECTION_CERTIFICATES` section per CA key holding a serial list (sorted, no
//! duplicates), serial ranges for runs of three or more, and revoked key ids; and an
//! `KRL_SECTION_EXPLICIT_KEY` section for plain keys revoked outright. Read: all of that, plus
//! serial bitmaps, the "any CA" certificate section and non-critical extensions. Anything else
//! (SHA-1/SHA-256 fingerprint sections, signatures, critical extensions) makes the KRL refused
//! as a whole: a revocation list we cannot fully understand must not be half-applied.

use std::collections::{BTreeMap, BTreeSet};

use russh::keys::ssh_encoding::{self, Decode, Encode};
use russh::keys::ssh_key::public::KeyData;
use russh::keys::ssh_key::{Certificate, PublicKey};

use crate::error::CaError;

const MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The reserved `string` fields: written empty, never read.
const RESERVED: &[u8] = b"";
const FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_EXTENSION: u8 = 255;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;
const CERT_EXTENSION: u8 = 0x39;

/// Runs of at least this many consecutive serials are written as a range.
const MIN_RANGE_RUN: u64 = 3;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RevokedCerts {
    /// Disjoint, non-adjacent inclusive ranges: lo -> hi.
    serials: BTreeMap<u64, u64>,
    key_ids: BTreeSet<String>,
}

impl RevokedCerts {
    fn insert_range(&mut self, mut lo: u64, mut hi: u64) {
        if let Some((&plo, &phi)) = self.serials.range(..=lo).next_back()
            && phi.saturating_add(1) >= lo
        {
            lo = plo;
            hi = hi.max(phi);
            self.serials.remove(&plo);
        }
        while let Some((&nlo, &nhi)) = self.serials.range(lo..).next() {
            if nlo > hi.saturating_add(1) {
                break;
            }
            hi = hi.max(nhi);
            self.serials.remove(&nlo);
        }
        self.serials.insert(lo, hi);
    }

    fn contains_serial(&self, serial: u64) -> bool {
        self.serials
            .range(..=serial)
            .next_back()
            .is_some_and(|(_, &hi)| serial <= hi)
    }
}

/// A KRL: what is revoked, and the header fields OpenSSH prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Krl {
    version: u64,
    generated_date: u64,
    comment: String,
    /// Keyed by the CA's wire-encoded public key; an empty key means "any CA" (read only).
    certs: BTreeMap<Vec<u8>, RevokedCerts>,
    /// Wire-encoded plain public keys revoked outright.
    keys: BTreeSet<Vec<u8>>,
}

impl Krl {
    /// An empty KRL. `version` should grow with every change; `generated_date` is Unix seconds.
    pub fn new(version: u64, generated_date: u64, comment: &str) -> Result<Self, CaError> {
        check_cstring("comment", comment)?;
        Ok(Self {
            version,
            generated_date,
            comment: comment.to_owned(),
            certs: BTreeMap::new(),
            keys: BTreeSet::new(),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }
    pub fn generated_date(&self) -> u64 {
        self.generated_date
    }
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// Revokes the certificate with this serial issued by `ca`. Serial 0 cannot be revoked
    /// (OpenSSH ignores it), so it is refused.
    pub fn revoke_serial(&mut self, ca: &PublicKey, serial: u64) -> Result<(), CaError> {
        self.revoke_serial_range(ca, serial, serial)
    }

    /// Revokes the certificates with serials `lo..=hi` issued by `ca`.
    pub fn revoke_serial_range(&mut self, ca: &PublicKey, lo: u64, hi: u64) -> Result<(), CaError> {
        if lo == 0 || lo > hi {
            return Err(CaError::Revocation(format!(
                "invalid serial range {lo}..={hi} (serials start at 1)"
            )));
        }
        let blob = key_blob(ca.key_data())?;
        self.certs.entry(blob).or_default().insert_range(lo, hi);
        Ok(())
    }

    /// Revokes every certificate issued by `ca` with exactly this key id.
    pub fn revoke_key_id(&mut self, ca: &PublicKey, key_id: &str) -> Result<(), CaError> {
        check_cstring("key id", key_id)?;
        if key_id.is_empty() {
            return Err(CaError::Revocation("empty key id".into()));
        }
        let blob = key_blob(ca.key_data())?;
        self.certs
            .entry(blob)
            .or_default()
            .key_ids
            .insert(key_id.to_owned());
        Ok(())
    }

    /// Revokes a plain key: as a certificate's subject, and as a CA (every certificate it signed).
    pub fn revoke_key(&mut self, key: &PublicKey) -> Result<(), CaError> {
        self.keys.insert(key_blob(key.key_data())?);
        Ok(())
    }

    /// Whether `cert` is revoked by serial, key id, its key, or its CA's key. Fails closed: a
    /// certificate whose keys cannot be encoded counts as revoked.
    pub fn is_revoked(&self, cert: &Certificate) -> bool {
        let (Ok(ca), Ok(subject)) = (
            cert.signature_key().encode_vec(),
            cert.public_key().encode_vec(),
        ) else {
            return true;
        };
        if self.keys.contains(&ca) || self.keys.contains(&subject) {
            return true;
        }
        [ca.as_slice(), &[][..]].into_iter().any(|scope| {
            self.certs.get(scope).is_some_and(|rc| {
                rc.key_ids.contains(cert.key_id())
                    || (cert.serial() != 0 && rc.contains_serial(cert.serial()))
            })
        })
    }

    /// The KRL in OpenSSH's binary format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CaError> {
        self.encode()
            .map_err(|e| CaError::Revocation(format!("cannot encode KRL: {e}")))
    }

    fn encode(&self) -> Result<Vec<u8>, ssh_encoding::Error> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        FORMAT_VERSION.encode(&mut out)?;
        self.version.encode(&mut out)?;
        self.generated_date.encode(&mut out)?;
        0u64.encode(&mut out)?; // flags: none defined
        RESERVED.encode(&mut out)?;
        self.comment.encode(&mut out)?;

        for (ca, rc) in &self.certs {
            let mut section = Vec::new();
            ca.encode(&mut section)?;
            RESERVED.encode(&mut section)?;
            let mut list = Vec::new();
            for (&lo, &hi) in &rc.serials {
                if hi - lo + 1 >= MIN_RANGE_RUN {
                    let mut range = Vec::new();
                    lo.encode(&mut range)?;
                    hi.encode(&mut range)?;
                    put_section(&mut section, CERT_SERIAL_RANGE, &range)?;
                } else {
                    for serial in lo..=hi {
                        serial.encode(&mut list)?;
                    }
                }
            }
            if !list.is_empty() {
                put_section(&mut section, CERT_SERIAL_LIST, &list)?;
            }
            if !rc.key_ids.is_empty() {
                let mut ids = Vec::new();
                for id in &rc.key_ids {
                    id.encode(&mut ids)?;
                }
                put_section(&mut section, CERT_KEY_ID, &ids)?;
            }
            put_section(&mut out, SECTION_CERTIFICATES, &section)?;
        }
        if !self.keys.is_empty() {
            let mut section = Vec::new();
            for key in &self.keys {
                key.encode(&mut section)?;
            }
            put_section(&mut out, SECTION_EXPLICIT_KEY, &section)?;
        }
        Ok(out)
    }

    /// Parses a KRL in OpenSSH's binary format (see the module documentation for what is read).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CaError> {
        Self::decode(bytes).map_err(|e| CaError::KrlFormat(e.to_string()))
    }

    fn decode(bytes: &[u8]) -> Result<Self, Refused> {
        let mut r = bytes;
        if <[u8; 8]>::decode(&mut r).ok().as_ref() != Some(MAGIC) {
            return Err("not a KRL (bad magic)".into());
        }
        let format = u32::decode(&mut r)?;
        if format != FORMAT_VERSION {
            return Err(format!("unsupported KRL format version {format}").into());
        }
        let version = u64::decode(&mut r)?;
        let generated_date = u64::decode(&mut r)?;
        let _flags = u64::decode(&mut r)?;
        let _reserved = string(&mut r)?;
        let comment = cstring(string(&mut r)?)?;
        let mut krl = Self::new(version, generated_date, &comment).map_err(|e| e.to_string())?;

        while !r.is_empty() {
            let kind = u8::decode(&mut r)?;
            let mut section = string(&mut r)?;
            match kind {
                SECTION_CERTIFICATES => krl.decode_certificates(&mut section)?,
                SECTION_EXPLICIT_KEY => {
                    while !section.is_empty() {
                        let blob = string(&mut section)?;
                        let key =
                            PublicKey::from_bytes(blob).map_err(|e| format!("revoked key: {e}"))?;
                        if matches!(key.key_data(), KeyData::Certificate(_)) {
                            return Err("revoked key is a certificate".into());
                        }
                        krl.keys.insert(blob.to_vec());
                    }
                }
                SECTION_EXTENSION => skip_extension(&mut section)?,
                other => return Err(format!("unsupported KRL section {other}").into()),
            }
        }
        Ok(krl)
    }

    fn decode_certificates(&mut self, r: &mut &[u8]) -> Result<(), Refused> {
        let ca = string(r)?;
        if !ca.is_empty() {
            PublicKey::from_bytes(ca).map_err(|e| format!("CA key: {e}"))?;
        }
        let _reserved = string(r)?;
        let rc = self.certs.entry(ca.to_vec()).or_default();
        while !r.is_empty() {
            let kind = u8::decode(r)?;
            let mut sub = string(r)?;
            match kind {
                CERT_SERIAL_LIST => {
                    while !sub.is_empty() {
                        let serial = u64::decode(&mut sub)?;
                        if serial == 0 {
                            return Err("serial 0 in serial list".into());
                        }
                        rc.insert_range(serial, serial);
                    }
                }
                CERT_SERIAL_RANGE => {
                    let (lo, hi) = (u64::decode(&mut sub)?, u64::decode(&mut sub)?);
                    if lo == 0 || lo > hi {
                        return Err(format!("invalid serial range {lo}..={hi}").into());
                    }
                    rc.insert_range(lo, hi);
                }
                CERT_SERIAL_BITMAP => {
                    let offset = u64::decode(&mut sub)?;
                    let bitmap = string(&mut sub)?;
                    if bitmap.first().is_some_and(|b| b & 0x80 != 0) {
                        return Err("negative serial bitmap".into());
                    }
                    for (byte_index, byte) in bitmap.iter().rev().enumerate() {
                        for bit in (0..8).filter(|bit| byte & (1 << bit) != 0) {
                            let serial = u64::try_from(byte_index * 8 + bit)
                                .ok()
                                .and_then(|n| offset.checked_add(n))
                                .filter(|s| *s != 0)
                                .ok_or("serial bitmap out of range")?;
                            rc.insert_range(serial, serial);
                        }
                    }
                }
                CERT_KEY_ID => {
                    while !sub.is_empty() {
                        rc.key_ids.insert(cstring(string(&mut sub)?)?);
                    }
                }
                CERT_EXTENSION => skip_extension(&mut sub)?,
                other => {
                    return Err(format!("unsupported certificate subsection {other:#x}").into());
                }
            }
            if !sub.is_empty() {
                return Err(format!("trailing data in certificate subsection {kind:#x}").into());
            }
        }
        Ok(())
    }
}

/// Why a KRL is refused: its wire encoding is broken (truncated, a length past the end), or
/// it says what we cannot apply.
#[derive(Debug)]
enum Refused {
    Wire(ssh_encoding::Error),
    Krl(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Wire(e) => write!(f, "{e}"),
            Refused::Krl(why) => f.write_str(why),
        }
    }
}

impl From<ssh_encoding::Error> for Refused {
    fn from(e: ssh_encoding::Error) -> Self {
        Refused::Wire(e)
    }
}

impl From<String> for Refused {
    fn from(why: String) -> Self {
        Refused::Krl(why)
    }
}

impl From<&str> for Refused {
    fn from(why: &str) -> Self {
        Refused::Krl(why.to_owned())
    }
}

/// A `string` (RFC 4251 §5), borrowed from the KRL. Not through `Vec<u8>::decode`:
/// ssh_encoding refuses lengths past 1 MiB, and a section of a KRL may be longer (a revoked
/// serial takes 8 bytes); OpenSSH reads them.
fn string<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], ssh_encoding::Error> {
    let len = usize::try_from(u32::decode(r)?)?;
    if r.len() < len {
        return Err(ssh_encoding::Error::Length);
    }
    let (head, tail) = r.split_at(len);
    *r = tail;
    Ok(head)
}

fn put_section(out: &mut Vec<u8>, kind: u8, body: &[u8]) -> Result<(), ssh_encoding::Error> {
    kind.encode(out)?;
    body.encode(out)
}

fn skip_extension(r: &mut &[u8]) -> Result<(), Refused> {
    let name = String::from_utf8_lossy(string(r)?).into_owned();
    let critical = u8::decode(r)? != 0;
    let _contents = string(r)?;
    if critical {
        return Err(format!("unsupported critical extension {name:?}").into());
    }
    Ok(())
}

fn key_blob(key: &KeyData) -> Result<Vec<u8>, CaError> {
    if matches!(key, KeyData::Certificate(_)) {
        return Err(CaError::Revocation(
            "expected a plain public key, got a certificate".into(),
        ));
    }
    key.encode_vec()
        .map_err(|e| CaError::Revocation(format!("cannot encode public key: {e}")))
}

/// OpenSSH reads these fields as C strings: no NUL inside, valid UTF-8 for us.
fn check_cstring(what: &str, s: &str) -> Result<(), CaError> {
    if s.contains('\0') {
        return Err(CaError::Revocation(format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn cstring(bytes: &[u8]) -> Result<String, String> {
    if bytes.contains(&0) {
        return Err("string contains a NUL byte".into());
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| "string is not UTF-8".into())
}

#[cfg(test)]
mod tests;
