//! The deploy pages: the environments board (`/repos/{name}/environments`,
//! live), a deployment with its timeline (`/deployments/{id}`, live), an
//! environment's history, the audit, the traceability view, and the forms
//! that approve, reject, promote, roll back and abort. Each form carries the
//! session's CSRF token and goes through the same domain functions as the
//! API (`request::promote`, `request::rollback`, `gates::decide`), which
//! apply the environment's policy; the page shows a button only to whom
//! the policy would admit, and the server checks again.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use slipway_web::deploys as view;
use slipway_web::deploys::state_icon;

use super::pipeline::when;
use super::{render, Viewer};
use crate::app::AppState;
use crate::auth::sessions;
use crate::auth::users::Role;
use crate::db::now_ms;
use crate::deploy::environments::{self, Environment};
use crate::deploy::gates::{self, Decision, Requester};
use crate::deploy::model::{short_digest, Deployment, Instance};
use crate::deploy::{audit, events, request, trace, DeployError};
use crate::pipeline::repo::GitRepo;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/environments", get(index))
        .route("/environments/promote", post(promote))
        .route("/environments/rollback", post(rollback))
        .route("/deployments/{id}", get(deployment))
        .route("/deployments/{id}/trace", get(deployment_trace))
        .route("/deployments/{id}/approve", post(approve))
        .route("/deployments/{id}/reject", post(reject))
        .route("/deployments/{id}/abort", post(abort))
        .route("/instances/{name}/trace", get(instance_trace))
}

/// A page below `/repos/{name}/` that belongs here: the board
/// (`environments`), an environment's history (`environments/{env}`) and
/// trace (`environments/{env}/trace`), the audit (`audit`). The repository
/// part is tried as a registered name first, so a repository whose name
/// ends like one of these is still reachable.
pub(super) enum RepoPage {
    Board,
    History(String),
    Trace(String),
    Audit,
}

/// Split `path` (after `/repos/`) into a repository and one of its deploy
/// pages, candidates in order.
pub(super) fn repo_page(path: &str) -> Vec<(&str, RepoPage)> {
    let mut out = Vec::new();
    if let Some(repo) = path.strip_suffix("/environments") {
        out.push((repo, RepoPage::Board));
    }
    if let Some(repo) = path.strip_suffix("/audit") {
        out.push((repo, RepoPage::Audit));
    }
    if let Some(rest) = path.strip_suffix("/trace") {
        if let Some((repo, env)) = rest.rsplit_once("/environments/") {
            out.push((repo, RepoPage::Trace(env.to_owned())));
        }
    }
    if let Some((repo, env)) = path.rsplit_once("/environments/") {
        if !env.contains('/') {
            out.push((repo, RepoPage::History(env.to_owned())));
        }
    }
    out
}

#[derive(Deserialize)]
pub(super) struct LiveQuery {
    /// Only the live part (the page's script swaps it in).
    pub(super) live: Option<String>,
}

/// Serve one of the deploy pages of `repo`.
pub(super) async fn repo_deploy_page(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
    page: RepoPage,
    live: bool,
) -> Response {
    let result = match page {
        RepoPage::Board => board_page(app, viewer, repo, live).await,
        RepoPage::History(env) => history_page(app, viewer, repo, &env).await,
        RepoPage::Trace(env) => env_trace_page(app, viewer, repo, &env).await,
        RepoPage::Audit => audit_page(app, viewer, repo).await,
    };
    result.unwrap_or_else(failure)
}

