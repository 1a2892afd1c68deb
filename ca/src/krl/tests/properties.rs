//! Property tests: any set of revocations written and read back is the same KRL and revokes
//! exactly what a plain model of the revocations says; OpenSSH's `ssh-keygen -Q` agrees with
//! the model on our KRLs, and we agree with it on KRLs `ssh-keygen -k` writes; any bytes, or a
//! KRL with bytes changed, are refused or read to a KRL that writes back to itself.
use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

/// One revocation, against one of two CAs (or of three plain keys).
#[derive(Debug, Clone)]
enum Revoke {
    Serial(usize, u64),
    Range(usize, u64, u64),
    KeyId(usize, String),
    Key(usize),
}

fn serial() -> impl Strategy<Value = u64> {
    prop_oneof![
        1u64..64,
        1u64..100_000,
        Just(u64::MAX),
        (u64::MAX - 64)..=u64::MAX,
        1u64..
    ]
}

fn revoke() -> impl Strategy<Value = Revoke> {
    prop_oneof![
        4 => (0usize..2, serial()).prop_map(|(ca, s)| Revoke::Serial(ca, s)),
        2 => (0usize..2, serial(), 0u64..200).prop_map(|(ca, lo, n)| {
            Revoke::Range(ca, lo, lo.saturating_add(n))
        }),
        1 => (0usize..2, "[^\\x00]{1,24}").prop_map(|(ca, id)| Revoke::KeyId(ca, id)),
        1 => (0usize..3).prop_map(Revoke::Key),
    ]
}

/// What the revocations say, kept plainly.
#[derive(Default)]
struct Model {
    ranges: [Vec<(u64, u64)>; 2],
    key_ids: [BTreeSet<String>; 2],
    keys: BTreeSet<usize>,
}

impl Model {
    fn serial_revoked(&self, ca: usize, s: u64) -> bool {
        s != 0 && self.ranges[ca].iter().any(|&(lo, hi)| lo <= s && s <= hi)
    }

    /// Serials worth asking about: every bound, and its neighbours.
    fn probes(&self) -> BTreeSet<u64> {
        let mut p = BTreeSet::from([0, 1, 2, u64::MAX - 1, u64::MAX]);
        for &(lo, hi) in self.ranges.iter().flatten() {
            for s in [
                lo.saturating_sub(1),
                lo,
                lo.saturating_add(1),
                hi.saturating_sub(1),
                hi,
                hi.saturating_add(1),
            ] {
                p.insert(s);
            }
        }
        p
    }
}

struct Keys {
    cas: [PrivateKey; 2],
    plain: [PrivateKey; 3],
}

fn keys() -> Keys {
    Keys {
        cas: [key(), key()],
        plain: [key(), key(), key()],
    }
}

fn apply(keys: &Keys, revocations: &[Revoke]) -> (Krl, Model) {
    let mut krl = Krl::new(5, 1_700_000_000, "sallyport property").unwrap();
    let mut model = Model::default();
    for r in revocations {
        match r {
            Revoke::Serial(ca, s) => {
                krl.revoke_serial(keys.cas[*ca].public_key(), *s).unwrap();
                model.ranges[*ca].push((*s, *s));
            }
            Revoke::Range(ca, lo, hi) => {
                krl.revoke_serial_range(keys.cas[*ca].public_key(), *lo, *hi)
                    .unwrap();
                model.ranges[*ca].push((*lo, *hi));
            }
            Revoke::KeyId(ca, id) => {
                krl.revoke_key_id(keys.cas[*ca].public_key(), id).unwrap();
                model.key_ids[*ca].insert(id.clone());
            }
            Revoke::Key(k) => {
                krl.revoke_key(keys.plain[*k].public_key()).unwrap();
                model.keys.insert(*k);
            }
        }
    }
    (krl, model)
}

/// Does the KRL, as read, revoke exactly what the model says (serials, key ids, keys)?
fn agrees(krl: &Krl, keys: &Keys, model: &Model) -> Result<(), TestCaseError> {
    for (i, ca) in keys.cas.iter().enumerate() {
        let blob = ca.public_key().key_data().encode_vec().unwrap();
        let rc = krl.certs.get(&blob);
        for s in model.probes() {
            let got = rc.is_some_and(|rc| rc.contains_serial(s));
            prop_assert_eq!(got, model.serial_revoked(i, s), "CA {} serial {}", i, s);
        }
        let ids = rc.map(|rc| rc.key_ids.clone()).unwrap_or_default();
        prop_assert_eq!(&ids, &model.key_ids[i]);
        // The ranges kept are disjoint and not adjacent: the written form is the shortest.
        if let Some(rc) = rc {
            let mut last: Option<u64> = None;
            for (&lo, &hi) in &rc.serials {
                prop_assert!(lo >= 1 && lo <= hi);
                if let Some(end) = last {
                    prop_assert!(lo > end.saturating_add(1), "{:?}", rc.serials);
                }
                last = Some(hi);
            }
        }
    }
    for (i, k) in keys.plain.iter().enumerate() {
        let blob = k.public_key().key_data().encode_vec().unwrap();
        prop_assert_eq!(krl.keys.contains(&blob), model.keys.contains(&i));
    }
    Ok(())
}

