//! Headless Debian Chromium driven through chromedriver (WebDriver, fantoccini), and a plain
//! HTTP client for the console that keeps its cookies by hand (to send a stale or another
//! account's cookie on purpose).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

/// A chromedriver process and a headless Chromium session through it.
pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Browser {
    /// A new browser; screenshots go to `<CARGO_TARGET_TMPDIR>/screenshots/<test>/`.
    pub async fn start(test: &str) -> Browser {
        Browser::start_with(test, &[]).await
    }

    /// A browser that can reach no network at all (every request, loopback included, goes to
    /// a proxy where nothing listens): for pages opened from disk that must work offline.
    pub async fn start_offline(test: &str) -> Browser {
        Browser::start_with(
            test,
            &[
                "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>",
            ],
        )
        .await
    }

    /// A browser in which `localhost` is 127.0.0.1 (no other address is looked up): a secure
    /// context with a domain name, as WebAuthn needs, for a broker listening on 127.0.0.1.
    pub async fn start_localhost(test: &str) -> Browser {
        Browser::start_with(test, &["--host-resolver-rules=MAP localhost 127.0.0.1"]).await
    }

    async fn start_with(test: &str, extra_args: &[&str]) -> Browser {
        let port = super::sshd::free_port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver; tests/infra/install.sh does)");
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": "/usr/bin/chromium", "args": args}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "chromedriver did not start: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("screenshots")
            .join(test);
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            _profile: profile,
            shots,
        }
    }

    /// A WebDriver command of this session (`session/{id}/{path}`), e.g. the WebAuthn extension's.
    pub async fn command(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        self.client
            .issue_cmd(SessionCommand {
                method,
                path: path.to_string(),
                body,
            })
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"))
    }

    /// Chromium's virtual authenticator (WebDriver "Virtual Authenticators"): a platform
    /// passkey provider that verifies its user; returns its id.
    pub async fn add_virtual_authenticator(&self) -> String {
        let v = self
            .command(
                http::Method::POST,
                "webauthn/authenticator",
                Some(json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserConsenting": true,
                    "isUserVerified": true,
                })),
            )
            .await;
        v.as_str().unwrap().to_string()
    }

    /// The credentials the virtual authenticator holds (`credentialId`, `rpId`, `signCount`...).
    pub async fn authenticator_credentials(&self, authenticator: &str) -> Vec<Value> {
        let v = self
            .command(
                http::Method::GET,
                &format!("webauthn/authenticator/{authenticator}/credentials"),
                None,
            )
            .await;
        v.as_array().unwrap().clone()
    }

    /// Set the browser window's size (a phone's width, say).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Save what the browser shows as `<name>.png`.
    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Type `text` into the field `css` (waiting for it: a page may still be loading).
    pub async fn fill(&self, css: &str, text: &str) {
        let mut last = None;
        for _ in 0..100 {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => match e.clear().await {
                    Ok(()) => match e.send_keys(text).await {
                        Ok(()) => return,
                        Err(err) => last = Some(err),
                    },
                    Err(err) => last = Some(err),
                },
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot fill {css}: {last:?}");
    }

    /// Click `css` (waiting for it: a page may still be loading).
    pub async fn click(&self, css: &str) {
        let mut last = None;
        for _ in 0..100 {
            match self.client.find(Locator::Css(css)).await {
                Ok(e) => match e.click().await {
                    Ok(_) => return,
                    Err(err) => last = Some(err),
                },
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot click {css}: {last:?}");
    }

    /// The page's visible text (read again when the page changed under the read).
    pub async fn text(&self) -> String {
        let mut last = None;
        for _ in 0..100 {
            match self.client.find(Locator::Css("body")).await {
                Ok(e) => match e.text().await {
                    Ok(t) => return t,
                    Err(err) => last = Some(err),
                },
                Err(err) => last = Some(err),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot read the page: {last:?}");
    }

    /// The text of the first element `css` matches.
    pub async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The current value of the form field `css` (what is typed in it, not its attribute).
    pub async fn value_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// The attribute `name` of the first element `css` matches.
    pub async fn attr_of(&self, css: &str, name: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .attr(name)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{css} has no {name}"))
    }

    /// The page's text once it contains `needle` (after a click that loads another page, the
    /// old one may still be shown for a moment); panics with what it shows after 15 s.
    pub async fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let t = self.text().await;
            if t.contains(needle) {
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the page never showed {needle:?}:\n{t}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The path once it is `want` (a form's answer may still be loading).
    pub async fn wait_path(&self, want: &str) {
        let start = Instant::now();
        loop {
            let p = self.path().await;
            if p == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "the browser stayed at {p}, not {want}:\n{}",
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Log in to the console at `base` with password and TOTP code; returns once logged in.
    pub async fn login(&self, base: &str, user: &str, password: &str, code: &str) {
        self.submit_login(base, user, password, code).await;
        // The form's answer must land before the next navigation, or it replaces that page.
        self.wait_for("Log out").await;
    }

    /// Fill in and send the login form without waiting for its answer (a login meant to fail).
    pub async fn submit_login(&self, base: &str, user: &str, password: &str, code: &str) {
        self.goto(&format!("{base}/console/login")).await;
        self.fill("#user", user).await;
        self.fill("#password", password).await;
        self.fill("#totp", code).await;
        self.click("button[type=submit]").await;
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A command under the WebDriver session's own path.
#[derive(Debug)]
struct SessionCommand {
    method: http::Method,
    path: String,
    body: Option<Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// A console client over plain HTTP that does not follow redirects and holds one cookie.
#[derive(Clone)]
pub struct Console {
    pub base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
}

/// A response: status, headers, body.
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    /// The value of the first `<input name="{name}" ... value="...">` on the page.
    pub fn input(&self, name: &str) -> String {
        let at = self
            .body
            .find(&format!("name=\"{name}\" value=\""))
            .unwrap_or_else(|| panic!("no input {name} on\n{}", self.body));
        let rest = &self.body[at + name.len() + 15..];
        rest[..rest.find('"').unwrap()].to_string()
    }

    /// The cookie `name`'s value as set by this response.
    pub fn set_cookie(&self, name: &str) -> Option<(String, String)> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| {
                let value = c[name.len() + 1..].split(';').next().unwrap().to_string();
                (value, c)
            })
    }
}

impl Console {
    pub fn new(base: &str) -> Console {
        Console {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, cookies: &[(&str, &str)]) -> Page {
        let mut all: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(c) = &self.cookie {
            all.push(format!("sallyport_console={c}"));
        }
        let req = if all.is_empty() {
            req
        } else {
            req.header("cookie", all.join("; "))
        };
        let r = req.send().await.unwrap();
        Page {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)), &[])
            .await
    }

    /// POST a form; `extra` headers (e.g. Origin) added.
    pub async fn post(&self, path: &str, form: &[(&str, &str)], extra: &[(&str, &str)]) -> Page {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(form);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        self.send(req, &[]).await
    }

    /// POST a form of only `csrf` (a button's form: withdraw, delete...); asserts the console
    /// answered with a redirect.
    pub async fn submit(&self, path: &str, csrf: &str) -> Page {
        let p = self.post(path, &[("csrf", csrf)], &[]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{path}: {}", p.body);
        p
    }

    /// Log in with the form (its nonce cookie included); the console cookie kept on success.
    pub async fn login(&mut self, user: &str, password: &str, code: &str) -> Page {
        self.cookie = None;
        let form = self.get("/console/login").await;
        let nonce = form.input("nonce");
        let (cookie, _) = form.set_cookie("sallyport_login").unwrap();
        let page = self
            .send(
                self.http
                    .post(format!("{}/console/login", self.base))
                    .form(&[
                        ("user", user),
                        ("password", password),
                        ("totp", code),
                        ("nonce", &nonce),
                    ]),
                &[("sallyport_login", &cookie)],
            )
            .await;
        if let Some((c, _)) = page.set_cookie("sallyport_console") {
            self.cookie = Some(c);
        }
        page
    }

    /// POST a JSON body with these cookies besides the session's.
    pub async fn post_json(&self, path: &str, body: &Value, cookies: &[(&str, &str)]) -> Page {
        self.send(
            self.http.post(format!("{}{path}", self.base)).json(body),
            cookies,
        )
        .await
    }

    /// The login form's nonce and its cookie, as a login page hands them out.
    pub async fn login_nonce(&self) -> (String, String) {
        let form = self.get("/console/login").await;
        let (cookie, _) = form.set_cookie("sallyport_login").unwrap();
        (form.input("nonce"), cookie)
    }

    /// This session's CSRF token, read from a page's logout form.
    pub async fn csrf(&self) -> String {
        self.get("/console/").await.input("csrf")
    }
}
