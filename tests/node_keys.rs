//! Node host keys: the gateway connects only to a node showing a key the operator registered,
//! trusts a first key only when the node allows it (and audits the pin), and refuses a changed
//! key. Through the real path: ssh → edge → gateway → sshd.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use russh::keys::{HashAlg, PublicKey};
use serde_json::{Value, json};
use support::bastion::{self, Bastion, LOGIN, try_touch};
use support::broker::*;
use support::sshd::{SshdNode, ssh_keygen};

fn fingerprint(line: &str) -> String {
    PublicKey::from_openssh(line.trim())
        .unwrap()
        .fingerprint(HashAlg::Sha256)
        .to_string()
}

/// A key line as the broker keeps it: `<algorithm> <base64>`, no comment.
fn bare(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn set_node(w: &World, change: Value) -> Value {
    let (s, v) =
        w.op.patch("/v1/clusters/acme-prod/nodes/node1", change)
            .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// The gateway takes the node's new settings (it reads them from the broker at start).
fn restart(b: &mut Bastion) {
    b.restart_gateway();
}

#[tokio::test]
async fn only_the_registered_host_key_of_a_node_is_accepted() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("/tmp/sp-nk-reg-{}", std::process::id());
    let node_fp = fingerprint(b.node.host_public_key());

    // The support registers node1's real key: it works, and nothing is pinned.
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(ran, "{said}\n{}", b.gateway.log_text());
    assert!(w.audit("kind=node_key_pinned").await.is_empty());

    // Another key registered (the node shows its own): refused, nothing runs, audited.
    let (_, other) = engineer_key();
    let v = set_node(&w, json!({"host_keys": [other]})).await;
    assert_eq!(v["host_keys"], json!([bare(&other)]));
    restart(&mut b);
    let refused_tag = format!("{tag}-refused");
    let (ran, said) = try_touch(home.path(), &refused_tag);
    assert!(!ran, "a command ran on a node showing an unregistered key");
    assert!(
        said.contains("the host key of node1")
            && said.contains("is not the one registered for it")
            && said.contains(&node_fp),
        "{said}"
    );
    let e = &w
        .wait_code("kind=node_key_refused", "node_key_changed")
        .await;
    assert_eq!(field_str(e, "fingerprint"), node_fp.as_str());
    assert_eq!(*field_of(e, "expected"), json!([fingerprint(&other)]));
    assert_eq!(field_str(e, "expected_from"), "registered");
    assert_eq!(e.node.as_deref(), Some("node1"));
    assert_eq!(e.engineer.as_deref(), Some("alice"));
    // Even with trust on first use allowed, the registered key wins.
    set_node(&w, json!({"trust_on_first_use": true})).await;
    restart(&mut b);
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(!ran);
    assert!(said.contains("is not the one registered for it"), "{said}");

    // Both keys registered: the node's own is among them, so it works again.
    set_node(
        &w,
        json!({"host_keys": [other, b.node.host_public_key()], "trust_on_first_use": false}),
    )
    .await;
    restart(&mut b);
    let last_tag = format!("{tag}-last");
    let (ran, said) = try_touch(home.path(), &last_tag);
    assert!(ran, "{said}");
    // The gateway's events arrive in order: once the last command is in, the refused one
    // would be too.
    let start = std::time::Instant::now();
    let commands = loop {
        let commands = w.audit("kind=command").await;
        let has = |t: &str| {
            commands
                .iter()
                .any(|c| c.command.as_deref().unwrap_or_default().contains(t))
        };
        if has(&last_tag) || start.elapsed() > std::time::Duration::from_secs(20) {
            assert!(has(&last_tag), "{commands:#?}");
            break commands;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        commands.iter().all(|c| !c
            .command
            .as_deref()
            .unwrap_or_default()
            .contains(&refused_tag)),
        "the refused command was recorded as run"
    );
}

#[tokio::test]
async fn without_a_registered_key_a_node_is_refused_unless_trusted_on_first_use() {
    let (w, mut b, home) = bastion::alice_at_the_edge().await;
    let tag = format!("/tmp/sp-nk-tofu-{}", std::process::id());
    let node_fp = fingerprint(b.node.host_public_key());

    // No key, no trust on first use (the default): refused with what to do.
    set_node(&w, json!({"host_keys": []})).await;
    restart(&mut b);
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(!ran, "a command ran on a node without a registered key");
    assert!(
        said.contains("sallyport: node1 has no registered host key")
            && said.contains("sallyport admin node-update acme-prod node1 --host-key"),
        "{said}"
    );
    let refused = w.wait_audit("kind=node_key_refused", 1).await;
    assert!(
        refused
            .iter()
            .any(|e| opt_str(e, "code") == Some("no_registered_key")
                && opt_str(e, "fingerprint") == Some(node_fp.as_str())),
        "{refused:#?}"
    );
    let known = b.dir.path().join("gateway/data/known_nodes");
    assert!(
        std::fs::read_to_string(&known)
            .unwrap_or_default()
            .is_empty(),
        "a key was pinned without trust on first use"
    );

    // Trust on first use: the first key is pinned, and the pin is audited.
    set_node(&w, json!({"trust_on_first_use": true})).await;
    restart(&mut b);
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(ran, "{said}\n{}", b.gateway.log_text());
    let pinned = w.wait_audit("kind=node_key_pinned", 1).await;
    assert_eq!(pinned.len(), 1, "{pinned:#?}");
    assert_eq!(field_str(&pinned[0], "fingerprint"), node_fp.as_str());
    assert_eq!(pinned[0].node.as_deref(), Some("node1"));
    assert_eq!(pinned[0].cluster.as_deref(), Some("acme-prod"));
    assert!(
        std::fs::read_to_string(&known)
            .unwrap()
            .contains(b.node.host_public_key().trim())
    );
    // The next connection uses the pin: no second pin.
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(ran, "{said}");
    assert_eq!(w.audit("kind=node_key_pinned").await.len(), 1);

    // The node is replaced by another sshd (another host key) at the same name: refused.
    let node_ca = std::fs::read_to_string(b.dir.path().join("gateway/data/node_ca.pub")).unwrap();
    let impostor = SshdNode::start(node_ca.trim(), LOGIN, &[LOGIN]);
    let impostor_fp = fingerprint(impostor.host_public_key());
    set_node(&w, json!({"port": impostor.port()})).await;
    restart(&mut b);
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(!ran, "a command ran on a node whose key changed");
    assert!(
        said.contains("changed since it was trusted on first use") && said.contains(&node_fp),
        "{said}"
    );
    let e = &w
        .wait_code("kind=node_key_refused", "node_key_changed")
        .await;
    assert_eq!(field_str(e, "fingerprint"), impostor_fp.as_str());
    assert_eq!(*field_of(e, "expected"), json!([node_fp]));
    assert_eq!(field_str(e, "expected_from"), "pinned");
    assert!(
        !impostor.log().contains("Accepted"),
        "the gateway authenticated to the impostor: {}",
        impostor.log()
    );

    // The operator registers the new key: registered keys win over the pin.
    set_node(&w, json!({"host_keys": [impostor.host_public_key()]})).await;
    restart(&mut b);
    let (ran, said) = try_touch(home.path(), &tag);
    assert!(ran, "{said}");
}

#[tokio::test]
async fn host_keys_that_are_not_public_keys_are_refused_and_change_nothing() {
    let w = World::start(Dir::File(vec![])).await;
    let (_, good) = engineer_key();
    let dir = tempfile::tempdir().unwrap();
    // A real host certificate, made by ssh-keygen.
    let ca = dir.path().join("ca");
    let host = dir.path().join("host");
    for k in [&ca, &host] {
        let out = ssh_keygen(&["-q", "-t", "ed25519", "-N", "", "-f", k.to_str().unwrap()]);
        assert!(out.status.success());
    }
    let out = ssh_keygen(&[
        "-q",
        "-s",
        ca.to_str().unwrap(),
        "-I",
        "node1",
        "-h",
        "-n",
        "node1",
        host.with_extension("pub").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let cert = std::fs::read_to_string(dir.path().join("host-cert.pub")).unwrap();
    let private = std::fs::read_to_string(&host).unwrap();
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "not a key",
            json!(["hello world"]),
            "not an OpenSSH public key",
        ),
        ("a certificate", json!([cert]), "is an SSH certificate"),
        (
            "a private key",
            json!([private]),
            "not an OpenSSH public key",
        ),
        (
            "a good key, then a certificate",
            json!([good, cert]),
            "host key 2 is an SSH certificate",
        ),
        (
            "a damaged key",
            json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJunk"]),
            "not an OpenSSH public key",
        ),
        ("not a list", json!(good), ""),
    ];
    for (what, keys, says) in &bad {
        let (s, v) =
            w.op.post(
                "/v1/clusters/acme-prod/nodes",
                json!({"name": "node9", "address": "10.0.0.9", "host_keys": keys}),
            )
            .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {s} {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{what}: {v}"
        );
    }
    let (_, nodes) = w.op.get("/v1/clusters/acme-prod/nodes").await;
    assert_eq!(nodes, json!([]), "a refused node was created");

    // A node with a good key (the comment is dropped); bad changes leave it as it was.
    let (s, v) =
        w.op.post(
            "/v1/clusters/acme-prod/nodes",
            json!({"name": "node9", "address": "10.0.0.9", "host_keys": [format!("{} node9 comment", good.trim())]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["host_keys"], json!([bare(&good)]));
    assert_eq!(v["trust_on_first_use"], false);
    for (what, keys, _) in &bad {
        let (s, v) =
            w.op.patch(
                "/v1/clusters/acme-prod/nodes/node9",
                json!({"host_keys": keys, "trust_on_first_use": true}),
            )
            .await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {s} {v}"
        );
    }
    let (_, nodes) = w.op.get("/v1/clusters/acme-prod/nodes").await;
    assert_eq!(nodes[0]["host_keys"], json!([bare(&good)]));
    assert_eq!(nodes[0]["trust_on_first_use"], false);
    // Only the operator changes a node; an unknown node is 404.
    let (s, _) = w
        .reviewer
        .patch(
            "/v1/clusters/acme-prod/nodes/node9",
            json!({"host_keys": []}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) =
        w.op.patch(
            "/v1/clusters/acme-prod/nodes/nope",
            json!({"host_keys": []}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The CLI: --host-key takes a key file; node-update replaces the keys.
    let key_file = host.with_extension("pub");
    let node_update = |key: &std::path::Path| {
        w.op.cli(&[
            "admin",
            "node-update",
            "acme-prod",
            "node9",
            "--host-key",
            key.to_str().unwrap(),
        ])
    };
    let out = node_update(&key_file);
    assert!(out.status.success(), "{out:?}");
    let (_, nodes) = w.op.get("/v1/clusters/acme-prod/nodes").await;
    let host_pub = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(nodes[0]["host_keys"], json!([bare(&host_pub)]));
    let out = node_update(&dir.path().join("host-cert.pub"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is an SSH certificate"),
        "{out:?}"
    );
    // The API document names the change and the keys.
    let (_, doc) = w.anon.get("/v1/openapi.json").await;
    assert!(doc["paths"]["/v1/clusters/{cluster}/nodes/{node}"]["patch"].is_object());
    assert!(
        doc["paths"]["/v1/clusters/{cluster}/nodes"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"]["properties"]["host_keys"]
            .is_object()
    );
    let updates = w.audit("kind=admin_change").await;
    assert!(
        updates
            .iter()
            .any(|e| opt_str(e, "action") == Some("update_node")
                && e.node.as_deref() == Some("node9")),
        "{updates:#?}"
    );
}
