//! The customer's own channel policies at the gateway: compiled when the broker sends them (or
//! read from the cache at a start without the broker), and asked, after the shipped base
//! policies, about every channel request.

use sallyport_ca::policy::{ChannelFacts, DenyReason, Policy};
use serde::{Deserialize, Serialize};

use super::Gateway;

/// The cluster's customer and that customer's own policies, as this gateway last heard them.
pub(super) struct Rules {
    /// What the rules were compiled from, so that an unchanged refresh compiles nothing.
    pub source: Option<PolicyCache>,
    pub customer: String,
    /// `Err` when a saved policy no longer checks here: then every request is refused.
    pub policies: Result<Vec<Policy>, String>,
}

/// One of the customer's policies, as the broker sent it.
pub(super) use sallyport_api::gateways::NamedPolicy as SavedPolicy;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PolicyCache {
    pub customer: String,
    pub policies: Vec<SavedPolicy>,
}

impl Gateway {
    /// Compile the customer's policies; one that does not check refuses every request (as the
    /// broker refuses to issue), rather than being skipped.
    pub(super) fn set_rules(&self, cache: PolicyCache) {
        if self
            .rules
            .lock()
            .is_ok_and(|r| r.source.as_ref() == Some(&cache))
        {
            return;
        }
        let mut compiled = Ok(Vec::new());
        for p in &cache.policies {
            match self.engine.check_customer_policies(&p.body) {
                Ok(mut ps) => {
                    if let Ok(all) = compiled.as_mut() {
                        all.append(&mut ps);
                    }
                }
                Err(e) => {
                    tracing::error!(policy = p.name, error = %e, "a customer policy does not check: refusing every channel request");
                    compiled = Err(format!(
                        "the customer's policy {} is invalid ({e}); the request is refused",
                        p.name
                    ));
                    break;
                }
            }
        }
        if let Ok(mut r) = self.rules.lock() {
            *r = Rules {
                customer: cache.customer.clone(),
                policies: compiled,
                source: Some(cache),
            };
        }
    }

    /// Ask the policy about one channel request (`facts.customer` is filled in here).
    pub fn decide_channel(&self, mut facts: ChannelFacts) -> Result<(), Vec<DenyReason>> {
        let Ok(rules) = self.rules.lock() else {
            return Err(vec![DenyReason {
                code: "policy_error".into(),
                message: "the gateway's policy state is unusable; the request is refused".into(),
            }]);
        };
        match &rules.policies {
            Ok(policies) => {
                facts.customer = rules.customer.clone();
                self.engine.decide_channel(&facts, policies)
            }
            Err(e) => Err(vec![DenyReason {
                code: "customer_policy_invalid".into(),
                message: e.clone(),
            }]),
        }
    }
}
