//! Passkeys (WebAuthn) for approver and reviewer accounts: the relying party from `[console]`
//! and the four ceremony steps over plain data. The ceremony state goes to the store as JSON
//! between a challenge and its answer (any replica may finish it); this module does no I/O.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::config::RelyingParty;

/// Why a ceremony step failed, in words the console shows and a code the audit log keeps.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// The browser's answer is not a WebAuthn credential at all.
    #[error("the browser's answer is not a passkey credential")]
    Malformed,
    /// The answer does not verify: wrong challenge, origin, signature, user verification...
    #[error("the passkey's answer does not verify ({0})")]
    Rejected(String),
    /// The signature counter did not grow: the credential may have been copied.
    #[error("the passkey's signature counter went back: it may have been copied")]
    CounterRegressed,
    /// Our own stored state did not read back.
    #[error("stored passkey data does not read: {0}")]
    Stored(String),
}

impl PasskeyError {
    pub fn code(&self) -> &'static str {
        match self {
            PasskeyError::Malformed => "bad_passkey_answer",
            PasskeyError::Rejected(_) => "bad_passkey_assertion",
            PasskeyError::CounterRegressed => "passkey_counter_regressed",
            PasskeyError::Stored(_) => "passkey_unreadable",
        }
    }
}

fn rejected(e: WebauthnError) -> PasskeyError {
    match e {
        WebauthnError::CredentialPossibleCompromise => PasskeyError::CounterRegressed,
        other => PasskeyError::Rejected(other.to_string()),
    }
}

fn stored<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(text).map_err(|e| PasskeyError::Stored(e.to_string()))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, PasskeyError> {
    serde_json::to_string(v).map_err(|e| PasskeyError::Stored(e.to_string()))
}

/// A credential id as the store and the audit log write it (base64url, no padding).
pub fn credential_id(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// The WebAuthn user handle of an account: stable, derived from its name, not secret.
pub fn user_handle(account: &str) -> Uuid {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("sallyport account:{account}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

/// A started ceremony: what the browser gets (`publicKey` options) and what the store keeps.
pub struct Challenge {
    pub options: Value,
    pub state: String,
}

/// A registered credential: its id (base64url) and the library's JSON of it.
pub struct NewPasskey {
    pub credential_id: String,
    pub passkey: String,
}

/// A verified login: which credential, and its JSON updated with the new counter.
pub struct Verified {
    pub credential_id: String,
    pub passkey: String,
}

pub struct Passkeys {
    webauthn: Webauthn,
    pub rp: RelyingParty,
}

impl Passkeys {
    pub fn new(rp: &RelyingParty, ceremony_secs: u64) -> anyhow::Result<Passkeys> {
        let webauthn = WebauthnBuilder::new(&rp.rp_id, &rp.origin)
            .map_err(|e| anyhow::anyhow!("[console] rp_id/origin: {e}"))?
            .rp_name("sallyport")
            .allow_any_port(rp.any_port)
            .timeout(std::time::Duration::from_secs(ceremony_secs))
            .build()
            .map_err(|e| anyhow::anyhow!("[console] rp_id/origin: {e}"))?;
        Ok(Passkeys {
            webauthn,
            rp: rp.clone(),
        })
    }

    /// Begin registering a passkey for `account`, excluding the credentials it already has.
    pub fn start_registration(
        &self,
        account: &str,
        existing: &[String],
    ) -> Result<Challenge, PasskeyError> {
        let exclude = existing
            .iter()
            .filter_map(|id| URL_SAFE_NO_PAD.decode(id).ok())
            .collect::<Vec<_>>();
        let (ccr, state) = self
            .webauthn
            .start_passkey_registration(
                user_handle(account),
                account,
                account,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(rejected)?;
        Ok(Challenge {
            options: serde_json::to_value(&ccr).map_err(|e| PasskeyError::Stored(e.to_string()))?,
            state: json(&state)?,
        })
    }

    /// Check the browser's answer to a registration challenge.
    pub fn finish_registration(
        &self,
        state: &str,
        answer: &Value,
    ) -> Result<NewPasskey, PasskeyError> {
        let state: PasskeyRegistration = stored(state)?;
        let reg: RegisterPublicKeyCredential =
            serde_json::from_value(answer.clone()).map_err(|_| PasskeyError::Malformed)?;
        let pk = self
            .webauthn
            .finish_passkey_registration(&reg, &state)
            .map_err(rejected)?;
        Ok(NewPasskey {
            credential_id: credential_id(pk.cred_id()),
            passkey: json(&pk)?,
        })
    }

    /// Begin a login with one of these passkeys (the library's JSON of each).
    pub fn start_login(&self, passkeys: &[String]) -> Result<Challenge, PasskeyError> {
        let keys = passkeys
            .iter()
            .map(|p| stored::<Passkey>(p))
            .collect::<Result<Vec<_>, _>>()?;
        let (rcr, state) = self
            .webauthn
            .start_passkey_authentication(&keys)
            .map_err(rejected)?;
        Ok(Challenge {
            options: serde_json::to_value(&rcr).map_err(|e| PasskeyError::Stored(e.to_string()))?,
            state: json(&state)?,
        })
    }

    /// The credential id a login answer names (before anything is verified), to find whose it is.
    pub fn answer_credential(answer: &Value) -> Result<String, PasskeyError> {
        let cred: PublicKeyCredential =
            serde_json::from_value(answer.clone()).map_err(|_| PasskeyError::Malformed)?;
        Ok(credential_id(&cred.raw_id))
    }

    /// Check the browser's answer to a login challenge; `passkey` is the stored credential it
    /// names, returned updated (counter, backup state).
    pub fn finish_login(
        &self,
        state: &str,
        answer: &Value,
        passkey: &str,
    ) -> Result<Verified, PasskeyError> {
        let state: PasskeyAuthentication = stored(state)?;
        let cred: PublicKeyCredential =
            serde_json::from_value(answer.clone()).map_err(|_| PasskeyError::Malformed)?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&cred, &state)
            .map_err(rejected)?;
        let mut pk: Passkey = stored(passkey)?;
        pk.update_credential(&result);
        Ok(Verified {
            credential_id: credential_id(result.cred_id()),
            passkey: json(&pk)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_handles_are_stable_and_distinct() {
        assert_eq!(user_handle("anna"), user_handle("anna"));
        assert_ne!(user_handle("anna"), user_handle("bob"));
    }

    #[test]
    fn answers_that_are_not_credentials_are_malformed() {
        let rp = RelyingParty {
            rp_id: "localhost".into(),
            origin: url::Url::parse("http://localhost").unwrap(),
            any_port: true,
        };
        let p = Passkeys::new(&rp, 60).unwrap();
        let ch = p.start_registration("anna", &[]).unwrap();
        assert_eq!(ch.options["publicKey"]["rp"]["id"], "localhost");
        assert_eq!(ch.options["publicKey"]["user"]["name"], "anna");
        for bad in [Value::Null, serde_json::json!({"id": "x"})] {
            assert!(matches!(
                p.finish_registration(&ch.state, &bad),
                Err(PasskeyError::Malformed)
            ));
            assert!(matches!(
                Passkeys::answer_credential(&bad),
                Err(PasskeyError::Malformed)
            ));
        }
        assert!(matches!(
            p.finish_registration("not json", &Value::Null),
            Err(PasskeyError::Stored(_))
        ));
    }
}
