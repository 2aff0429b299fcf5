//! The REST API under `/api/v1`. Every route authenticates with [`ApiCaller`]
//! or [`RepoCaller`] (Basic password, Basic or Bearer API token, or the web
//! session) and checks its scope. API tokens may be limited to repositories
//! (`team/*`): [`ApiCaller`], for routes not about one repository, refuses
//! them; [`RepoCaller`] lets them in and its handler checks the repository.

pub(crate) mod deploys;
mod extract;
mod gates;
mod nodes;
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
        .route("/repos/pull-allow", post(repos::set_pull_allow))
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
        .route(
            "/clusters",
            get(deploys::list_clusters).post(deploys::add_cluster),
        )
        .route("/environments", get(deploys::list_environments))
        .route("/environments/cluster", post(deploys::bind_cluster))
        .route(
            "/environments/secrets",
            get(deploys::list_secrets).post(deploys::set_secret),
        )
        .route(
            "/environments/protection",
            get(gates::get_protection).put(gates::set_protection),
        )
        .route("/deployments", get(deploys::list_deployments))
        .route("/deployments/{id}/approve", post(gates::approve))
        .route("/deployments/{id}/reject", post(gates::reject))
        .route("/deployments/{id}/abort", post(deploys::abort))
        .route("/audit", get(gates::audit_log))
        .route("/trace", get(gates::trace_of_environment))
        .route("/deployments/{id}", get(deploys::show_deployment))
        .route("/deployments/{id}/events", get(deploys::deployment_events))
        .route("/deployments/promote", post(deploys::promote))
        .route("/deployments/rollback", post(deploys::rollback))
        .route("/instances/{name}/log", get(deploys::instance_log))
        .route("/instances/{name}/trace", get(gates::trace_of_instance))
        .nest("/runner", runner::router())
        .nest("/node", nodes::router())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
}

async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no API route {}", uri.path()))
}

async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{} does not take {method}", uri.path()))
}

/// REST API errors, as `{"error": {"code", "message", "in", "field"}}`
/// (`in` and `field` only where one part of the request is at fault). The
/// one envelope of every error of `/api/v1`, webhooks and the runner
/// protocol included.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    /// A value the handler refuses, in a named part of the request.
    #[error("{message}")]
    Invalid {
        part: Part,
        field: String,
        message: String,
    },
    /// A request the extractors (`api::extract`) could not read.
    #[error("{}", .0.message)]
    Input(Input),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 400 `bad_request` about `field` in `part`.
    pub fn invalid(part: Part, field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            part,
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Where in a request a problem is.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Path,
    Query,
    Header,
    Body,
}

/// A refusal of the extractors: its status (400, 413, 415 or 422), code
/// and where.
#[derive(Debug)]
pub struct Input {
    status: StatusCode,
    code: &'static str,
    part: Part,
    field: Option<String>,
    message: String,
}

impl Input {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        part: Part,
        field: Option<String>,
        message: String,
    ) -> Input {
        Input {
            status,
            code,
            part,
            field,
            message,
        }
    }
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
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    part: Option<Part>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

/// The envelope with any status and code (webhooks answer their forge's
/// refusals with it too).
pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    envelope(status, code, message, None, None)
}

fn envelope(
    status: StatusCode,
    code: &str,
    message: String,
    part: Option<Part>,
    field: Option<&str>,
) -> Response {
    (
        status,
        extract::Json(ErrorBody {
            error: ErrorDetail {
                code,
                message,
                part,
                field,
            },
        }),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, part, field) = match &self {
            ApiError::Unauthenticated(_) => {
                (StatusCode::UNAUTHORIZED, "unauthenticated", None, None)
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None, None),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None, None),
            ApiError::Invalid { part, field, .. } => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                Some(*part),
                Some(field.as_str()),
            ),
            ApiError::Input(input) => (
                input.status,
                input.code,
                Some(input.part),
                input.field.as_deref(),
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None, None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None, None),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                None,
            ),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None, None),
        };
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "API request failed");
                "internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = envelope(status, code, message, part, field);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"slipway\"".parse().expect("valid header"),
            );
        }
        response
    }
}

