//! Operator API: customers, clusters, nodes, engineers' TOTP enrollment, local accounts
//! (customer approvers, reviewers) and API tokens.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Body, check_name, created, permit};
use crate::audit::AuditEvent;
use crate::auth::{Caller, Role, new_api_token, random_id, token_hash};
use crate::authz::{Action, Scope, customer_view};
use crate::directory::hash_argon2;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::{Account, ApiToken, Cluster, Customer, Node};
use crate::totp;

pub fn router() -> Router<Arc<Broker>> {
    Router::new()
        .route("/v1/customers", post(create_customer).get(list_customers))
        .route("/v1/clusters", post(create_cluster).get(list_clusters))
        .route(
            "/v1/clusters/{cluster}/nodes",
            post(create_node).get(list_nodes),
        )
        .route("/v1/clusters/{cluster}/nodes/{node}", patch(update_node))
        .route("/v1/engineers", post(enroll_engineer))
        .route("/v1/engineers/{name}/disable", post(disable_engineer))
        .route("/v1/engineers/{name}/enable", post(enable_engineer))
        .route("/v1/accounts/{name}/disable", post(disable_account))
        .route("/v1/accounts/{name}/enable", post(enable_account))
        .route("/v1/accounts", post(create_account))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/v1/whoami", get(whoami))
}

/// The operator's administration: `action` is one only the operator may do.
pub(super) async fn operator_only(b: &Broker, caller: &Caller, action: Action) -> ApiResult<()> {
    permit(b, caller, action, Scope::None).await
}

pub(super) async fn admin_event(
    b: &Broker,
    caller: &Caller,
    action: &str,
    target: &str,
    fields: [Option<&str>; 4],
) -> ApiResult<()> {
    let [customer, cluster, node, engineer] = fields.map(|f| f.map(str::to_string));
    b.store
        .audit(&AuditEvent::AdminChange {
            action: action.into(),
            target: target.into(),
            by: caller.label(),
            customer,
            cluster,
            node,
            engineer,
        })
        .await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCustomer {
    id: String,
    name: Option<String>,
}

async fn create_customer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewCustomer>,
) -> ApiResult<(axum::http::StatusCode, Json<Customer>)> {
    operator_only(&b, &caller, Action::CreateCustomer).await?;
    check_name("customer", &req.id)?;
    let c = Customer {
        name: req.name.unwrap_or_else(|| req.id.clone()),
        id: req.id,
    };
    b.store.create_customer(&c).await?;
    admin_event(
        &b,
        &caller,
        "create_customer",
        &c.id,
        [Some(&c.id), None, None, None],
    )
    .await?;
    Ok(created(c))
}

