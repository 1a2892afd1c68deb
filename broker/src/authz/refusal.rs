//! What a decision is about ([`Scope`]) and what a refusal carries ([`Refusal`], answered as
//! [`Answer`] says).

use std::borrow::Cow;

/// What an action is about, as the handler read it from the store. The decision reads only
/// what it needs; an action that depends on a scope and is given another one is refused to
/// callers bound to a customer (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Nothing in particular (lists, the operator's administration, the data plane).
    None,
    /// The handler has not read what the action is about yet: may the caller do this kind of
    /// action at all? Its answer for the thing itself comes from a second question.
    Unread,
    /// A customer (its policies, its webhooks, its events).
    Customer(&'a str),
    /// A cluster and its customer (`None`: no cluster of that name).
    Cluster {
        customer: Option<&'a str>,
        cluster: &'a str,
    },
    /// A ticket: the customer it is (or is to be) for, its cluster and assignee, and the
    /// customer of the stored ticket it replaces.
    Ticket {
        customer: &'a str,
        cluster: &'a str,
        assignee: &'a str,
        was: Option<&'a str>,
    },
    /// An access request: the customer of its cluster (`None`: the cluster is gone), its
    /// cluster and the engineer who asked.
    Request {
        customer: Option<&'a str>,
        cluster: &'a str,
        engineer: &'a str,
    },
    /// The customers of the certificates a revocation would end (one per certificate).
    Grants(&'a [&'a str]),
    /// A webhook: its customer (`None`: the vendor's own).
    Webhook { customer: Option<&'a str> },
    /// A session a gateway speaks of: its cluster (`None`: no session the broker knows).
    Session { cluster: Option<&'a str> },
}

impl<'a> Scope<'a> {
    /// The customer the scope belongs to, when it names one.
    pub(super) fn customer(&self) -> Option<&'a str> {
        match *self {
            Scope::Customer(c) => Some(c),
            Scope::Cluster { customer, .. } | Scope::Request { customer, .. } => customer,
            Scope::Ticket { customer, .. } => Some(customer),
            Scope::Webhook { customer } => customer,
            Scope::None | Scope::Unread | Scope::Grants(_) | Scope::Session { .. } => None,
        }
    }

    /// The cluster the scope is about, when it names one.
    pub(super) fn cluster(&self) -> Option<&'a str> {
        match *self {
            Scope::Cluster { cluster, .. }
            | Scope::Ticket { cluster, .. }
            | Scope::Request { cluster, .. } => Some(cluster),
            Scope::Session { cluster } => cluster,
            Scope::None
            | Scope::Unread
            | Scope::Customer(_)
            | Scope::Grants(_)
            | Scope::Webhook { .. } => None,
        }
    }

    pub(super) fn unread(&self) -> bool {
        matches!(self, Scope::Unread)
    }
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 403 with the reason; audited as `refused`.
    Forbidden,
    /// As if it did not exist (404 in the handler's words), so that ids of another customer's
    /// data cannot be probed; audited as `refused`.
    Hidden,
    /// As if it did not exist, and not audited (reading a ticket, an approval or a request by
    /// id).
    Unseen,
}

/// Why a caller may not do an action: the reason (the audit event's, and the 403's message),
/// how it is answered, and the customer and cluster the audit event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Cow<'static, str>,
    pub answer: Answer,
    pub customer: Option<String>,
    pub cluster: Option<String>,
}

impl Refusal {
    pub(super) fn new(answer: Answer, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            reason: reason.into(),
            answer,
            customer: None,
            cluster: None,
        }
    }

    pub(super) fn about(mut self, customer: Option<&str>, cluster: Option<&str>) -> Refusal {
        self.customer = customer.map(str::to_string);
        self.cluster = cluster.map(str::to_string);
        self
    }
}
