//! Deploys: `/clusters` (admin), `/environments` (status, cluster binding,
//! environment secrets), `/deployments` (history, promote, rollback, abort,
//! events) and `/instances/{name}/log`. Reading needs access to the
//! repository; promote, rollback and abort need the push scope (and the
//! environment's deployers); environment secrets an admin; clusters
//! and an environment's cluster an admin not limited to repositories. Names
//! of environments and clusters are DNS labels and digests `sha256:` hex,
//! refused with 400 naming the field before anything is looked up.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::extract::{Json, OptionalJson, Path, Query};
use super::{ApiCaller, ApiError, Part, RepoCaller};
use crate::app::AppState;
use crate::deploy::environments::{self, EnvironmentStatus};
use crate::deploy::events;
use crate::deploy::gates::{self, Requester};
use crate::deploy::kube::cluster_add::add_kubernetes_cluster;
use crate::deploy::kube::kubeconfig::KubeconfigText;
use crate::deploy::kube::KubeError;
use crate::deploy::model::{Deployment, Instance};
use crate::deploy::{nodes, request, DeployError};

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::NotFound(m) => ApiError::NotFound(m),
            DeployError::Refused(m) => ApiError::Conflict(m),
            DeployError::Invalid(m) => ApiError::BadRequest(m),
            DeployError::Forbidden(m) => ApiError::Forbidden(m),
            DeployError::Db(e) => e.into(),
        }
    }
}

/// A cluster's or an environment's name in `part`'s `field`: a DNS label,
/// as the spec's environments are (`what` says which it is).
pub(super) fn label(part: Part, field: &str, what: &str, value: &str) -> Result<(), ApiError> {
    if crate::pipeline::spec::valid_label(value) {
        return Ok(());
    }
    Err(ApiError::invalid(
        part,
        field,
        format!(
            "{what} {value:?} is not a valid name: lowercase letters, digits and '-' \
             (not first or last), at most 63"
        ),
    ))
}

