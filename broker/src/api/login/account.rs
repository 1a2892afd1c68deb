//! Approvers' and reviewers' logins: password and TOTP code, or password then a passkey.

use std::net::SocketAddr;

use sallyport_ca::clock::now_secs;
use secrecy::{ExposeSecret, SecretString};

use super::{Attempt, Failure, check_user_name, spend_totp};
use crate::audit::{AuditEvent, sanitize};
use crate::directory::verify_argon2;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;

/// What an approver or reviewer proves at login, besides the user name.
pub(crate) enum Proof<'a> {
    /// Password and the current TOTP code: a login.
    Totp {
        password: &'a SecretString,
        code: &'a str,
    },
    /// The password alone, before a passkey challenge is issued (or to add a passkey): not a
    /// login. Success gives the attempt back and is not audited; failures are, as at login.
    Password { password: &'a SecretString },
    /// A passkey's answer to the login challenge `ceremony`, issued (after the password) to the
    /// browser whose login form had the nonce with this SHA-256: a login.
    Passkey {
        ceremony: &'a str,
        nonce_sha256: &'a str,
        answer: &'a serde_json::Value,
    },
}

/// An approver's or reviewer's password and TOTP code checked (the API's and the console's
/// login): lockouts, a disabled account, each outcome audited. The account on success.
pub(crate) async fn authenticate_account(
    b: &Broker,
    peer: SocketAddr,
    user: &str,
    password: &SecretString,
    totp_code: &str,
) -> ApiResult<crate::store::Account> {
    check_account(
        b,
        peer,
        user,
        Proof::Totp {
            password,
            code: totp_code,
        },
    )
    .await
}

/// An account's proof checked under the login's lockouts (per user, per address, both), a
/// disabled account refused, each outcome audited (`account_login_succeeded` names the
/// method). The account on success.
pub(crate) async fn check_account(
    b: &Broker,
    peer: SocketAddr,
    user: &str,
    proof: Proof<'_>,
) -> ApiResult<crate::store::Account> {
    let shown = sanitize(user);
    let fail = |code: &str, reason: &str| AuditEvent::AccountLoginFailed {
        account: shown.clone(),
        code: code.into(),
        reason: reason.into(),
    };
    check_user_name(b, peer, user, &fail).await?;
    let subject = crate::auth::principal("account", user);
    if b.store.is_disabled(&subject).await? {
        b.store
            .audit(&fail("disabled", "the operator disabled this account"))
            .await?;
        return Err(ApiError::Forbidden(
            "this account is disabled: ask the operator to enable it".into(),
        ));
    }
    let attempt = Attempt::new(b, &subject, &peer.ip().to_string());
    attempt.reserve(b, |why| fail("locked_out", why)).await?;
    let account = b.store.account(user).await?;
    let password_ok = |password: &SecretString| match &account {
        Some(a) => verify_argon2(&a.password_hash, password.expose_secret()),
        None => {
            let _ = crate::directory::hash_argon2(password.expose_secret());
            false
        }
    };
    let bad_credentials = || {
        Failure::Counted(
            ApiError::LoginFailed("wrong user name or password".into()),
            "bad_credentials",
        )
    };
    let outcome: Result<Option<&'static str>, Failure> = match (proof, &account) {
        (Proof::Totp { password, code }, Some(a)) if password_ok(password) => {
            spend_totp(b, &subject, &a.totp_secret, code)
                .await
                .map(|()| Some("totp"))
        }
        (Proof::Password { password }, Some(_)) if password_ok(password) => Ok(None),
        (Proof::Totp { .. } | Proof::Password { .. }, _) => Err(bad_credentials()),
        (
            Proof::Passkey {
                ceremony,
                nonce_sha256,
                answer,
            },
            Some(a),
        ) => passkey_answer(b, a, ceremony, nonce_sha256, answer)
            .await
            .map(|()| Some("passkey")),
        (Proof::Passkey { .. }, None) => Err(bad_credentials()),
    };
    match (outcome, account) {
        (Ok(None), Some(a)) => {
            // The password alone: not a login; the attempt is given back.
            attempt.release(b).await?;
            Ok(a)
        }
        (Ok(Some(method)), Some(a)) => {
            attempt.succeeded(b).await?;
            b.store
                .audit(&AuditEvent::AccountLoginSucceeded {
                    account: a.username.clone(),
                    role: a.role.as_str().into(),
                    customer: a.customer.clone(),
                    method: Some(method.into()),
                })
                .await?;
            Ok(a)
        }
        (Err(Failure::Counted(err, code)), account) => {
            // Counted when the attempt was reserved.
            b.store.audit(&fail(code, &err.to_string())).await?;
            attempt
                .failed(b, account.as_ref().and_then(|a| a.customer.as_deref()))
                .await?;
            Err(err)
        }
        (Err(Failure::Uncounted(err, code, reason)), _) => {
            attempt.release(b).await?;
            b.store.audit(&fail(code, &reason)).await?;
            Err(err)
        }
        (Ok(_), None) => Err(ApiError::LoginFailed("wrong user name or password".into())),
    }
}