async fn list_customers(
    State(b): State<Arc<Broker>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Customer>>> {
    permit(&b, &caller, Action::ListCustomers, Scope::None).await?;
    let all = b.store.customers().await?;
    Ok(Json(match customer_view(&caller) {
        None => all,
        Some(own) => all.into_iter().filter(|c| c.id == own).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCluster {
    id: String,
    customer: String,
}

async fn create_cluster(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewCluster>,
) -> ApiResult<(axum::http::StatusCode, Json<Cluster>)> {
    operator_only(&b, &caller, Action::CreateCluster).await?;
    check_name("cluster", &req.id)?;
    if !b.store.customer_exists(&req.customer).await? {
        return Err(ApiError::NotFound(format!("customer {:?}", req.customer)));
    }
    let c = Cluster {
        id: req.id,
        customer: req.customer,
    };
    b.store.create_cluster(&c).await?;
    admin_event(
        &b,
        &caller,
        "create_cluster",
        &c.id,
        [Some(&c.customer), Some(&c.id), None, None],
    )
    .await?;
    Ok(created(c))
}

async fn list_clusters(
    State(b): State<Arc<Broker>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Cluster>>> {
    permit(&b, &caller, Action::ListClusters, Scope::None).await?;
    Ok(Json(b.store.clusters(customer_view(&caller)).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    name: String,
    address: String,
    #[serde(default = "default_port")]
    port: u16,
    /// The node's SSH host public keys (OpenSSH lines); the gateway accepts only these.
    #[serde(default)]
    host_keys: Vec<String>,
    /// Let the gateway pin the first key of a node that has no registered key (audited).
    #[serde(default)]
    trust_on_first_use: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeChange {
    address: Option<String>,
    port: Option<u16>,
    /// Replaces the registered keys (`[]` removes them all).
    host_keys: Option<Vec<String>>,
    trust_on_first_use: Option<bool>,
}

fn default_port() -> u16 {
    22
}

/// At most this many host keys per node (one per key type is the usual).
const MAX_HOST_KEYS: usize = 16;

fn check_address(address: &str) -> ApiResult<()> {
    if address.is_empty()
        || address.len() > 253
        || address.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::BadRequest("invalid node address".into()));
    }
    Ok(())
}

/// The node's host keys as the gateway compares them: each a real OpenSSH public key (no
/// certificate, no private key), written `<algorithm> <base64>` without its comment, once each.
pub(crate) fn check_host_keys(lines: &[String]) -> ApiResult<Vec<String>> {
    if lines.len() > MAX_HOST_KEYS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_HOST_KEYS} host keys per node"
        )));
    }
    let mut keys: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let line = line.trim();
        let algorithm = line.split_whitespace().next().unwrap_or_default();
        if algorithm.ends_with("-cert-v01@openssh.com") {
            return Err(ApiError::BadRequest(format!(
                "host key {n} is an SSH certificate, not a public key: register the node's host \
                 public key (its ssh_host_*_key.pub), or the CA that signs its host certificates \
                 as the cluster's node_host_ca"
            )));
        }
        let key = russh::keys::PublicKey::from_openssh(line).map_err(|_| {
            ApiError::BadRequest(format!(
                "host key {n} is not an OpenSSH public key line (`ssh-ed25519 AAAA... [comment]`, \
                 as in the node's /etc/ssh/ssh_host_ed25519_key.pub)"
            ))
        })?;
        if let russh::keys::Algorithm::Other(_) = key.algorithm() {
            return Err(ApiError::BadRequest(format!(
                "host key {n} is of an unknown type ({})",
                crate::audit::sanitize(algorithm)
            )));
        }
        let bare = russh::keys::PublicKey::new(key.key_data().clone(), "")
            .to_openssh()
            .map_err(|_| ApiError::BadRequest(format!("host key {n} cannot be written")))?;
        if !keys.contains(&bare) {
            keys.push(bare);
        }
    }
    Ok(keys)
}

async fn create_node(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
    Body(req): Body<NewNode>,
) -> ApiResult<(axum::http::StatusCode, Json<Node>)> {
    operator_only(&b, &caller, Action::CreateNode).await?;
    check_name("node", &req.name)?;
    check_address(&req.address)?;
    let host_keys = check_host_keys(&req.host_keys)?;
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&cluster)
        )));
    };
    let n = Node {
        cluster: c.id.clone(),
        name: req.name,
        address: req.address,
        port: req.port,
        host_keys,
        trust_on_first_use: req.trust_on_first_use,
    };
    b.store.create_node(&n).await?;
    admin_event(
        &b,
        &caller,
        "create_node",
        &n.name,
        [Some(&c.customer), Some(&c.id), Some(&n.name), None],
    )
    .await?;
    Ok(created(n))
}

