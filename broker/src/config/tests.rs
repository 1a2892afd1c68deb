//! The config's parsing and checks: paths, the relying party, webhooks, LDAP, host:port.

use super::{LdapConfig, split_host_port};

fn ldap(lines: &str) -> anyhow::Result<()> {
    let text = format!(
        "user_dn_template = \"uid={{uid}},ou=people,dc=example,dc=com\"\n\
         bind_dn = \"cn=sallyport,ou=services,dc=example,dc=com\"\n\
         bind_password_file = \"/etc/sallyport/ldap.pw\"\n{lines}"
    );
    let cfg: LdapConfig = toml::from_str(&text)?;
    cfg.check()
}

#[test]
fn every_relative_path_is_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("etc").join("broker.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\ndirectory = \"directory.toml\"\n\
         operator_token_sha256 = \"00\"\ntotp_key_file = \"/abs/totp.key\"\naudit_key_file = \"keys/audit\"\n\
         [ca]\nextra_trusted = [\"old_ca.pub\"]\n[jwt]\nsecret_file = \"keys/jwt\"\n",
    )
    .unwrap();
    let cfg = super::BrokerConfig::load(&path).unwrap();
    let etc = path.parent().unwrap();
    assert_eq!(cfg.data_dir, etc.join("data"));
    assert_eq!(
        cfg.directory.as_deref(),
        Some(etc.join("directory.toml").as_path())
    );
    assert_eq!(cfg.ca.extra_trusted, vec![etc.join("old_ca.pub")]);
    assert_eq!(cfg.jwt_secret_file(), etc.join("keys/jwt"));
    // Absolute paths stay as they are.
    assert_eq!(
        cfg.totp_key_file(),
        std::path::PathBuf::from("/abs/totp.key")
    );
    assert_eq!(cfg.audit_key_file(), etc.join("keys/audit"));
}