/// A route's permission check, shared by both callers.
fn require_developer(p: &Principal) -> Result<(), ApiError> {
    if p.has(crate::auth::Scope::Push) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} may only read: starting or cancelling pipelines needs the push scope",
            p.user.username
        )))
    }
}

fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "{} is not an admin, or this token lacks the admin scope",
            p.user.username
        )))
    }
}

/// The caller of a route that is not about one repository (users, tokens,
/// runners, registry GC, metrics). Credentials limited to some repositories
/// are refused here, so a route is closed to them unless it takes
/// [`RepoCaller`] and checks the repository it is about.
pub struct ApiCaller(pub Principal);

impl ApiCaller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        require_admin(&self.0)
    }
}

/// The caller of a route about one repository, or of a list of things that
/// belong to repositories. The credential may be limited to some
/// repositories (an API token's pattern): the handler checks the repository
/// it acts on with [`check`](Self::check), [`check_pipeline`](Self::check_pipeline)
/// or [`check_job`](Self::check_job), and filters lists with
/// [`sees`](Self::sees) or [`sql_scope`](Self::sql_scope). The principal is
/// private, so a handler cannot act as the user without going through here.
pub struct RepoCaller(Principal);

impl RepoCaller {
    pub fn user(&self) -> &crate::auth::users::User {
        &self.0.user
    }

    /// An admin by role, and by scope when the credential is a token.
    pub fn is_admin(&self) -> bool {
        self.0.is_admin()
    }

    pub fn principal(&self) -> &Principal {
        &self.0
    }

    pub fn require_developer(&self) -> Result<(), ApiError> {
        require_developer(&self.0)
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        require_admin(&self.0)
    }

