//! Operator API: customers, clusters, nodes, engineers' TOTP enrollment, local accounts
//! (customer approvers, reviewers) and API tokens.

mod accounts;
mod nodes;
mod tokens;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, patch, post};
use axum::{Json, Router};

use super::{Body, check_name, created, permit};
use crate::audit::AuditEvent;
use crate::auth::Caller;
use crate::authz::{Action, Scope, customer_view};
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store;
use accounts::{
    create_account, disable_account, disable_engineer, enable_account, enable_engineer,
    enroll_engineer,
};
use nodes::{create_node, list_nodes, update_node};
use sallyport_api::admin::{Cluster, Customer, NewCustomer};
use sallyport_api::identity::Whoami;
use tokens::{create_token, list_tokens, revoke_token};

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

async fn create_customer(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewCustomer>,
) -> ApiResult<(axum::http::StatusCode, Json<Customer>)> {
    operator_only(&b, &caller, Action::CreateCustomer).await?;
    check_name("customer", &req.id)?;
    let c = store::Customer {
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
    let own = customer_view(&caller);
    Ok(Json(
        all.into_iter()
            .filter(|c| own.is_none_or(|own| c.id == own))
            .collect(),
    ))
}

async fn create_cluster(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<Cluster>,
) -> ApiResult<(axum::http::StatusCode, Json<Cluster>)> {
    operator_only(&b, &caller, Action::CreateCluster).await?;
    check_name("cluster", &req.id)?;
    if !b.store.customer_exists(&req.customer).await? {
        return Err(ApiError::NotFound(format!("customer {:?}", req.customer)));
    }
    let c = req;
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
    let clusters = b.store.clusters(customer_view(&caller)).await?;
    Ok(Json(clusters))
}

async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(match caller {
        Caller::Operator { name } => Whoami::Operator { name },
        Caller::Reviewer { name } => Whoami::Reviewer { name },
        Caller::Approver { name, customer } => Whoami::Approver { name, customer },
        Caller::TicketSystem { name, customer } => Whoami::TicketSystem { name, customer },
        Caller::Engineer { uid, groups, mfa } => Whoami::Engineer {
            name: uid,
            groups,
            mfa,
        },
        Caller::Gateway { id, cluster } => Whoami::Gateway { name: id, cluster },
        // The edge checks at start that its token is an edge token of its own name.
        Caller::Edge { name } => Whoami::Edge { name },
    })
}
