//! A real `sallyport broker` process for a test, with its own store (a SQLite file, or a fresh
//! PostgreSQL database when SALLYPORT_TEST_STORE=postgres) and a seeded world:
//! customers acme and globex, clusters acme-prod, acme-dev and globex-prod, engineers enrolled
//! for TOTP, approver tokens per customer, a reviewer token and a ticket-system token.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use sallyport_api::admin::{Enrollment, TokenCreated};
use sallyport_api::approvals::Approval;
use sallyport_api::audit::{AuditEntry, AuditEvents};
use sallyport_api::login::LoginResponse;
use sallyport_api::{ErrorBody, ErrorDetail};
use sallyport_broker::audit::AuditEvent;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_sallyport");
pub const PEOPLE: &str = "ou=people,dc=example,dc=com";

pub use sallyport_ca::clock::now_secs as now;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with tests/infra/run-tests.sh (it starts slapd and PostgreSQL)")
    })
}

pub fn ldap_uri() -> String {
    env("SALLYPORT_TEST_LDAP_URI")
}

pub fn use_postgres() -> bool {
    std::env::var("SALLYPORT_TEST_STORE").as_deref() == Ok("postgres")
}

/// A store URL for a new, empty store.
pub async fn fresh_store(dir: &Path) -> String {
    if !use_postgres() {
        return format!("sqlite://{}", dir.join("broker.db").display());
    }
    let admin = env("SALLYPORT_TEST_PG_ADMIN_URL");
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .expect("connecting to the test PostgreSQL");
    let name = format!("sp_{}", hex::encode(rand::random::<[u8; 8]>()));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

pub enum Dir {
    /// The test slapd; `group_mode` is "memberof" or "search".
    Ldap { group_mode: &'static str },
    /// The test slapd (or a relay in front of it) at `url`, with more `[ldap]` lines (`starttls`,
    /// `ca_file`, `group_mode`, `groups_cache_secs`...).
    LdapAt { url: String, extra: String },
    /// An LDAP URL where nothing answers (a directory that is down).
    LdapDown,
    /// The embedded directory file: (uid, password, groups).
    File(Vec<(&'static str, &'static str, Vec<&'static str>)>),
}

pub struct BrokerProc {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub store: String,
    pub operator_token: String,
}

impl BrokerProc {
    /// Another broker process on this one's store, config and operator token (a replica behind
    /// a balancer); waits until it listens.
    pub fn replica(&self) -> BrokerProc {
        BrokerProc::start(
            &self.dir,
            self.config.clone(),
            self.store.clone(),
            self.operator_token.clone(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the broker processes of this world logged so far (for failure messages).
    pub fn log_text(&self) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p: &PathBuf| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("broker-") && n.ends_with(".log"))
        });
        logs.sort();
        logs.iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect()
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(
    dir: &Path,
    store: &str,
    directory: &Dir,
    operator_hash: &str,
    extra: &str,
) -> PathBuf {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut cfg = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndatabase = \"{store}\"\noperator_token_sha256 = \"{operator_hash}\"\n{extra}\n",
        dir.join("data").display()
    );
    match directory {
        Dir::Ldap { group_mode } => {
            cfg.push_str(&ldap_section(
                dir,
                &ldap_uri(),
                &format!("group_mode = \"{group_mode}\"\n"),
            ));
        }
        Dir::LdapAt { url, extra } => {
            cfg.push_str(&ldap_section(dir, url, extra));
        }
        Dir::LdapDown => {
            let port = super::sshd::free_port();
            cfg.push_str(&ldap_section(dir, &format!("ldap://127.0.0.1:{port}"), ""));
        }
        Dir::File(users) => {
            let mut text = String::new();
            for (uid, pw, groups) in users {
                let hash = sallyport_broker::directory::hash_argon2(pw).unwrap();
                text.push_str(&format!("[[engineer]]\nuid = \"{uid}\"\npassword_argon2 = \"{hash}\"\ngroups = {groups:?}\n"));
            }
            let path = dir.join("directory.toml");
            std::fs::write(&path, text).unwrap();
            cfg = format!("directory = \"{}\"\n{cfg}", path.display());
        }
    }
    let path = dir.join("broker.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The `[ldap]` section for the test slapd at `url`: people, groups, the service account (its
/// password in a 0600 file in `dir`), then `extra` lines.
fn ldap_section(dir: &Path, url: &str, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let pw = dir.join("ldap-bind.pw");
    std::fs::write(&pw, env("SALLYPORT_TEST_LDAP_BIND_PASSWORD")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[ldap]\nurl = \"{url}\"\nuser_dn_template = \"uid={{uid}},{PEOPLE}\"\nbind_dn = \"{}\"\nbind_password_file = \"{}\"\ngroup_base = \"ou=groups,dc=example,dc=com\"\ntimeout_secs = 2\n{extra}",
        env("SALLYPORT_TEST_LDAP_BIND_DN"),
        pw.display()
    )
}

impl BrokerProc {
    /// Start a broker process on `config`; waits until it listens.
    pub fn start(dir: &Path, config: PathBuf, store: String, operator_token: String) -> BrokerProc {
        Self::start_with_env(dir, config, store, operator_token, &[])
    }

    /// [`BrokerProc::start`] with more environment variables.
    pub fn start_with_env(
        dir: &Path,
        config: PathBuf,
        store: String,
        operator_token: String,
        env: &[(String, String)],
    ) -> BrokerProc {
        let mut child = Command::new(BIN)
            .args(["broker", "--config"])
            .arg(&config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("broker-{}.log", now_ns()))).unwrap())
            .spawn()
            .expect("starting sallyport broker");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("broker did not start: {line:?}; see {}", dir.display()))
            .to_string();
        BrokerProc {
            child,
            url: format!("http://{addr}"),
            dir: dir.to_path_buf(),
            config,
            store,
            operator_token,
        }
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An HTTP caller with an optional bearer token.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: &str, token: Option<&str>) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            url: url.to_string(),
            token: token.map(str::to_string),
            // No pooled connections: a broker that answered 413 before reading a large body
            // closes that connection, and reusing it would fail the next request.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    /// `sallyport ARGS` as this caller: its broker and token in the environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(BIN);
        c.args(args).env("SALLYPORT_BROKER", &self.url);
        if let Some(t) = &self.token {
            c.env("SALLYPORT_TOKEN", t);
        }
        c.output().expect("running sallyport")
    }

    pub fn with(&self, token: &str) -> Api {
        Api::new(&self.url, Some(token))
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(reqwest::Method::PUT, path, Some(body.to_string()))
            .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.raw(reqwest::Method::GET, path, None).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.raw(reqwest::Method::PATCH, path, Some(body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.raw(reqwest::Method::DELETE, path, None).await
    }

    /// `method path` with `body`, the answer read as the API type `T` (panics, with the
    /// status and the body, when it is not one).
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, T) {
        let (s, v) = self
            .raw(method.clone(), path, body.map(|b| b.to_string()))
            .await;
        (s, read_as(&format!("{method} {path}: {s}"), v))
    }

    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> (StatusCode, T) {
        self.call_as(reqwest::Method::GET, path, None).await
    }

    /// `GET path`, answered 200 with the API type `T`.
    pub async fn get_ok<T: DeserializeOwned + std::fmt::Debug>(&self, path: &str) -> T {
        let (s, body) = self.get_as::<T>(path).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {body:?}");
        body
    }

    pub async fn post_as<T: DeserializeOwned>(&self, path: &str, body: Value) -> (StatusCode, T) {
        self.call_as(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put_as<T: DeserializeOwned>(&self, path: &str, body: Value) -> (StatusCode, T) {
        self.call_as(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn patch_as<T: DeserializeOwned>(&self, path: &str, body: Value) -> (StatusCode, T) {
        self.call_as(reqwest::Method::PATCH, path, Some(body)).await
    }

    pub async fn delete_as<T: DeserializeOwned>(&self, path: &str) -> (StatusCode, T) {
        self.call_as(reqwest::Method::DELETE, path, None).await
    }

    /// A refusal of `GET path`: its status and the API's error body.
    pub async fn get_err(&self, path: &str) -> (StatusCode, ErrorDetail) {
        let (s, e) = self.get_as::<ErrorBody>(path).await;
        (s, e.error)
    }

    /// A refusal of `POST path`: its status and the API's error body.
    pub async fn post_err(&self, path: &str, body: Value) -> (StatusCode, ErrorDetail) {
        let (s, e) = self.post_as::<ErrorBody>(path, body).await;
        (s, e.error)
    }

    /// A refusal of `PUT path`: its status and the API's error body.
    pub async fn put_err(&self, path: &str, body: Value) -> (StatusCode, ErrorDetail) {
        let (s, e) = self.put_as::<ErrorBody>(path, body).await;
        (s, e.error)
    }

    /// A refusal of `DELETE path`: its status and the API's error body.
    pub async fn delete_err(&self, path: &str) -> (StatusCode, ErrorDetail) {
        let (s, e) = self.delete_as::<ErrorBody>(path).await;
        (s, e.error)
    }
}

/// `v` read as the API type `T`; panics naming `what` and the body when it is not one.
pub fn read_as<T: DeserializeOwned>(what: &str, v: Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what}: {v} is not a {}: {e}", std::any::type_name::<T>()))
}

/// The API's error body in `v` (an answer read as JSON); panics when it is not one.
pub fn error_of(v: &Value) -> ErrorDetail {
    read_as::<ErrorBody>("an error answer", v.clone()).error
}

/// The reason codes of a denial (none when the error has no reasons).
pub fn reason_codes(e: &ErrorDetail) -> Vec<String> {
    e.reasons.iter().flatten().map(|r| r.code.clone()).collect()
}

/// A `refused` event of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub by: String,
    pub reason: String,
    pub customer: Option<String>,
    pub cluster: Option<String>,
}

/// An audit entry's typed event, when one of the broker's kinds.
pub fn broker_event(e: &AuditEntry) -> AuditEvent {
    read_as(
        &format!("event {}#{}", e.source, e.seq),
        Value::Object(e.to_map()),
    )
}

/// One of an audit entry's own fields, as a string (panics when it has none, or another kind).
pub fn field_str<'a>(e: &'a AuditEntry, name: &str) -> &'a str {
    e.field(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} #{} has no string {name}: {e:?}", e.kind, e.seq))
}

/// A broker with the seeded world.
pub struct World {
    pub broker: BrokerProc,
    pub op: Api,
    pub anon: Api,
    pub tickets: Api,
    pub reviewer: Api,
    pub acme: Api,
    pub globex: Api,
    /// TOTP secrets by engineer.
    pub totp: Vec<(String, String)>,
    pub _tmp: tempfile::TempDir,
}

pub const ENGINEERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

impl World {
    /// Stop the broker process, as an outage would. Its port is pinned in its config first, so
    /// that `start_broker_again` keeps the URL that gateways and edges use.
    pub fn stop_broker(&mut self) {
        let port = self.broker.url.rsplit(':').next().unwrap().to_string();
        let text = std::fs::read_to_string(&self.broker.config)
            .unwrap()
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            );
        std::fs::write(&self.broker.config, text).unwrap();
        let _ = self.broker.child.kill();
        let _ = self.broker.child.wait();
    }

    /// Start the broker stopped by `stop_broker` on the same store, config and port; the
    /// callers get fresh connections.
    pub fn start_broker_again(&mut self) {
        self.start_broker_again_with_env(&[]);
    }

    /// [`World::start_broker_again`] with more environment variables (a moved clock).
    pub fn start_broker_again_with_env(&mut self, env: &[(String, String)]) {
        let b = &self.broker;
        self.broker = BrokerProc::start_with_env(
            &b.dir.clone(),
            b.config.clone(),
            b.store.clone(),
            b.operator_token.clone(),
            env,
        );
        let url = self.broker.url.clone();
        for api in [
            &mut self.op,
            &mut self.anon,
            &mut self.tickets,
            &mut self.reviewer,
            &mut self.acme,
            &mut self.globex,
        ] {
            *api = Api::new(&url, api.token.clone().as_deref());
        }
    }

    /// A world on the test slapd (groups by memberOf) with `extra_config` in the broker's config.
    pub async fn ldap_with(extra_config: &str) -> World {
        Self::start_with(
            Dir::Ldap {
                group_mode: "memberof",
            },
            extra_config,
        )
        .await
    }

    pub async fn start(directory: Dir) -> World {
        Self::start_with(directory, "").await
    }

    pub async fn start_with(directory: Dir, extra_config: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let store = fresh_store(tmp.path()).await;
        Self::start_on(tmp, store, directory, extra_config).await
    }

    /// [`World::start_with`] on the empty store at `store` (a private PostgreSQL a fault test
    /// starts and kills), with the broker's files in `tmp`.
    pub async fn start_on(
        tmp: tempfile::TempDir,
        store: String,
        directory: Dir,
        extra_config: &str,
    ) -> World {
        let token = sallyport_broker::auth::new_api_token();
        let hash = sallyport_broker::auth::token_hash(&token);
        let config = write_config(tmp.path(), &store, &directory, &hash, extra_config);
        let broker = BrokerProc::start(tmp.path(), config, store, token.clone());
        let op = Api::new(&broker.url, Some(&token));
        let anon = Api::new(&broker.url, None);
        Self::seed(broker, op, anon, tmp).await
    }

    pub fn secret(&self, engineer: &str) -> String {
        self.totp
            .iter()
            .find(|(e, _)| e == engineer)
            .map(|(_, s)| s.clone())
            .unwrap()
    }

    /// A TOTP code `offset` steps (30 s) away from now: -1, 0 and 1 are accepted, each once.
    pub fn code(&self, engineer: &str, offset: i64) -> String {
        let t = (now() as i64 + offset * 30) as u64;
        sallyport_broker::totp::code(&self.secret(engineer), t).unwrap()
    }

    pub async fn ticket(&self, id: &str, cluster: &str, assignee: &str, status: &str) {
        let customer = if cluster.starts_with("globex") {
            "globex"
        } else {
            "acme"
        };
        let (s, v) = self
            .tickets
            .put(&format!("/v1/tickets/{id}"), json!({"customer": customer, "cluster": cluster, "assignee": assignee, "status": status, "title": "t"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// An approval by acme's approver; returns its id.
    pub async fn approve(
        &self,
        cluster: &str,
        group: &str,
        logins: &[&str],
        extra: Value,
    ) -> String {
        let mut body = json!({"cluster": cluster, "group": group, "logins": logins,
            "max_session_secs": 3600, "valid_until": now() + 86_400});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (s, v) = self.acme.post_as::<Approval>("/v1/approvals", body).await;
        assert_eq!(s, StatusCode::CREATED, "{v:?}");
        v.id
    }

    /// A connection to the broker's store (SQLite or PostgreSQL), as someone who can write the
    /// database would have.
    pub async fn store_db(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.broker.store)
            .await
            .expect("connecting to the broker's store")
    }

    /// Acme's approver decides the access request `rq` (`{"approve": ...}` and the rest of a
    /// decision); returns (status, body).
    pub async fn decide(&self, rq: &str, decision: Value) -> (StatusCode, Value) {
        self.acme
            .post(&format!("/v1/access-requests/{rq}/decision"), decision)
            .await
    }

    /// Log in through the API; returns (status, body).
    pub async fn login(&self, user: &str, password: &str, code: &str) -> (StatusCode, Value) {
        self.anon
            .post(
                "/v1/login",
                json!({"user": user, "password": password, "totp": code}),
            )
            .await
    }

    /// Log in and return an engineer session.
    pub async fn session(&self, user: &str, offset: i64) -> Api {
        let (s, v) = self
            .login(user, &format!("{user}-pw"), &self.code(user, offset))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        self.anon
            .with(&read_as::<LoginResponse>("a login", v).token)
    }

    /// `sallyport login --json` as a script runs it: `user` (password `<user>-pw` on stdin) for
    /// `ticket` with TOTP `code`, files into `home`, no ssh-agent. Panics unless it succeeds;
    /// returns the printed JSON.
    pub fn login_cli(&self, home: &Path, user: &str, ticket: &str, code: &str) -> Value {
        self.login_cli_with(home, user, ticket, code, &[])
    }

    /// [`World::login_cli`] with more arguments (e.g. `--ttl 10s`).
    pub fn login_cli_with(
        &self,
        home: &Path,
        user: &str,
        ticket: &str,
        code: &str,
        extra: &[&str],
    ) -> Value {
        let out = self
            .spawn_login_cli(home, user, ticket, code, extra)
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `sallyport login ... --json` started with the password given, not waited for (a login
    /// that waits for approvers).
    pub fn spawn_login_cli(
        &self,
        home: &Path,
        user: &str,
        ticket: &str,
        code: &str,
        extra: &[&str],
    ) -> Child {
        spawn_fed(
            Command::new(BIN)
                .args(["login", "--broker", &self.broker.url, "--user", user])
                .args([
                    "--password-stdin",
                    "--totp",
                    code,
                    "--ticket",
                    ticket,
                    "--json",
                ])
                .args(extra)
                .env("SALLYPORT_HOME", home)
                .env_remove("SSH_AUTH_SOCK")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
            &format!("{user}-pw\n"),
        )
    }

    /// The events `query` selects as JSON objects (for tests that read them by name).
    pub async fn events(&self, query: &str) -> Vec<Value> {
        let entries = self.audit(query).await;
        entries.iter().map(|e| Value::Object(e.to_map())).collect()
    }

    /// The events `query` selects, as the API gives them (the envelope typed, each event's own
    /// fields by name).
    pub async fn audit(&self, query: &str) -> Vec<AuditEntry> {
        let (s, page) = self
            .reviewer
            .get_as::<AuditEvents>(&format!("/v1/audit/events?{query}"))
            .await;
        assert_eq!(s, StatusCode::OK);
        page.events
    }

    /// The broker's `refused` events for `action`, oldest first.
    pub async fn refusals(&self, action: &str) -> Vec<Refusal> {
        self.picked("kind=refused", |e| match e {
            AuditEvent::Refused {
                by,
                action: a,
                reason,
                customer,
                cluster,
            } if a == action => Some(Refusal {
                by,
                reason,
                customer,
                cluster,
            }),
            _ => None,
        })
        .await
    }

    /// What `pick` takes of each of the broker's events `query` selects.
    pub async fn picked<T>(
        &self,
        query: &str,
        pick: impl FnMut(AuditEvent) -> Option<T>,
    ) -> Vec<T> {
        let events = self.broker_events(query).await;
        events.into_iter().filter_map(pick).collect()
    }

    /// The broker's own events `query` selects, typed.
    pub async fn broker_events(&self, query: &str) -> Vec<AuditEvent> {
        self.audit(query).await.iter().map(broker_event).collect()
    }

    /// A recording from the broker's store, as a reviewer reads it, waiting until the gateway
    /// uploaded it.
    pub async fn fetch_recording(&self, id: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            let (s, v) = self.reviewer.get(&format!("/v1/recordings/{id}")).await;
            if s == StatusCode::OK {
                return match v {
                    Value::String(t) => t,
                    other => other.to_string(),
                };
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "recording {id} never arrived: {s} {v}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }

    /// The events matching `query` once there are at least `n` (shipped from spools), or what
    /// there is after 20 s.
    pub async fn wait_events(&self, query: &str, n: usize) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let ev = self.events(query).await;
            if ev.len() >= n || start.elapsed() > std::time::Duration::from_secs(20) {
                return ev;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// A fresh Ed25519 public key line (the engineer's side).
pub fn engineer_key() -> (russh::keys::PrivateKey, String) {
    let k = sallyport_ca::keys::generate_ed25519("test").unwrap();
    let p = k.public_key().to_openssh().unwrap();
    (k, p)
}

/// The body of `POST /v1/audit/records` as a gateway or an edge sends it: the records, signed at
/// the last one by `key` (the chain's audit key), and the head when given.
#[allow(dead_code)]
pub fn signed_batch(
    key: &russh::keys::PrivateKey,
    records: &[sallyport_audit::AuditRecord],
    head: Option<u64>,
) -> Value {
    let mut body = json!({"records": records});
    if let Some(last) = records.last() {
        body["signature"] = json!(
            sallyport_ca::chainsig::sign_head(key, &last.source, last.seq, &last.hash).unwrap()
        );
        body["public_key"] = json!(key.public_key().to_openssh().unwrap());
    }
    if let Some(h) = head {
        body["head"] = json!(h);
    }
    body
}

pub fn run(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("running a command")
}

pub fn wait(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// One chain's line of `sallyport audit verify --json` (what the tests read of it).
#[derive(Debug, serde::Deserialize)]
pub struct ChainVerdict {
    pub source: String,
    pub ok: bool,
    /// Its source reported a head the broker does not hold yet.
    #[serde(default)]
    pub incomplete: bool,
    #[serde(default)]
    pub broken: Option<Value>,
}

/// `sallyport audit verify --json` as `reviewer`: it succeeds and every chain verifies; the
/// chains' verdicts. A chain only incomplete (its source reported a head the broker does not
/// hold yet: the last records of a session just ended are on their way) is asked again, for a
/// bounded time.
pub fn verify_chains(reviewer: &Api) -> Vec<ChainVerdict> {
    let start = std::time::Instant::now();
    loop {
        let out = reviewer.cli(&["audit", "verify", "--json"]);
        let verdicts: Vec<ChainVerdict> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| read_as(l, serde_json::from_str(l).unwrap()))
            .collect();
        let only_behind = verdicts
            .iter()
            .all(|v| v.ok || (v.incomplete && v.broken.is_none()));
        if out.status.success() || !only_behind || start.elapsed() > Duration::from_secs(20) {
            assert!(out.status.success(), "{}", output_text(&out));
            assert!(verdicts.iter().all(|v| v.ok), "{}", output_text(&out));
            return verdicts;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

impl Api {
    /// An HTTPS caller that trusts exactly the PEM CA certificate `ca_pem` (no system roots).
    pub fn new_tls(url: &str, token: Option<&str>, ca_pem: &Path) -> Api {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(ca_pem).unwrap();
        let http = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        Api {
            url: url.to_string(),
            token: token.map(str::to_string),
            http,
        }
    }

    /// Like `with`, but keeps this caller's HTTP client (and so its trusted CA).
    pub fn with_same_client(&self, token: &str) -> Api {
        Api {
            url: self.url.clone(),
            token: Some(token.to_string()),
            http: self.http.clone(),
        }
    }
}

impl World {
    /// A broker serving HTTPS with `cert`/`key` (a chain signed by `ca_pem`), with the same
    /// seeded world as `start`; `broker.url` is `https://127.0.0.1:PORT` and every `Api` of the
    /// world trusts exactly `ca_pem`.
    pub async fn start_tls(directory: Dir, ca_pem: &Path, cert: &Path, key: &Path) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let store = fresh_store(tmp.path()).await;
        let token = sallyport_broker::auth::new_api_token();
        let hash = sallyport_broker::auth::token_hash(&token);
        let tls = format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
        let config = write_config(tmp.path(), &store, &directory, &hash, &tls);
        let mut broker = BrokerProc::start(tmp.path(), config, store, token.clone());
        broker.url = broker.url.replacen("http://", "https://", 1);
        let op = Api::new_tls(&broker.url, Some(&token), ca_pem);
        let anon = Api::new_tls(&broker.url, None, ca_pem);
        Self::seed(broker, op, anon, tmp).await
    }

    /// The seeding of `start_with`, through the given callers (tokens made later reuse `op`'s
    /// HTTP client).
    async fn seed(broker: BrokerProc, op: Api, anon: Api, tmp: tempfile::TempDir) -> World {
        for (id, name) in [("acme", "ACME"), ("globex", "Globex")] {
            let (s, v) = op
                .post("/v1/customers", json!({"id": id, "name": name}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        for (id, c) in [
            ("acme-prod", "acme"),
            ("acme-dev", "acme"),
            ("globex-prod", "globex"),
        ] {
            let (s, v) = op
                .post("/v1/clusters", json!({"id": id, "customer": c}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v}");
        }
        let mut totp = Vec::new();
        for e in ENGINEERS {
            let (s, v) = op
                .post_as::<Enrollment>("/v1/engineers", json!({"uid": e}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v:?}");
            totp.push((e.to_string(), v.totp_secret));
        }
        let mut tokens = Vec::new();
        for (name, role, customer) in [
            ("tickets", "ticket_system", None),
            ("security", "reviewer", None),
            ("acme-admin", "approver", Some("acme")),
            ("globex-admin", "approver", Some("globex")),
        ] {
            let (s, v) = op
                .post_as::<TokenCreated>(
                    "/v1/tokens",
                    json!({"name": name, "role": role, "customer": customer,
                           "all_customers": role == "ticket_system" && customer.is_none()}),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{v:?}");
            tokens.push(op.with_same_client(&v.token));
        }
        let [tickets, reviewer, acme, globex]: [Api; 4] = tokens.try_into().ok().unwrap();
        World {
            tickets,
            reviewer,
            acme,
            globex,
            broker,
            op,
            anon,
            totp,
            _tmp: tmp,
        }
    }
}

/// Run futures concurrently on this task; their outputs in order.
pub async fn join_all<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<std::pin::Pin<Box<F>>> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

impl World {
    /// The events matching `query` once there are at least `n` (shipped from spools), or what
    /// there is after 20 s; typed.
    pub async fn wait_audit(&self, query: &str, n: usize) -> Vec<AuditEntry> {
        let events = self.wait_events(query, n).await;
        events
            .into_iter()
            .map(|v| read_as("an audit event", v))
            .collect()
    }
}

impl World {
    /// The newest event `query` selects whose `code` is `code`, waiting (20 s at most) until
    /// the edge or the gateway shipped it.
    pub async fn wait_code(&self, query: &str, code: &str) -> AuditEntry {
        let start = std::time::Instant::now();
        loop {
            let events = self.audit(query).await;
            if let Some(e) = events.iter().find(|e| opt_str(e, "code") == Some(code)) {
                return e.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {query} event with code {code}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A TOTP secret someone who can write the store (not read the broker's key) plants in clear
/// for engineer `uid`, through `db` ([`World::store_db`]); returns it.
pub async fn plant_totp_in_clear(db: &mut sqlx::AnyConnection, uid: &str) -> &'static str {
    let planted = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    sqlx::query("UPDATE engineers SET totp_secret = $1 WHERE uid = $2")
        .bind(planted)
        .bind(uid)
        .execute(db)
        .await
        .unwrap();
    planted
}

/// One of an audit entry's own fields as a string, when it has one.
pub fn opt_str<'a>(e: &'a AuditEntry, name: &str) -> Option<&'a str> {
    e.field(name).and_then(Value::as_str)
}

/// One of an audit entry's own fields as JSON (`Null` when it has none).
pub fn field_of<'a>(e: &'a AuditEntry, name: &str) -> &'a Value {
    e.field(name).unwrap_or(&Value::Null)
}

impl World {
    /// The id of the first session started on `ticket`, waiting until its gateway shipped it.
    pub async fn started_session(&self, ticket: &str) -> String {
        let started = self
            .wait_audit(&format!("kind=session_started&ticket={ticket}"), 1)
            .await;
        let e = started
            .first()
            .unwrap_or_else(|| panic!("no session started on {ticket}"));
        e.session.clone().unwrap()
    }

    /// Asserts that each (by, action) was refused and audited.
    pub async fn assert_refused(&self, expected: &[(&str, &str)]) {
        let refused = self
            .picked("kind=refused", |e| match e {
                AuditEvent::Refused { by, action, .. } => Some((by, action)),
                _ => None,
            })
            .await;
        for (by, action) in expected {
            assert!(
                refused.iter().any(|(b, a)| b == by && a == action),
                "{by} {action}: {refused:#?}"
            );
        }
    }

    /// A console account made by the operator (its password `<name>-password-1`); returns its
    /// TOTP secret.
    pub async fn account(&self, name: &str, role: &str, customer: Option<&str>) -> String {
        let (s, v) = self
            .op
            .post_as::<Enrollment>(
                "/v1/accounts",
                json!({"username": name, "role": role, "customer": customer, "password": format!("{name}-password-1")}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v:?}");
        v.totp_secret
    }

    /// acme-prod approves support-l2 as ubuntu just in time, and each (ticket, engineer) of
    /// `tickets` is open on acme-prod.
    pub async fn jit_tickets(&self, tickets: &[(&str, &str)]) {
        self.jit_tickets_as(&["ubuntu"], tickets).await;
    }

    /// [`World::jit_tickets`], support-l2 approved just in time as `logins`.
    pub async fn jit_tickets_as(&self, logins: &[&str], tickets: &[(&str, &str)]) {
        let jit = json!({"just_in_time": true});
        self.approve("acme-prod", "support-l2", logins, jit).await;
        for (ticket, engineer) in tickets {
            self.ticket(ticket, "acme-prod", engineer, "open").await;
        }
    }

    /// A certificate of alice on acme-prod for the open ticket `ticket` (support-l2 approved
    /// as ubuntu first).
    pub async fn alice_certificate(&self, ticket: &str) -> sallyport_api::certificates::Issued {
        self.approve("acme-prod", "support-l2", &["ubuntu"], json!({}))
            .await;
        self.ticket(ticket, "acme-prod", "alice", "open").await;
        let alice = self.session("alice", 0).await;
        let (_, key) = engineer_key();
        let (s, v) = alice
            .post(
                "/v1/certificates",
                json!({"public_key": key, "ticket": ticket}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        read_as("an issued certificate", v)
    }
}

/// `cmd` started with `input` on its standard input (then closed); its standard output and
/// error go where the caller set them.
pub fn spawn_fed(cmd: &mut Command, input: &str) -> Child {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

/// A finished command printed `want` (give or take white space around it); else a panic with
/// its standard error and `context` (logs of the processes involved, or nothing).
pub fn assert_printed(out: &std::process::Output, want: &str, context: &str) {
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        want,
        "stderr: {}\n{context}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a finished command printed: its standard output, then its standard error.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A finished command's exit status, stdout and stderr, for failure messages.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An interactive ssh to node1.acme-prod from `home` in a new 100x30 tmux session `name`, at
/// its prompt.
pub fn tmux_shell(name: &str, home: &Path) {
    super::term::tmux_ssh(name, home, 100, 30, "");
    super::term::wait_pane(name, ":~$", 1);
}

/// Sends `keys` to the tmux session `name`.
pub fn send_keys(name: &str, keys: &[&str]) {
    let mut args = vec!["send-keys", "-t", name];
    args.extend_from_slice(keys);
    super::term::tmux(&args);
}

impl World {
    /// The codes of the `login_failed` events, in the order search gives them.
    pub async fn login_failure_codes(&self) -> Vec<String> {
        self.picked("kind=login_failed", |e| match e {
            AuditEvent::LoginFailed { code, .. } => Some(code),
            _ => None,
        })
        .await
    }
}
