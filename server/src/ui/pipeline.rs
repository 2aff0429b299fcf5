//! The pipeline page (jobs by the depth of their needs, steps, artifacts,
//! images; cancel and re-run for roles that may) and the repository page
//! (branches with their latest run, history, a run form).

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::{render, Viewer};
use crate::app::AppState;
use crate::auth::sessions;
use crate::auth::users::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/pipelines/{id}", get(show))
        .route("/pipelines/{id}/cancel", post(cancel))
        .route("/pipelines/{id}/rerun", post(rerun))
        .route("/repos/{*name}", get(repo).post(run))
}

/// A time as people read it (UTC).
pub fn when(ms: i64) -> String {
    crate::db::format_utc(ms)
}

fn took(started: Option<i64>, finished: Option<i64>) -> String {
    match started {
        Some(s) => slipway_web::duration(finished.unwrap_or_else(crate::db::now_ms) - s),
        None => String::new(),
    }
}

/// A pipeline as a row of the dashboard and of a repository's history.
pub fn row(p: crate::api::pipelines::PipelineSummary) -> slipway_web::PipelineRow {
    slipway_web::PipelineRow {
        id: p.id,
        icon: slipway_web::status_icon(&p.status),
        repo: p.repo,
        number: p.number,
        status: p.status,
        git_ref: short_ref(&p.git_ref),
        commit_short: p.commit.chars().take(12).collect(),
        message: p
            .message
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        author: p.author.unwrap_or_default(),
        duration: took(p.started_at, p.finished_at),
        trigger: p.triggered_by,
    }
}

fn short_ref(r: &str) -> String {
    r.trim_start_matches("refs/heads/")
        .trim_start_matches("refs/tags/")
        .to_owned()
}

/// Host (and port) the browser reached us at, for pull references.
fn registry_host(app: &AppState, headers: &HeaderMap) -> String {
    let base = app.auth.base_url(headers);
    base.split("://").nth(1).unwrap_or(&base).to_owned()
}

fn may_act(viewer: &Viewer) -> bool {
    viewer.user.role != Role::Viewer
}

async fn show(
    State(app): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let p = match crate::api::pipelines::load(&app, id).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let index: std::collections::HashMap<&str, usize> = p
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let needs: Vec<Vec<usize>> = p
        .jobs
        .iter()
        .map(|j| {
            j.needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied())
                .collect()
        })
        .collect();
    let cards: Vec<slipway_web::JobCard> = p
        .jobs
        .iter()
        .map(|j| slipway_web::JobCard {
            id: j.id,
            name: j.name.clone(),
            icon: slipway_web::status_icon(&j.status),
            status: j.status.clone(),
            needs: j.needs.join(", "),
            duration: took(j.started_at, j.finished_at),
            reason: j.reason.clone(),
            steps: j
                .steps
                .iter()
                .map(|s| slipway_web::StepItem {
                    position: s.position,
                    name: s.name.clone(),
                    icon: slipway_web::status_icon(&s.status),
                    status: s.status.clone(),
                    duration: took(s.started_at, s.finished_at),
                })
                .collect(),
            artifacts: j.artifacts_bytes.map(slipway_web::human_size),
        })
        .collect();
    let columns = slipway_web::depth_columns(&needs)
        .into_iter()
        .map(|col| col.into_iter().map(|i| cards[i].clone()).collect())
        .collect();
    let host = registry_host(&app, &headers);
    let images = p
        .images
        .iter()
        .map(|i| slipway_web::ImageItem {
            repository: i.repository.clone(),
            tags: i.tags.join(", "),
            digest: i.digest.clone(),
            pull: format!("{host}/{}", i.pull),
            job: i.job.clone(),
            step: i.step.clone(),
        })
        .collect();
    let active = matches!(p.status.as_str(), "pending" | "running");
    let deployments = match deployment_links(&app, Some(p.id)).await {
        Ok(d) => d,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    render(slipway_web::PipelinePage {
        deployments,
        nav: viewer.nav(),
        id: p.id,
        repo: p.repo.clone(),
        number: p.number,
        icon: slipway_web::status_icon(&p.status),
        status: p.status.clone(),
        git_ref: short_ref(&p.git_ref),
        commit: p.commit.clone(),
        message: p.message.clone().unwrap_or_default(),
        author: p.author.clone().unwrap_or_default(),
        event: p.event.clone(),
        trigger: p.triggered_by.clone(),
        created: when(p.created_at),
        duration: took(p.started_at, p.finished_at),
        error: p.error.clone(),
        columns,
        images,
        registry: host.clone(),
        can_act: may_act(&viewer),
        active,
        csrf: viewer.csrf.clone(),
    })
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    failed_only: Option<String>,
}

/// A form post must carry the session's token and come from a role that may
/// change pipelines.
fn refused(viewer: &Viewer, csrf: &str) -> Option<Response> {
    if !sessions::same(csrf, &viewer.csrf) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token does not match the session",
            )
                .into_response(),
        );
    }
    if !may_act(viewer) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "viewers may read pipelines but not start or cancel them",
            )
                .into_response(),
        );
    }
    None
}

