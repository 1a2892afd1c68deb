//! The CLI's HTTP client for the broker: HTTPS with the system roots or a pinned CA
//! (`--broker-ca`), plain HTTP only to a loopback broker, errors in the API's shape.

use std::path::Path;

use anyhow::Context;
use reqwest::{Method, StatusCode};
use sallyport_api::{ErrorBody, ErrorDetail};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// An error answer of the broker, kept whole so callers can look at its code and reasons.
#[derive(Debug)]
pub struct ApiFailure(pub ErrorDetail);

impl ApiFailure {
    /// The error in an answer's body; when the body is not in the API's shape, one that says
    /// the status.
    fn read(status: StatusCode, body: &[u8]) -> ApiFailure {
        ApiFailure(
            ErrorBody::read(body)
                .ok()
                .flatten()
                .unwrap_or_else(|| ErrorDetail {
                    code: "http_error".into(),
                    message: format!("the broker answered {status}"),
                    reasons: None,
                }),
        )
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ApiFailure {}

pub use sallyport_bastion::broker_client::check_broker_url;

impl Client {
    pub fn new(
        base: &str,
        token: Option<String>,
        broker_ca: Option<&Path>,
    ) -> anyhow::Result<Client> {
        let base = check_broker_url(base)?;
        let mut builder = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .user_agent(concat!("sallyport/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = broker_ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading the broker CA {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            // Pinned: only this CA is trusted for the broker.
            builder = builder
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        Ok(Client {
            http: builder.build()?,
            base,
            token,
        })
    }

    pub fn set_token(&mut self, token: String) {
        self.token = Some(token);
    }

    pub async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let e = anyhow::Error::from(e);
            // rustls' verdict is deep in the chain: name the fix rather than "is it running".
            let hint = if format!("{e:#}").contains("invalid peer certificate") {
                format!(
                    "the broker at {} presented a certificate this machine does not trust: pin the CA that signed it with --broker-ca FILE (or SALLYPORT_BROKER_CA)",
                    self.base
                )
            } else {
                format!(
                    "cannot reach the broker at {}: is it running, and is the URL right?",
                    self.base
                )
            };
            e.context(hint)
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Ok((status, value));
        }
        Err(ApiFailure::read(status, &bytes).into())
    }

    /// GET `path` as a stream of bytes (a download, allowed `timeout` in all): the response of
    /// a successful answer; an error answer in the API's shape.
    pub async fn download(
        &self,
        path: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .get(format!("{}{}", self.base, path))
            .timeout(timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the broker at {}: is it running, and is the URL right?",
                self.base
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        Err(ApiFailure::read(status, &bytes).into())
    }

    /// GET, the answer read as the API's type for it.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        read_as(path, self.get(path).await?)
    }

    /// POST, the answer read as the API's type for it.
    pub async fn post_as<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        read_as(path, self.post(path, body).await?.1)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call::<()>(Method::GET, path, None).await?.1)
    }

    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        Ok(self.call(Method::PUT, path, Some(body)).await?.1)
    }

    pub async fn patch<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<Value> {
        Ok(self.call(Method::PATCH, path, Some(body)).await?.1)
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call::<()>(Method::DELETE, path, None).await?.1)
    }
}

/// A successful answer read as the API's type for it.
pub fn read_as<T: DeserializeOwned>(path: &str, value: Value) -> anyhow::Result<T> {
    serde_json::from_value(value)
        .with_context(|| format!("the broker's answer to {path} is not what this client reads"))
}

/// Percent-encode one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_broker_url("http://127.0.0.1:8443").is_ok());
        assert!(check_broker_url("http://localhost:1").is_ok());
        assert!(check_broker_url("http://[::1]:1").is_ok());
        assert!(check_broker_url("https://broker.example.com").is_ok());
        assert!(check_broker_url("http://broker.example.com").is_err());
        assert!(check_broker_url("http://10.0.0.1").is_err());
        assert!(check_broker_url("ftp://x").is_err());
    }
}
