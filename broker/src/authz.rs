//! Who may do what: one pure decision, [`authorize`], over the caller, the action and what the
//! action is about (its [`Scope`]). No I/O: handlers read the scope from the store, ask here, and
//! turn a [`Refusal`] into the answer and the audit event ([`crate::api::permit`]); the console's
//! pages ask the same function, with the console account as the caller.
//!
//! Every match here names every caller and every action (no `_` arm): a new role or a new
//! action does not compile until someone decides what it may do.

use std::borrow::Cow;

use crate::auth::Caller;

macro_rules! actions {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What a caller asks to do. [`Action::name`] is how the audit log names it (the
        /// `action` of a `refused` event).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $($(#[$doc])* $variant,)*
        }

        impl Action {
            /// Every action, in the order they are declared.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The name the audit log gives this action.
            pub fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }
        }
    };
}

actions! {
    // --- the operator's administration ---
    CreateCustomer => "create_customer",
    CreateCluster => "create_cluster",
    CreateNode => "create_node",
    UpdateNode => "update_node",
    EnrollEngineer => "enroll_engineer",
    DisableEngineer => "disable_engineer",
    EnableEngineer => "enable_engineer",
    DisableAccount => "disable_account",
    EnableAccount => "enable_account",
    CreateAccount => "create_account",
    CreateToken => "create_token",
    ListTokens => "list_tokens",
    RevokeToken => "revoke_token",
    CreateGateway => "create_gateway",
    RevokeGateway => "revoke_gateway",
    // --- reading the registry ---
    ListCustomers => "list_customers",
    ListClusters => "list_clusters",
    /// Scope: [`Scope::Cluster`].
    ListNodes => "list_nodes",
    /// Scope: [`Scope::Cluster`].
    ListGateways => "list_gateways",
    // --- tickets ---
    /// Scope: [`Scope::Unread`], then [`Scope::Ticket`].
    SaveTicket => "save_ticket",
    /// Scope: [`Scope::Ticket`]. Refused unseen.
    ReadTicket => "read_ticket",
    // --- approvals, customers' policies, access requests ---
    /// Scope: [`Scope::Cluster`].
    CreateApproval => "create_approval",
    /// Scope: [`Scope::Cluster`].
    EditApproval => "edit_approval",
    /// Scope: [`Scope::Cluster`].
    WithdrawApproval => "withdraw_approval",
    ListApprovals => "list_approvals",
    /// Scope: [`Scope::Customer`]. Refused unseen.
    ReadApproval => "read_approval",
    /// Scope: [`Scope::Customer`].
    SavePolicy => "save_policy",
    /// Scope: [`Scope::Customer`].
    DeletePolicy => "delete_policy",
    /// Scope: [`Scope::Customer`].
    ListPolicies => "list_policies",
    ListRequests => "list_requests",
    /// Scope: [`Scope::Request`]. Refused unseen.
    ReadRequest => "read_request",
    /// Scope: [`Scope::Request`].
    DecideRequest => "decide_request",
    // --- certificates ---
    IssueCertificate => "issue_certificate",
    ListCertificates => "list_certificates",
    /// Scope: [`Scope::Grants`].
    Revoke => "revoke",
    // --- the audit log ---
    /// An approver's search is narrowed to its customer by the handler.
    SearchAudit => "audit_search",
    /// Scope: [`Scope::Unread`], then [`Scope::Customer`] when a customer is asked for.
    StreamAudit => "audit_stream",
    AuditSources => "audit_sources",
    AuditChain => "audit_chain",
    AuditSignatures => "audit_signatures",
    AuditKeys => "audit_keys",
    ExportAudit => "audit_export",
    /// The console's page of every chain.
    ConsoleChains => "console_chains",
    // --- sessions, reports and recordings ---
    ListSessions => "list_sessions",
    /// Scope: [`Scope::Unread`], then [`Scope::Cluster`] (the session's).
    TerminateSession => "terminate_session",
    /// Scope: [`Scope::Unread`], then [`Scope::Cluster`] (the session's).
    WatchSession => "watch_session",
    /// The console's page of one session. Scope: [`Scope::Cluster`] (the session's).
    ConsoleSessionPage => "console_session_page",
    /// Scope: [`Scope::Unread`], then [`Scope::Cluster`] when one cluster is asked for.
    Report => "report",
    /// Scope: [`Scope::Unread`], then [`Scope::Cluster`] (the recording's).
    ReadRecording => "read_recording",
    // --- webhooks ---
    /// Scope: [`Scope::Unread`], then [`Scope::Customer`] when a customer is asked for.
    CreateWebhook => "create_webhook",
    ListWebhooks => "list_webhooks",
    /// Scope: [`Scope::Unread`], then [`Scope::Webhook`].
    DeleteWebhook => "delete_webhook",
    /// Scope: [`Scope::Unread`], then [`Scope::Webhook`] for one webhook's.
    ListWebhookDeliveries => "list_webhook_deliveries",
    // --- the data plane ---
    GatewaySelf => "gateway_self",
    UploadRecording => "upload_recording",
    GatewayTerminations => "gateway_terminations",
    GatewayWatches => "gateway_watches",
    /// Scope: [`Scope::Unread`], then [`Scope::Session`].
    GatewayLive => "gateway_live",
    AuditIngest => "audit_ingest",
    RegisterEdge => "register_edge",
    VerifySessionMfa => "verify_session_mfa",
}

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
    fn customer(&self) -> Option<&'a str> {
        match *self {
            Scope::Customer(c) => Some(c),
            Scope::Cluster { customer, .. } | Scope::Request { customer, .. } => customer,
            Scope::Ticket { customer, .. } => Some(customer),
            Scope::Webhook { customer } => customer,
            Scope::None | Scope::Unread | Scope::Grants(_) | Scope::Session { .. } => None,
        }
    }

    /// The cluster the scope is about, when it names one.
    fn cluster(&self) -> Option<&'a str> {
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

    fn unread(&self) -> bool {
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
    fn new(answer: Answer, reason: impl Into<Cow<'static, str>>) -> Refusal {
        Refusal {
            reason: reason.into(),
            answer,
            customer: None,
            cluster: None,
        }
    }

    fn about(mut self, customer: Option<&str>, cluster: Option<&str>) -> Refusal {
        self.customer = customer.map(str::to_string);
        self.cluster = cluster.map(str::to_string);
        self
    }
}