/// A digest in the body's `field`: `sha256:` and 64 lowercase hex digits.
fn digest(field: &str, value: &str) -> Result<(), ApiError> {
    let valid = value.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if valid {
        return Ok(());
    }
    Err(ApiError::invalid(
        Part::Body,
        field,
        format!("{value:?} is not a digest (sha256: and 64 lowercase hex digits)"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCluster {
    name: String,
    /// `local` (the default) or `kubernetes`.
    kind: Option<String>,
    /// Kind `kubernetes`: the kubeconfig's text (sealed, never returned).
    kubeconfig: Option<String>,
    /// Kind `kubernetes`: the namespace (else the kubeconfig context's).
    namespace: Option<String>,
}

#[derive(Serialize)]
pub struct ClusterAdded {
    cluster: String,
    kind: &'static str,
    created: bool,
    /// Kind `local`, shown once: `slipway node --token …` joins with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    join_token: Option<String>,
    /// Kind `local`: Unix milliseconds; nodes join with the token until then.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    /// Kind `kubernetes`: where Slipway works.
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    /// Kind `kubernetes`: the API server's URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
}

impl From<KubeError> for ApiError {
    fn from(e: KubeError) -> Self {
        match e {
            KubeError::Kubeconfig(_)
            | KubeError::Unreachable { .. }
            | KubeError::MissingPermissions { .. } => {
                ApiError::invalid(Part::Body, "kubeconfig", e.to_string())
            }
            KubeError::OtherKind { .. } => ApiError::Conflict(e.to_string()),
            KubeError::Seal(e) => ApiError::Internal(e.to_string()),
            KubeError::Db(e) => e.into(),
        }
    }
}

pub async fn add_cluster(
    State(app): State<AppState>,
    caller: ApiCaller,
    Json(body): Json<AddCluster>,
) -> Result<(StatusCode, Json<ClusterAdded>), ApiError> {
    caller.require_admin()?;
    label(Part::Body, "name", "cluster name", &body.name)?;
    let by = &caller.0.user.username;
    match body.kind.as_deref().unwrap_or("local") {
        "local" => {
            for (field, given) in [
                ("kubeconfig", body.kubeconfig.is_some()),
                ("namespace", body.namespace.is_some()),
            ] {
                if given {
                    return Err(ApiError::invalid(
                        Part::Body,
                        field,
                        format!("only a cluster of kind \"kubernetes\" takes a {field}"),
                    ));
                }
            }
            let added = nodes::add_cluster(&app.db, &body.name, by).await?;
            let created = added.created;
            tracing::info!(cluster = %body.name, created, by = %by, "cluster join token made");
            Ok((
                StatusCode::CREATED,
                Json(ClusterAdded {
                    cluster: body.name,
                    kind: "local",
                    created,
                    join_token: Some(added.join_token),
                    expires_at: Some(added.expires_at),
                    namespace: None,
                    server: None,
                }),
            ))
        }
        "kubernetes" => {
            let Some(text) = body.kubeconfig else {
                return Err(ApiError::invalid(
                    Part::Body,
                    "kubeconfig",
                    "a cluster of kind \"kubernetes\" needs a kubeconfig",
                ));
            };
            if let Some(namespace) = &body.namespace {
                label(Part::Body, "namespace", "namespace", namespace)?;
            }
            let added = add_kubernetes_cluster(
                &app.db,
                &app.secrets,
                &body.name,
                &KubeconfigText::new(text),
                body.namespace.as_deref(),
                by,
            )
            .await?;
            tracing::info!(
                cluster = %body.name, created = added.created, namespace = %added.namespace,
                server = %added.server, by = %by, "kubernetes cluster added"
            );
            Ok((
                StatusCode::CREATED,
                Json(ClusterAdded {
                    cluster: body.name,
                    kind: "kubernetes",
                    created: added.created,
                    join_token: None,
                    expires_at: None,
                    namespace: Some(added.namespace),
                    server: Some(added.server),
                }),
            ))
        }
        other => Err(ApiError::invalid(
            Part::Body,
            "kind",
            format!("cluster kind {other:?} is not one of \"local\", \"kubernetes\""),
        )),
    }
}

#[derive(Serialize)]
pub struct ClusterView {
    name: String,
    kind: String,
    nodes: Vec<NodeView>,
}

#[derive(Serialize)]
pub struct NodeView {
    name: String,
    router_host: String,
    last_seen: Option<i64>,
    instances: i64,
}

pub async fn list_clusters(
    State(app): State<AppState>,
    caller: ApiCaller,
) -> Result<Json<Vec<ClusterView>>, ApiError> {
    caller.require_admin()?;
    let clusters = nodes::list_clusters(&app.db).await?;
    Ok(Json(
        clusters
            .into_iter()
            .map(|c| ClusterView {
                name: c.name,
                kind: c.kind,
                nodes: c
                    .nodes
                    .into_iter()
                    .map(|n| NodeView {
                        name: n.name,
                        router_host: n.router_host,
                        last_seen: n.last_seen,
                        instances: n.instances,
                    })
                    .collect(),
            })
            .collect(),
    ))
}

#[derive(Serialize)]
pub struct DeploymentView {
    id: i64,
    environment: String,
    kind: String,
    image: String,
    digest: String,
    pipeline_id: Option<i64>,
    commit: Option<String>,
    strategy: String,
    replicas: u32,
    state: String,
    progress: Option<String>,
    reason: Option<String>,
    requested_by: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    /// Who approved it, once its approvals counted (empty: none needed).
    approved_by: Vec<String>,
    /// Awaiting approval: who approved its digest so far (counting now), of
    /// how many needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    approvals: Option<ApprovalTally>,
    /// None until it rolled out (`deploy/verify.rs`).
    verification: Option<VerificationView>,
}

#[derive(Serialize)]
pub struct VerificationView {
    state: String,
    pipeline_id: Option<i64>,
    soak_until: Option<i64>,
    verified_at: Option<i64>,
    reason: Option<String>,
}

#[derive(Serialize)]
pub struct ApprovalTally {
    approved_by: Vec<String>,
    required: u32,
}

/// The view of `d`, with its approvals when it awaits them.
async fn full_view(
    app: &AppState,
    environment: &str,
    d: &Deployment,
) -> Result<DeploymentView, ApiError> {
    let mut view = deployment_view(environment, d);
    if d.state == "awaiting_approval" {
        let (approved_by, required) = gates::tally(&app.db, d).await?;
        view.approvals = Some(ApprovalTally {
            approved_by,
            required,
        });
    }
    Ok(view)
}

fn deployment_view(environment: &str, d: &Deployment) -> DeploymentView {
    let config = d.config();
    DeploymentView {
        id: d.id,
        environment: environment.to_owned(),
        kind: d.kind.clone(),
        image: d.image(),
        digest: d.digest.clone(),
        pipeline_id: d.pipeline_id,
        commit: d.commit_sha.clone(),
        strategy: config.strategy,
        replicas: config.replicas,
        state: d.state.clone(),
        progress: d.progress.clone(),
        reason: d.reason.clone(),
        requested_by: d.requested_by.clone(),
        created_at: d.created_at,
        started_at: d.started_at,
        finished_at: d.finished_at,
        approved_by: d.approvers(),
        approvals: None,
        verification: d.verification.clone().map(|state| VerificationView {
            state,
            pipeline_id: d.verify_pipeline_id,
            soak_until: d.soak_until,
            verified_at: d.verified_at,
            reason: d.verify_reason.clone(),
        }),
    }
}

#[derive(Serialize)]
pub struct InstanceView {
    name: String,
    digest: String,
    state: String,
    goal: String,
    routed: String,
    container_id: Option<String>,
    restarts: i64,
    health: Option<String>,
    ready_at: Option<i64>,
    warm_until: Option<i64>,
}

#[derive(Serialize)]
pub struct EnvironmentView {
    name: String,
    app: String,
    /// Place in the promotion chain (0 first); -1 when the spec no longer names it.
    position: i64,
    cluster: String,
    url: Option<String>,
    preview_url: Option<String>,
    current: Option<DeploymentView>,
    in_progress: Option<DeploymentView>,
    instances: Vec<InstanceView>,
}

async fn environment_view(
    app: &AppState,
    status: EnvironmentStatus,
) -> Result<EnvironmentView, ApiError> {
    let name = status.env.name.clone();
    let mut digests = std::collections::HashMap::new();
    for i in &status.instances {
        if !digests.contains_key(&i.deployment_id) {
            let digest: Option<String> =
                sqlx::query_scalar("SELECT digest FROM deployments WHERE id = ?")
                    .bind(i.deployment_id)
                    .fetch_optional(&app.db)
                    .await?;
            digests.insert(i.deployment_id, digest.unwrap_or_default());
        }
    }
    let instance = |i: &Instance| InstanceView {
        name: i.name.clone(),
        digest: digests.get(&i.deployment_id).cloned().unwrap_or_default(),
        state: i.observed.clone(),
        goal: i.goal.clone(),
        routed: i.routed.clone(),
        container_id: i.container_id.clone(),
        restarts: i.restarts,
        health: i.health.clone(),
        ready_at: i.ready_at,
        warm_until: i.warm_until,
    };
    Ok(EnvironmentView {
        app: status.env.app.clone(),
        position: status.env.position,
        cluster: status.cluster.clone(),
        url: status.url.clone(),
        preview_url: status.preview_url.clone(),
        current: status.current.as_ref().map(|d| deployment_view(&name, d)),
        in_progress: status
            .in_progress
            .as_ref()
            .map(|d| deployment_view(&name, d)),
        instances: status.instances.iter().map(instance).collect(),
        name,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoQuery {
    repo: String,
}

pub async fn list_environments(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<RepoQuery>,
) -> Result<Json<Vec<EnvironmentView>>, ApiError> {
    caller.check(&q.repo)?;
    let repo = app.repos.get(&q.repo).await?;
    let mut out = Vec::new();
    for env in environments::list(&app.db, repo.id).await? {
        let mut status = environments::status(&app.db, env).await?;
        crate::deploy::kube::status::fill(&app, &mut status).await?;
        out.push(environment_view(&app, status).await?);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindCluster {
    repo: String,
    env: String,
    cluster: String,
}

pub async fn bind_cluster(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<BindCluster>,
) -> Result<StatusCode, ApiError> {
    // Where an environment runs is the server's setting: a token limited to
    // repositories could otherwise move its environments onto a cluster
    // kept for others.
    caller.require_unlimited_admin("binding an environment to a cluster")?;
    label(Part::Body, "env", "environment", &body.env)?;
    label(Part::Body, "cluster", "cluster name", &body.cluster)?;
    let repo = app.repos.get(&body.repo).await?;
    let env = environments::get(&app.db, repo.id, &body.env).await?;
    let by = &caller.user().username;
    environments::bind(&app.db, (&repo.name, &env), &body.cluster, by).await?;
    tracing::info!(repo = %repo.name, env = %env.name, cluster = %body.cluster, by = %caller.user().username, "environment bound to cluster");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEnvSecret {
    repo: String,
    env: String,
    name: String,
    value: String,
}

pub async fn set_secret(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<SetEnvSecret>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    caller.check(&body.repo)?;
    label(Part::Body, "env", "environment", &body.env)?;
    let repo = app.repos.get(&body.repo).await?;
    let env = environments::get(&app.db, repo.id, &body.env).await?;
    app.secrets
        .set_environment(env.id, &body.name, &body.value)
        .await?;
    tracing::info!(repo = %repo.name, env = %env.name, secret = %body.name, by = %caller.user().username, "environment secret set");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvQuery {
    pub(super) repo: String,
    pub(super) env: String,
}

#[derive(Serialize)]
pub struct EnvSecretView {
    name: String,
    updated_at: i64,
}

pub async fn list_secrets(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<EnvQuery>,
) -> Result<Json<Vec<EnvSecretView>>, ApiError> {
    caller.check(&q.repo)?;
    label(Part::Query, "env", "environment", &q.env)?;
    let repo = app.repos.get(&q.repo).await?;
    let env = environments::get(&app.db, repo.id, &q.env).await?;
    Ok(Json(
        app.secrets
            .list_environment(env.id)
            .await?
            .into_iter()
            .map(|(name, updated_at)| EnvSecretView { name, updated_at })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    repo: String,
    env: Option<String>,
    limit: Option<u32>,
}

pub async fn list_deployments(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    caller.check(&q.repo)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            Part::Query,
            "limit",
            format!("limit must be from 1 to 500, not {limit}"),
        ));
    }
    if let Some(env) = &q.env {
        label(Part::Query, "env", "environment", env)?;
    }
    let repo = app.repos.get(&q.repo).await?;
    // A misspelt environment is named, not answered with an empty history.
    if let Some(env) = &q.env {
        environments::get(&app.db, repo.id, env).await?;
    }
    let rows = request::history(&app.db, repo.id, q.env.as_deref(), limit as i64).await?;
    Ok(Json(
        rows.iter()
            .map(|(env, d)| deployment_view(env, d))
            .collect(),
    ))
}

pub async fn show_deployment(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
) -> Result<Json<DeploymentView>, ApiError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT r.name, e.name FROM deployments d JOIN environments e ON e.id = d.environment_id
         JOIN git_repos r ON r.id = e.repo_id WHERE d.id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    let Some((_, env)) = row.filter(|(repo, _)| caller.sees(repo)) else {
        return Err(ApiError::NotFound(format!("no deployment {id}")));
    };
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_one(&app.db)
        .await?;
    Ok(Json(full_view(&app, &env, &d).await?))
}

#[derive(Serialize)]
pub struct EventView {
    id: i64,
    /// Unix milliseconds.
    at: i64,
    kind: String,
    detail: String,
    instance: Option<String>,
}

/// Deployment `id`'s timeline, oldest first.
pub async fn deployment_events(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    let repo: Option<String> = sqlx::query_scalar(
        "SELECT r.name FROM deployments d JOIN environments e ON e.id = d.environment_id
         JOIN git_repos r ON r.id = e.repo_id WHERE d.id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    if !repo.is_some_and(|r| caller.sees(&r)) {
        return Err(ApiError::NotFound(format!("no deployment {id}")));
    }
    let list = events::list(&app.db, id).await?;
    Ok(Json(
        list.into_iter()
            .map(|e| EventView {
                id: e.id,
                at: e.at,
                kind: e.kind,
                detail: e.detail,
                instance: e.instance,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    repo: String,
    to: String,
    /// Break glass: promote through a freeze (admins only; needs `reason`).
    #[serde(default)]
    override_freeze: bool,
    reason: Option<String>,
}

/// Longest reason or comment kept (the audit is not a document store).
pub const MAX_REASON: usize = 1000;

/// A reason or comment in the body's `field`: at most [`MAX_REASON`] bytes.
pub(super) fn reason(field: &str, text: Option<&str>) -> Result<(), ApiError> {
    match text {
        Some(t) if t.len() > MAX_REASON => Err(ApiError::invalid(
            Part::Body,
            field,
            format!("at most {MAX_REASON} bytes, not {}", t.len()),
        )),
        _ => Ok(()),
    }
}

#[derive(Serialize)]
pub struct Queued {
    deployment: DeploymentView,
}

pub(super) async fn queued(app: &AppState, id: i64) -> Result<Json<Queued>, ApiError> {
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_one(&app.db)
        .await?;
    let env: String = sqlx::query_scalar("SELECT name FROM environments WHERE id = ?")
        .bind(d.environment_id)
        .fetch_one(&app.db)
        .await?;
    Ok(Json(Queued {
        deployment: full_view(app, &env, &d).await?,
    }))
}

pub async fn promote(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<Promote>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require_developer()?;
    caller.check(&body.repo)?;
    label(Part::Body, "to", "environment", &body.to)?;
    reason("reason", body.reason.as_deref())?;
    let repo = app.repos.get(&body.repo).await?;
    let requester = Requester::User {
        user: caller.user().clone(),
        admin: caller.is_admin(),
        reason: body.reason,
        override_freeze: body.override_freeze,
    };
    let (id, _) = request::promote(&app, &repo, &body.to, requester).await?;
    Ok((StatusCode::ACCEPTED, queued(&app, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    repo: String,
    env: String,
    to: Option<String>,
    /// Why: kept in the audit.
    reason: Option<String>,
}

pub async fn rollback(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<Rollback>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require_developer()?;
    caller.check(&body.repo)?;
    label(Part::Body, "env", "environment", &body.env)?;
    if let Some(to) = &body.to {
        digest("to", to)?;
    }
    reason("reason", body.reason.as_deref())?;
    let repo = app.repos.get(&body.repo).await?;
    let requester = Requester::User {
        user: caller.user().clone(),
        admin: caller.is_admin(),
        reason: body.reason,
        override_freeze: false,
    };
    let (id, _) = request::rollback(&app, &repo, &body.env, body.to.as_deref(), requester).await?;
    Ok((StatusCode::ACCEPTED, queued(&app, id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// Why: kept in the audit and the deployment's reason.
    reason: Option<String>,
}

/// Abort a deployment that has not ended: one not started ends at once,
/// one in progress is failed and reverted by the reconciler.
pub async fn abort(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
    OptionalJson(body): OptionalJson<Abort>,
) -> Result<Json<Queued>, ApiError> {
    reason("reason", body.reason.as_deref())?;
    let repo: Option<String> = sqlx::query_scalar(
        "SELECT r.name FROM deployments d JOIN environments e ON e.id = d.environment_id
         JOIN git_repos r ON r.id = e.repo_id WHERE d.id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    if !repo.is_some_and(|r| caller.sees(&r)) {
        return Err(ApiError::NotFound(format!("no deployment {id}")));
    }
    caller.require_developer()?;
    let who = (caller.user(), caller.is_admin());
    request::abort(&app, id, who, body.reason.as_deref()).await?;
    queued(&app, id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    from: Option<u64>,
}

/// An instance's output from stream offset `from`; the stream's length in
/// `X-Slipway-Log-Length` (where to continue).
pub async fn instance_log(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiError> {
    let repo: Option<String> = sqlx::query_scalar(
        "SELECT r.name FROM instances i JOIN environments e ON e.id = i.environment_id
         JOIN git_repos r ON r.id = e.repo_id WHERE i.name = ?",
    )
    .bind(&name)
    .fetch_optional(&app.db)
    .await?;
    if !repo.is_some_and(|r| caller.sees(&r)) {
        return Err(ApiError::NotFound(format!("no instance {name:?}")));
    }
    let (bytes, length) = app.instance_logs.read(&name, q.from.unwrap_or(0));
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::HeaderName::from_static("x-slipway-log-length"),
                length.to_string(),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}
