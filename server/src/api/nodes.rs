//! The node protocol under `/api/v1/node/` (see `runner::node_protocol`):
//! `join` takes a cluster's join token; every other route a node's token
//! (`Authorization: Bearer sln_…`), and user credentials reach none of them.

use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use slipway_runner::node_protocol::{JoinRequest, LogAck, NodeStatus, LONG_POLL_SECS};

use super::extract::{Bytes, Json, Path, Query};
use super::ApiError;
use crate::app::AppState;
use crate::deploy::nodes;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/join", post(join))
        .route("/desired", get(desired))
        .route("/status", post(status))
        .route(
            "/instances/{name}/log",
            post(append_log).layer(axum::extract::DefaultBodyLimit::max(1 << 20)),
        )
}

/// The node a request comes from.
pub struct NodeCaller(i64);

impl FromRequestParts<AppState> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| t.starts_with("sln_"))
            .ok_or_else(|| {
                ApiError::Unauthenticated("node routes need `Authorization: Bearer sln_…`".into())
            })?;
        nodes::authenticate(&app.db, token)
            .await?
            .map(NodeCaller)
            .ok_or_else(|| ApiError::Unauthenticated("unknown node token".into()))
    }
}

async fn join(
    State(app): State<AppState>,
    Json(body): Json<JoinRequest>,
) -> Result<Response, ApiError> {
    let joined = nodes::join(&app.db, &body).await.map_err(|e| match e {
        crate::deploy::DeployError::Refused(m) => ApiError::Unauthenticated(m),
        other => other.into(),
    })?;
    tracing::info!(node = %body.name, cluster = %joined.cluster, "node joined");
    app.deploys.wake();
    Ok((StatusCode::CREATED, Json(joined)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct After {
    after: Option<i64>,
    wait: Option<u64>,
}

async fn desired(
    State(app): State<AppState>,
    NodeCaller(node): NodeCaller,
    Query(q): Query<After>,
) -> Result<Response, ApiError> {
    let wait = Duration::from_secs(q.wait.unwrap_or(LONG_POLL_SECS).min(LONG_POLL_SECS));
    match nodes::wait_for_change(&app, node, q.after.unwrap_or(0), wait).await? {
        Some(desired) => Ok(Json(desired).into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn status(
    State(app): State<AppState>,
    NodeCaller(node): NodeCaller,
    Json(body): Json<NodeStatus>,
) -> Result<StatusCode, ApiError> {
    if body.instances.len() > 10_000 {
        return Err(ApiError::BadRequest(
            "a status lists at most 10000 instances".into(),
        ));
    }
    nodes::report(&app, node, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offset {
    offset: u64,
}

async fn append_log(
    State(app): State<AppState>,
    NodeCaller(node): NodeCaller,
    Path(name): Path<String>,
    Query(q): Query<Offset>,
    Bytes(body): Bytes,
) -> Result<Json<LogAck>, ApiError> {
    let known: Option<i64> =
        sqlx::query_scalar("SELECT id FROM instances WHERE node_id = ? AND name = ?")
            .bind(node)
            .bind(&name)
            .fetch_optional(&app.db)
            .await?;
    if known.is_none() {
        return Err(ApiError::NotFound(format!(
            "no instance {name:?} on this node"
        )));
    }
    let logs = app.instance_logs.clone();
    let length = tokio::task::spawn_blocking(move || logs.append(&name, q.offset, &body))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(format!("writing an instance log: {e}")))?;
    Ok(Json(LogAck { length }))
}
