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
    // The last lines come with the page, so the tail is on screen at first
    // paint; the script's viewer replaces them once it has drawn.
    let read = tokio::task::spawn_blocking(move || {
        let total = logs.total_lines(job, position, attempt)?;
        logs.range(
            job,
            position,
            attempt,
            total.saturating_sub(TAIL_LINES),
            total,
            64 * 1024,
        )
        .map(|r| (total, r))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    let (total_lines, tail) = match read {
        Ok((total, range)) => (total, preview(range.from, &range.bytes)),
        Err(e) => {
            tracing::error!(error = %e, "reading a log's tail failed");
            (0, Vec::new())
        }
    };
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
        tail,
    })
}

/// Lines of the tail shown before the script runs.
const TAIL_LINES: u64 = 80;

/// Log bytes as plain text lines (1-based numbers): escape sequences
/// dropped, a carriage return starting its line's text over, as the viewer
/// shows them.
fn preview(first: u64, bytes: &[u8]) -> Vec<(u64, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    for (i, line) in text.split_terminator('\n').enumerate() {
        let line = line.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
        let mut clean = String::with_capacity(line.len());
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if ('@'..='~').contains(&d) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            } else if !c.is_control() || c == '\t' {
                clean.push(c);
            }
        }
        out.push((first + i as u64 + 1, clean));
    }
    out
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, super::ASSET_CACHE),
        ],
        slipway_web::log::LOG_JS,
    )
        .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, super::ASSET_CACHE),
        ],
        slipway_web::log::LOG_CSS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn previews_drop_escapes_and_overwritten_text() {
        let got = super::preview(9, b"\x1b[31mred\x1b[0m plain\nhalf\rdone\r\nlast");
        assert_eq!(
            got,
            vec![
                (10, "red plain".to_owned()),
                (11, "done".to_owned()),
                (12, "last".to_owned())
            ]
        );
    }
}
