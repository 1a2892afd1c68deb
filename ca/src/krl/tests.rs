use std::path::Path;
use std::process::Command;

use russh::keys::ssh_key::{Certificate, PrivateKey};

use super::*;
use crate::cert::build_user_cert;
use crate::grant::{Grant, test_grant};
use crate::keys::generate_ed25519;

fn key() -> PrivateKey {
    generate_ed25519("").unwrap()
}

fn grant(serial: u64, id: &str) -> Grant {
    let mut g = test_grant();
    g.serial = serial;
    g.id = id.into();
    g
}

fn cert(ca: &PrivateKey, serial: u64, id: &str) -> Certificate {
    build_user_cert(ca, key().public_key(), &grant(serial, id)).unwrap()
}

/// `ssh-keygen -Q`: exit status 0 and "ok" when not revoked, 1 and "REVOKED" when revoked.
fn keygen_says_revoked(krl: &Path, cert: &Certificate, dir: &Path) -> bool {
    let path = dir.join(format!("{}-cert.pub", cert.serial()));
    std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-Q")
        .arg("-f")
        .arg(krl)
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {
            assert!(text.contains(": ok"), "{text}");
            false
        }
        Some(1) => {
            assert!(text.contains("REVOKED"), "{text}");
            true
        }
        other => panic!("ssh-keygen -Q exited {other:?}: {text}"),
    }
}

#[test]
fn serials_are_sorted_merged_and_written_compactly() {
    let ca = key();
    let mut krl = Krl::new(3, 1_700_000_000, "test").unwrap();
    for serial in [9, 5, 7, 5, 6, 20, 8, u64::MAX, 1] {
        krl.revoke_serial(ca.public_key(), serial).unwrap();
    }
    let rc = krl.certs.values().next().unwrap();
    let ranges: Vec<(u64, u64)> = rc.serials.iter().map(|(a, b)| (*a, *b)).collect();
    assert_eq!(ranges, [(1, 1), (5, 9), (20, 20), (u64::MAX, u64::MAX)]);

    krl.revoke_serial_range(ca.public_key(), 10, 19).unwrap();
    krl.revoke_serial_range(ca.public_key(), 2, 2).unwrap();
    let rc = krl.certs.values().next().unwrap();
    let ranges: Vec<(u64, u64)> = rc.serials.iter().map(|(a, b)| (*a, *b)).collect();
    assert_eq!(ranges, [(1, 2), (5, 20), (u64::MAX, u64::MAX)]);

    assert!(krl.revoke_serial(ca.public_key(), 0).is_err());
    assert!(krl.revoke_serial_range(ca.public_key(), 5, 4).is_err());
    assert!(krl.revoke_key_id(ca.public_key(), "").is_err());
    assert!(krl.revoke_key_id(ca.public_key(), "a\0b").is_err());
    assert!(Krl::new(1, 1, "a\0b").is_err());

    // The serial list holds the short runs in ascending order; the long run is a range.
    let bytes = krl.to_bytes().unwrap();
    let mut list = Vec::new();
    for s in [1u64, 2, u64::MAX] {
        list.extend_from_slice(&s.to_be_bytes());
    }
    assert!(bytes.windows(list.len()).any(|w| w == list), "serial list");
    let mut range = Vec::new();
    range.extend_from_slice(&5u64.to_be_bytes());
    range.extend_from_slice(&20u64.to_be_bytes());
    assert!(
        bytes.windows(range.len()).any(|w| w == range),
        "serial range"
    );
}

#[test]
fn round_trip_and_in_process_checks() {
    let (ca, other_ca) = (key(), key());
    let mut krl = Krl::new(7, 1_700_000_123, "sallyport user CA").unwrap();
    krl.revoke_serial(ca.public_key(), 1001).unwrap();
    krl.revoke_serial_range(ca.public_key(), 2000, 2999)
        .unwrap();
    let by_id = cert(&ca, 4242, "g-revoked");
    krl.revoke_key_id(ca.public_key(), by_id.key_id()).unwrap();
    krl.revoke_serial(other_ca.public_key(), 5005).unwrap();
    let compromised = key();
    krl.revoke_key(compromised.public_key()).unwrap();

    let bytes = krl.to_bytes().unwrap();
    assert!(bytes.starts_with(b"SSHKRL\n\0\0\0\0\x01"));
    let parsed = Krl::from_bytes(&bytes).unwrap();
    assert_eq!(parsed, krl);
    assert_eq!(parsed.version(), 7);
    assert_eq!(parsed.generated_date(), 1_700_000_123);
    assert_eq!(parsed.comment(), "sallyport user CA");
    assert_eq!(parsed.to_bytes().unwrap(), bytes);

    assert!(parsed.is_revoked(&cert(&ca, 1001, "g-1")));
    assert!(parsed.is_revoked(&cert(&ca, 2500, "g-1")));
    assert!(parsed.is_revoked(&by_id));
    assert!(!parsed.is_revoked(&cert(&ca, 1002, "g-1")));
    assert!(!parsed.is_revoked(&cert(&ca, 3000, "g-1")));
    // Serials and key ids are per CA.
    assert!(!parsed.is_revoked(&cert(&other_ca, 1001, "g-1")));
    assert!(!parsed.is_revoked(&cert(&other_ca, 4242, "g-revoked")));
    assert!(parsed.is_revoked(&cert(&other_ca, 5005, "g-1")));
    assert!(!parsed.is_revoked(&cert(&ca, 5005, "g-1")));
    // A revoked plain key: as subject, and as CA.
    let subject_revoked =
        build_user_cert(&ca, compromised.public_key(), &grant(77, "g-77")).unwrap();
    assert!(parsed.is_revoked(&subject_revoked));
    assert!(parsed.is_revoked(&cert(&compromised, 77, "g-77")));

    // As the edge uses it.
    let trusted = crate::keys::TrustedCas::new([ca.public_key().clone()]);
    let check = |c: &Certificate| {
        crate::cert::check_user_cert(c, &trusted, 1_700_000_000, &|c| parsed.is_revoked(c), None)
    };
    assert!(check(&cert(&ca, 1002, "g-1")).is_ok());
    let refusal = check(&cert(&ca, 2500, "g-1")).unwrap_err();
    assert_eq!(refusal.code(), "revoked");
}

