//! Property tests: any grant the CA accepts gives a certificate that the check reads back to
//! the same identity (also after a trip through OpenSSH's text form); a certificate from a
//! trusted CA with any key id, principals, extensions and critical options never panics the
//! check, and what the check accepts says exactly what its fields say.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::cidr::Cidr;
use crate::keyid::KeyId;

/// A key id value (no `;`, `=`, whitespace or control character) that is also a valid name
/// (no `,`, `:`, `*`, `?`, `!`), as clusters must be both.
const NAME: &str = "[^;=,:*?!\\s\\p{Cc}]{1,24}";

fn network() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(ip, prefix)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv4Addr::from(ip & mask))
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(ip, prefix)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(ip & mask))
        }),
        any::<u32>().prop_map(|ip| Ipv4Addr::from(ip).to_string()),
    ]
}

prop_compose! {
    fn grant()(
        id in "[^;=\\s\\p{Cc}]{1,36}",
        engineer in "[^;=\\s\\p{Cc}]{1,24}",
        ticket in "[^;=\\s\\p{Cc}]{1,24}",
        cluster in NAME,
        logins in proptest::collection::vec("[^,:*?!\\s\\p{Cc}]{1,16}", 1..5),
        group in prop_oneof![Just(String::new()), "[^\\p{Cc}]{1,24}"],
        valid_after in 0u64..(1 << 40),
        lifetime in 1u64..(1 << 20),
        serial in 1u64..,
        (permit_port_forwarding, per_session_mfa, observer_required) in any::<(bool, bool, bool)>(),
        source_networks in proptest::collection::vec(network(), 0..4),
    ) -> Grant {
        Grant {
            id,
            engineer,
            ticket,
            cluster,
            logins,
            group,
            valid_after,
            valid_before: valid_after + lifetime,
            serial,
            permit_port_forwarding,
            per_session_mfa,
            observer_required,
            source_networks,
            ..test_grant()
        }
    }
}

/// A value for a hostile field: a near miss of a valid one, or anything.
fn near(valid: &'static str) -> impl Strategy<Value = String> {
    let edits = (any::<prop::sample::Index>(), "\\PC{0,3}|[;=,: \\t\\n\\x00]");
    prop_oneof![
        Just(valid.to_string()),
        edits.prop_map(move |(at, insert)| {
            let mut v = valid.to_string();
            let mut i = at.index(v.len() + 1);
            while !v.is_char_boundary(i) {
                i -= 1;
            }
            v.insert_str(i, &insert);
            v
        }),
        any::<String>(),
    ]
}

prop_compose! {
    fn hostile_spec()(
        key_id in near("sallyport:eng=alice;ticket=SUP-1234;grant=g-0001;cluster=acme-prod"),
        principals in proptest::collection::vec(near("acme-prod:ubuntu"), 0..4),
        critical in proptest::collection::btree_map(
            prop_oneof![3 => Just("source-address".to_string()), 1 => any::<String>()],
            near("10.0.0.0/8,192.168.1.7"),
            0..3,
        ),
        extensions in proptest::collection::btree_map(
            prop::sample::select(vec![
                EXT_GRANT, EXT_TICKET, EXT_CLUSTER, EXT_GROUP, EXT_MFA, EXT_OBSERVER,
                EXT_PERMIT_PTY, EXT_PERMIT_PORT_FORWARDING, FORBIDDEN_EXTENSIONS[0],
                FORBIDDEN_EXTENSIONS[2], "other@example.com",
            ]).prop_map(str::to_string),
            prop_oneof![near("g-0001"), near("SUP-1234"), near("acme-prod"), Just(String::new())],
            0..8,
        ),
        serial in prop_oneof![Just(0u64), any::<u64>()],
    ) -> Spec {
        Spec {
            serial,
            key_id,
            principals,
            critical: critical.into_iter().collect(),
            extensions: extensions.into_iter().collect(),
            ..Spec::standard()
        }
    }
}