async fn cancel(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = refused(&viewer, &form.csrf) {
        return r;
    }
    if let Err(e) = crate::api::pipelines::load(&app, id).await {
        return e.into_response();
    }
    if let Err(e) = crate::pipeline::scheduler::cancel_pipeline(&app.scheduler, id).await {
        return crate::api::ApiError::from(e).into_response();
    }
    app.scheduler.wake();
    tracing::info!(pipeline = id, user = %viewer.user.username, "cancelled from the web UI");
    Redirect::to(&format!("/pipelines/{id}")).into_response()
}

async fn rerun(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(id): Path<i64>,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(r) = refused(&viewer, &form.csrf) {
        return r;
    }
    let failed_only = form.failed_only.as_deref() == Some("true");
    match crate::pipeline::create::rerun(
        &app.db,
        &app.repos,
        id,
        failed_only,
        &viewer.user.username,
    )
    .await
    {
        Ok(Some(new)) => {
            app.scheduler.wake();
            Redirect::to(&format!("/pipelines/{new}")).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, format!("no pipeline {id}")).into_response(),
        Err(e @ crate::pipeline::create::CreateError::Refused(_)) => {
            (StatusCode::CONFLICT, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A deployment's id, repository, environment, state, pipeline id and
/// number, and who asked.
type LinkRow = (
    i64,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    String,
);

/// The deployments pipeline `pipeline` caused (or the most recent ones of
/// any pipeline), newest first.
pub(super) async fn deployment_links(
    app: &AppState,
    pipeline: Option<i64>,
) -> Result<Vec<slipway_web::DeploymentLink>, sqlx::Error> {
    let rows: Vec<LinkRow> = sqlx::query_as(
        "SELECT d.id, r.name, e.name, d.state, d.pipeline_id, p.number, d.requested_by
         FROM deployments d JOIN environments e ON e.id = d.environment_id
         JOIN git_repos r ON r.id = e.repo_id LEFT JOIN pipelines p ON p.id = d.pipeline_id
         WHERE ? IS NULL OR d.pipeline_id = ? ORDER BY d.id DESC LIMIT 10",
    )
    .bind(pipeline)
    .bind(pipeline)
    .fetch_all(&app.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, repo, environment, state, pid, number, requested_by)| {
                slipway_web::DeploymentLink {
                    id,
                    repo,
                    environment,
                    icon: slipway_web::deploys::state_icon(&state),
                    state,
                    pipeline: pid.zip(number),
                    requested_by,
                }
            },
        )
        .collect())
}

async fn repo(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<super::deploys::LiveQuery>,
) -> Response {
    // The deploy pages below a repository's path.
    for (repo, page) in super::deploys::repo_page(&name) {
        if let Ok(r) = app.repos.get(repo).await {
            return super::deploys::repo_deploy_page(&app, &viewer, &r, page, q.live.is_some())
                .await;
        }
    }
    let repo = match app.repos.get(&name).await {
        Ok(r) => r,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    let history =
        match crate::api::pipelines::recent(&app, Some(&name), &crate::api::SqlScope::all(), 50)
            .await
        {
            Ok(h) => h,
            Err(e) => return e.into_response(),
        };
    let branches = app.repos.branches(&repo).await.unwrap_or_default();
    let branches = branches
        .into_iter()
        .map(|(branch, sha)| {
            let full = format!("refs/heads/{branch}");
            let latest = history
                .iter()
                .find(|p| p.git_ref == full || p.git_ref == branch)
                .map(|p| slipway_web::LatestRun {
                    id: p.id,
                    number: p.number,
                    icon: slipway_web::status_icon(&p.status),
                    status: p.status.clone(),
                });
            slipway_web::BranchRow {
                name: branch,
                commit_short: sha.chars().take(12).collect(),
                latest,
            }
        })
        .collect();
    let pipelines = history.into_iter().map(row).collect();
    render(slipway_web::RepoPage {
        nav: viewer.nav(),
        name: repo.name.clone(),
        url: repo.url.clone(),
        default_branch: repo.default_branch.clone(),
        branches,
        pipelines,
        can_run: may_act(&viewer),
        csrf: viewer.csrf.clone(),
    })
}

#[derive(Deserialize)]
struct RunForm {
    csrf: String,
    #[serde(rename = "ref", default)]
    git_ref: String,
}

/// `POST /repos/{name}/run`: the path's last segment is `run`.
async fn run(
    State(app): State<AppState>,
    viewer: Viewer,
    Path(path): Path<String>,
    Form(form): Form<RunForm>,
) -> Response {
    let Some(name) = path.strip_suffix("/run") else {
        return (StatusCode::NOT_FOUND, "no such page").into_response();
    };
    if let Some(r) = refused(&viewer, &form.csrf) {
        return r;
    }
    match crate::api::pipelines::start(&app, name, Some(form.git_ref), &viewer.user.username).await
    {
        Ok(id) => Redirect::to(&format!("/pipelines/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}
