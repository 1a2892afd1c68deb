//! The data plane's calls to the broker: enrollment, the gateway's view of its cluster, the KRL,
//! the user CA keys, audit records and recordings.

use std::path::Path;

use anyhow::{Context, bail};
use sallyport_api::gateways::AuditBatch;
use sallyport_api::{ErrorBody, ErrorDetail};
use sallyport_audit::AuditRecord;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Refuse `http://` to anything but loopback: tokens, passwords, audit records and the trusted
/// CA keys would cross the network in clear. The broker's URL, without a trailing `/`.
pub fn check_broker_url(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid broker URL {url:?}"))?;
    match parsed.scheme() {
        "https" => {}
        "http" => {
            let host = parsed.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "refusing plain http:// to {url}: use https:// (plain HTTP is only for a broker on this machine)"
                );
            }
        }
        other => bail!("unsupported broker URL scheme {other:?}: use https://"),
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[derive(Clone)]
pub struct BrokerClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl BrokerClient {
    pub fn new(
        base: &str,
        broker_ca: Option<&Path>,
        token: Option<String>,
    ) -> anyhow::Result<BrokerClient> {
        let base = check_broker_url(base)?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(20));
        if let Some(ca) = broker_ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            b = b
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(BrokerClient {
            http: b.build()?,
            base,
            token,
        })
    }

    pub fn with_token(&self, token: String) -> BrokerClient {
        BrokerClient {
            token: Some(token),
            ..self.clone()
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn check(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        bail!("the broker answered {status}: {}", refusal(resp).await)
    }

    /// Send and read the answer: what a success says as `T`, or a refusal's status and
    /// error. `Err` only when no answer came, or one this client cannot read.
    async fn answer<T: DeserializeOwned>(
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, Answer<T>)> {
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return Ok((status, Ok(serde_json::from_slice(&bytes)?)));
        }
        Ok((status, Err(ErrorBody::read(&bytes)?)))
    }

    /// POST `body`, the answer read as [`Answer`].
    pub async fn post_answer<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(reqwest::StatusCode, Answer<T>)> {
        Self::answer(self.req(reqwest::Method::POST, path).json(body)).await
    }

    /// GET, the answer read as [`Answer`].
    pub async fn get_answer<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Answer<T>)> {
        Self::answer(self.req(reqwest::Method::GET, path)).await
    }

    /// GET, the answer read as the API's type for it.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// POST and return the broker's answer whatever its status: `Err` only when no answer came
    /// (the broker is unreachable, or the answer is not JSON).
    pub async fn post_json_status<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let resp = self
            .req(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// GET, like `post_json_status`.
    pub async fn get_json_status(
        &self,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let resp = self.req(reqwest::Method::GET, path).send().await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    pub async fn krl(&self) -> anyhow::Result<Vec<u8>> {
        let resp = self.req(reqwest::Method::GET, "/v1/krl").send().await?;
        Ok(Self::check(resp).await?.bytes().await?.to_vec())
    }

    /// Ship a batch of records with the spool's `head` (an empty batch reports the head alone),
    /// and the signature of the batch's last record with the chain's public key.
    pub async fn post_records(
        &self,
        records: &[AuditRecord],
        head: u64,
        signed: Option<(&str, &str)>,
    ) -> Result<(), crate::spool::ShipError> {
        use crate::spool::ShipError;
        let body = AuditBatch {
            records: records.to_vec(),
            head: Some(head),
            signature: signed.map(|(s, _)| s.to_string()),
            public_key: signed.map(|(_, k)| k.to_string()),
        };
        let resp = self
            .req(reqwest::Method::POST, "/v1/audit/records")
            .json(&body)
            .send()
            .await
            .map_err(|e| ShipError::Other(e.into()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
            return Err(ShipError::TooLarge);
        }
        if matches!(status.as_u16(), 400 | 403 | 409 | 422) {
            return Err(ShipError::Refused(format!(
                "the broker answered {status}: {}",
                refusal(resp).await
            )));
        }
        Self::check(resp).await.map_err(ShipError::Other)?;
        Ok(())
    }

    pub async fn put_recording(&self, session: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let resp = self
            .req(reqwest::Method::PUT, &format!("/v1/recordings/{session}"))
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        Self::check(resp).await?;
        Ok(())
    }
}

/// What the broker answered: a success's body, or the error it refused with (`None`: its body
/// is JSON of another shape).
pub type Answer<T> = Result<T, Option<ErrorDetail>>;

/// The message of a refusal's body, or "no message".
async fn refusal(resp: reqwest::Response) -> String {
    let bytes = resp.bytes().await.unwrap_or_default();
    let error = ErrorBody::read(&bytes).ok().flatten();
    ErrorDetail::message_or(error.as_ref(), "no message")
}

#[cfg(test)]
mod tests {
    use super::check_broker_url;

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://broker.example",
            "https://10.0.0.5:8443/",
            "http://127.0.0.1:8443",
            "http://localhost:1",
            "http://[::1]:8443",
        ] {
            assert!(check_broker_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://broker.example",
            "http://10.0.0.5:8443",
            "http://[2001:db8::1]:80",
            "ftp://127.0.0.1",
            "127.0.0.1:8443",
        ] {
            assert!(check_broker_url(bad).is_err(), "{bad}");
        }
    }
}