/// A refusal or failure as a short text page with its status.
fn failure(e: DeployError) -> Response {
    let status = match &e {
        DeployError::NotFound(_) => StatusCode::NOT_FOUND,
        DeployError::Refused(_) => StatusCode::CONFLICT,
        DeployError::Invalid(_) => StatusCode::BAD_REQUEST,
        DeployError::Forbidden(_) => StatusCode::FORBIDDEN,
        DeployError::Db(e) => {
            tracing::error!(error = %e, "a deploy page failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    };
    (status, e.to_string()).into_response()
}

fn is_live(q: &LiveQuery) -> bool {
    q.live.is_some()
}

/// `3m`, `2h 5m`, `4d 1h`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

fn commit_short(d: &Deployment) -> String {
    d.commit_sha
        .as_deref()
        .unwrap_or("")
        .chars()
        .take(12)
        .collect()
}

fn chip(
    i: &Instance,
    new_hash: Option<&str>,
    digests: &HashMap<i64, String>,
) -> view::InstanceChip {
    view::InstanceChip {
        name: i.name.clone(),
        icon: state_icon(&i.observed),
        state: i.observed.clone(),
        health: i.health.clone().unwrap_or_default(),
        routed: if i.running() {
            i.routed.clone()
        } else {
            "stopping".into()
        },
        new: new_hash.is_some_and(|h| h == i.spec_hash),
        short_digest: digests
            .get(&i.deployment_id)
            .map(|d| short_digest(d).to_owned())
            .unwrap_or_default(),
    }
}

/// How far `d` (in progress) is, from the environment's instances.
fn rollout(d: &Deployment, instances: &[Instance], can_abort: bool) -> view::Rollout {
    let config = d.config();
    let running: Vec<&Instance> = instances.iter().filter(|i| i.running()).collect();
    let (new, old): (Vec<&Instance>, Vec<&Instance>) = running
        .into_iter()
        .partition(|i| i.spec_hash == d.spec_hash);
    view::Rollout {
        deployment_id: d.id,
        kind: d.kind.clone(),
        state: d.state.clone(),
        short_digest: short_digest(&d.digest).to_owned(),
        strategy: config.strategy,
        replicas: config.replicas,
        new_ready: new.iter().filter(|i| i.ready()).count(),
        new_total: new.len(),
        old_running: old.len(),
        old_ready: old.iter().filter(|i| i.ready()).count(),
        progress: d.progress.clone().unwrap_or_else(|| d.state.clone()),
        can_abort: can_abort && d.abort_requested.is_none(),
    }
}

async fn awaiting(
    app: &AppState,
    viewer: &Viewer,
    policy: &gates::Policy,
    d: &Deployment,
) -> Result<view::Awaiting, DeployError> {
    let (names, required) = gates::tally(&app.db, d).await?;
    Ok(view::Awaiting {
        deployment_id: d.id,
        kind: d.kind.clone(),
        short_digest: short_digest(&d.digest).to_owned(),
        requested_by: d.requested_by.clone(),
        count: names.len(),
        approved_by: names.join(", "),
        required,
        can_decide: gates::may_decide(policy, d, &viewer.user),
        can_abort: gates::may_deploy(policy, &viewer.user),
    })
}

/// The digests of the deployments `instances` belong to.
async fn digests_of(
    app: &AppState,
    instances: &[Instance],
) -> Result<HashMap<i64, String>, sqlx::Error> {
    let mut out = HashMap::new();
    for i in instances {
        if let Entry::Vacant(slot) = out.entry(i.deployment_id) {
            let digest: Option<String> =
                sqlx::query_scalar("SELECT digest FROM deployments WHERE id = ?")
                    .bind(i.deployment_id)
                    .fetch_optional(&app.db)
                    .await?;
            slot.insert(digest.unwrap_or_default());
        }
    }
    Ok(out)
}

/// Tags of `digest` in the registry, else the number of the pipeline that
/// built it.
async fn version(app: &AppState, d: &Deployment) -> Result<String, sqlx::Error> {
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT t.name FROM tags t JOIN manifests m ON m.id = t.manifest_id
         JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ? AND m.digest = ? ORDER BY t.updated_at DESC LIMIT 3",
    )
    .bind(&d.repository)
    .bind(&d.digest)
    .fetch_all(&app.db)
    .await?;
    if !tags.is_empty() {
        return Ok(tags.join(", "));
    }
    let number: Option<i64> = match d.pipeline_id {
        Some(p) => {
            sqlx::query_scalar("SELECT number FROM pipelines WHERE id = ?")
                .bind(p)
                .fetch_optional(&app.db)
                .await?
        }
        None => None,
    };
    Ok(number.map(|n| format!("pipeline #{n}")).unwrap_or_default())
}

async fn column(
    app: &AppState,
    viewer: &Viewer,
    env: Environment,
    from: Option<&str>,
) -> Result<view::EnvColumn, DeployError> {
    let policy = gates::policy_of(&app.db, env.id).await?;
    let may_deploy = gates::may_deploy(&policy, &viewer.user);
    let status = environments::status(&app.db, env).await?;
    let digests = digests_of(app, &status.instances).await?;
    let rollout = status
        .in_progress
        .as_ref()
        .map(|d| rollout(d, &status.instances, may_deploy));
    let new_hash = status.in_progress.as_ref().map(|d| d.spec_hash.as_str());
    let waiting: Vec<Deployment> = sqlx::query_as(
        "SELECT * FROM deployments WHERE environment_id = ? AND state = 'awaiting_approval' ORDER BY id",
    )
    .bind(status.env.id)
    .fetch_all(&app.db)
    .await?;
    let mut awaiting_list = Vec::new();
    for d in &waiting {
        awaiting_list.push(awaiting(app, viewer, &policy, d).await?);
    }
    let earlier: i64 = match &status.current {
        Some(c) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM deployments WHERE environment_id = ? AND state = 'succeeded' AND spec_hash != ?",
            )
            .bind(status.env.id)
            .bind(&c.spec_hash)
            .fetch_one(&app.db)
            .await?
        }
        None => 0,
    };
    let frozen = policy.frozen(chrono::Utc::now()).map(|(_, words)| words);
    let mut protection = Vec::new();
    if policy.required_approvals > 0 {
        protection.push(format!(
            "{} approval{}{}",
            policy.required_approvals,
            if policy.required_approvals > 1 {
                "s"
            } else {
                ""
            },
            if policy.separation_of_duties {
                ", not the requester's"
            } else {
                ""
            }
        ));
    }
    if !policy.freezes.is_empty() {
        protection.push(format!("{} freeze window(s)", policy.freezes.len()));
    }
    let current = status.current.as_ref();
    Ok(view::EnvColumn {
        name: status.env.name.clone(),
        position: status.env.position,
        cluster: status.cluster.clone(),
        url: status.url.clone(),
        current_id: current.map(|d| d.id),
        short_digest: current
            .map(|d| short_digest(&d.digest).to_owned())
            .unwrap_or_default(),
        commit_short: current.map(commit_short).unwrap_or_default(),
        pipeline_id: current.and_then(|d| d.pipeline_id),
        version: match current {
            Some(d) => version(app, d).await?,
            None => String::new(),
        },
        age: current
            .map(|d| age(now_ms() - d.finished_at.unwrap_or(d.created_at)))
            .unwrap_or_default(),
        instances: status
            .instances
            .iter()
            .map(|i| chip(i, new_hash, &digests))
            .collect(),
        rollout,
        awaiting: awaiting_list,
        protection: protection.join(" · "),
        frozen,
        can_promote: may_deploy && status.env.position > 0 && from.is_some(),
        can_rollback: may_deploy && earlier > 0,
        from: from.unwrap_or_default().to_owned(),
    })
}