fn forbidden(reason: impl Into<Cow<'static, str>>) -> Refusal {
    Refusal::new(Answer::Forbidden, reason)
}

fn hidden(reason: &'static str) -> Refusal {
    Refusal::new(Answer::Hidden, reason)
}

fn unseen(reason: &'static str) -> Refusal {
    Refusal::new(Answer::Unseen, reason)
}

fn allow_if(ok: bool, refusal: impl FnOnce() -> Refusal) -> Result<(), Refusal> {
    if ok { Ok(()) } else { Err(refusal()) }
}

const OPERATOR_ONLY: &str = "only the operator may do this";
const AUDIT_READERS: &str = "only reviewers and the operator may read the audit log";
const SESSION_READERS: &str =
    "only reviewers, customer approvers and the operator may see or end sessions";
const GATEWAY_ONLY: &str = "only a gateway may do this";
const WEBHOOK_READERS: &str =
    "only customer approvers, reviewers and the operator may see webhooks";
const APPROVERS_ONLY: &str = "only the customer's approvers may do this";
const ANOTHER_CUSTOMERS_CLUSTER: &str =
    "this cluster belongs to another customer: you may only act on your own clusters";
const OWN_APPROVERS_ONLY: &str = "only the customer's own approvers may do this";

/// May `caller` do `action` on `scope`?
pub fn authorize(caller: &Caller, action: Action, scope: Scope<'_>) -> Result<(), Refusal> {
    use Action as A;
    match action {
        A::CreateCustomer
        | A::CreateCluster
        | A::CreateNode
        | A::UpdateNode
        | A::EnrollEngineer
        | A::DisableEngineer
        | A::EnableEngineer
        | A::DisableAccount
        | A::EnableAccount
        | A::CreateAccount
        | A::CreateToken
        | A::ListTokens
        | A::RevokeToken
        | A::CreateGateway
        | A::RevokeGateway => match caller {
            Caller::Operator { .. } => Ok(()),
            Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden(OPERATOR_ONLY)),
        },
        A::ListCustomers => match caller {
            Caller::Operator { .. } | Caller::Reviewer { .. } | Caller::Approver { .. } => Ok(()),
            Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden("not allowed to list customers")),
        },
        A::ListClusters => match caller {
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. } => Ok(()),
            Caller::Engineer { .. } | Caller::Gateway { .. } | Caller::Edge { .. } => {
                Err(forbidden("not allowed to list clusters"))
            }
        },
        A::ListNodes | A::ListGateways => {
            let refusal = || {
                forbidden(if action == A::ListNodes {
                    "not allowed to list this cluster's nodes"
                } else {
                    "not allowed to list this cluster's gateways"
                })
                .about(None, scope.cluster())
            };
            match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => Ok(()),
                // The customer's admins put the node CA key into their nodes' TrustedUserCAKeys.
                Caller::Approver { customer, .. } => {
                    allow_if(scope.customer() == Some(customer), refusal)
                }
                Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => Err(refusal()),
            }
        }
        A::SaveTicket => match caller {
            Caller::Operator { .. } | Caller::TicketSystem { customer: None, .. } => Ok(()),
            // A ticket system scoped to a customer writes that customer's tickets only:
            // neither a new one for another customer nor one that exists for another customer.
            Caller::TicketSystem {
                customer: Some(own),
                ..
            } => {
                let ok = match scope {
                    Scope::Unread => true,
                    Scope::Ticket { customer, was, .. } => {
                        customer == own && was.is_none_or(|w| w == own)
                    }
                    Scope::None
                    | Scope::Customer(_)
                    | Scope::Cluster { .. }
                    | Scope::Request { .. }
                    | Scope::Grants(_)
                    | Scope::Webhook { .. }
                    | Scope::Session { .. } => false,
                };
                allow_if(ok, || {
                    forbidden(format!(
                        "this ticket system may only write tickets of customer {own}"
                    ))
                    .about(Some(own), scope.cluster())
                })
            }
            Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden("only the ticket system may change tickets")),
        },
        A::ReadTicket => {
            let ok = match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => true,
                // A ticket system scoped to a customer reads that customer's tickets only.
                Caller::TicketSystem { customer, .. } => customer
                    .as_deref()
                    .is_none_or(|c| scope.customer() == Some(c)),
                Caller::Approver { customer, .. } => scope.customer() == Some(customer),
                Caller::Engineer { uid, .. } => {
                    matches!(scope, Scope::Ticket { assignee, .. } if assignee == uid)
                }
                Caller::Gateway { .. } | Caller::Edge { .. } => false,
            };
            allow_if(ok, || unseen("a ticket the caller may not see"))
        }
        A::CreateApproval | A::EditApproval | A::WithdrawApproval | A::DecideRequest => {
            let about = |r: Refusal| r.about(scope.customer(), scope.cluster());
            match caller {
                Caller::Approver { name, customer } => {
                    if !scope.unread() && scope.customer() != Some(customer) {
                        return Err(about(forbidden(ANOTHER_CUSTOMERS_CLUSTER)));
                    }
                    match scope {
                        Scope::Request { engineer, .. }
                            if action == A::DecideRequest && engineer == name =>
                        {
                            Err(forbidden("nobody may decide their own access request")
                                .about(None, scope.cluster()))
                        }
                        _ => Ok(()),
                    }
                }
                Caller::Operator { .. }
                | Caller::Reviewer { .. }
                | Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => Err(about(forbidden(APPROVERS_ONLY))),
            }
        }
        A::ListApprovals | A::ListRequests => match caller {
            Caller::Operator { .. } | Caller::Reviewer { .. } | Caller::Approver { .. } => Ok(()),
            Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden(if action == A::ListApprovals {
                "not allowed to list approvals"
            } else {
                "not allowed to list access requests"
            })),
        },
        A::ReadApproval => {
            let ok = match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => true,
                Caller::Approver { customer, .. } => scope.customer() == Some(customer),
                Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => false,
            };
            allow_if(ok, || unseen("an approval of another customer"))
        }
        A::SavePolicy | A::DeletePolicy | A::ListPolicies => {
            let ok = match caller {
                Caller::Approver { customer, .. } => {
                    scope.unread() || scope.customer() == Some(customer)
                }
                Caller::Operator { .. } | Caller::Reviewer { .. } => action == A::ListPolicies,
                Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => false,
            };
            allow_if(ok, || {
                forbidden(OWN_APPROVERS_ONLY).about(scope.customer(), None)
            })
        }
        A::ReadRequest => {
            let ok = match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => true,
                Caller::Engineer { uid, .. } => {
                    matches!(scope, Scope::Request { engineer, .. } if engineer == uid)
                }
                Caller::Approver { customer, .. } => scope.customer() == Some(customer),
                Caller::TicketSystem { .. } | Caller::Gateway { .. } | Caller::Edge { .. } => false,
            };
            allow_if(ok, || unseen("an access request the caller may not see"))
        }
        A::IssueCertificate => match caller {
            Caller::Engineer { .. } => Ok(()),
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden(
                "only engineers get certificates: log in with `sallyport login`",
            )),
        },
        A::ListCertificates => match caller {
            // An engineer lists its own (the handler narrows).
            Caller::Engineer { .. } | Caller::Operator { .. } | Caller::Reviewer { .. } => Ok(()),
            Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden("not allowed to list certificates")),
        },
        A::Revoke => match caller {
            Caller::Operator { .. } | Caller::Reviewer { .. } => Ok(()),
            // An approver revokes only what was issued for its own clusters.
            Caller::Approver { customer, .. } => {
                let ok = match scope {
                    Scope::Grants(of) => !of.is_empty() && of.iter().all(|c| c == customer),
                    Scope::Unread => true,
                    Scope::None
                    | Scope::Customer(_)
                    | Scope::Cluster { .. }
                    | Scope::Ticket { .. }
                    | Scope::Request { .. }
                    | Scope::Webhook { .. }
                    | Scope::Session { .. } => false,
                };
                allow_if(ok, || {
                    forbidden("you may only revoke certificates for your own clusters")
                        .about(Some(customer), None)
                })
            }
            Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden("not allowed to revoke")),
        },
        A::SearchAudit | A::StreamAudit => match caller {
            Caller::Operator { .. } | Caller::Reviewer { .. } => Ok(()),
            // A customer's approver reads the events on its own clusters.
            Caller::Approver { customer, .. } => match scope.customer() {
                Some(asked) if action == A::StreamAudit && asked != customer => Err(forbidden(
                    "a customer's approver reads only its own customer's events",
                )
                .about(Some(asked), None)),
                _ => Ok(()),
            },
            Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden(AUDIT_READERS)),
        },
        A::AuditSources | A::AuditChain | A::AuditSignatures | A::AuditKeys | A::ExportAudit => {
            match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => Ok(()),
                Caller::Approver { .. }
                | Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => Err(forbidden(AUDIT_READERS)),
            }
        }
        // A chain mixes the sessions of every customer of its gateway or edge.
        A::ConsoleChains => match caller {
            Caller::Reviewer { .. } => Ok(()),
            Caller::Approver { customer, .. } => {
                Err(forbidden("only reviewers see the audit chains").about(Some(customer), None))
            }
            Caller::Operator { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden("only reviewers see the audit chains")),
        },
        A::ListSessions
        | A::TerminateSession
        | A::WatchSession
        | A::ConsoleSessionPage
        | A::Report
        | A::ReadRecording => {
            let refusal = || {
                forbidden(if action == A::ReadRecording {
                    "only reviewers, the operator and the customer's approvers may read recordings"
                } else {
                    SESSION_READERS
                })
            };
            // Another customer's session, recording or cluster is "not found" (audited).
            let elsewhere = || {
                hidden(if action == A::ReadRecording {
                    "a recording of another customer's cluster"
                } else if action == A::Report {
                    "a report of a cluster the caller may not see"
                } else {
                    "a session on another customer's cluster"
                })
            };
            // The cluster (and its customer) the action is about: `Ok(None)` none yet (a list, or
            // the first question); `Err(())` a scope these actions do not take (fail closed).
            let about = match scope {
                Scope::Cluster { customer, cluster } => Ok(Some((customer, cluster))),
                Scope::Unread | Scope::None => Ok(None),
                Scope::Customer(_)
                | Scope::Ticket { .. }
                | Scope::Request { .. }
                | Scope::Grants(_)
                | Scope::Webhook { .. }
                | Scope::Session { .. } => Err(()),
            };
            match caller {
                Caller::Operator { .. } | Caller::Reviewer { .. } => match about {
                    // A report of a cluster that does not exist.
                    Ok(Some((None, c))) if action == A::Report => {
                        Err(elsewhere().about(None, Some(c)))
                    }
                    Ok(_) | Err(()) => Ok(()),
                },
                Caller::Approver { customer, .. } => match about {
                    Ok(None) => Ok(()),
                    Ok(Some((owner, _))) if owner == Some(customer) => Ok(()),
                    // A report's refusal names the approver's customer, the others the owner.
                    Ok(Some((owner, c))) => Err(if action == A::Report {
                        elsewhere().about(Some(customer), Some(c))
                    } else {
                        elsewhere().about(owner, Some(c))
                    }),
                    Err(()) => Err(elsewhere()),
                },
                Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => Err(refusal()),
            }
        }
        A::CreateWebhook | A::ListWebhooks | A::DeleteWebhook | A::ListWebhookDeliveries => {
            let change = matches!(action, A::CreateWebhook | A::DeleteWebhook);
            match caller {
                Caller::Operator { .. } => Ok(()),
                Caller::Reviewer { .. } if change => Err(forbidden(
                    "reviewers read webhooks; a customer's approvers or the operator change them",
                )),
                Caller::Reviewer { .. } => Ok(()),
                Caller::Approver { customer, .. } => match scope {
                    // Another customer's webhook, or a vendor-wide one, is "not found".
                    Scope::Webhook { customer: of } if of != Some(customer) => {
                        Err(hidden("a webhook of another customer, or the vendor's own")
                            .about(of, None))
                    }
                    Scope::Customer(asked) if asked != customer => Err(forbidden(
                        "an approver sets up webhooks for its own customer only",
                    )
                    .about(Some(asked), None)),
                    _ => Ok(()),
                },
                Caller::TicketSystem { .. }
                | Caller::Engineer { .. }
                | Caller::Gateway { .. }
                | Caller::Edge { .. } => Err(forbidden(WEBHOOK_READERS)),
            }
        }
        A::GatewaySelf
        | A::UploadRecording
        | A::GatewayTerminations
        | A::GatewayWatches
        | A::GatewayLive => match caller {
            Caller::Gateway { cluster, .. } => match scope {
                Scope::Session { cluster: of } if of != Some(cluster) => Err(forbidden(
                    "a live recording of a session this gateway did not report",
                )),
                _ => Ok(()),
            },
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Edge { .. } => Err(forbidden(GATEWAY_ONLY)),
        },
        A::AuditIngest => match caller {
            Caller::Gateway { .. } | Caller::Edge { .. } => Ok(()),
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. } => Err(forbidden(
                "only a gateway or an edge may ship audit records",
            )),
        },
        A::RegisterEdge | A::VerifySessionMfa => match caller {
            Caller::Edge { .. } => Ok(()),
            Caller::Operator { .. }
            | Caller::Reviewer { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. } => Err(forbidden(if action == A::RegisterEdge {
                "only an edge registers itself (an API token of role edge)"
            } else {
                "only an edge may check per-session TOTP codes"
            })),
        },
    }
}

/// Whether `caller` may do `action` on `scope` (a page asking what to offer; nothing audited).
pub fn allows(caller: &Caller, action: Action, scope: Scope<'_>) -> bool {
    authorize(caller, action, scope).is_ok()
}

/// The customer whose data a caller sees once it is allowed to list: an approver its own;
/// everyone else every customer's (`None`).
pub fn customer_view(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Approver { customer, .. } => Some(customer),
        Caller::Operator { .. }
        | Caller::Reviewer { .. }
        | Caller::TicketSystem { .. }
        | Caller::Engineer { .. }
        | Caller::Gateway { .. }
        | Caller::Edge { .. } => None,
    }
}

#[cfg(test)]
mod tests;
