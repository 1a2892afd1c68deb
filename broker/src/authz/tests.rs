use std::collections::HashSet;

use super::*;
use Action as A;

/// The callers, one of each kind (a ticket system twice: for every customer, and for `acme`).
fn callers() -> [(&'static str, Caller); 8] {
    [
        ("op", Caller::Operator { name: "o".into() }),
        ("rev", Caller::Reviewer { name: "r".into() }),
        (
            "apr",
            Caller::Approver {
                name: "ann".into(),
                customer: "acme".into(),
            },
        ),
        (
            "ts*",
            Caller::TicketSystem {
                name: "jira".into(),
                customer: None,
            },
        ),
        (
            "tsA",
            Caller::TicketSystem {
                name: "acme-jira".into(),
                customer: Some("acme".into()),
            },
        ),
        (
            "eng",
            Caller::Engineer {
                uid: "eve".into(),
                groups: vec!["support-l2".into()],
                mfa: true,
            },
        ),
        (
            "gw",
            Caller::Gateway {
                id: "gw-1".into(),
                cluster: "acme-prod".into(),
            },
        ),
        ("edge", Caller::Edge { name: "e1".into() }),
    ]
}

const OWN: Scope = Scope::Cluster {
    customer: Some("acme"),
    cluster: "acme-prod",
};
const OTHER: Scope = Scope::Cluster {
    customer: Some("globex"),
    cluster: "globex-prod",
};
const UNKNOWN: Scope = Scope::Cluster {
    customer: None,
    cluster: "nowhere",
};

/// Every (caller kind, action) pair: `Y` allowed; `F` refused with 403; `H` refused as "not
/// found", audited; `U` refused as "not found", not audited. Columns in the order of
/// [`callers`].
#[rustfmt::skip]
fn table() -> Vec<(Action, Scope<'static>, &'static str)> {
    vec![
        //                                                              op rev apr ts* tsA eng gw edge
        (A::CreateCustomer, Scope::None,                               "Y  F   F   F   F   F   F  F"),
        (A::CreateCluster, Scope::None,                                "Y  F   F   F   F   F   F  F"),
        (A::CreateNode, Scope::None,                                   "Y  F   F   F   F   F   F  F"),
        (A::UpdateNode, Scope::None,                                   "Y  F   F   F   F   F   F  F"),
        (A::EnrollEngineer, Scope::None,                               "Y  F   F   F   F   F   F  F"),
        (A::DisableEngineer, Scope::None,                              "Y  F   F   F   F   F   F  F"),
        (A::EnableEngineer, Scope::None,                               "Y  F   F   F   F   F   F  F"),
        (A::DisableAccount, Scope::None,                               "Y  F   F   F   F   F   F  F"),
        (A::EnableAccount, Scope::None,                                "Y  F   F   F   F   F   F  F"),
        (A::CreateAccount, Scope::None,                                "Y  F   F   F   F   F   F  F"),
        (A::CreateToken, Scope::None,                                  "Y  F   F   F   F   F   F  F"),
        (A::ListTokens, Scope::None,                                   "Y  F   F   F   F   F   F  F"),
        (A::RevokeToken, Scope::None,                                  "Y  F   F   F   F   F   F  F"),
        (A::CreateGateway, Scope::None,                                "Y  F   F   F   F   F   F  F"),
        (A::RevokeGateway, Scope::None,                                "Y  F   F   F   F   F   F  F"),
        (A::ListCustomers, Scope::None,                                "Y  Y   Y   F   F   F   F  F"),
        (A::ListClusters, Scope::None,                                 "Y  Y   Y   Y   Y   F   F  F"),
        (A::ListNodes, OWN,                                            "Y  Y   Y   F   F   F   F  F"),
        (A::ListNodes, OTHER,                                          "Y  Y   F   F   F   F   F  F"),
        (A::ListGateways, OWN,                                         "Y  Y   Y   F   F   F   F  F"),
        (A::ListGateways, OTHER,                                       "Y  Y   F   F   F   F   F  F"),
        (A::SaveTicket, Scope::Unread,                                 "Y  F   F   Y   Y   F   F  F"),
        (A::SaveTicket, Scope::Ticket { customer: "acme", cluster: "acme-prod", assignee: "eve", was: None },
                                                                       "Y  F   F   Y   Y   F   F  F"),
        (A::SaveTicket, Scope::Ticket { customer: "globex", cluster: "globex-prod", assignee: "eve", was: None },
                                                                       "Y  F   F   Y   F   F   F  F"),
        // Moving another customer's ticket to one's own customer.
        (A::SaveTicket, Scope::Ticket { customer: "acme", cluster: "acme-prod", assignee: "eve", was: Some("globex") },
                                                                       "Y  F   F   Y   F   F   F  F"),
        (A::ReadTicket, Scope::Ticket { customer: "acme", cluster: "acme-prod", assignee: "eve", was: None },
                                                                       "Y  Y   Y   Y   Y   Y   U  U"),
        (A::ReadTicket, Scope::Ticket { customer: "globex", cluster: "globex-prod", assignee: "bob", was: None },
                                                                       "Y  Y   U   Y   U   U   U  U"),
        (A::CreateApproval, Scope::Unread,                             "F  F   Y   F   F   F   F  F"),
        (A::CreateApproval, OWN,                                       "F  F   Y   F   F   F   F  F"),
        (A::CreateApproval, OTHER,                                     "F  F   F   F   F   F   F  F"),
        (A::EditApproval, OWN,                                         "F  F   Y   F   F   F   F  F"),
        (A::EditApproval, OTHER,                                       "F  F   F   F   F   F   F  F"),
        (A::WithdrawApproval, OWN,                                     "F  F   Y   F   F   F   F  F"),
        (A::WithdrawApproval, OTHER,                                   "F  F   F   F   F   F   F  F"),
        (A::ListApprovals, Scope::None,                                "Y  Y   Y   F   F   F   F  F"),
        (A::ReadApproval, Scope::Customer("acme"),                     "Y  Y   Y   U   U   U   U  U"),
        (A::ReadApproval, Scope::Customer("globex"),                   "Y  Y   U   U   U   U   U  U"),
        (A::SavePolicy, Scope::Unread,                                 "F  F   Y   F   F   F   F  F"),
        (A::SavePolicy, Scope::Customer("acme"),                       "F  F   Y   F   F   F   F  F"),
        (A::SavePolicy, Scope::Customer("globex"),                     "F  F   F   F   F   F   F  F"),
        (A::DeletePolicy, Scope::Customer("acme"),                     "F  F   Y   F   F   F   F  F"),
        (A::DeletePolicy, Scope::Customer("globex"),                   "F  F   F   F   F   F   F  F"),
        (A::ListPolicies, Scope::Customer("acme"),                     "Y  Y   Y   F   F   F   F  F"),
        (A::ListPolicies, Scope::Customer("globex"),                   "Y  Y   F   F   F   F   F  F"),
        (A::ListRequests, Scope::None,                                 "Y  Y   Y   F   F   F   F  F"),
        (A::ReadRequest, Scope::Request { customer: Some("acme"), cluster: "acme-prod", engineer: "eve" },
                                                                       "Y  Y   Y   U   U   Y   U  U"),
        (A::ReadRequest, Scope::Request { customer: None, cluster: "gone", engineer: "bob" },
                                                                       "Y  Y   U   U   U   U   U  U"),
        (A::DecideRequest, Scope::Unread,                              "F  F   Y   F   F   F   F  F"),
        (A::DecideRequest, Scope::Request { customer: Some("acme"), cluster: "acme-prod", engineer: "eve" },
                                                                       "F  F   Y   F   F   F   F  F"),
        // Nobody decides their own request.
        (A::DecideRequest, Scope::Request { customer: Some("acme"), cluster: "acme-prod", engineer: "ann" },
                                                                       "F  F   F   F   F   F   F  F"),
        (A::DecideRequest, Scope::Request { customer: Some("globex"), cluster: "globex-prod", engineer: "eve" },
                                                                       "F  F   F   F   F   F   F  F"),
        (A::IssueCertificate, Scope::None,                             "F  F   F   F   F   Y   F  F"),
        (A::ListCertificates, Scope::None,                             "Y  Y   F   F   F   Y   F  F"),
        (A::Revoke, Scope::Grants(&["acme", "acme"]),                  "Y  Y   Y   F   F   F   F  F"),
        (A::Revoke, Scope::Grants(&["acme", "globex"]),                "Y  Y   F   F   F   F   F  F"),
        (A::Revoke, Scope::Grants(&[]),                                "Y  Y   F   F   F   F   F  F"),
        (A::SearchAudit, Scope::None,                                  "Y  Y   Y   F   F   F   F  F"),
        (A::StreamAudit, Scope::Unread,                                "Y  Y   Y   F   F   F   F  F"),
        (A::StreamAudit, Scope::Customer("acme"),                      "Y  Y   Y   F   F   F   F  F"),
        (A::StreamAudit, Scope::Customer("globex"),                    "Y  Y   F   F   F   F   F  F"),
        (A::AuditSources, Scope::None,                                 "Y  Y   F   F   F   F   F  F"),
        (A::AuditChain, Scope::None,                                   "Y  Y   F   F   F   F   F  F"),
        (A::AuditSignatures, Scope::None,                              "Y  Y   F   F   F   F   F  F"),
        (A::AuditKeys, Scope::None,                                    "Y  Y   F   F   F   F   F  F"),
        (A::ExportAudit, Scope::None,                                  "Y  Y   F   F   F   F   F  F"),
        (A::OpenHiddenInput, Scope::None,                              "F  Y   F   F   F   F   F  F"),
        (A::ConsoleChains, Scope::None,                                "F  Y   F   F   F   F   F  F"),
        (A::ListSessions, Scope::None,                                 "Y  Y   Y   F   F   F   F  F"),
        (A::TerminateSession, Scope::Unread,                           "Y  Y   Y   F   F   F   F  F"),
        (A::TerminateSession, OWN,                                     "Y  Y   Y   F   F   F   F  F"),
        (A::TerminateSession, OTHER,                                   "Y  Y   H   F   F   F   F  F"),
        (A::WatchSession, Scope::Unread,                               "Y  Y   Y   F   F   F   F  F"),
        (A::WatchSession, OWN,                                         "Y  Y   Y   F   F   F   F  F"),
        (A::WatchSession, OTHER,                                       "Y  Y   H   F   F   F   F  F"),
        (A::ConsoleSessionPage, OWN,                                   "Y  Y   Y   F   F   F   F  F"),
        (A::ConsoleSessionPage, OTHER,                                 "Y  Y   H   F   F   F   F  F"),
        (A::Report, Scope::Unread,                                     "Y  Y   Y   F   F   F   F  F"),
        (A::Report, OWN,                                               "Y  Y   Y   F   F   F   F  F"),
        (A::Report, OTHER,                                             "Y  Y   H   F   F   F   F  F"),
        (A::Report, UNKNOWN,                                           "H  H   H   F   F   F   F  F"),
        (A::ReadRecording, Scope::Unread,                              "Y  Y   Y   F   F   F   F  F"),
        (A::ReadRecording, OWN,                                        "Y  Y   Y   F   F   F   F  F"),
        (A::ReadRecording, OTHER,                                      "Y  Y   H   F   F   F   F  F"),
        (A::CreateWebhook, Scope::Unread,                              "Y  F   Y   F   F   F   F  F"),
        (A::CreateWebhook, Scope::Customer("acme"),                    "Y  F   Y   F   F   F   F  F"),
        (A::CreateWebhook, Scope::Customer("globex"),                  "Y  F   F   F   F   F   F  F"),
        (A::ListWebhooks, Scope::None,                                 "Y  Y   Y   F   F   F   F  F"),
        (A::DeleteWebhook, Scope::Unread,                              "Y  F   Y   F   F   F   F  F"),
        (A::DeleteWebhook, Scope::Webhook { customer: Some("acme") },  "Y  F   Y   F   F   F   F  F"),
        (A::DeleteWebhook, Scope::Webhook { customer: Some("globex") },"Y  F   H   F   F   F   F  F"),
        (A::DeleteWebhook, Scope::Webhook { customer: None },          "Y  F   H   F   F   F   F  F"),
        (A::ListWebhookDeliveries, Scope::Unread,                      "Y  Y   Y   F   F   F   F  F"),
        (A::ListWebhookDeliveries, Scope::Webhook { customer: Some("globex") },
                                                                       "Y  Y   H   F   F   F   F  F"),
        (A::GatewaySelf, Scope::None,                                  "F  F   F   F   F   F   Y  F"),
        (A::UploadRecording, Scope::None,                              "F  F   F   F   F   F   Y  F"),
        (A::GatewayTerminations, Scope::None,                          "F  F   F   F   F   F   Y  F"),
        (A::GatewayWatches, Scope::None,                               "F  F   F   F   F   F   Y  F"),
        (A::GatewayLive, Scope::Unread,                                "F  F   F   F   F   F   Y  F"),
        (A::GatewayLive, Scope::Session { cluster: Some("acme-prod") },"F  F   F   F   F   F   Y  F"),
        (A::GatewayLive, Scope::Session { cluster: Some("globex-prod") },
                                                                       "F  F   F   F   F   F   F  F"),
        (A::GatewayLive, Scope::Session { cluster: None },             "F  F   F   F   F   F   F  F"),
        (A::AuditIngest, Scope::None,                                  "F  F   F   F   F   F   Y  Y"),
        (A::RegisterEdge, Scope::None,                                 "F  F   F   F   F   F   F  Y"),
        (A::VerifySessionMfa, Scope::None,                             "F  F   F   F   F   F   F  Y"),
    ]
}

fn outcome(r: &Result<(), Refusal>) -> &'static str {
    match r {
        Ok(()) => "Y",
        Err(Refusal {
            answer: Answer::Forbidden,
            ..
        }) => "F",
        Err(Refusal {
            answer: Answer::Hidden,
            ..
        }) => "H",
        Err(Refusal {
            answer: Answer::Unseen,
            ..
        }) => "U",
    }
}

