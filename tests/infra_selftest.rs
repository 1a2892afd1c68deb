//! Self-test of the test infrastructure: a real sshd from `support::sshd` admits
//! a real `ssh` client with a certificate signed by a test CA, and only for a
//! listed principal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::sshd::{SshdNode, ssh_keygen};

const LOGIN: &str = "sallyport-node";

fn keygen_ok(args: &[&str]) {
    let out = ssh_keygen(args);
    assert!(
        out.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes an ed25519 key pair at `dir/name` and returns the private key's path.
fn keypair(dir: &Path, name: &str) -> String {
    let path = dir.join(name).to_str().expect("utf-8 path").to_owned();
    keygen_ok(&["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", &path]);
    path
}

/// Signs `key`.pub with `ca` for one principal; the certificate is `key`-cert.pub.
fn sign(ca: &str, key: &str, key_id: &str, principal: &str) {
    let public = format!("{key}.pub");
    keygen_ok(&[
        "-q", "-s", ca, "-I", key_id, "-n", principal, "-z", "4242", "-V", "-1m:+5m", &public,
    ]);
}

/// Runs `ssh … LOGIN@127.0.0.1 command` against `node` with `key` and its certificate.
fn ssh(node: &SshdNode, dir: &Path, key: &str, command: &str) -> Output {
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, format!("{}\n", node.known_hosts_line())).expect("write known_hosts");
    let options = [
        format!("CertificateFile={key}-cert.pub"),
        "IdentitiesOnly=yes".to_owned(),
        "IdentityAgent=none".to_owned(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        "BatchMode=yes".to_owned(),
        "ConnectTimeout=10".to_owned(),
    ];
    let mut cmd = Command::new("ssh");
    cmd.args(["-F", "none", "-i", key]);
    for option in &options {
        cmd.args(["-o", option]);
    }
    cmd.args([
        "-p",
        &node.port().to_string(),
        &format!("{LOGIN}@127.0.0.1"),
        command,
    ])
    .stdin(Stdio::null())
    .output()
    .expect("run ssh")
}

#[test]
fn sshd_node_admits_a_certificate_signed_by_its_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = keypair(dir.path(), "ca");
    let ca_line = fs::read_to_string(format!("{ca}.pub")).expect("read ca.pub");
    let node = SshdNode::start(&ca_line, LOGIN, &["ubuntu"]);

    let key = keypair(dir.path(), "id");
    let key_id = "alice@sallyport-selftest";
    sign(&ca, &key, key_id, "ubuntu");

    let out = ssh(&node, dir.path(), &key, "echo hi");
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
    assert!(
        node.wait_for_log(&format!("ID {key_id}"), Duration::from_secs(5)),
        "sshd log does not name the certificate key id {key_id:?}:\n{}",
        node.log()
    );
}

#[test]
fn sshd_node_refuses_a_certificate_without_a_listed_principal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = keypair(dir.path(), "ca");
    let ca_line = fs::read_to_string(format!("{ca}.pub")).expect("read ca.pub");
    let node = SshdNode::start(&ca_line, LOGIN, &["ubuntu"]);

    let key = keypair(dir.path(), "id");
    sign(&ca, &key, "mallory@sallyport-selftest", "root");

    let out = ssh(&node, dir.path(), &key, "echo hi");
    assert!(!out.status.success(), "ssh with principal root got in");
    assert!(out.stdout.is_empty());
    let reason = "Certificate does not contain an authorized principal";
    assert!(
        node.wait_for_log(reason, Duration::from_secs(5)),
        "sshd log does not say {reason:?}:\n{}",
        node.log()
    );
}
