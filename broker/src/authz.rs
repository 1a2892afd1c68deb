//! Who may do what: one pure decision, [`authorize`], over the caller, the action and what the
//! action is about (its [`Scope`]). No I/O: handlers read the scope from the store, ask here, and
//! turn a [`Refusal`] into the answer and the audit event ([`crate::api::permit`]); the console's
//! pages ask the same function, with the console account as the caller.
//!
//! Every match here names every caller and every action (no `_` arm): a new role or a new
//! action does not compile until someone decides what it may do.

use std::borrow::Cow;

use crate::auth::Caller;

mod action;
mod refusal;

pub use action::Action;
pub use refusal::{Answer, Refusal, Scope};

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
        // What was typed at a password prompt: the security team alone may open it (never the
        // operator who runs the broker that holds the key, nor a customer's approver).
        A::OpenHiddenInput => match caller {
            Caller::Reviewer { .. } => Ok(()),
            Caller::Operator { .. }
            | Caller::Approver { .. }
            | Caller::TicketSystem { .. }
            | Caller::Engineer { .. }
            | Caller::Gateway { .. }
            | Caller::Edge { .. } => Err(forbidden(
                "only reviewers (the security team) may open sealed hidden input",
            )),
        },
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