/// Change a node: its address or port, its registered host keys (replaced as a whole), whether
/// the gateway may trust its key on first use. What is not named stays.
async fn update_node(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path((cluster, node)): Path<(String, String)>,
    Body(req): Body<NodeChange>,
) -> ApiResult<Json<Node>> {
    operator_only(&b, &caller, Action::UpdateNode).await?;
    if let Some(a) = &req.address {
        check_address(a)?;
    }
    let host_keys = req.host_keys.as_deref().map(check_host_keys).transpose()?;
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound(format!(
            "cluster {:?}",
            crate::audit::sanitize(&cluster)
        )));
    };
    let Some(mut n) = b.store.node(&c.id, &node).await? else {
        return Err(ApiError::NotFound(format!(
            "node {:?} of cluster {}",
            crate::audit::sanitize(&node),
            c.id
        )));
    };
    if let Some(a) = req.address {
        n.address = a;
    }
    if let Some(p) = req.port {
        n.port = p;
    }
    if let Some(k) = host_keys {
        n.host_keys = k;
    }
    if let Some(t) = req.trust_on_first_use {
        n.trust_on_first_use = t;
    }
    if !b.store.update_node(&n).await? {
        return Err(ApiError::NotFound(format!("node {:?}", n.name)));
    }
    admin_event(
        &b,
        &caller,
        "update_node",
        &n.name,
        [Some(&c.customer), Some(&c.id), Some(&n.name), None],
    )
    .await?;
    Ok(Json(n))
}

async fn list_nodes(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Path(cluster): Path<String>,
) -> ApiResult<Json<Vec<Node>>> {
    let Some(c) = b.store.cluster(&cluster).await? else {
        return Err(ApiError::NotFound("cluster".into()));
    };
    let scope = Scope::Cluster {
        customer: Some(&c.customer),
        cluster: &c.id,
    };
    permit(&b, &caller, Action::ListNodes, scope).await?;
    Ok(Json(b.store.nodes(&c.id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollEngineer {
    uid: String,
    /// Replace an existing enrollment (a lost authenticator).
    #[serde(default)]
    replace: bool,
}

#[derive(Serialize)]
struct Enrollment {
    user: String,
    totp_secret: String,
    otpauth_uri: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DisableInput {
    #[serde(default)]
    reason: Option<String>,
}

async fn disable_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    Body(req): Body<DisableInput>,
) -> ApiResult<Json<Value>> {
    disable(&b, &caller, "engineer", &name, req.reason).await
}

async fn enable_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<Value>> {
    enable(&b, &caller, "engineer", &name).await
}

async fn disable_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
    Body(req): Body<DisableInput>,
) -> ApiResult<Json<Value>> {
    disable(&b, &caller, "account", &name, req.reason).await
}

async fn enable_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<Value>> {
    enable(&b, &caller, "account", &name).await
}

/// Disable an engineer or an account (`kind`): every login is refused until it is enabled, the
/// session tokens already issued are revoked and, for an engineer, every certificate (open
/// sessions end). Audited.
async fn disable(
    b: &Arc<Broker>,
    caller: &Caller,
    kind: &str,
    name: &str,
    reason: Option<String>,
) -> ApiResult<Json<Value>> {
    let action = if kind == "engineer" {
        Action::DisableEngineer
    } else {
        Action::DisableAccount
    };
    operator_only(b, caller, action).await?;
    check_name(kind, name)?;
    let reason = reason.unwrap_or_else(|| "disabled by the operator".into());
    if reason.len() > 1024 {
        return Err(ApiError::BadRequest(
            "the reason is longer than 1024 bytes".into(),
        ));
    }
    let principal = crate::auth::principal(kind, name);
    if !b
        .store
        .disable(&principal, &caller.label(), &reason)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "{kind} {name:?} is disabled already"
        )));
    }
    let revoked = if kind == "engineer" {
        // Its certificates, and its session tokens with them.
        crate::api::certs::revoke_and_audit(
            b,
            crate::store::RevokeScope::Engineer,
            name,
            &caller.label(),
            &reason,
        )
        .await?
        .len()
    } else {
        b.store.revoke_sessions(&principal).await?;
        0
    };
    let engineer = (kind == "engineer").then_some(name);
    admin_event(b, caller, action.name(), name, [None, None, None, engineer]).await?;
    Ok(Json(
        json!({kind: name, "disabled": true, "reason": reason, "certificates_revoked": revoked}),
    ))
}

