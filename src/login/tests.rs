use super::files::edge_block;
use super::*;

fn issued(edge: Option<&str>, edges: &[&str]) -> Issued {
    Issued {
        certificate: String::new(),
        serial: "1".into(),
        key_id: "k".into(),
        grant: "g".into(),
        engineer: "alice".into(),
        ticket: "SUP-1".into(),
        customer: "acme".into(),
        cluster: "acme-prod".into(),
        logins: vec!["ubuntu".into()],
        valid_after: 1,
        valid_before: 2,
        permit_port_forwarding: false,
        per_session_mfa: false,
        edge: edge.map(Into::into),
        edges: edges.iter().map(|e| e.to_string()).collect(),
        host_ca_public_keys: vec![],
        edge_host_keys: vec![],
    }
}

fn block(i: &Issued) -> anyhow::Result<Option<(String, String)>> {
    let p = Path::new("/h");
    edge_block("acme-prod", i, p, p, p)
}

#[test]
fn the_jump_hop_for_one_edge_or_several() {
    assert!(block(&issued(None, &[])).unwrap().is_none());
    // One edge (an older broker sends no `edges`, a newer one the same address): no proxy.
    for i in [
        issued(Some("edge.example:2222"), &[]),
        issued(Some("edge.example:2222"), &["edge.example:2222"]),
    ] {
        let (alias, text) = block(&i).unwrap().unwrap();
        assert_eq!(alias, "sallyport-edge-acme-prod");
        assert!(
            text.contains("HostName edge.example\n    Port 2222\n"),
            "{text}"
        );
        assert!(!text.contains("ProxyCommand"), "{text}");
    }
    // Several: tried in turn through `sallyport connect`, IPv6 bracketed again.
    let (_, text) = block(&issued(
        Some("a.example:22"),
        &["a.example:22", "[2001:db8::1]:2222"],
    ))
    .unwrap()
    .unwrap();
    assert!(
        text.contains(" connect a.example:22 [2001:db8::1]:2222\n"),
        "{text}"
    );
}

#[test]
fn an_edge_address_that_could_reach_the_shell_is_refused() {
    for bad in [
        "a.example:22; touch /tmp/x",
        "$(id):22",
        "a.example:22 b.example:22",
        "%h:22",
        "a.example",
    ] {
        let err = block(&issued(Some("a.example:22"), &[bad])).unwrap_err();
        assert!(
            err.to_string().contains("unusable edge address"),
            "{bad}: {err}"
        );
    }
}
