//! TOTP (RFC 6238, SHA-1, 6 digits, 30 s steps) with totp-rs. Single use of a step is the
//! store's job (`Store::use_totp_step`).

use rand::RngCore;
use totp_rs::{Builder, Secret};

/// A new secret, base32 (160 bits).
pub fn new_secret() -> String {
    let mut b = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut b);
    Secret::from(b).to_base32()
}

/// The step a code matches at `now`, within `skew` steps either side.
pub fn check(secret_b32: &str, code: &str, now: u64, skew: u16) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secret = Secret::try_from_base32(secret_b32).ok()?;
    let totp = Builder::new()
        .with_secret(secret)
        .with_skew(skew)
        .build()
        .ok()?;
    totp.check(code, now)
}

/// The code for `now` (tests, the demo's helper).
pub fn code(secret_b32: &str, now: u64) -> Option<String> {
    let secret = Secret::try_from_base32(secret_b32).ok()?;
    let totp = Builder::new().with_secret(secret).build().ok()?;
    Some(totp.generate(now).to_string())
}

/// `otpauth://` URI for authenticator apps.
pub fn otpauth_uri(secret_b32: &str, account: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/sallyport:{}?secret={}&issuer=sallyport&algorithm=SHA1&digits=6&period=30",
        enc(account),
        secret_b32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_check_within_skew_only() {
        let s = new_secret();
        let now = 1_700_000_000;
        let c = code(&s, now).unwrap();
        assert_eq!(check(&s, &c, now, 1), Some(now / 30));
        assert!(check(&s, &c, now + 30, 1).is_some());
        assert_eq!(check(&s, &c, now + 95, 1), None);
        assert_eq!(check(&s, "abcdef", now, 1), None);
        assert_eq!(check(&s, "1234567", now, 1), None);
        assert_eq!(check("not base32!", &c, now, 1), None);
    }
}