/// A passkey's answer to a login challenge: the challenge taken (once), issued for this account
/// and this browser and not expired; the credential this account's; the signature, origin, user
/// verification and counter checked; the credential's counter stored.
async fn passkey_answer(
    b: &Broker,
    account: &crate::store::Account,
    ceremony: &str,
    nonce_sha256: &str,
    answer: &serde_json::Value,
) -> Result<(), Failure> {
    let counted = |code: &'static str, msg: &str| {
        Err(Failure::Counted(ApiError::LoginFailed(msg.into()), code))
    };
    let c = match b.store.take_ceremony(ceremony, "login").await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return counted(
                "passkey_challenge_unknown",
                "this passkey challenge was already used or never issued: start the passkey \
                 login again",
            );
        }
        Err(e) => return Err(Failure::uncounted(e.into(), "internal")),
    };
    if c.account != account.username
        || !c
            .nonce_sha256
            .as_deref()
            .is_some_and(|n| crate::auth::digest_eq(n, nonce_sha256))
    {
        return counted(
            "passkey_challenge_mismatch",
            "this passkey challenge was issued for another login: start the passkey login again",
        );
    }
    if now_secs() >= c.expires_at {
        let err = ApiError::LoginFailed(
            "this passkey challenge expired: start the passkey login again and use your passkey \
             within the time it asks for"
                .into(),
        );
        let reason = err.to_string();
        return Err(Failure::Uncounted(err, "passkey_challenge_expired", reason));
    }
    let credential = match crate::passkeys::Passkeys::answer_credential(answer) {
        Ok(id) => id,
        Err(e) => return counted(e.code(), &e.to_string()),
    };
    let row = match b.store.passkey_by_credential(&credential).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return counted(
                "unknown_passkey",
                "this passkey is not registered (it may have been removed): use another passkey \
                 or log in with your code",
            );
        }
        Err(e) => return Err(Failure::uncounted(e.into(), "internal")),
    };
    if row.account != account.username {
        return counted(
            "passkey_of_another_account",
            "this passkey belongs to another account: use one registered to yours",
        );
    }
    match b.passkeys.finish_login(&c.state, answer, &row.passkey) {
        Ok(v) if v.credential_id == row.credential_id => {
            if let Err(e) = b.store.passkey_used(&row.id, &v.passkey).await {
                return Err(Failure::uncounted(e.into(), "internal"));
            }
            Ok(())
        }
        Ok(_) => counted(
            "passkey_of_another_account",
            "this passkey belongs to another account: use one registered to yours",
        ),
        Err(e @ crate::passkeys::PasskeyError::Stored(_)) => {
            tracing::error!(error = %e, "a stored passkey or challenge does not read");
            Err(Failure::uncounted(
                ApiError::Internal(anyhow::anyhow!(e)),
                "passkey_unreadable",
            ))
        }
        Err(e) => counted(e.code(), &e.to_string()),
    }
}