async fn boards(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
) -> Result<Vec<view::AppBoard>, DeployError> {
    let envs = environments::list(&app.db, repo.id).await?;
    let mut boards: Vec<view::AppBoard> = Vec::new();
    let mut previous: HashMap<String, String> = HashMap::new();
    for env in envs {
        let app_name = env.app.clone();
        let name = env.name.clone();
        let in_chain = env.position >= 0;
        let from = previous.get(&app_name).filter(|_| in_chain).cloned();
        let col = column(app, viewer, env, from.as_deref()).await?;
        if in_chain {
            previous.insert(app_name.clone(), name);
        }
        match boards.iter_mut().find(|b| b.app == app_name) {
            Some(b) => b.envs.push(col),
            None => boards.push(view::AppBoard {
                app: app_name,
                envs: vec![col],
            }),
        }
    }
    Ok(boards)
}

async fn board_page(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
    live: bool,
) -> Result<Response, DeployError> {
    let boards = boards(app, viewer, repo).await?;
    if live {
        return Ok(render(view::EnvironmentsLive {
            repo: repo.name.clone(),
            boards,
            csrf: viewer.csrf.clone(),
        }));
    }
    Ok(render(view::EnvironmentsPage {
        nav: viewer.nav(),
        repo: repo.name.clone(),
        boards,
        csrf: viewer.csrf.clone(),
    }))
}

