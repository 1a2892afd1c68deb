//! API tokens: made, listed (never their secrets) and revoked by the operator.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::super::{Body, check_name, created};
use super::{admin_event, operator_only};
use crate::auth::{Caller, Role, new_api_token, random_id, token_hash};
use crate::authz::Action;
use crate::error::{ApiError, ApiResult};
use crate::state::Broker;
use crate::store::ApiToken;
use sallyport_api::admin::{NewToken, Token, TokenCreated, TokenRevoked, Tokens};

pub(super) async fn list_tokens(
    State(b): State<Arc<Broker>>,
    caller: Caller,
) -> ApiResult<Json<Tokens>> {
    operator_only(&b, &caller, Action::ListTokens).await?;
    let tokens = b.store.tokens().await?;
    let tokens: Vec<Token> = serde_json::from_value(serde_json::Value::Array(tokens))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(Tokens { tokens }))
}

/// Revoke an API token (an edge's, the ticket system's, an approver's script's...): it stops
/// working at once. Audited with the token's name and role.
pub(super) async fn revoke_token(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> ApiResult<Json<TokenRevoked>> {
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
    Ok(Json(TokenRevoked {
        id: t.id,
        name: t.name,
        role: t.role.as_str().into(),
        customer: t.customer,
        revoked: true,
    }))
}

pub(super) async fn create_token(
    State(b): State<Arc<Broker>>,
    caller: Caller,
    Body(req): Body<NewToken>,
) -> ApiResult<(axum::http::StatusCode, Json<TokenCreated>)> {
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
    Ok(created(TokenCreated {
        id: t.id,
        name: t.name,
        role: t.role.as_str().into(),
        customer: t.customer,
        token,
    }))
}
