//! `GET/POST /api/v1/repos`: git repositories that run pipelines.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{ApiCaller, ApiError};
use crate::app::AppState;
use crate::pipeline::repo::{GitRepo, RepoError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    name: String,
    url: String,
    #[serde(default = "main")]
    default_branch: String,
}

fn main() -> String {
    "main".into()
}

#[derive(Serialize)]
pub struct RepoView {
    id: i64,
    name: String,
    url: String,
    default_branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

fn view(repo: GitRepo, with_secret: bool) -> RepoView {
    RepoView {
        id: repo.id,
        name: repo.name,
        url: repo.url,
        default_branch: repo.default_branch,
        webhook_secret: with_secret.then_some(repo.webhook_secret),
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadName(_) | RepoError::BadUrl(_) => ApiError::BadRequest(e.to_string()),
            RepoError::Exists(_) => ApiError::Conflict(e.to_string()),
            RepoError::NotFound(_) | RepoError::UnknownRef { .. } => {
                ApiError::NotFound(e.to_string())
            }
            RepoError::Git { .. } => ApiError::BadRequest(e.to_string()),
            RepoError::Db(e) => e.into(),
        }
    }
}

/// Admin: register a repository and make its mirror (a URL that cannot be
/// fetched is refused, and nothing is kept).
pub async fn create(
    State(app): State<AppState>,
    caller: ApiCaller,
    Json(body): Json<NewRepo>,
) -> Result<(StatusCode, Json<RepoView>), ApiError> {
    caller.require_admin()?;
    let repo = app
        .repos
        .add(&body.name, &body.url, &body.default_branch)
        .await?;
    if let Err(e) = app.repos.fetch(&repo, Vec::new()).await {
        let _ = sqlx::query("DELETE FROM git_repos WHERE id = ?")
            .bind(repo.id)
            .execute(&app.db)
            .await;
        let _ = std::fs::remove_dir_all(app.repos.mirror_path(repo.id));
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(view(repo, true))))
}

pub async fn list(
    State(app): State<AppState>,
    caller: ApiCaller,
) -> Result<Json<Vec<RepoView>>, ApiError> {
    let admin = caller.0.is_admin();
    Ok(Json(
        app.repos
            .list()
            .await?
            .into_iter()
            .map(|r| view(r, admin))
            .collect(),
    ))
}