proptest! {
    #![proptest_config(sallyport_audit::proptest_config(32))]

    /// build then check: the identity is the grant's, in the binary and the text form.
    #[test]
    fn any_grant_reads_back_as_built(grant in grant()) {
        let (ca, subject) = (key(), key());
        let cert = build_user_cert(&ca, subject.public_key(), &grant).unwrap();
        let peer = grant.source_networks().first().map(|n| n.parse::<Cidr>().unwrap().network());
        let reparsed = Certificate::from_openssh(&cert.to_openssh().unwrap()).unwrap();
        for cert in [&cert, &reparsed] {
            let id = check_user_cert(cert, &trusted(&ca), grant.valid_after(), &never_revoked, peer)
                .unwrap();
            let want_id = KeyId::new(grant.engineer(), grant.ticket(), grant.id(), grant.cluster())
                .unwrap();
            prop_assert_eq!(id.key_id(), &want_id);
            let mut logins: Vec<String> = Vec::new();
            for l in grant.logins() {
                if !logins.contains(l) {
                    logins.push(l.clone());
                }
            }
            let mut got = id.logins().to_vec();
            got.sort();
            logins.sort();
            prop_assert_eq!(got, logins);
            prop_assert_eq!(id.serial(), grant.serial());
            prop_assert_eq!(id.valid_after(), grant.valid_after());
            prop_assert_eq!(id.valid_before(), grant.valid_before());
            prop_assert_eq!(id.permit_port_forwarding(), grant.permit_port_forwarding());
            prop_assert_eq!(id.per_session_mfa(), grant.per_session_mfa());
            prop_assert_eq!(id.observer_required(), grant.observer_required());
            prop_assert_eq!(id.group(), Some(grant.group()).filter(|g| !g.is_empty()));
            // Outside its window, or from outside its networks, it is refused.
            let late = check_user_cert(cert, &trusted(&ca), grant.valid_before(), &never_revoked, peer);
            prop_assert_eq!(late.unwrap_err().code(), "expired");
            if !grant.source_networks().is_empty() {
                let nowhere = check_user_cert(cert, &trusted(&ca), grant.valid_after(), &never_revoked, None);
                prop_assert_eq!(nowhere.unwrap_err().code(), "source_address_mismatch");
            }
        }
    }

    /// A certificate signed by a trusted CA, with hostile fields: the check never panics, and
    /// when it accepts, every field agrees with what it returns.
    #[test]
    fn hostile_fields_are_refused_or_agree(
        spec in hostile_spec(),
        peer in proptest::option::of(prop_oneof![
            Just(IpAddr::from([10, 1, 2, 3])),
            Just(IpAddr::from([192, 168, 1, 7])),
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ]),
    ) {
        let (ca, subject) = (key(), key());
        let cert = spec.sign(&ca, &subject);
        let Ok(id) = check_user_cert(&cert, &trusted(&ca), NOW, &never_revoked, peer) else {
            return Ok(());
        };
        prop_assert_eq!(id.key_id().to_string(), spec.key_id.clone());
        prop_assert!(id.serial() != 0);
        let ext: BTreeMap<&str, &str> =
            spec.extensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(ext.get(EXT_CLUSTER).copied(), Some(id.cluster()));
        prop_assert_eq!(ext.get(EXT_TICKET).copied(), Some(id.ticket()));
        prop_assert_eq!(ext.get(EXT_GRANT).copied(), Some(id.grant()));
        for name in FORBIDDEN_EXTENSIONS {
            prop_assert!(!ext.contains_key(name));
        }
        prop_assert_eq!(id.permit_port_forwarding(), ext.contains_key(EXT_PERMIT_PORT_FORWARDING));
        prop_assert!(!spec.principals.is_empty());
        prop_assert_eq!(id.logins().len(), spec.principals.len());
        for (login, principal) in id.logins().iter().zip(&spec.principals) {
            prop_assert_eq!(format!("{}:{login}", id.cluster()), principal.clone());
            prop_assert!(!login.is_empty() && !login.contains(':'));
        }
        for (name, value) in &spec.critical {
            prop_assert_eq!(name.as_str(), OPT_SOURCE_ADDRESS);
            let peer = peer.unwrap();
            prop_assert!(value.split(',').any(|n| n.parse::<Cidr>().unwrap().contains(peer)));
        }
    }
}
