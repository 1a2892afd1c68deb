//! The actions a caller may ask for, declared once: the enum, their list, and the name the
//! audit log gives each.

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
    /// Open a line a gateway sealed (`input_hidden`): the security team only.
    OpenHiddenInput => "open_hidden_input",
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
