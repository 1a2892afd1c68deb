use std::net::IpAddr;
use std::process::Command;

use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Certificate, HashAlg, PrivateKey};

use super::*;
use crate::grant::test_grant;
use crate::keys::{TrustedCas, generate_ed25519};

const NOW: u64 = 1_700_000_000;

fn key() -> PrivateKey {
    generate_ed25519("").unwrap()
}

fn trusted(ca: &PrivateKey) -> TrustedCas {
    TrustedCas::new([ca.public_key().clone()])
}

fn never_revoked(_: &Certificate) -> bool {
    false
}

fn ssh_keygen(args: &[&str]) -> (bool, String) {
    let out = Command::new("ssh-keygen").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn random_serials_are_non_zero_and_distinct() {
    let serials: std::collections::BTreeSet<u64> = (0..200).map(|_| random_serial()).collect();
    assert_eq!(serials.len(), 200);
    assert!(!serials.contains(&0));
}

#[test]
fn user_cert_contents_as_openssh_reads_them() {
    let (ca, subject) = (key(), key());
    let mut grant = test_grant();
    grant.permit_port_forwarding = true;
    grant.per_session_mfa = true;
    grant.observer_required = true;
    grant.source_networks = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
    let cert = build_user_cert(&ca, subject.public_key(), &grant).unwrap();

    assert_eq!(cert.cert_type(), CertType::User);
    assert_eq!(cert.serial(), grant.serial());
    assert_eq!(
        cert.key_id(),
        "sallyport:eng=alice;ticket=SUP-1234;grant=g-0001;cluster=acme-prod"
    );
    assert_eq!(
        cert.valid_principals(),
        ["acme-prod:ubuntu", "acme-prod:deploy"]
    );
    assert_eq!(cert.valid_after(), grant.valid_after());
    assert_eq!(cert.valid_before(), grant.valid_before());
    let extensions: Vec<(&str, &str)> = cert
        .extensions()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        extensions,
        [
            ("cluster@sallyport.dev", "acme-prod"),
            ("grant@sallyport.dev", "g-0001"),
            ("group@sallyport.dev", "support-l2"),
            ("mfa@sallyport.dev", ""),
            ("observer@sallyport.dev", ""),
            ("permit-port-forwarding", ""),
            ("permit-pty", ""),
            ("ticket@sallyport.dev", "SUP-1234"),
        ]
    );
    assert_eq!(
        cert.critical_options()
            .get("source-address")
            .map(String::as_str),
        Some("10.0.0.0/8,2001:db8::/32")
    );
    assert_eq!(cert.critical_options().len(), 1);

    // What OpenSSH itself reads from the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id-cert.pub");
    std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
    let (ok, text) = ssh_keygen(&["-L", "-f", path.to_str().unwrap()]);
    assert!(ok, "{text}");
    for needle in [
        "Type: ssh-ed25519-cert-v01@openssh.com user certificate",
        "Key ID: \"sallyport:eng=alice;ticket=SUP-1234;grant=g-0001;cluster=acme-prod\"",
        &format!("Serial: {}", grant.serial()),
        &format!(
            "Signing CA: ED25519 {}",
            ca.public_key().fingerprint(HashAlg::Sha256)
        ),
        "acme-prod:ubuntu",
        "acme-prod:deploy",
        "source-address 10.0.0.0/8,2001:db8::/32",
        "permit-pty",
        "permit-port-forwarding",
        "grant@sallyport.dev",
        "ticket@sallyport.dev",
        "cluster@sallyport.dev",
        "mfa@sallyport.dev",
        "observer@sallyport.dev",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Custom extension values are SSH strings inside the data, as `ssh-keygen -O extension:`
    // writes them; ssh-keygen shows them in hex.
    for value in ["acme-prod", "g-0001", "SUP-1234"] {
        let hex = format!("{:08x}{}", value.len(), hex::encode(value));
        assert!(text.contains(&hex), "missing {value:?} ({hex}) in:\n{text}");
    }
    for absent in ["agent-forwarding", "X11", "user-rc"] {
        assert!(!text.contains(absent), "{absent:?} in:\n{text}");
    }

    // And it passes our own check, read back from the OpenSSH text.
    let reread = Certificate::from_openssh(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let id = check_user_cert(&reread, &trusted(&ca), NOW, &never_revoked, Some(peer)).unwrap();
    assert_eq!(id.engineer(), "alice");
    assert_eq!(id.ticket(), "SUP-1234");
    assert_eq!(id.grant(), "g-0001");
    assert_eq!(id.cluster(), "acme-prod");
    assert_eq!(id.logins(), ["ubuntu", "deploy"]);
    assert!(id.allows_login("deploy") && !id.allows_login("root"));
    assert_eq!(id.serial(), grant.serial());
    assert_eq!(id.valid_before(), grant.valid_before());
    assert!(id.permit_port_forwarding());
    assert!(id.per_session_mfa());
    assert!(id.observer_required());
    assert_eq!(*id.ca_fingerprint(), ca.fingerprint(HashAlg::Sha256));
}

#[test]
fn user_cert_minimal_grant_has_only_pty_and_ids() {
    let (ca, subject) = (key(), key());
    let cert = build_user_cert(&ca, subject.public_key(), &test_grant()).unwrap();
    let names: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "cluster@sallyport.dev",
            "grant@sallyport.dev",
            "group@sallyport.dev",
            "permit-pty",
            "ticket@sallyport.dev"
        ]
    );
    assert!(cert.critical_options().is_empty());
    let id = check_user_cert(&cert, &trusted(&ca), NOW, &never_revoked, None).unwrap();
    assert!(!id.permit_port_forwarding());
    assert!(!id.per_session_mfa());
    assert_eq!(id.group(), Some("support-l2"));
}

