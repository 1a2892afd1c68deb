use super::*;

fn key(seed: u8) -> PublicKey {
    let k = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&[seed; 32]);
    PublicKey::from(k.public)
}

fn line(k: &PublicKey) -> String {
    k.to_openssh().unwrap()
}

#[test]
fn only_a_dropped_or_refused_connection_is_tried_again() {
    use std::io::{Error, ErrorKind};
    let io = |k: ErrorKind| russh::Error::IO(Error::new(k, "x"));
    let cases: Vec<(russh::Error, bool)> = vec![
        (russh::Error::Disconnect, true),
        (russh::Error::HUP, true),
        (io(ErrorKind::ConnectionRefused), true),
        (io(ErrorKind::ConnectionReset), true),
        (io(ErrorKind::ConnectionAborted), true),
        (io(ErrorKind::BrokenPipe), true),
        (io(ErrorKind::UnexpectedEof), true),
        (io(ErrorKind::PermissionDenied), false),
        (io(ErrorKind::AddrNotAvailable), false),
        (russh::Error::UnknownKey, false),
        (russh::Error::WrongServerSig, false),
        (russh::Error::Version, false),
        (russh::Error::Kex, false),
        (russh::Error::NotAuthenticated, false),
        (russh::Error::ConnectionTimeout, false),
    ];
    for (i, (e, want)) in cases.into_iter().enumerate() {
        assert_eq!(worth_retrying(&e), want, "case {i}: {e:?}");
    }
}

#[test]
fn the_pauses_between_attempts_grow_and_fit_the_budget() {
    let ms = |d: Duration| d.as_millis();
    // (attempt, jitter, pause in ms)
    let cases = [
        (1, 0.0, 100),
        (1, 0.999_999, 199),
        (2, 0.0, 200),
        (3, 0.5, 600),
        (4, 0.0, 800),
        (4, 1.0, 1600),
        (4, 7.0, 1600),
        (4, -1.0, 800),
    ];
    for (attempt, jitter, want) in cases {
        assert_eq!(ms(backoff(attempt, jitter)), want, "{attempt} {jitter}");
    }
    let most: Duration = (1..CONNECT_ATTEMPTS).map(|a| backoff(a, 1.0)).sum();
    assert!(most <= Duration::from_secs(3), "{most:?}");
    assert!(most < CONNECT_BUDGET);
}

#[test]
fn the_node_key_verdicts() {
    let (a, b) = (key(1), key(2));
    let fa = fingerprint(&a);
    let fb = fingerprint(&b);
    let changed = |expected: Vec<String>, registered| Verdict::Changed {
        expected,
        registered,
    };
    // (registered, trust on first use, pinned, presented, verdict)
    type Case<'a> = (
        Vec<String>,
        bool,
        Option<&'a PublicKey>,
        &'a PublicKey,
        Verdict,
    );
    let cases: Vec<Case> = vec![
        (vec![line(&a)], false, None, &a, Verdict::Registered),
        (
            vec![line(&b), line(&a)],
            false,
            None,
            &a,
            Verdict::Registered,
        ),
        (
            vec![line(&a)],
            false,
            None,
            &b,
            changed(vec![fa.clone()], true),
        ),
        // Registered keys win over the pin and over trust on first use.
        (
            vec![line(&a)],
            true,
            Some(&b),
            &b,
            changed(vec![fa.clone()], true),
        ),
        (vec![line(&a)], true, Some(&b), &a, Verdict::Registered),
        // An unreadable registered key matches nothing, and still refuses the rest.
        (
            vec!["garbage".into()],
            true,
            None,
            &a,
            changed(vec![], true),
        ),
        (vec![], false, None, &a, Verdict::NoRegisteredKey),
        (vec![], false, Some(&a), &a, Verdict::NoRegisteredKey),
        (vec![], true, None, &a, Verdict::FirstUse),
        (vec![], true, Some(&a), &a, Verdict::Pinned),
        (vec![], true, Some(&b), &a, changed(vec![fb.clone()], false)),
    ];
    for (i, (registered, tofu, pinned, presented, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            judge(&registered, tofu, pinned, presented),
            want,
            "case {i}"
        );
    }
}
