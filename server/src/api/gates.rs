//! Release governance: `/environments/protection` (read: whoever sees the
//! repository; write: an admin), `/deployments/{id}/approve` and `/reject`
//! (the environment's approvers, never the requester under separation of
//! duties), and `/audit` (a repository's entries: whoever sees it; every
//! entry: an admin not limited to repositories), as JSON or JSON lines; and
//! `/trace` (whoever sees the repository): from an environment or an
//! instance back to the digest's provenance and the pipeline that built it.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::deploys::{label, queued, reason, EnvQuery, Queued};
use super::extract::{Json, OptionalJson, Path, Query};
use super::{ApiError, Part, RepoCaller};
use crate::app::AppState;
use crate::deploy::audit;
use crate::deploy::environments;
use crate::deploy::gates::{self, Decision, Policy};
use crate::deploy::model::Deployment;
use crate::deploy::trace::{self, Trace};

#[derive(Serialize)]
pub struct ProtectionView {
    repo: String,
    env: String,
    policy: Policy,
    /// Frozen now: until when, and the window.
    frozen: Option<String>,
}

async fn view(app: &AppState, repo: &str, env: &str) -> Result<ProtectionView, ApiError> {
    let r = app.repos.get(repo).await?;
    let e = environments::get(&app.db, r.id, env).await?;
    let policy = gates::policy_of(&app.db, e.id).await?;
    let frozen = policy.frozen(chrono::Utc::now()).map(|(_, words)| words);
    Ok(ProtectionView {
        repo: r.name,
        env: e.name,
        policy,
        frozen,
    })
}

pub async fn get_protection(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<EnvQuery>,
) -> Result<Json<ProtectionView>, ApiError> {
    caller.check(&q.repo)?;
    label(Part::Query, "env", "environment", &q.env)?;
    Ok(Json(view(&app, &q.repo, &q.env).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetProtection {
    repo: String,
    env: String,
    policy: Policy,
}

pub async fn set_protection(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<SetProtection>,
) -> Result<Json<ProtectionView>, ApiError> {
    caller.require_admin()?;
    caller.check(&body.repo)?;
    label(Part::Body, "env", "environment", &body.env)?;
    gates::validate(&body.policy).map_err(|(field, message)| {
        ApiError::invalid(Part::Body, &format!("policy.{field}"), message)
    })?;
    let repo = app.repos.get(&body.repo).await?;
    let env = environments::get(&app.db, repo.id, &body.env).await?;
    let by = &caller.user().username;
    gates::set_policy(&app.db, &repo.name, (env.id, &env.name), &body.policy, by).await?;
    tracing::info!(repo = %repo.name, env = %env.name, %by, "environment protection set");
    app.deploys.wake();
    Ok(Json(view(&app, &repo.name, &env.name).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    comment: Option<String>,
}

async fn decide(
    app: &AppState,
    caller: &RepoCaller,
    id: i64,
    decision: Decision,
    comment: Option<String>,
) -> Result<Json<Queued>, ApiError> {
    reason("comment", comment.as_deref())?;
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_optional(&app.db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no deployment {id}")))?;
    let repo: String = sqlx::query_scalar(
        "SELECT r.name FROM environments e JOIN git_repos r ON r.id = e.repo_id WHERE e.id = ?",
    )
    .bind(d.environment_id)
    .fetch_one(&app.db)
    .await?;
    if !caller.sees(&repo) {
        return Err(ApiError::NotFound(format!("no deployment {id}")));
    }
    caller.require_developer()?;
    let who = (caller.user(), caller.is_admin());
    let state = gates::decide(&app.db, &repo, &d, who, decision, comment.as_deref()).await?;
    tracing::info!(deployment = id, by = %caller.user().username, ?decision, %state, "deployment decided");
    app.deploys.wake();
    queued(app, id).await
}

pub async fn approve(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
    OptionalJson(body): OptionalJson<DecisionBody>,
) -> Result<Json<Queued>, ApiError> {
    decide(&app, &caller, id, Decision::Approve, body.comment).await
}

pub async fn reject(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
    Json(body): Json<DecisionBody>,
) -> Result<Json<Queued>, ApiError> {
    decide(&app, &caller, id, Decision::Reject, body.comment).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    repo: Option<String>,
    env: Option<String>,
    /// Entries after this id (to page or follow).
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
    /// `json` (default) or `jsonl`.
    format: Option<String>,
}

pub const AUDIT_LIMIT_MAX: i64 = 1000;

pub async fn audit_log(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    match &q.repo {
        Some(repo) => caller.check(repo)?,
        None => caller.require_unlimited_admin("reading every repository's audit")?,
    }
    if let Some(env) = &q.env {
        label(Part::Query, "env", "environment", env)?;
    }
    let limit = q.limit.unwrap_or(AUDIT_LIMIT_MAX);
    if !(1..=AUDIT_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid(
            Part::Query,
            "limit",
            format!("limit is from 1 to {AUDIT_LIMIT_MAX}, not {limit}"),
        ));
    }
    if q.after < 0 {
        return Err(ApiError::invalid(
            Part::Query,
            "after",
            format!("after is an entry id, 0 or more, not {}", q.after),
        ));
    }
    let jsonl = match q.format.as_deref() {
        None | Some("json") => false,
        Some("jsonl") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Part::Query,
                "format",
                format!("format is json or jsonl, not {other:?}"),
            ))
        }
    };
    let rows = audit::list(&app.db, q.repo.as_deref(), q.env.as_deref(), q.after, limit).await?;
    if !jsonl {
        return Ok(Json(rows).into_response());
    }
    let mut out = String::new();
    for row in &rows {
        out.push_str(&serde_json::to_string(row).expect("audit rows serialise"));
        out.push('\n');
    }
    Ok((
        [(header::CONTENT_TYPE, "application/jsonl")],
        Body::from(out),
    )
        .into_response())
}

/// What runs in an environment, traced back.
pub async fn trace_of_environment(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<EnvQuery>,
) -> Result<Json<Trace>, ApiError> {
    caller.check(&q.repo)?;
    label(Part::Query, "env", "environment", &q.env)?;
    let r = app.repos.get(&q.repo).await?;
    let e = environments::get(&app.db, r.id, &q.env).await?;
    Ok(Json(trace::of_environment(&app, &e).await?))
}

/// What an instance runs, traced back.
pub async fn trace_of_instance(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(instance): Path<String>,
) -> Result<Json<Trace>, ApiError> {
    let row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT r.name, r.id, i.deployment_id FROM instances i
         JOIN environments e ON e.id = i.environment_id
         JOIN git_repos r ON r.id = e.repo_id WHERE i.name = ?",
    )
    .bind(&instance)
    .fetch_optional(&app.db)
    .await?;
    let Some((_, repo_id, deployment)) = row.filter(|(repo, _, _)| caller.sees(repo)) else {
        return Err(ApiError::NotFound(format!("no instance {instance:?}")));
    };
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(deployment)
        .fetch_one(&app.db)
        .await?;
    Ok(Json(trace::of_deployment(&app, repo_id, &d).await?))
}