async fn index(State(app): State<AppState>, viewer: Viewer) -> Response {
    let rows: Result<Vec<(String, String)>, sqlx::Error> = sqlx::query_as(
        "SELECT r.name, group_concat(e.name, ' → ') FROM
           (SELECT * FROM environments ORDER BY CASE WHEN position < 0 THEN 1 ELSE 0 END, position) e
         JOIN git_repos r ON r.id = e.repo_id GROUP BY r.id ORDER BY r.name",
    )
    .fetch_all(&app.db)
    .await;
    match rows {
        Ok(rows) => render(view::EnvironmentsIndex {
            nav: viewer.nav(),
            repos: rows
                .into_iter()
                .map(|(repo, chain)| view::RepoEnvironments { repo, chain })
                .collect(),
        }),
        Err(e) => failure(e.into()),
    }
}

/// Deployment `id` with its environment's and repository's names.
async fn load(app: &AppState, id: i64) -> Result<(Deployment, String, String), DeployError> {
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_optional(&app.db)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("no deployment {id}")))?;
    let (repo, env): (String, String) = sqlx::query_as(
        "SELECT r.name, e.name FROM environments e JOIN git_repos r ON r.id = e.repo_id WHERE e.id = ?",
    )
    .bind(d.environment_id)
    .fetch_one(&app.db)
    .await?;
    Ok((d, repo, env))
}

async fn deployment(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Query(q): Query<LiveQuery>,
) -> Response {
    deployment_page(&app, &viewer, id, is_live(&q))
        .await
        .unwrap_or_else(failure)
}

async fn deployment_page(
    app: &AppState,
    viewer: &Viewer,
    id: i64,
    live: bool,
) -> Result<Response, DeployError> {
    let (d, repo, env) = load(app, id).await?;
    let env_instances: Vec<Instance> =
        sqlx::query_as("SELECT * FROM instances WHERE environment_id = ? ORDER BY id")
            .bind(d.environment_id)
            .fetch_all(&app.db)
            .await?;
    let digests = digests_of(app, &env_instances).await?;
    let instances = env_instances
        .iter()
        .filter(|i| i.deployment_id == d.id || i.spec_hash == d.spec_hash)
        .map(|i| chip(i, Some(&d.spec_hash), &digests))
        .collect();
    // Followed live until it ended and its verification did.
    let active = matches!(
        d.state.as_str(),
        "pending" | "progressing" | "awaiting_approval"
    ) || matches!(d.verification.as_deref(), Some("soaking" | "verifying"));
    let verification = d.verification.clone().map(|state| view::Verification {
        state,
        reason: d.verify_reason.clone(),
        pipeline_id: d.verify_pipeline_id,
    });
    let policy = gates::policy_of(&app.db, d.environment_id).await?;
    let may_deploy = gates::may_deploy(&policy, &viewer.user);
    let rollout = matches!(d.state.as_str(), "pending" | "progressing")
        .then(|| rollout(&d, &env_instances, may_deploy));
    let awaiting = if d.state == "awaiting_approval" {
        Some(awaiting(app, viewer, &policy, &d).await?)
    } else {
        None
    };
    let timeline = events::list(&app.db, d.id)
        .await?
        .into_iter()
        .map(|e| view::TimelineItem {
            at: when(e.at),
            offset: slipway_web::duration(e.at - d.created_at),
            kind: e.kind,
            detail: e.detail,
            instance: e.instance,
        })
        .collect();
    if live {
        return Ok(render(view::DeploymentLive {
            id: d.id,
            icon: state_icon(&d.state),
            state: d.state.clone(),
            progress: d.progress.clone(),
            reason: d.reason.clone(),
            rollout,
            instances,
            awaiting,
            verification,
            timeline,
            csrf: viewer.csrf.clone(),
            active,
        }));
    }
    let config = d.config();
    Ok(render(view::DeploymentPage {
        nav: viewer.nav(),
        repo,
        environment: env,
        id: d.id,
        kind: d.kind.clone(),
        image: d.image(),
        digest: d.digest.clone(),
        commit: d.commit_sha.clone().unwrap_or_default(),
        pipeline_id: d.pipeline_id,
        strategy: config.strategy,
        replicas: config.replicas,
        requested_by: d.requested_by.clone(),
        approved_by: d.approvers().join(", "),
        created: when(d.created_at),
        icon: state_icon(&d.state),
        state: d.state.clone(),
        progress: d.progress.clone(),
        reason: d.reason.clone(),
        rollout,
        instances,
        awaiting,
        verification,
        timeline,
        csrf: viewer.csrf.clone(),
        active,
    }))
}