#[test]
fn user_cert_refuses_bad_grants() {
    let (ca, subject) = (key(), key());
    type Edit = fn(&mut crate::grant::Grant);
    let cases: &[(&str, Edit)] = &[
        ("zero serial", |g| g.serial = 0),
        ("no login", |g| g.logins.clear()),
        ("login with comma", |g| g.logins = vec!["root,admin".into()]),
        ("login with colon", |g| g.logins = vec!["a:b".into()]),
        ("login with space", |g| g.logins = vec!["a b".into()]),
        ("empty login", |g| g.logins = vec![String::new()]),
        ("cluster with colon", |g| g.cluster = "acme:prod".into()),
        ("engineer with semicolon", |g| g.engineer = "a;b".into()),
        ("ticket with space", |g| g.ticket = "SUP 1".into()),
        ("empty window", |g| g.valid_before = g.valid_after),
        ("reversed window", |g| g.valid_before = g.valid_after - 1),
        ("bad network", |g| {
            g.source_networks = vec!["10.0.0.5/24".into()]
        }),
        ("not a network", |g| {
            g.source_networks = vec!["anywhere".into()]
        }),
    ];
    for (name, edit) in cases {
        let mut grant = test_grant();
        edit(&mut grant);
        let result = build_user_cert(&ca, subject.public_key(), &grant);
        assert!(result.is_err(), "{name}: accepted");
    }
    let mut grant = test_grant();
    grant.serial = 0;
    assert!(matches!(
        build_user_cert(&ca, subject.public_key(), &grant),
        Err(CaError::ZeroSerial { .. })
    ));
    assert!(build_user_cert(&ca, ca.public_key(), &test_grant()).is_err());
}

