//! `GET /api/v1/queue` (each waiting job: position, and the runners that could
//! take it or why not) and `GET /api/v1/runners`.

use axum::extract::State;
use serde::Serialize;

use super::extract::Json;
use super::{ApiCaller, ApiError, RepoCaller};
use crate::app::AppState;
use crate::pipeline::scheduler::queue;

#[derive(Serialize)]
pub struct CandidateView {
    runner: String,
    can_take: bool,
    why_not: Option<String>,
}

#[derive(Serialize)]
pub struct WaitingView {
    job_id: i64,
    pipeline_id: i64,
    repo: String,
    job: String,
    position: Option<usize>,
    waiting_ms: i64,
    labels: Vec<String>,
    blocked_on: Vec<String>,
    runners: Vec<CandidateView>,
}

/// The waiting jobs of the repositories the caller's credential reaches
/// (positions stay those in the whole queue). Why a runner cannot take one
/// names no repository outside the credential's pattern.
pub async fn list(
    State(app): State<AppState>,
    caller: RepoCaller,
) -> Result<Json<Vec<WaitingView>>, ApiError> {
    let viewer = &caller.principal().repositories;
    Ok(Json(
        queue::explain(&app.db)
            .await?
            .into_iter()
            .filter(|w| caller.sees(&w.repo))
            .map(|w| WaitingView {
                job_id: w.job_id,
                pipeline_id: w.pipeline_id,
                repo: w.repo,
                job: w.job,
                position: w.position,
                waiting_ms: w.waiting_ms,
                labels: w.labels,
                blocked_on: w.blocked_on,
                runners: w
                    .runners
                    .into_iter()
                    .map(|c| CandidateView {
                        can_take: c.why_not.is_none(),
                        why_not: c.why_not_for(viewer),
                        runner: c.runner,
                    })
                    .collect(),
            })
            .collect(),
    ))
}

#[derive(Serialize)]
pub struct RunnerView {
    id: i64,
    name: String,
    labels: Vec<String>,
    capacity: i64,
    /// The repositories whose jobs it takes; `null`: a shared runner.
    repositories: Option<Vec<String>>,
    online: bool,
    running_jobs: Vec<i64>,
    last_seen_at: Option<i64>,
}

/// Runners serve every repository: not for repository-limited tokens.
pub async fn runners(
    State(app): State<AppState>,
    _caller: ApiCaller,
) -> Result<Json<Vec<RunnerView>>, ApiError> {
    Ok(Json(
        queue::runners(&app.db)
            .await?
            .into_iter()
            .map(|r| RunnerView {
                id: r.id,
                name: r.name,
                labels: r.labels,
                capacity: r.capacity,
                repositories: r.repositories,
                online: r.online,
                running_jobs: r.running,
                last_seen_at: r.last_seen_at,
            })
            .collect(),
    ))
}