/// Enable a disabled engineer or account again. Audited.
async fn enable(
    b: &Arc<Broker>,
    caller: &Caller,
    kind: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    let action = if kind == "engineer" {
        Action::EnableEngineer
    } else {
        Action::EnableAccount
    };
    operator_only(b, caller, action).await?;
    check_name(kind, name)?;
    if !b.store.enable(&crate::auth::principal(kind, name)).await? {
        return Err(ApiError::NotFound(format!("a disabled {kind} {name:?}")));
    }
    let engineer = (kind == "engineer").then_some(name);
    admin_event(b, caller, action.name(), name, [None, None, None, engineer]).await?;
    Ok(Json(json!({kind: name, "disabled": false})))
}

async fn enroll_engineer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<EnrollEngineer>,
) -> ApiResult<(axum::http::StatusCode, Json<Enrollment>)> {
    operator_only(&b, &caller, Action::EnrollEngineer).await?;
    check_name("engineer", &req.uid)?;
    let secret = totp::new_secret();
    b.store
        .set_engineer_totp(
            &req.uid,
            &b.totp_box.seal(&format!("engineer:{}", req.uid), &secret),
            req.replace,
        )
        .await?;
    admin_event(
        &b,
        &caller,
        "enroll_engineer_totp",
        &req.uid,
        [None, None, None, Some(&req.uid)],
    )
    .await?;
    Ok(created(Enrollment {
        otpauth_uri: totp::otpauth_uri(&secret, &req.uid),
        user: req.uid,
        totp_secret: secret,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
    role: String,
    customer: Option<String>,
    password: SecretString,
}

async fn create_account(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewAccount>,
) -> ApiResult<(axum::http::StatusCode, Json<Enrollment>)> {
    operator_only(&b, &caller, Action::CreateAccount).await?;
    check_name("user name", &req.username)?;
    let role = Role::parse(&req.role);
    match (role, &req.customer) {
        (Some(Role::Approver), Some(c)) => {
            if !b.store.customer_exists(c).await? {
                return Err(ApiError::NotFound(format!("customer {c:?}")));
            }
        }
        (Some(Role::Reviewer), None) => {}
        (Some(Role::Approver), None) => {
            return Err(ApiError::BadRequest(
                "an approver belongs to a customer: set `customer`".into(),
            ));
        }
        (Some(Role::Reviewer), Some(_)) => {
            return Err(ApiError::BadRequest(
                "a reviewer belongs to no customer".into(),
            ));
        }
        (Some(Role::Operator | Role::TicketSystem | Role::Edge | Role::Engineer) | None, _) => {
            return Err(ApiError::BadRequest(
                "role must be `approver` or `reviewer`".into(),
            ));
        }
    }
    let Some(role) = role else {
        return Err(ApiError::BadRequest(
            "role must be `approver` or `reviewer`".into(),
        ));
    };
    if req.password.expose_secret().chars().count() < 12 {
        return Err(ApiError::BadRequest(
            "the password must be at least 12 characters".into(),
        ));
    }
    let secret = totp::new_secret();
    let account = Account {
        username: req.username.clone(),
        role,
        customer: req.customer.clone(),
        password_hash: hash_argon2(req.password.expose_secret())?,
        totp_secret: b
            .totp_box
            .seal(&format!("account:{}", req.username), &secret),
    };
    b.store.create_account(&account).await?;
    admin_event(
        &b,
        &caller,
        &format!("create_{}", req.role),
        &req.username,
        [req.customer.as_deref(), None, None, None],
    )
    .await?;
    Ok(created(Enrollment {
        otpauth_uri: totp::otpauth_uri(&secret, &req.username),
        user: req.username,
        totp_secret: secret,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    customer: Option<String>,
    /// A ticket-system token for every customer's tickets (the vendor's own ticket system):
    /// an explicit choice, named in the audit event; otherwise it needs `customer`.
    #[serde(default)]
    all_customers: bool,
}

async fn list_tokens(State(b): State<Arc<Broker>>, caller: Caller) -> ApiResult<Json<Value>> {
    operator_only(&b, &caller, Action::ListTokens).await?;
    Ok(Json(json!({"tokens": b.store.tokens().await?})))
}

/// Revoke an API token (an edge's, the ticket system's, an approver's script's...): it stops
/// working at once. Audited with the token's name and role.
async fn revoke_token(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<Value>> {
    operator_only(&b, &caller, Action::RevokeToken).await?;
    check_name("token id", &id)?;
    let Some(t) = b.store.revoke_token(&id).await? else {
        return Err(ApiError::NotFound(format!(
            "API token {id:?} (or it was revoked already)"
        )));
    };
    admin_event(
        &b,
        &caller,
        &format!("revoke_{}_token", t.role),
        &t.name,
        [t.customer.as_deref(), None, None, None],
    )
    .await?;
    Ok(Json(
        json!({"id": t.id, "name": t.name, "role": t.role, "customer": t.customer, "revoked": true}),
    ))
}

async fn create_token(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewToken>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    operator_only(&b, &caller, Action::CreateToken).await?;
    check_name("token name", &req.name)?;
    let role = Role::parse(&req.role);
    match (role, &req.customer) {
        // A ticket system may be scoped to one customer (a customer's own ticketing).
        (Some(Role::Approver | Role::TicketSystem), Some(c)) => {
            if !b.store.customer_exists(c).await? {
                return Err(ApiError::NotFound(format!("customer {c:?}")));
            }
        }
        // An edge's token: its name is the edge's name, and its audit chain is `edge:<name>`
        // (give each edge its own name: two edges writing one chain fork it).
        (Some(Role::TicketSystem), None) if !req.all_customers => {
            return Err(ApiError::BadRequest(
                "a ticket-system token writes one customer's tickets: set `customer`, or \
                 `all_customers: true` for a ticket system that serves every customer"
                    .into(),
            ));
        }
        (Some(Role::Operator | Role::Reviewer | Role::TicketSystem | Role::Edge), None) => {}
        (Some(Role::Approver), None) => {
            return Err(ApiError::BadRequest(
                "an approver token belongs to a customer: set `customer`".into(),
            ));
        }
        (Some(Role::Operator | Role::Reviewer | Role::Edge), Some(_)) => {
            return Err(ApiError::BadRequest(
                "only approver and ticket_system tokens belong to a customer".into(),
            ));
        }
        // Engineers log in; they have no API tokens.
        (Some(Role::Engineer) | None, _) => {
            return Err(ApiError::BadRequest(
                "role must be one of operator, reviewer, approver, ticket_system, edge".into(),
            ));
        }
    }
    let Some(role) = role else {
        return Err(ApiError::BadRequest(
            "role must be one of operator, reviewer, approver, ticket_system, edge".into(),
        ));
    };
    let token = new_api_token();
    let t = ApiToken {
        id: random_id(),
        role,
        customer: req.customer,
        name: req.name,
    };
    b.store.create_token(&t, &token_hash(&token)).await?;
    admin_event(
        &b,
        &caller,
        &if t.role == Role::TicketSystem && t.customer.is_none() {
            "create_ticket_system_token_for_every_customer".to_string()
        } else {
            format!("create_{}_token", t.role)
        },
        &t.name,
        [t.customer.as_deref(), None, None, None],
    )
    .await?;
    Ok(created(
        json!({"id": t.id, "name": t.name, "role": t.role, "customer": t.customer, "token": token}),
    ))
}

async fn whoami(caller: Caller) -> Json<Value> {
    let v = match caller {
        Caller::Operator { name } => json!({"role": "operator", "name": name}),
        Caller::Reviewer { name } => json!({"role": "reviewer", "name": name}),
        Caller::Approver { name, customer } => {
            json!({"role": "approver", "name": name, "customer": customer})
        }
        Caller::TicketSystem { name, customer } => {
            json!({"role": "ticket_system", "name": name, "customer": customer})
        }
        Caller::Engineer { uid, groups, mfa } => {
            json!({"role": "engineer", "name": uid, "groups": groups, "mfa": mfa})
        }
        Caller::Gateway { id, cluster } => {
            json!({"role": "gateway", "name": id, "cluster": cluster})
        }
        // The edge checks at start that its token is an edge token of its own name.
        Caller::Edge { name } => json!({"role": "edge", "name": name}),
    };
    Json(v)
}