#[test]
fn host_cert_as_openssh_reads_it() {
    let (ca, host) = (key(), key());
    let names = vec!["node1.acme-prod".to_owned(), "node1".to_owned()];
    let cert =
        build_host_cert(&ca, host.public_key(), &names, NOW - 60, NOW + 600, "gw-1").unwrap();
    assert_eq!(cert.cert_type(), CertType::Host);
    assert_ne!(cert.serial(), 0);
    assert!(cert.extensions().is_empty());
    assert!(cert.critical_options().is_empty());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host-cert.pub");
    std::fs::write(&path, cert.to_openssh().unwrap()).unwrap();
    let (ok, text) = ssh_keygen(&["-L", "-f", path.to_str().unwrap()]);
    assert!(ok, "{text}");
    for needle in ["host certificate", "Key ID: \"gw-1\"", "node1.acme-prod"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // A host certificate is never accepted as an engineer's.
    let refusal = check_user_cert(&cert, &trusted(&ca), NOW, &never_revoked, None).unwrap_err();
    assert_eq!(refusal, CertRefusal::NotUserCertificate);

    assert!(build_host_cert(&ca, host.public_key(), &[], NOW, NOW + 1, "gw").is_err());
    let wildcard = vec!["*.acme-prod".to_owned()];
    assert!(build_host_cert(&ca, host.public_key(), &wildcard, NOW, NOW + 1, "gw").is_err());
    assert!(build_host_cert(&ca, host.public_key(), &names, NOW, NOW + 1, "").is_err());
}

#[test]
fn session_cert_contents() {
    let (node_ca, subject) = (key(), key());
    let key_id = SessionKeyId::new("s-42", "alice", "SUP-1234").unwrap();
    let cert = build_session_cert(
        &node_ca,
        subject.public_key(),
        "ubuntu",
        &key_id,
        NOW - 60,
        NOW + 300,
        false,
    )
    .unwrap();
    assert_eq!(cert.cert_type(), CertType::User);
    assert_eq!(cert.valid_principals(), ["ubuntu"]);
    assert_eq!(
        cert.key_id(),
        "sallyport-session:sid=s-42;eng=alice;ticket=SUP-1234"
    );
    let names: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
    assert_eq!(names, ["permit-pty"]);
    cert.validate_at(NOW, [&node_ca.fingerprint(HashAlg::Sha256)])
        .unwrap();

    let cert = build_session_cert(
        &node_ca,
        subject.public_key(),
        "ubuntu",
        &key_id,
        NOW - 60,
        NOW + 300,
        true,
    )
    .unwrap();
    let names: Vec<&str> = cert.extensions().keys().map(String::as_str).collect();
    assert_eq!(names, ["permit-port-forwarding", "permit-pty"]);
    assert!(
        build_session_cert(
            &node_ca,
            subject.public_key(),
            "a,b",
            &key_id,
            NOW,
            NOW + 1,
            false
        )
        .is_err()
    );
}

/// Everything a certificate can say, starting from what `build_user_cert` makes of
/// `test_grant()`; table cases change one thing.
#[derive(Debug)]
struct Spec {
    cert_type: CertType,
    serial: u64,
    key_id: String,
    principals: Vec<String>,
    valid_after: u64,
    valid_before: u64,
    critical: Vec<(String, String)>,
    extensions: Vec<(String, String)>,
}

impl Spec {
    fn standard() -> Self {
        let g = test_grant();
        Self {
            cert_type: CertType::User,
            serial: g.serial(),
            key_id: "sallyport:eng=alice;ticket=SUP-1234;grant=g-0001;cluster=acme-prod".into(),
            principals: vec!["acme-prod:ubuntu".into(), "acme-prod:deploy".into()],
            valid_after: g.valid_after(),
            valid_before: g.valid_before(),
            critical: vec![],
            extensions: [
                ("permit-pty", ""),
                ("grant@sallyport.dev", "g-0001"),
                ("ticket@sallyport.dev", "SUP-1234"),
                ("cluster@sallyport.dev", "acme-prod"),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        }
    }

    fn set_extension(&mut self, name: &str, value: Option<&str>) {
        self.extensions.retain(|(k, _)| k != name);
        if let Some(v) = value {
            self.extensions.push((name.into(), v.into()));
        }
    }

    fn sign(&self, ca: &PrivateKey, subject: &PrivateKey) -> Certificate {
        let mut b = Builder::new_with_random_nonce(
            &mut russh::keys::key::safe_rng(),
            subject.public_key().key_data().clone(),
            self.valid_after,
            self.valid_before,
        )
        .unwrap();
        b.cert_type(self.cert_type).unwrap();
        b.serial(self.serial).unwrap();
        b.key_id(self.key_id.as_str()).unwrap();
        if self.principals.is_empty() {
            b.all_principals_valid().unwrap();
        }
        for p in &self.principals {
            b.valid_principal(p.as_str()).unwrap();
        }
        for (k, v) in &self.critical {
            b.critical_option(k.as_str(), v.as_str()).unwrap();
        }
        for (k, v) in &self.extensions {
            b.extension(k.as_str(), v.as_str()).unwrap();
        }
        b.sign(ca).unwrap()
    }
}

struct Case {
    name: &'static str,
    edit: fn(&mut Spec),
    other_ca: bool,
    now: u64,
    peer: Option<&'static str>,
    revoked: bool,
    /// `None` = accepted; otherwise the refusal code.
    want: Option<&'static str>,
}

const fn case(name: &'static str, edit: fn(&mut Spec), want: Option<&'static str>) -> Case {
    Case {
        name,
        edit,
        other_ca: false,
        now: NOW,
        peer: None,
        revoked: false,
        want,
    }
}

fn source_10(s: &mut Spec) {
    s.critical
        .push(("source-address".into(), "192.168.0.0/16,10.0.0.0/8".into()));
}

#[test]
fn check_user_cert_table() {
    let cases = [
        case("standard certificate", |_| {}, None),
        Case {
            other_ca: true,
            ..case("signed by another CA", |_| {}, Some("untrusted_ca"))
        },
        case(
            "host certificate",
            |s| s.cert_type = CertType::Host,
            Some("not_user_certificate"),
        ),
        Case {
            now: test_grant().valid_before(),
            ..case("expired at valid_before", |_| {}, Some("expired"))
        },
        Case {
            now: test_grant().valid_before() - 1,
            ..case("last valid second", |_| {}, None)
        },
        Case {
            now: test_grant().valid_after() - 1,
            ..case("not yet valid", |_| {}, Some("not_yet_valid"))
        },
        Case {
            now: test_grant().valid_after(),
            ..case("first valid second", |_| {}, None)
        },
        Case {
            revoked: true,
            ..case("revoked", |_| {}, Some("revoked"))
        },
        case("serial zero", |s| s.serial = 0, Some("zero_serial")),
        case(
            "foreign key id",
            |s| s.key_id = "alice".into(),
            Some("bad_key_id"),
        ),
        case(
            "key id with an extra field",
            |s| s.key_id.push_str(";x=y"),
            Some("bad_key_id"),
        ),
        case(
            "cluster extension differs from key id",
            |s| s.set_extension("cluster@sallyport.dev", Some("other-prod")),
            Some("extension_mismatch"),
        ),
        case(
            "ticket extension differs from key id",
            |s| s.set_extension("ticket@sallyport.dev", Some("SUP-9999")),
            Some("extension_mismatch"),
        ),
        case(
            "grant extension missing",
            |s| s.set_extension("grant@sallyport.dev", None),
            Some("missing_extension"),
        ),
        case(
            "agent forwarding",
            |s| s.set_extension("permit-agent-forwarding", Some("")),
            Some("forbidden_extension"),
        ),
        case(
            "principal of another cluster",
            |s| s.principals.push("other-prod:ubuntu".into()),
            Some("foreign_principal"),
        ),
        case(
            "principal without cluster",
            |s| s.principals = vec!["ubuntu".into()],
            Some("foreign_principal"),
        ),
        case(
            "principal with empty login",
            |s| s.principals = vec!["acme-prod:".into()],
            Some("foreign_principal"),
        ),
        case(
            "principal of a cluster with the same prefix",
            |s| s.principals = vec!["acme-prod2:ubuntu".into()],
            Some("foreign_principal"),
        ),
        case(
            "no principal",
            |s| s.principals.clear(),
            Some("no_principals"),
        ),
        case(
            "unknown critical option",
            |s| {
                s.critical
                    .push(("force-command".into(), "/bin/true".into()))
            },
            Some("unknown_critical_option"),
        ),
        Case {
            peer: Some("172.16.0.1"),
            ..case(
                "source-address mismatch",
                source_10,
                Some("source_address_mismatch"),
            )
        },
        Case {
            peer: Some("10.20.30.40"),
            ..case("source-address match", source_10, None)
        },
        Case {
            peer: Some("::ffff:10.20.30.40"),
            ..case("source-address match, mapped IPv4", source_10, None)
        },
        case(
            "source-address with unknown peer",
            source_10,
            Some("source_address_mismatch"),
        ),
        Case {
            peer: Some("10.0.0.5"),
            ..case(
                "source-address malformed",
                |s| {
                    s.critical
                        .push(("source-address".into(), "10.0.0.5/24".into()))
                },
                Some("bad_source_address"),
            )
        },
    ];

    let (ca, other_ca, subject) = (key(), key(), key());
    let trusted = trusted(&ca);
    let mut seen_codes = std::collections::BTreeSet::new();
    for c in cases {
        let mut spec = Spec::standard();
        (c.edit)(&mut spec);
        let cert = spec.sign(if c.other_ca { &other_ca } else { &ca }, &subject);
        let revoked = move |_: &Certificate| c.revoked;
        let peer = c.peer.map(|p| p.parse::<IpAddr>().unwrap());
        let got = check_user_cert(&cert, &trusted, c.now, &revoked, peer);
        match (&got, c.want) {
            (Ok(id), None) => assert_eq!(id.engineer(), "alice", "{}", c.name),
            (Err(refusal), Some(code)) => {
                assert_eq!(refusal.code(), code, "{}: {refusal}", c.name);
                assert!(!refusal.to_string().is_empty());
                seen_codes.insert(code);
            }
            _ => panic!("{}: got {got:?}, want {:?}", c.name, c.want),
        }
    }
    assert!(seen_codes.len() >= 14, "{seen_codes:?}");
}

#[test]
fn check_user_cert_accepts_any_ca_of_a_rotation() {
    let (old, new, subject) = (key(), key(), key());
    let trusted = TrustedCas::new([old.public_key().clone(), new.public_key().clone()]);
    for ca in [&old, &new] {
        let cert = build_user_cert(ca, subject.public_key(), &test_grant()).unwrap();
        let id = check_user_cert(&cert, &trusted, NOW, &never_revoked, None).unwrap();
        assert_eq!(*id.ca_fingerprint(), ca.fingerprint(HashAlg::Sha256));
    }
}

#[test]
fn check_user_cert_refuses_a_tampered_certificate() {
    let (ca, subject) = (key(), key());
    let cert = build_user_cert(&ca, subject.public_key(), &test_grant()).unwrap();
    let mut bytes = cert.to_bytes().unwrap();
    // Grant the certificate a login it was not given: "deploy" -> "deplox".
    let at = bytes
        .windows(16)
        .position(|w| w == b"acme-prod:deploy")
        .unwrap();
    bytes[at + 15] = b'x';
    let forged = Certificate::from_bytes(&bytes).unwrap();
    assert_eq!(forged.valid_principals()[1], "acme-prod:deplox");
    for now in [NOW, test_grant().valid_before() + 10] {
        let refusal =
            check_user_cert(&forged, &trusted(&ca), now, &never_revoked, None).unwrap_err();
        assert_eq!(refusal, CertRefusal::BadSignature, "{refusal}");
    }
}

#[test]
fn refusal_codes_are_stable_snake_case() {
    let all = [
        CertRefusal::NotUserCertificate,
        CertRefusal::UntrustedCa {
            fingerprint: "SHA256:x".into(),
        },
        CertRefusal::BadSignature,
        CertRefusal::NotYetValid {
            valid_after: 2,
            now: 1,
        },
        CertRefusal::Expired {
            valid_before: 1,
            now: 2,
        },
        CertRefusal::ZeroSerial,
        CertRefusal::Revoked { serial: 7 },
        CertRefusal::BadKeyId {
            key_id: "k".into(),
            reason: "r".into(),
        },
        CertRefusal::MissingExtension { name: EXT_GRANT },
        CertRefusal::ExtensionMismatch {
            name: EXT_CLUSTER,
            extension: "a".into(),
            key_id: "b".into(),
        },
        CertRefusal::ForbiddenExtension {
            name: "permit-user-rc".into(),
        },
        CertRefusal::NoPrincipals,
        CertRefusal::ForeignPrincipal {
            principal: "p".into(),
            cluster: "c".into(),
        },
        CertRefusal::UnknownCriticalOption { name: "x".into() },
        CertRefusal::BadSourceAddress {
            value: "v".into(),
            reason: "r".into(),
        },
        CertRefusal::SourceAddressMismatch {
            peer: None,
            allowed: "10.0.0.0/8".into(),
        },
    ];
    let codes: std::collections::BTreeSet<&str> = all.iter().map(CertRefusal::code).collect();
    assert_eq!(codes.len(), all.len());
    for r in &all {
        assert!(
            r.code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{}",
            r.code()
        );
        assert!(r.to_string().len() > 10, "{r}");
    }
}

mod properties;