    /// An admin whose credential is not limited to repositories: for
    /// settings that make the server contact a URL of the caller's choosing
    /// with its own network position and credentials (`what` says which).
    pub fn require_unlimited_admin(&self, what: &str) -> Result<(), ApiError> {
        require_admin(&self.0)?;
        if self.0.repositories.is_all() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this token is limited to repositories {}; {what} needs an admin not limited \
             to repositories",
            self.0.repositories.as_str()
        )))
    }

    /// The credential reaches `repo`.
    pub fn sees(&self, repo: &str) -> bool {
        self.0.repositories.matches(repo)
    }

    /// Refuse a repository outside the credential's pattern.
    pub fn check(&self, repo: &str) -> Result<(), ApiError> {
        if self.sees(repo) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this token is limited to repositories {}; {repo} is outside it",
                self.0.repositories.as_str()
            )))
        }
    }

    /// Refuse a pull allowlist for `repo` that would let its pipelines pull
    /// what the credential does not reach: each pattern must lie within the
    /// credential's own pattern, be already on the list (set by someone
    /// else), or be a default every new repository gets (`library/*`).
    /// Otherwise an `a/*` admin could allow `a/app` `*` and pull any
    /// repository with its job tokens.
    pub fn check_pull_allow(
        &self,
        repo: &crate::pipeline::repo::GitRepo,
        patterns: &[String],
    ) -> Result<(), ApiError> {
        let mine = &self.0.repositories;
        let beyond: Vec<&str> = patterns
            .iter()
            .filter(|p| {
                !mine.covers(&slipway_registry::access::RepoPattern::new(p.as_str()))
                    && !repo.pull_allow.contains(p)
                    && !crate::pipeline::pull_allow::DEFAULT.contains(&p.as_str())
            })
            .map(String::as_str)
            .collect();
        if beyond.is_empty() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "this token is limited to repositories {}; pull allowlist pattern{} {} of {} \
             reach{} beyond it (an admin not limited to repositories may allow {})",
            mine.as_str(),
            if beyond.len() == 1 { "" } else { "s" },
            beyond.join(", "),
            repo.name,
            if beyond.len() == 1 { "es" } else { "" },
            if beyond.len() == 1 { "it" } else { "them" },
        )))
    }

    /// Refuse a pipeline of a repository outside the credential's pattern
    /// (an unknown pipeline is left to the handler's 404).
    pub async fn check_pipeline(&self, app: &AppState, id: i64) -> Result<(), ApiError> {
        if self.0.repositories.is_all() {
            return Ok(());
        }
        let repo: Option<String> = sqlx::query_scalar(
            "SELECT r.name FROM pipelines p JOIN git_repos r ON r.id = p.repo_id WHERE p.id = ?",
        )
        .bind(id)
        .fetch_optional(&app.db)
        .await?;
        repo.map_or(Ok(()), |r| self.check(&r))
    }

    /// Refuse a job of a repository outside the credential's pattern (an
    /// unknown job is left to the handler's 404).
    pub async fn check_job(&self, app: &AppState, job: i64) -> Result<(), ApiError> {
        if self.0.repositories.is_all() {
            return Ok(());
        }
        let repo: Option<String> = sqlx::query_scalar(
            "SELECT r.name FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
             JOIN git_repos r ON r.id = p.repo_id WHERE j.id = ?",
        )
        .bind(job)
        .fetch_optional(&app.db)
        .await?;
        repo.map_or(Ok(()), |r| self.check(&r))
    }

    /// The pattern as SQL can test a repository name against it:
    /// `(?exact IS NULL OR name = ?exact) AND (?prefix IS NULL OR
    /// substr(name, 1, length(?prefix)) = ?prefix)`.
    pub fn sql_scope(&self) -> SqlScope {
        let pattern = self.0.repositories.as_str();
        match pattern.strip_suffix('*') {
            Some("") => SqlScope::default(),
            Some(prefix) if prefix.ends_with('/') => SqlScope {
                exact: None,
                prefix: Some(prefix.to_owned()),
            },
            // `team*` matches nothing (`RepoPattern::matches`); no name has a `*`.
            _ => SqlScope {
                exact: Some(pattern.to_owned()),
                prefix: None,
            },
        }
    }
}

/// A credential's repository pattern for a query (see [`RepoCaller::sql_scope`]).
#[derive(Debug, Default, Clone)]
pub struct SqlScope {
    pub exact: Option<String>,
    pub prefix: Option<String>,
}

impl SqlScope {
    /// Everything (the web UI, unlimited credentials).
    pub fn all() -> SqlScope {
        SqlScope::default()
    }
}

/// The web UI's session cookie as API credentials. A request that changes
/// something must also carry the session's CSRF token (`X-CSRF-Token`), which
/// another site's page cannot read.
async fn session_caller(parts: &Parts, app: &AppState) -> Result<Principal, ApiError> {
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
    Ok(crate::auth::Principal::with_password(user))
}

/// Whoever the request's credentials (or web session) name.
async fn authenticate(parts: &Parts, app: &AppState) -> Result<Principal, ApiError> {
    let creds =
        credentials(&parts.headers).map_err(|e| ApiError::Unauthenticated(e.to_string()))?;
    let Some(creds) = creds else {
        return session_caller(parts, app).await;
    };
    match app.auth.principal(&creds).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(ApiError::Unauthenticated(
            "bearer value is not an API token".into(),
        )),
        Err(AuthError::Database(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Unauthenticated(e.to_string())),
    }
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let principal = authenticate(parts, app).await?;
        if !principal.repositories.is_all() {
            return Err(ApiError::Forbidden(format!(
                "this token is limited to repositories {}; {} {} is not about one repository",
                principal.repositories.as_str(),
                parts.method,
                parts.uri.path()
            )));
        }
        Ok(ApiCaller(principal))
    }
}

impl FromRequestParts<AppState> for RepoCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(RepoCaller(authenticate(parts, app).await?))
    }
}
