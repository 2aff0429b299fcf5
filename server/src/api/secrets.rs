//! `/api/v1/secrets`: a repository's pipeline secrets. Setting and deleting
//! need an admin; listing shows names and settings, never values.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::{Json, Query};
use super::{ApiError, RepoCaller};
use crate::app::AppState;
use crate::pipeline::secrets::SecretError;

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::BadName(_) | SecretError::TooLarge => ApiError::BadRequest(e.to_string()),
            SecretError::Db(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    repo: String,
    name: String,
    value: String,
    /// Also for pull requests from forks (default: withheld from them).
    #[serde(default)]
    allow_pull_requests: bool,
}

pub async fn set(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<SetSecret>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    caller.check(&body.repo)?;
    let repo = app.repos.get(&body.repo).await?;
    app.secrets
        .set(repo.id, &body.name, &body.value, body.allow_pull_requests)
        .await?;
    tracing::info!(repo = %repo.name, secret = %body.name, by = %caller.user().username, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct Which {
    repo: String,
    name: Option<String>,
}

#[derive(Serialize)]
pub struct SecretView {
    name: String,
    allow_pull_requests: bool,
    updated_at: i64,
}

pub async fn list(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<Which>,
) -> Result<Json<Vec<SecretView>>, ApiError> {
    caller.check(&q.repo)?;
    let repo = app.repos.get(&q.repo).await?;
    Ok(Json(
        app.secrets
            .list(repo.id)
            .await?
            .into_iter()
            .map(|s| SecretView {
                name: s.name,
                allow_pull_requests: s.allow_pull_requests,
                updated_at: s.updated_at,
            })
            .collect(),
    ))
}

pub async fn delete(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<Which>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    caller.check(&q.repo)?;
    let repo = app.repos.get(&q.repo).await?;
    let name = q
        .name
        .ok_or_else(|| ApiError::BadRequest("name= is required".into()))?;
    if app.secrets.delete(repo.id, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "{} has no secret {name:?}",
            repo.name
        )))
    }
}
