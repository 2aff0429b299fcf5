//! `POST /api/v1/webhooks/{repo id}`: push, tag and pull-request events from
//! GitHub, Gitea and GitLab. The signature (or GitLab's token) is the
//! authentication: it is checked against the repository's webhook secret before
//! anything in the body is trusted. A refused delivery is logged (without the
//! body or the secret) and starts nothing.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::{Bytes, Json, Path};
use crate::app::AppState;
use crate::pipeline::create::{create, Cause};
use crate::pipeline::repo::Commit;
use crate::pipeline::spec::Event;
use crate::pipeline::webhook::{self, EventKind, WebhookError};

/// A delivery that starts nothing: 202 `{"result": "ignored", "message"}`
/// for an authentic one with nothing to run (forges then do not mark the
/// hook as failing), else the API's error envelope.
fn answer(status: u16, code: &str, message: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_success() {
        return (
            status,
            Json(json!({ "result": "ignored", "message": message })),
        )
            .into_response();
    }
    super::error_response(status, code, message)
}

/// The envelope's code for a refused delivery.
fn code(e: &WebhookError) -> &'static str {
    match e {
        WebhookError::TooLarge { .. } => "too_large",
        WebhookError::MissingSignature { .. } | WebhookError::BadSignature { .. } => {
            "bad_signature"
        }
        WebhookError::UnknownForge | WebhookError::Malformed { .. } => "bad_request",
        WebhookError::Ignored { .. } => "ignored",
    }
}

pub async fn receive(
    State(app): State<AppState>,
    Path(repo_id): Path<i64>,
    headers: HeaderMap,
    Bytes(body): Bytes,
) -> Response {
    let Ok(repo) = app.repos.by_id(repo_id).await else {
        return answer(404, "not_found", format!("no repository {repo_id}"));
    };
    let event = match webhook::parse(&headers, &body, &repo.webhook_secret) {
        Ok(event) => event,
        Err(e) => {
            let status = e.status();
            if status >= 400 {
                tracing::warn!(repo = %repo.name, error = %e, status, "webhook refused");
            } else {
                tracing::info!(repo = %repo.name, reason = %e, "webhook ignored");
            }
            return answer(status, code(&e), e.to_string());
        }
    };
    // Pull requests' heads live outside branches and tags: fetch that ref too.
    let extra = match event.kind {
        EventKind::PullRequest => vec![format!("+{0}:{0}", event.git_ref)],
        _ => Vec::new(),
    };
    if let Err(e) = app.repos.fetch(&repo, extra).await {
        tracing::error!(repo = %repo.name, error = %e, "fetch after webhook failed");
        return answer(
            502,
            "fetch_failed",
            format!("fetching {} failed: {e}", repo.name),
        );
    }
    let commit = match app.repos.resolve(&repo, &event.commit).await {
        Ok(c) => Commit {
            git_ref: event.git_ref.clone(),
            ..c
        },
        Err(e) => {
            return answer(
                422,
                "unknown_commit",
                format!("the pushed commit is not in the repository: {e}"),
            )
        }
    };
    let cause = Cause {
        event: match event.kind {
            EventKind::Push => Event::Push,
            EventKind::Tag => Event::Tag,
            EventKind::PullRequest => Event::PullRequest,
        },
        triggered_by: format!("{} webhook ({})", kind_name(event.kind), event.forge),
        changed_files: event.changed_files.clone(),
        from_fork: event.kind == EventKind::PullRequest && event.from_fork,
        reuse: None,
    };
    match create(&app.db, &app.repos, &repo, &commit, &cause).await {
        Ok(id) => {
            app.scheduler.wake();
            tracing::info!(repo = %repo.name, pipeline = id, commit = %commit.sha, "pipeline from webhook");
            (
                StatusCode::CREATED,
                Json(json!({ "result": "created", "pipeline": id })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(repo = %repo.name, error = %e, "creating a pipeline failed");
            answer(500, "internal", "creating the pipeline failed".into())
        }
    }
}

fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Push => "push",
        EventKind::Tag => "tag",
        EventKind::PullRequest => "pull request",
    }
}
