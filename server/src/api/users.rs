//! `GET /api/v1/whoami`, `POST /api/v1/users` (admin).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::Json;
use super::{ApiCaller, ApiError, RepoCaller};
use crate::app::AppState;
use crate::auth::users::{self, Role, UserError};

#[derive(Serialize)]
pub struct WhoAmI {
    username: String,
    role: &'static str,
    scopes: Vec<&'static str>,
    repositories: String,
}

/// Any credential may ask about itself, a repository-limited token too.
pub async fn whoami(caller: RepoCaller) -> Json<WhoAmI> {
    let p = caller.principal().clone();
    Json(WhoAmI {
        role: p.user.role.as_str(),
        scopes: p.scopes.iter().map(|s| s.as_str()).collect(),
        repositories: p.repositories.as_str().to_owned(),
        username: p.user.username,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
}

#[derive(Serialize)]
pub struct CreatedUser {
    id: i64,
    username: String,
    role: &'static str,
}

pub async fn create(
    State(app): State<AppState>,
    caller: ApiCaller,
    Json(body): Json<NewUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    caller.require_admin()?;
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(r) => Role::parse(r).ok_or_else(|| {
            ApiError::BadRequest(format!("role {r:?} is not one of admin, user, viewer"))
        })?,
    };
    let user = users::create(&app.db, &body.username, &body.password, role)
        .await
        .map_err(|e| match e {
            UserError::Exists(_) => ApiError::Conflict(e.to_string()),
            UserError::Database(e) => e.into(),
            other => ApiError::BadRequest(other.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            id: user.id,
            username: user.username,
            role: user.role.as_str(),
        }),
    ))
}
