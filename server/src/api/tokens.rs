//! `POST /api/v1/tokens`: create an API token for the caller, with at most the
//! caller's own scopes. A repository-limited token cannot make tokens at all
//! ([`ApiCaller`] refuses it), so no token reaches further than its maker.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::Json;
use super::{ApiCaller, ApiError};
use crate::app::AppState;
use crate::auth::{api_tokens, Scope};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    scopes: Vec<String>,
    #[serde(default = "all")]
    repository: String,
}

fn all() -> String {
    "*".into()
}

#[derive(Serialize)]
pub struct CreatedToken {
    id: i64,
    name: String,
    token: String,
    scopes: Vec<&'static str>,
    repository: String,
}

pub async fn create(
    State(app): State<AppState>,
    caller: ApiCaller,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "token name must be 1 to 100 characters".into(),
        ));
    }
    if body.scopes.is_empty() {
        return Err(ApiError::BadRequest(
            "at least one scope is required (pull, push, delete, admin)".into(),
        ));
    }
    let mut scopes = Vec::new();
    for s in &body.scopes {
        let scope = Scope::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown scope {s:?}; use pull, push, delete or admin"
            ))
        })?;
        if !caller.0.has(scope) {
            return Err(ApiError::Forbidden(format!(
                "you cannot grant scope {s:?}: your credential does not have it"
            )));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    crate::auth::check_pattern(&body.repository)
        .map_err(|e| ApiError::BadRequest(format!("repository pattern: {e}")))?;
    let created =
        api_tokens::create(&app.db, caller.0.user.id, name, &scopes, &body.repository).await?;
    tracing::info!(user = %caller.0.user.username, token_id = created.id, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: created.id,
            name: name.to_owned(),
            token: created.token,
            scopes: scopes.iter().map(|s| s.as_str()).collect(),
            repository: body.repository,
        }),
    ))
}
