//! The REST API under `/api/v1`. Every route authenticates with [`ApiCaller`]
//! (Basic password, Basic or Bearer API token) and checks its scope.

pub mod pipelines;
mod queue;
mod registry_gc;
mod repos;
mod runner;
mod secrets;
mod tokens;
mod users;
mod webhooks;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use crate::app::AppState;
use crate::auth::{credentials, AuthError, Principal};

/// The API described (hand-written; `tests/api_authz.rs` checks every route
/// it tests is in it, and that every documented path exists).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/whoami", get(users::whoami))
        .route("/users", post(users::create))
        .route("/tokens", post(tokens::create))
        .route("/registry/gc", post(registry_gc::run))
        .route("/repos", get(repos::list).post(repos::create))
        .route("/repos/forge", post(repos::set_forge))
        .route("/repos/notify", post(repos::set_notify))
        .route("/repos/limits", post(repos::set_limits))
        .route("/pipelines", get(pipelines::list).post(pipelines::trigger))
        .route("/pipelines/{id}", get(pipelines::show))
        .route("/pipelines/{id}/cancel", post(pipelines::cancel))
        .route("/pipelines/{id}/rerun", post(pipelines::rerun))
        .route("/jobs/{job}/steps/{position}/log", get(pipelines::log))
        .route(
            "/jobs/{job}/steps/{position}/log/stream",
            get(pipelines::log_stream),
        )
        .route(
            "/jobs/{job}/steps/{position}/log/search",
            get(pipelines::log_search),
        )
        .route("/jobs/{job}/artifacts", get(pipelines::artifacts))
        .route("/runner-tokens", post(runner::create_registration_token))
        .route("/queue", get(queue::list))
        .route("/runners", get(queue::runners))
        .route("/webhooks/{repo}", post(webhooks::receive))
        .route(
            "/secrets",
            get(secrets::list)
                .post(secrets::set)
                .delete(secrets::delete),
        )
        .nest("/runner", runner::router())
}

/// REST API errors, as `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            axum::Json(ErrorBody {
                error: ErrorDetail { code, message },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"slipway\"".parse().expect("valid header"),
            );
        }
        response
    }
}

/// The authenticated caller of an API route.
pub struct ApiCaller(pub Principal);

impl ApiCaller {
    /// Starting and cancelling pipelines: a credential that may push.
    pub fn require_developer(&self) -> Result<(), ApiError> {
        if self.0.has(crate::auth::Scope::Push) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} may only read: starting or cancelling pipelines needs the push scope",
                self.0.user.username
            )))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{} is not an admin, or this token lacks the admin scope",
                self.0.user.username
            )))
        }
    }
}

/// The web UI's session cookie as API credentials. A request that changes
/// something must also carry the session's CSRF token (`X-CSRF-Token`), which
/// another site's page cannot read.
async fn session_caller(parts: &Parts, app: &AppState) -> Result<ApiCaller, ApiError> {
    use crate::auth::sessions;
    let missing = || {
        ApiError::Unauthenticated(
            "authentication required: send Basic credentials or an API token".into(),
        )
    };
    let token = sessions::cookie(&parts.headers, sessions::COOKIE).ok_or_else(missing)?;
    let (user, csrf) = sessions::lookup(&app.db, token)
        .await?
        .ok_or_else(missing)?;
    let safe = matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !safe {
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !sessions::same(sent, &csrf) {
            return Err(ApiError::Forbidden(
                "a session-authenticated change needs the session's X-CSRF-Token".into(),
            ));
        }
    }
    Ok(ApiCaller(crate::auth::Principal::with_password(user)))
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let creds =
            credentials(&parts.headers).map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
        let Some(creds) = creds else {
            return session_caller(parts, app).await;
        };
        match app.auth.principal(&creds).await {
            Ok(Some(principal)) => Ok(ApiCaller(principal)),
            Ok(None) => Err(ApiError::Unauthenticated(
                "bearer value is not an API token".into(),
            )),
            Err(AuthError::Database(e)) => Err(e.into()),
            Err(e) => Err(ApiError::Unauthenticated(e.to_string())),
        }
    }
}