#[test]
fn parser_refuses_what_it_cannot_apply() {
    let ca = key();
    let mut krl = Krl::new(1, 1, "").unwrap();
    krl.revoke_serial(ca.public_key(), 5).unwrap();
    let good = krl.to_bytes().unwrap();
    assert!(Krl::from_bytes(&good).is_ok());

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let mut bad_format = good.clone();
    bad_format[11] = 2;
    let truncated = good[..good.len() - 3].to_vec();
    let mut trailing = good.clone();
    trailing.push(1);
    let mut sha1_section = good.clone();
    sha1_section.extend_from_slice(&[3, 0, 0, 0, 0]);
    let mut signature_section = good.clone();
    signature_section.extend_from_slice(&[4, 0, 0, 0, 0]);
    let mut critical_ext = good.clone();
    critical_ext.extend_from_slice(&[255, 0, 0, 0, 10, 0, 0, 0, 1, b'x', 1, 0, 0, 0, 0]);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("bad magic", bad_magic),
        ("bad format", bad_format),
        ("truncated", truncated),
        ("trailing byte", trailing),
        ("sha1 section", sha1_section),
        ("signature section", signature_section),
        ("critical extension", critical_ext),
    ] {
        assert!(Krl::from_bytes(&bytes).is_err(), "{name}: accepted");
    }
    let mut optional_ext = good.clone();
    optional_ext.extend_from_slice(&[255, 0, 0, 0, 10, 0, 0, 0, 1, b'x', 0, 0, 0, 0, 0]);
    assert_eq!(Krl::from_bytes(&optional_ext).unwrap(), krl);
}

#[test]
fn openssh_agrees_with_our_krl() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (key(), key());
    let revoked_serials = [0x1234_5678_9abc_def0, 17, 18, 19, 20];
    let by_key_id = cert(&ca, 99, "g-bad");

    let mut krl = Krl::new(2, 1_700_000_000, "sallyport test").unwrap();
    for serial in revoked_serials {
        krl.revoke_serial(ca.public_key(), serial).unwrap();
    }
    krl.revoke_key_id(ca.public_key(), by_key_id.key_id())
        .unwrap();
    let path = dir.path().join("revoked.krl");
    std::fs::write(&path, krl.to_bytes().unwrap()).unwrap();

    let mut cases: Vec<(Certificate, bool)> = revoked_serials
        .iter()
        .map(|s| (cert(&ca, *s, "g-1"), true))
        .collect();
    cases.push((by_key_id, true));
    cases.push((cert(&ca, 16, "g-1"), false));
    cases.push((cert(&ca, 21, "g-1"), false));
    cases.push((cert(&ca, 100, "g-good"), false));
    cases.push((cert(&other_ca, 17, "g-bad"), false));
    for (cert, want) in &cases {
        assert_eq!(
            krl.is_revoked(cert),
            *want,
            "ours: serial {}",
            cert.serial()
        );
        assert_eq!(
            keygen_says_revoked(&path, cert, dir.path()),
            *want,
            "ssh-keygen: serial {} key id {}",
            cert.serial(),
            cert.key_id()
        );
    }
}

#[test]
fn we_read_a_krl_that_ssh_keygen_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let ca = key();
    let ca_path = dir.path().join("ca");
    crate::keys::save_private_key(&ca, &ca_path).unwrap();
    let bad = cert(&ca, 500, "g-bad");
    let spec = format!(
        "serial: 7\nserial: 10-12\nserial: 40-1000\nserial: 0x1234567890\nid: {}\n",
        bad.key_id()
    );
    // Dense serials make ssh-keygen choose bitmaps and ranges; we must read them all.
    let spec: String = spec
        + &(0..40)
            .map(|i| format!("serial: {}\n", 2000 + i * 3))
            .collect::<String>();
    let spec_path = dir.path().join("spec");
    std::fs::write(&spec_path, spec).unwrap();
    let krl_path = dir.path().join("krl");
    let out = Command::new("ssh-keygen")
        .arg("-k")
        .arg("-f")
        .arg(&krl_path)
        .arg("-s")
        .arg(crate::keys::public_key_path(&ca_path))
        .arg(&spec_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let krl = Krl::from_bytes(&std::fs::read(&krl_path).unwrap()).unwrap();
    for serial in [7, 10, 11, 12, 40, 500, 1000, 0x1234567890, 2000, 2003, 2117] {
        assert!(krl.is_revoked(&cert(&ca, serial, "g-1")), "serial {serial}");
    }
    for serial in [6, 8, 9, 13, 39, 1001, 0x1234567891, 2001, 2002, 2120] {
        assert!(
            !krl.is_revoked(&cert(&ca, serial, "g-1")),
            "serial {serial}"
        );
    }
    assert!(krl.is_revoked(&cert(&ca, 3, "g-bad")));
}

mod properties;
