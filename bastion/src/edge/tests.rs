use super::handler::key_id_subjects;
use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn cfg(dir: &Path, name: Option<&str>, token_file: Option<&Path>) -> EdgeConfig {
    EdgeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tunnel_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        broker: "http://127.0.0.1:1".into(),
        broker_ca: None,
        user_ca_keys: vec![],
        refresh_secs: 10,
        max_connections: 10,
        idle_timeout_secs: 600,
        shutdown_grace_secs: 25,
        login_grace_secs: 120,
        name: name.map(str::to_string),
        token_file: token_file.map(Path::to_path_buf),
        public_address: None,
        max_forwards_per_connection: 10,
    }
}

#[test]
fn the_token_file_must_be_the_owners_only_and_hold_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.token");
    std::fs::write(&file, "spt_abc\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file))).unwrap(),
        Some(("edge1".to_string(), "spt_abc".to_string()))
    );
    // A name is needed with a token, and must be a plain name.
    let err = edge_identity(&cfg(dir.path(), None, Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("set `name`"), "{err}");
    assert!(edge_identity(&cfg(dir.path(), Some("a b/c"), Some(&file))).is_err());
    // Not a token; no such file.
    std::fs::write(&file, "password\n").unwrap();
    let err = edge_identity(&cfg(dir.path(), Some("edge1"), Some(&file)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("spt_"), "{err}");
    assert!(
        edge_identity(&cfg(
            dir.path(),
            Some("edge1"),
            Some(&dir.path().join("missing"))
        ))
        .is_err()
    );
    // Without a token file the edge runs (and only logs).
    assert_eq!(
        edge_identity(&cfg(dir.path(), Some("edge1"), None)).unwrap(),
        None
    );
    assert!(
        Edge::new(cfg(dir.path(), None, None))
            .unwrap()
            .spool
            .is_none()
    );
}

#[test]
fn limits_must_be_usable_and_the_grace_period_has_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), None, None);
    c.idle_timeout_secs = 0;
    let err = Edge::new(c).err().unwrap().to_string();
    assert!(err.contains("idle_timeout_secs"), "{err}");
    let mut c = cfg(dir.path(), None, None);
    c.max_connections = 0;
    let err = Edge::new(c).err().unwrap().to_string();
    assert!(err.contains("max_connections"), "{err}");
    let mut c = cfg(dir.path(), None, None);
    c.idle_timeout_secs = 1;
    assert_eq!(Edge::new(c).unwrap().idle_timeout(), Duration::from_secs(1));
    let parsed: EdgeConfig = toml::from_str(
        "listen = \"127.0.0.1:0\"\ntunnel_listen = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbroker = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    assert_eq!(
        (
            parsed.max_connections,
            parsed.idle_timeout_secs,
            parsed.shutdown_grace_secs
        ),
        (1000, 600, 25)
    );
}

#[test]
fn key_ids_name_the_subjects_only_when_they_are_sallyports() {
    let v = key_id_subjects("sallyport:eng=alice;ticket=SUP-1;grant=g-1;cluster=acme-prod");
    assert_eq!(v["engineer"], "alice");
    assert_eq!(v["ticket"], "SUP-1");
    assert_eq!(v["cluster"], "acme-prod");
    let v = key_id_subjects("sallyport:eng=al ice;ticket=x;grant=y;cluster=z");
    assert!(v["engineer"].is_null(), "{v}");
    assert!(key_id_subjects("anything")["cluster"].is_null());
}
