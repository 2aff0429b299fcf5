//! The runners page (online or not, labels, capacity, current jobs, last
//! seen) and the queue page (each waiting job's position and the runners
//! that could take it, or why none can).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::pipeline::when;
use super::{render, Viewer};
use crate::app::AppState;
use crate::pipeline::scheduler::queue;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/runners", get(runners))
        .route("/queue", get(waiting))
}

async fn runners(State(app): State<AppState>, viewer: Viewer) -> Response {
    let list = match queue::runners(&app.db).await {
        Ok(l) => l,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    let mut rows = Vec::new();
    for r in list {
        let mut jobs = Vec::new();
        for job in &r.running {
            let row: Option<(i64, String, String)> = sqlx::query_as(
                "SELECT p.id, g.name, j.name FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
                 JOIN git_repos g ON g.id = p.repo_id WHERE j.id = ?",
            )
            .bind(job)
            .fetch_optional(&app.db)
            .await
            .unwrap_or(None);
            if let Some((pipeline_id, repo, name)) = row {
                jobs.push(slipway_web::RunningJob {
                    pipeline_id,
                    label: format!("{repo} {name}"),
                });
            }
        }
        rows.push(slipway_web::RunnerRow {
            name: r.name,
            online: r.online,
            labels: r.labels.join(", "),
            capacity: r.capacity,
            busy: r.running.len(),
            jobs,
            last_seen: r.last_seen_at.map(when).unwrap_or_else(|| "never".into()),
        });
    }
    render(slipway_web::RunnersPage {
        nav: viewer.nav(),
        runners: rows,
    })
}

async fn waiting(State(app): State<AppState>, viewer: Viewer) -> Response {
    let list = match queue::explain(&app.db).await {
        Ok(l) => l,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    let waiting = list
        .into_iter()
        .map(|w| slipway_web::WaitingRow {
            position: match w.position {
                Some(p) => p.to_string(),
                None => format!("waiting for {}", w.blocked_on.join(", ")),
            },
            pipeline_id: w.pipeline_id,
            repo: w.repo,
            job: w.job,
            waiting: slipway_web::duration(w.waiting_ms),
            labels: w.labels.join(", "),
            runners: w
                .runners
                .into_iter()
                .map(|c| slipway_web::CandidateRow {
                    runner: c.runner,
                    can_take: c.why_not.is_none(),
                    why_not: c.why_not.unwrap_or_default(),
                })
                .collect(),
        })
        .collect();
    render(slipway_web::QueuePage {
        nav: viewer.nav(),
        waiting,
    })
}