async fn history_page(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
    env: &str,
) -> Result<Response, DeployError> {
    let env = environments::get(&app.db, repo.id, env).await?;
    let rows = request::history(&app.db, repo.id, Some(&env.name), 500).await?;
    let took = |from: Option<i64>, to: Option<i64>| match (from, to) {
        (Some(a), Some(b)) => slipway_web::duration(b - a),
        (Some(a), None) => format!("{} so far", slipway_web::duration(now_ms() - a)),
        _ => String::new(),
    };
    Ok(render(view::HistoryPage {
        nav: viewer.nav(),
        repo: repo.name.clone(),
        environment: env.name.clone(),
        rows: rows
            .iter()
            .map(|(_, d)| view::HistoryRow {
                id: d.id,
                kind: d.kind.clone(),
                short_digest: short_digest(&d.digest).to_owned(),
                commit_short: commit_short(d),
                pipeline_id: d.pipeline_id,
                requested_by: d.requested_by.clone(),
                approved_by: d.approvers().join(", "),
                icon: state_icon(&d.state),
                state: d.state.clone(),
                reason: d.reason.clone().unwrap_or_default(),
                created: when(d.created_at),
                waited: took(Some(d.created_at), d.started_at.or(d.finished_at)),
                took: took(d.started_at, d.finished_at),
            })
            .collect(),
    }))
}

/// The newest audit entries shown.
const AUDIT_SHOWN: i64 = 500;

async fn audit_page(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
) -> Result<Response, DeployError> {
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_log WHERE repo = ?")
        .bind(&repo.name)
        .fetch_one(&app.db)
        .await?;
    let mut rows = audit::list(
        &app.db,
        Some(&repo.name),
        None,
        (last - AUDIT_SHOWN).max(0),
        AUDIT_SHOWN,
    )
    .await?;
    rows.reverse();
    let json = |t: Option<String>| t.unwrap_or_default();
    Ok(render(view::AuditPage {
        nav: viewer.nav(),
        repo: repo.name.clone(),
        rows: rows
            .into_iter()
            .map(|r| view::AuditRow {
                at: when(r.at),
                actor: r.actor,
                action: r.action,
                environment: r.environment.unwrap_or_default(),
                short_digest: r
                    .digest
                    .as_deref()
                    .map(|d| short_digest(d).to_owned())
                    .unwrap_or_default(),
                deployment_id: r.deployment_id,
                reason: r.reason.unwrap_or_default(),
                before: json(r.before),
                after: json(r.after),
            })
            .collect(),
    }))
}

