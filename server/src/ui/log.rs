//! The step log page, `/jobs/{job}/steps/{position}[?attempt=N]`, and its
//! script and stylesheet. The page is a shell (see `slipway_web::log`); the
//! script reads the log through the REST API with the session cookie.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::{render, Viewer};
use crate::api::pipelines::step_detail;
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs/{job}/steps/{position}", get(page))
        .route("/static/log.js", get(js))
        .route("/static/log.css", get(css))
}

#[derive(Deserialize)]
struct PageQuery {
    attempt: Option<i64>,
}

async fn page(
    State(app): State<AppState>,
    viewer: Viewer,
    Path((job, position)): Path<(i64, i64)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let step = match step_detail(&app, job, position).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let attempt = step.log_attempt(q.attempt);
    let logs = app.logs.clone();
    let total_lines = tokio::task::spawn_blocking(move || logs.total_lines(job, position, attempt))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "reading a log's length failed");
            0
        });
    // An earlier attempt's log does not grow any more.
    let live = !step.finished() && step.attempt.unwrap_or(step.job_attempt) == attempt;
    let duration = match step.started_at {
        Some(s) => slipway_web::duration(step.finished_at.unwrap_or_else(crate::db::now_ms) - s),
        None => String::new(),
    };
    render(slipway_web::log::LogPage {
        nav: viewer.nav(),
        job,
        position,
        icon: slipway_web::status_icon(&step.status),
        status: step.status,
        step: step.name,
        job_name: step.job_name,
        pipeline_id: step.pipeline_id,
        repo: step.repo,
        number: step.pipeline_number,
        exit_code: step.exit_code,
        duration,
        attempt,
        attempts: (1..=step.job_attempt.max(1)).collect(),
        total_lines,
        live,
    })
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        slipway_web::log::LOG_JS,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        slipway_web::log::LOG_CSS,
    )
        .into_response()
}
