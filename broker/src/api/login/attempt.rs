//! The lockout counters of a login attempt (engineers, accounts, per-session codes).

use crate::audit::{AuditEvent, sanitize};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;

use super::super::throttled;

/// The lockout counters one attempt takes: the user from this source address, the source
/// address over all users, and the user over all addresses, each with its own limit. Someone
/// guessing from one address is stopped by the first two after a few tries without locking the
/// user out anywhere else; guessing one user from many addresses is bounded by the third.
pub(super) struct Attempt {
    counters: Vec<Counter>,
    principal: String,
    source: String,
    /// The counters this attempt brought to their limit (it begins their lockout).
    reached: std::sync::Mutex<Vec<&'static str>>,
}

struct Counter {
    subject: String,
    /// How the `refusal_burst` event names it.
    name: &'static str,
    max: i64,
    /// What a success does to it. A user's counters start again from nothing; the source
    /// address's counter only gets this attempt back, so that anyone with a valid account cannot
    /// reset an address's count between someone's guesses by logging in from it. It forgets
    /// instead after `lockout_secs` without a failure.
    kind: CounterKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CounterKind {
    User,
    Source,
}

impl Attempt {
    pub(super) fn new(b: &Broker, principal: &str, source: &str) -> Attempt {
        let l = &b.cfg.login;
        let counter = |subject: String, name: &'static str, max: i64, kind: CounterKind| Counter {
            subject,
            name,
            max,
            kind,
        };
        Attempt {
            counters: vec![
                counter(
                    format!("{principal}@{source}"),
                    "user_from_address",
                    l.max_failures,
                    CounterKind::User,
                ),
                counter(
                    format!("source:{source}"),
                    "address",
                    l.max_failures_per_source,
                    CounterKind::Source,
                ),
                counter(
                    principal.to_string(),
                    "user",
                    l.max_failures_per_user,
                    CounterKind::User,
                ),
            ],
            principal: principal.to_string(),
            source: source.to_string(),
            reached: Default::default(),
        }
    }

    /// This attempt failed: when it was the one that brought a counter to its limit, a lockout
    /// begins — a burst of refusals, audited (and notified) once per lockout as
    /// `refusal_burst`.
    pub(super) async fn failed(&self, b: &Broker, customer: Option<&str>) -> ApiResult<()> {
        let reached = std::mem::take(&mut *self.reached.lock().unwrap_or_else(|p| p.into_inner()));
        for name in reached {
            let Some(c) = self.counters.iter().find(|c| c.name == name) else {
                continue;
            };
            b.store
                .audit(&AuditEvent::RefusalBurst {
                    principal: sanitize(&self.principal),
                    // The address's counter is about every user from it, not this one.
                    engineer: (c.kind == CounterKind::User)
                        .then(|| self.principal.strip_prefix("engineer:"))
                        .flatten()
                        .map(str::to_string),
                    customer: customer.map(str::to_string),
                    source_ip: (c.kind == CounterKind::Source || c.name == "user_from_address")
                        .then(|| self.source.clone()),
                    counter: c.name.into(),
                    failures: u64::try_from(c.max).unwrap_or(0),
                    locked_secs: b.cfg.login.lockout_secs,
                })
                .await?;
        }
        Ok(())
    }

    /// Before anything is checked, take one attempt on every counter: it counts as a failure
    /// until it succeeds, atomically across replicas, so parallel guesses cannot all be checked
    /// before the lockout counts them. Locked out: nothing is checked, the refusal is audited
    /// (`locked`, throttled) and the error says how long to wait.
    pub(super) async fn reserve(
        &self,
        b: &Broker,
        locked: impl FnOnce(&str) -> AuditEvent,
    ) -> ApiResult<()> {
        match self.take(b).await? {
            None => Ok(()),
            Some(wait) => {
                throttled(
                    b,
                    &self.counters[0].subject,
                    locked,
                    "too many failed attempts",
                )
                .await?;
                Err(ApiError::Locked(wait))
            }
        }
    }

    /// One attempt on every counter; `Some(seconds to wait)` when locked out.
    async fn take(&self, b: &Broker) -> ApiResult<Option<u64>> {
        for c in &self.counters {
            if let Some(wait) = b.store.locked_for(&c.subject).await? {
                return Ok(Some(wait));
            }
        }
        let lockout = b.cfg.login.lockout_secs;
        let mut locked = None;
        for c in &self.counters {
            let forget_after = match c.kind {
                CounterKind::User => None,
                CounterKind::Source => Some(lockout),
            };
            let n = b
                .store
                .record_failure(&c.subject, c.max, lockout, forget_after)
                .await?;
            if n > c.max {
                locked = Some(lockout);
            } else if n == c.max {
                self.reached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c.name);
            }
        }
        Ok(locked)
    }

    /// Not the user's fault (the directory did not answer): give the attempt back.
    pub(super) async fn release(&self, b: &Broker) -> ApiResult<()> {
        for c in &self.counters {
            b.store.release_attempt(&c.subject, c.max).await?;
        }
        Ok(())
    }

    /// It succeeded: the user's failures in a row start again from nothing; the source
    /// address's count only gets this attempt back.
    pub(super) async fn succeeded(&self, b: &Broker) -> ApiResult<()> {
        for c in &self.counters {
            match c.kind {
                CounterKind::User => b.store.clear_failures(&c.subject).await?,
                CounterKind::Source => b.store.release_attempt(&c.subject, c.max).await?,
            }
        }
        Ok(())
    }
}