fn trace_page(viewer: &Viewer, repo: &str, subject: String, t: trace::Trace) -> Response {
    let p = t.provenance.as_ref();
    let text = |v: Option<&String>| v.cloned().unwrap_or_default();
    let pipeline = t.pipeline.as_ref();
    render(view::TracePage {
        nav: viewer.nav(),
        repo: repo.to_owned(),
        subject,
        image: t.image.clone(),
        digest: t.digest.clone(),
        has_provenance: p.is_some(),
        referrer: p.map(|p| p.referrer.clone()).unwrap_or_default(),
        containerfile: text(p.and_then(|p| p.containerfile_path.as_ref())),
        containerfile_digest: text(p.and_then(|p| p.containerfile_digest.as_ref())),
        context_digest: text(p.and_then(|p| p.context_digest.as_ref())),
        source: match p {
            Some(p) => format!(
                "{} {}",
                text(p.source_repository.as_ref()),
                text(p.source_commit.as_ref())
            ),
            None => String::new(),
        },
        bases: p
            .map(|p| {
                p.bases
                    .iter()
                    .map(|b| view::TraceBase {
                        image: b.image.clone(),
                        digest: b.digest.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        pipeline_id: pipeline.map(|p| p.id),
        pipeline: pipeline
            .map(|p| format!("{} #{}", p.repo, p.number))
            .unwrap_or_default(),
        pipeline_status: pipeline.map(|p| p.status.clone()).unwrap_or_default(),
        commit: pipeline.map(|p| p.commit.clone()).unwrap_or_default(),
        message: pipeline
            .and_then(|p| p.message.as_deref())
            .and_then(|m| m.lines().next())
            .unwrap_or_default()
            .to_owned(),
        author: text(pipeline.and_then(|p| p.author.as_ref())),
        jobs: pipeline
            .map(|p| {
                p.jobs
                    .iter()
                    .map(|j| view::TraceJob {
                        name: j.name.clone(),
                        icon: slipway_web::status_icon(&j.status),
                        status: j.status.clone(),
                        steps: j
                            .steps
                            .iter()
                            .map(|s| view::TraceStep {
                                name: s.name.clone(),
                                icon: slipway_web::status_icon(&s.status),
                                status: s.status.clone(),
                                exit_code: s
                                    .exit_code
                                    .map(|c| format!("exit {c}"))
                                    .unwrap_or_default(),
                                // The log page, not the API's text.
                                log: s
                                    .log
                                    .trim_start_matches("/api/v1")
                                    .trim_end_matches("/log")
                                    .to_owned(),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        environments: t
            .environments
            .iter()
            .map(|e| view::TraceEnv {
                environment: e.environment.clone(),
                deployment_id: e.deployment_id,
                kind: e.kind.clone(),
                icon: state_icon(&e.state),
                state: e.state.clone(),
                requested_by: e.requested_by.clone(),
                approved_by: e.approved_by.join(", "),
                when: when(e.finished_at.unwrap_or(e.created_at)),
            })
            .collect(),
    })
}

async fn env_trace_page(
    app: &AppState,
    viewer: &Viewer,
    repo: &GitRepo,
    env: &str,
) -> Result<Response, DeployError> {
    let env = environments::get(&app.db, repo.id, env).await?;
    let t = trace::of_environment(app, &env).await?;
    Ok(trace_page(viewer, &repo.name, env.name.clone(), t))
}

async fn deployment_trace(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
) -> Response {
    let result = async {
        let (d, repo, env) = load(&app, id).await?;
        let repo_id: i64 = sqlx::query_scalar("SELECT repo_id FROM environments WHERE id = ?")
            .bind(d.environment_id)
            .fetch_one(&app.db)
            .await?;
        let t = trace::of_deployment(&app, repo_id, &d).await?;
        Ok(trace_page(
            &viewer,
            &repo,
            format!("deployment {id} ({env})"),
            t,
        ))
    }
    .await;
    result.unwrap_or_else(failure)
}

async fn instance_trace(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Response {
    let result = async {
        let deployment: i64 =
            sqlx::query_scalar("SELECT deployment_id FROM instances WHERE name = ?")
                .bind(&name)
                .fetch_optional(&app.db)
                .await?
                .ok_or_else(|| DeployError::NotFound(format!("no instance {name:?}")))?;
        let (d, repo, _) = load(&app, deployment).await?;
        let repo_id: i64 = sqlx::query_scalar("SELECT repo_id FROM environments WHERE id = ?")
            .bind(d.environment_id)
            .fetch_one(&app.db)
            .await?;
        let t = trace::of_deployment(&app, repo_id, &d).await?;
        Ok(trace_page(&viewer, &repo, format!("instance {name}"), t))
    }
    .await;
    result.unwrap_or_else(failure)
}

/// A form post must carry the session's token, and come from a role that
/// may act at all (the policy decides the rest, server-side).
fn refused(viewer: &Viewer, csrf: &str) -> Option<Response> {
    if csrf.is_empty() || !sessions::same(csrf, &viewer.csrf) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token does not match the session",
            )
                .into_response(),
        );
    }
    if viewer.user.role == Role::Viewer {
        return Some(
            (
                StatusCode::FORBIDDEN,
                format!(
                    "{} is a viewer: viewers may read deployments but not approve, reject, promote, roll back or abort",
                    viewer.user.username
                ),
            )
                .into_response(),
        );
    }
    None
}

/// A comment or reason past the API's limit.
fn too_long(text: Option<&str>) -> Option<Response> {
    let max = crate::api::deploys::MAX_REASON;
    text.filter(|t| t.len() > max).map(|t| {
        (
            StatusCode::BAD_REQUEST,
            format!(
                "a comment or reason is at most {max} bytes, not {}",
                t.len()
            ),
        )
            .into_response()
    })
}

fn requester(viewer: &Viewer, reason: Option<String>) -> Requester {
    Requester::User {
        user: viewer.user.clone(),
        admin: viewer.user.role == Role::Admin,
        reason: reason.filter(|r| !r.trim().is_empty()),
        override_freeze: false,
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default)]
    csrf: String,
    comment: Option<String>,
}

async fn decide(
    app: &AppState,
    viewer: &Viewer,
    id: i64,
    decision: Decision,
    form: DecisionForm,
) -> Response {
    if let Some(r) = refused(viewer, &form.csrf) {
        return r;
    }
    if let Some(r) = too_long(form.comment.as_deref()) {
        return r;
    }
    let result = async {
        let (d, repo, _) = load(app, id).await?;
        let who = (&viewer.user, viewer.user.role == Role::Admin);
        gates::decide(&app.db, &repo, &d, who, decision, form.comment.as_deref()).await
    }
    .await;
    match result {
        Ok(state) => {
            tracing::info!(deployment = id, by = %viewer.user.username, ?decision, %state, "deployment decided in the web UI");
            app.deploys.wake();
            Redirect::to(&format!("/deployments/{id}")).into_response()
        }
        Err(e) => failure(e),
    }
}

async fn approve(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide(&app, &viewer, id, Decision::Approve, form).await
}

async fn reject(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Response {
    decide(&app, &viewer, id, Decision::Reject, form).await
}

#[derive(Deserialize)]
struct AbortForm {
    #[serde(default)]
    csrf: String,
    reason: Option<String>,
}

async fn abort(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<AbortForm>,
) -> Response {
    if let Some(r) = refused(&viewer, &form.csrf).or_else(|| too_long(form.reason.as_deref())) {
        return r;
    }
    let who = (&viewer.user, viewer.user.role == Role::Admin);
    match request::abort(&app, id, who, form.reason.as_deref()).await {
        Ok(_) => Redirect::to(&format!("/deployments/{id}")).into_response(),
        Err(e) => failure(e),
    }
}

#[derive(Deserialize)]
struct EnvForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    repo: String,
    #[serde(default)]
    env: String,
    reason: Option<String>,
}

async fn promote(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(form): Form<EnvForm>,
) -> Response {
    if let Some(r) = refused(&viewer, &form.csrf).or_else(|| too_long(form.reason.as_deref())) {
        return r;
    }
    let result = async {
        let repo = app
            .repos
            .get(&form.repo)
            .await
            .map_err(|e| DeployError::NotFound(e.to_string()))?;
        let who = requester(&viewer, form.reason.clone());
        request::promote(&app, &repo, &form.env, who).await
    }
    .await;
    match result {
        Ok((id, _)) => Redirect::to(&format!("/deployments/{id}")).into_response(),
        Err(e) => failure(e),
    }
}

async fn rollback(
    State(app): State<AppState>,
    viewer: Viewer,
    Form(form): Form<EnvForm>,
) -> Response {
    if let Some(r) = refused(&viewer, &form.csrf).or_else(|| too_long(form.reason.as_deref())) {
        return r;
    }
    let result = async {
        let repo = app
            .repos
            .get(&form.repo)
            .await
            .map_err(|e| DeployError::NotFound(e.to_string()))?;
        let reason = form.reason.clone().or_else(|| {
            Some(format!(
                "rolled back from the web UI by {}",
                viewer.user.username
            ))
        });
        let who = requester(&viewer, reason);
        request::rollback(&app, &repo, &form.env, None, who).await
    }
    .await;
    match result {
        Ok((id, _)) => Redirect::to(&format!("/deployments/{id}")).into_response(),
        Err(e) => failure(e),
    }
}