proptest! {
    #![proptest_config(sallyport_audit::proptest_config(48))]

    /// Write, read back: the same KRL, the same bytes again, and the model's revocations, also
    /// through `is_revoked` on real certificates.
    #[test]
    fn written_then_read_back_revokes_the_same(
        revocations in proptest::collection::vec(revoke(), 0..24),
    ) {
        let keys = keys();
        let (krl, model) = apply(&keys, &revocations);
        agrees(&krl, &keys, &model)?;
        let bytes = krl.to_bytes().unwrap();
        let read = Krl::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&read, &krl);
        prop_assert_eq!(read.to_bytes().unwrap(), bytes);
        agrees(&read, &keys, &model)?;
        // A few real certificates: serials at the edges of what is revoked, by CA 0.
        for s in model.probes().into_iter().filter(|s| *s != 0).take(6) {
            let c = cert(&keys.cas[0], s, "g-probe");
            let want = model.serial_revoked(0, s)
                || model.key_ids[0].contains(c.key_id());
            prop_assert_eq!(read.is_revoked(&c), want, "serial {}", s);
        }
    }

    /// Anything at all, or a valid KRL with bytes changed: refused, or read to a KRL that
    /// writes and reads back to itself. Never a panic.
    #[test]
    fn any_bytes_are_refused_or_read_consistently(
        revocations in proptest::collection::vec(revoke(), 0..8),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 0..4),
        raw in proptest::collection::vec(any::<u8>(), 0..256),
        raw_is_input in any::<bool>(),
    ) {
        let keys = keys();
        let (krl, _) = apply(&keys, &revocations);
        let mut bytes = if raw_is_input {
            let mut b = MAGIC.to_vec();
            b.extend(&raw);
            b
        } else {
            krl.to_bytes().unwrap()
        };
        for (at, how, byte) in edits {
            let i = at.index(bytes.len() + 1);
            match how {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        if let Ok(read) = Krl::from_bytes(&bytes) {
            let again = Krl::from_bytes(&read.to_bytes().unwrap()).unwrap();
            prop_assert_eq!(again, read);
        }
    }
}

/// Lines of `ssh-keygen -k`'s revocation spec for what the model holds of CA 0.
fn keygen_spec(model: &Model) -> String {
    let mut spec = String::new();
    for &(lo, hi) in &model.ranges[0] {
        // ssh-keygen wants a range's ends to differ.
        if lo == hi {
            spec.push_str(&format!("serial: {lo}\n"));
        } else {
            spec.push_str(&format!("serial: {lo}-{hi}\n"));
        }
    }
    for id in &model.key_ids[0] {
        spec.push_str(&format!("id: {id}\n"));
    }
    spec
}

proptest! {
    // Each case runs ssh-keygen a few times: fewer cases.
    #![proptest_config(sallyport_audit::proptest_config(8))]

    /// OpenSSH agrees: `ssh-keygen -Q` on our KRL, and our reading of the KRL `ssh-keygen -k`
    /// writes from the same revocations, both match the model.
    #[test]
    fn openssh_agrees_both_ways(
        revocations in proptest::collection::vec(prop_oneof![
            (serial()).prop_map(|s| Revoke::Serial(0, s)),
            (serial(), 0u64..50).prop_map(|(lo, n)| Revoke::Range(0, lo, lo.saturating_add(n))),
            "[a-zA-Z0-9:;=_-]{1,24}".prop_map(|id| Revoke::KeyId(0, id)),
        ], 1..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys();
        let (krl, model) = apply(&keys, &revocations);
        let ours = dir.path().join("ours.krl");
        std::fs::write(&ours, krl.to_bytes().unwrap()).unwrap();

        let ca_path = dir.path().join("ca");
        crate::keys::save_private_key(&keys.cas[0], &ca_path).unwrap();
        let spec_path = dir.path().join("spec");
        std::fs::write(&spec_path, keygen_spec(&model)).unwrap();
        let theirs = dir.path().join("theirs.krl");
        let out = Command::new("ssh-keygen")
            .arg("-k")
            .arg("-f")
            .arg(&theirs)
            .arg("-s")
            .arg(crate::keys::public_key_path(&ca_path))
            .arg(&spec_path)
            .output()
            .unwrap();
        prop_assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let read = Krl::from_bytes(&std::fs::read(&theirs).unwrap()).unwrap();
        agrees(&read, &keys, &Model {
            ranges: [model.ranges[0].clone(), Vec::new()],
            key_ids: [model.key_ids[0].clone(), BTreeSet::new()],
            keys: BTreeSet::new(),
        })?;

        let mut probes: Vec<u64> = model.probes().into_iter().filter(|s| *s != 0).collect();
        probes.truncate(4);
        for s in probes {
            let c = cert(&keys.cas[0], s, "g-probe");
            let want = model.serial_revoked(0, s);
            prop_assert_eq!(keygen_says_revoked(&ours, &c, dir.path()), want, "ssh-keygen -Q, serial {}", s);
        }
        if let Some(id) = model.key_ids[0].iter().next() {
            // A certificate with exactly that key id (not one of ours: any key id can be revoked).
            let mut spec_cert = russh::keys::ssh_key::certificate::Builder::new_with_random_nonce(
                &mut russh::keys::key::safe_rng(),
                key().public_key().key_data().clone(),
                1,
                u64::MAX,
            )
            .unwrap();
            spec_cert.serial(1).unwrap();
            spec_cert.key_id(id.as_str()).unwrap();
            spec_cert.all_principals_valid().unwrap();
            let c = spec_cert.sign(&keys.cas[0]).unwrap();
            prop_assert!(read.is_revoked(&c));
            prop_assert!(krl.is_revoked(&c));
            prop_assert!(keygen_says_revoked(&ours, &c, dir.path()), "ssh-keygen -Q, key id {}", id);
        }
    }
}