#[test]
fn every_caller_and_action_as_the_table_says() {
    let callers = callers();
    let mut wrong = Vec::new();
    for (action, scope, expected) in table() {
        let expected: Vec<&str> = expected.split_whitespace().collect();
        assert_eq!(expected.len(), callers.len(), "{action:?} {scope:?}");
        for ((kind, caller), want) in callers.iter().zip(expected) {
            let got = authorize(caller, action, scope);
            if outcome(&got) != want {
                wrong.push(format!(
                    "{action:?} by {kind} on {scope:?}: want {want}, got {got:?}"
                ));
            }
            if let Err(r) = &got {
                assert!(!r.reason.is_empty(), "{action:?} by {kind}: no reason");
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_names_every_action() {
    let named: HashSet<Action> = table().iter().map(|(a, _, _)| *a).collect();
    let missing: Vec<&Action> = Action::ALL.iter().filter(|a| !named.contains(a)).collect();
    assert!(missing.is_empty(), "not in the table: {missing:?}");
    let names: HashSet<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(names.len(), Action::ALL.len(), "two actions share a name");
}

/// What a refusal says and which customer and cluster its audit event names, for the
/// refusals whose event names them.
#[test]
fn refusals_name_what_the_audit_event_names() {
    let [(_, op), _, (_, apr), _, (_, ts_acme), _, _, _] = callers();
    let refused = |c: &Caller, a: Action, s: Scope| match authorize(c, a, s) {
        Ok(()) => panic!("{a:?} on {s:?} was allowed"),
        Err(r) => (r.reason.into_owned(), r.customer, r.cluster),
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        refused(&apr, A::CreateApproval, OTHER),
        (
            ANOTHER_CUSTOMERS_CLUSTER.into(),
            some("globex"),
            some("globex-prod")
        )
    );
    assert_eq!(
        refused(&op, A::EditApproval, OWN),
        (APPROVERS_ONLY.into(), some("acme"), some("acme-prod"))
    );
    assert_eq!(
        refused(
            &apr,
            A::DecideRequest,
            Scope::Request {
                customer: Some("acme"),
                cluster: "acme-prod",
                engineer: "ann"
            }
        ),
        (
            "nobody may decide their own access request".into(),
            None,
            some("acme-prod")
        )
    );
    assert_eq!(
        refused(&apr, A::ListNodes, OTHER),
        (
            "not allowed to list this cluster's nodes".into(),
            None,
            some("globex-prod")
        )
    );
    assert_eq!(
        refused(&apr, A::SavePolicy, Scope::Customer("globex")),
        (OWN_APPROVERS_ONLY.into(), some("globex"), None)
    );
    assert_eq!(
        refused(
            &ts_acme,
            A::SaveTicket,
            Scope::Ticket {
                customer: "globex",
                cluster: "globex-prod",
                assignee: "eve",
                was: None
            }
        ),
        (
            "this ticket system may only write tickets of customer acme".into(),
            some("acme"),
            some("globex-prod")
        )
    );
    assert_eq!(
        refused(&apr, A::Revoke, Scope::Grants(&["globex"])),
        (
            "you may only revoke certificates for your own clusters".into(),
            some("acme"),
            None
        )
    );
    // A session elsewhere names the session's customer; a report elsewhere the approver's.
    assert_eq!(
        refused(&apr, A::WatchSession, OTHER),
        (
            "a session on another customer's cluster".into(),
            some("globex"),
            some("globex-prod")
        )
    );
    assert_eq!(
        refused(&apr, A::Report, OTHER),
        (
            "a report of a cluster the caller may not see".into(),
            some("acme"),
            some("globex-prod")
        )
    );
    assert_eq!(
        refused(&op, A::Report, UNKNOWN),
        (
            "a report of a cluster the caller may not see".into(),
            None,
            some("nowhere")
        )
    );
    assert_eq!(
        refused(&apr, A::StreamAudit, Scope::Customer("globex")),
        (
            "a customer's approver reads only its own customer's events".into(),
            some("globex"),
            None
        )
    );
    assert_eq!(
        refused(&apr, A::DeleteWebhook, Scope::Webhook { customer: None }),
        (
            "a webhook of another customer, or the vendor's own".into(),
            None,
            None
        )
    );
    assert_eq!(
        refused(&apr, A::ConsoleChains, Scope::None),
        (
            "only reviewers see the audit chains".into(),
            some("acme"),
            None
        )
    );
}

#[test]
fn approvers_see_their_customer() {
    let [
        (_, op),
        (_, rev),
        (_, apr),
        (_, ts),
        _,
        (_, eng),
        (_, gw),
        (_, edge),
    ] = callers();
    assert_eq!(customer_view(&apr), Some("acme"));
    for c in [op, rev, ts, eng, gw, edge] {
        assert_eq!(customer_view(&c), None, "{c:?}");
    }
}