#[test]
fn the_passkey_relying_party_is_a_domain_of_the_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    let rp = |console: &str| {
        std::fs::write(
            &path,
            format!(
                "data_dir = \"data\"\ndirectory = \"d.toml\"\noperator_token_sha256 = \"00\"\n[console]\n{console}"
            ),
        )
        .unwrap();
        super::BrokerConfig::load(&path).unwrap().relying_party()
    };
    let d = rp("").unwrap();
    assert_eq!(
        (d.rp_id.as_str(), d.origin.as_str()),
        ("localhost", "http://localhost/")
    );
    assert!(d.any_port);
    let e = rp("origin = \"https://access.example.com:8443\"").unwrap();
    assert_eq!(e.rp_id, "access.example.com");
    assert!(!e.any_port);
    let p = rp("origin = \"https://access.example.com\"\nrp_id = \"example.com\"").unwrap();
    assert_eq!(p.rp_id, "example.com");
    for (bad, why) in [
        ("origin = \"https://10.0.0.5\"", "IP address"),
        ("origin = \"https://[::1]:8443\"", "IP address"),
        ("rp_id = \"127.0.0.1\"", "IP address"),
        ("origin = \"http://access.example.com\"", "plain HTTP"),
        (
            "origin = \"https://access.example.com\"\nrp_id = \"other.com\"",
            "parent domain",
        ),
        (
            "origin = \"https://access.example.com/console\"",
            "only a scheme",
        ),
        ("origin = \"access\"", "not a URL"),
        ("rp_id = \"bad name\"", "not a domain name"),
    ] {
        let err = rp(bad).unwrap_err();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn webhook_settings_have_defaults_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    let load = |extra: &str| {
        std::fs::write(
            &path,
            format!(
                "data_dir = \"data\"\ndirectory = \"d.toml\"\noperator_token_sha256 = \"00\"\n{extra}"
            ),
        )
        .unwrap();
        super::BrokerConfig::load(&path)
    };
    let w = load("").unwrap().webhooks;
    assert!(!w.allow_http_loopback);
    assert_eq!(
        (w.retry_secs, w.max_attempts, w.timeout_secs, w.poll_millis),
        (5, 6, 5, 1000)
    );
    let w = load("[webhooks]\nallow_http_loopback = true\nretry_secs = 1\n")
        .unwrap()
        .webhooks;
    assert!(w.allow_http_loopback);
    assert_eq!(w.retry_secs, 1);
    for (bad, why) in [
        ("timeout_secs = 61", "timeout_secs"),
        ("retry_secs = 0", "retry_secs"),
        ("max_attempts = 0", "max_attempts"),
        ("poll_millis = 1", "poll_millis"),
        ("allow_http = true", "unknown field"),
    ] {
        let err = format!("{:#}", load(&format!("[webhooks]\n{bad}\n")).unwrap_err());
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn ldap_settings() {
    let base = "group_base = \"ou=groups,dc=example,dc=com\"\n";
    let ca = "ca_file = \"/etc/sallyport/ldap-ca.pem\"\n";
    for ok in [
        format!("url = \"ldaps://ldap.vendor.example\"\n{ca}{base}"),
        format!("url = \"ldaps://10.0.0.5:636\"\n{ca}{base}"),
        format!("url = \"ldap://ldap.vendor.example:389\"\nstarttls = true\n{ca}{base}"),
        // plain LDAP only where no network is crossed
        format!("url = \"ldap://127.0.0.1:389\"\n{base}"),
        format!("url = \"ldap://localhost\"\n{base}"),
        format!("url = \"ldap://[::1]:389\"\n{base}"),
        format!("url = \"ldap://127.0.0.1:389\"\n{base}groups_cache_secs = 0\n"),
        format!("url = \"ldap://127.0.0.1:389\"\n{base}groups_cache_secs = 3600\n"),
    ] {
        ldap(&ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (bad, why) in [
        (
            format!("url = \"ldap://ldap.vendor.example\"\n{base}"),
            "in clear",
        ),
        (
            format!("url = \"ldap://10.0.0.5:389\"\n{ca}{base}"),
            "in clear",
        ),
        (
            format!("url = \"ldaps://ldap.vendor.example\"\n{base}"),
            "ca_file is required",
        ),
        (
            format!("url = \"ldap://ldap.vendor.example\"\nstarttls = true\n{base}"),
            "ca_file is required",
        ),
        (
            format!("url = \"ldaps://ldap.vendor.example\"\nstarttls = true\n{ca}{base}"),
            "use one of them",
        ),
        (
            format!("url = \"ldapi:///run/slapd.sock\"\n{base}"),
            "scheme",
        ),
        (format!("url = \"http://127.0.0.1\"\n{base}"), "scheme"),
        (format!("url = \"127.0.0.1:389\"\n{base}"), "url"),
        (
            format!("url = \"ldap://127.0.0.1/dc=example,dc=com\"\n{base}"),
            "only ldap[s]://host:port",
        ),
        (
            "url = \"ldap://127.0.0.1\"\n".to_string(),
            "group_base is required",
        ),
        (
            "url = \"ldap://127.0.0.1\"\ngroup_base = \"not a dn\"\n".to_string(),
            "group_base is required",
        ),
        (
            format!("url = \"ldap://127.0.0.1\"\n{base}groups_cache_secs = 3601\n"),
            "at most 3600",
        ),
        (
            format!("url = \"ldap://127.0.0.1\"\n{base}group_attr = \"c n\"\n"),
            "group_attr",
        ),
    ] {
        let err = ldap(&bad).expect_err(&bad).to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
    // the service account is required
    let no_service: anyhow::Result<LdapConfig> =
        toml::from_str("url = \"ldap://127.0.0.1\"\nuser_dn_template = \"uid={uid},dc=x\"\n")
            .map_err(Into::into);
    assert!(no_service.is_err());
}

#[test]
fn host_port() {
    assert_eq!(
        split_host_port("edge.vendor.example:2222").unwrap(),
        ("edge.vendor.example".into(), 2222)
    );
    assert_eq!(split_host_port("[::1]:22").unwrap(), ("::1".into(), 22));
    for bad in [
        "edge",
        "edge:0",
        "edge:70000",
        ":22",
        "::1:22",
        "a b:22",
        "-oProxyCommand=x:22",
        "edge\n:22",
    ] {
        assert!(split_host_port(bad).is_err(), "{bad:?}");
    }
}
