//! `GET/POST /api/v1/repos`: git repositories that run pipelines.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::extract::Json;
use super::{ApiError, Part, RepoCaller};
use crate::app::AppState;
use crate::pipeline::repo::{GitRepo, RepoError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    name: String,
    url: String,
    /// The branch `slipway run` uses without `--ref`; absent: the remote's
    /// HEAD (`Repos::remote_head`).
    default_branch: Option<String>,
    /// Fetch this often (e.g. "1m") and run new commits of the default branch.
    poll_interval: Option<String>,
}

#[derive(Serialize)]
pub struct RepoView {
    id: i64,
    name: String,
    url: String,
    default_branch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
    /// What its pipelines may pull besides their own repository.
    pull_allow: Vec<String>,
}

fn view(repo: GitRepo, with_secret: bool) -> RepoView {
    RepoView {
        id: repo.id,
        name: repo.name,
        url: repo.url,
        default_branch: repo.default_branch,
        webhook_secret: with_secret.then_some(repo.webhook_secret),
        pull_allow: repo.pull_allow,
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::BadName(_) => ApiError::invalid(Part::Body, "name", e.to_string()),
            RepoError::BadUrl(_) | RepoError::InsideDataDir(_) => {
                ApiError::invalid(Part::Body, "url", e.to_string())
            }
            RepoError::BadBranch(_) => {
                ApiError::invalid(Part::Body, "default_branch", e.to_string())
            }
            RepoError::Exists(_) | RepoError::Overlaps { .. } => ApiError::Conflict(e.to_string()),
            RepoError::NotFound(_)
            | RepoError::UnknownRef { .. }
            | RepoError::NoDefaultBranch { .. } => ApiError::NotFound(e.to_string()),
            RepoError::Git { .. } => ApiError::BadRequest(e.to_string()),
            RepoError::Db(e) => e.into(),
        }
    }
}

/// Admin not limited to repositories: register a repository and make its
/// mirror (a URL that cannot be fetched is refused, and nothing is kept).
/// The server fetches the URL with its own network position and git
/// credentials (or from its own disk), so a token limited to repositories
/// may not choose it.
pub async fn create(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<NewRepo>,
) -> Result<(StatusCode, Json<RepoView>), ApiError> {
    caller.require_unlimited_admin("registering a repository (a URL the server fetches)")?;
    caller.check(&body.name)?;
    let poll_ms = match &body.poll_interval {
        None => None,
        Some(text) => {
            let d = humantime::parse_duration(text).map_err(|e| {
                ApiError::invalid(
                    Part::Body,
                    "poll_interval",
                    format!("poll_interval {text:?}: {e} (e.g. 30s, 5m)"),
                )
            })?;
            if d < std::time::Duration::from_secs(1) || d > MAX_POLL {
                return Err(ApiError::invalid(
                    Part::Body,
                    "poll_interval",
                    "poll_interval must be 1s to 366d",
                ));
            }
            Some(d.as_millis() as i64)
        }
    };
    let branch = body.default_branch.as_deref();
    let mut repo = app
        .repos
        .add(&body.name, &body.url, branch.unwrap_or("main"))
        .await?;
    let fetched = match app.repos.fetch(&repo, Vec::new()).await {
        Ok(()) if branch.is_none() => app.repos.record_remote_head(&mut repo).await,
        other => other,
    };
    if let Err(e) = fetched {
        let _ = sqlx::query("DELETE FROM git_repos WHERE id = ?")
            .bind(repo.id)
            .execute(&app.db)
            .await;
        let _ = std::fs::remove_dir_all(app.repos.mirror_path(repo.id));
        return Err(e.into());
    }
    if let Some(ms) = poll_ms {
        sqlx::query("UPDATE git_repos SET poll_interval_ms = ? WHERE id = ?")
            .bind(ms)
            .bind(repo.id)
            .execute(&app.db)
            .await?;
    }
    Ok((StatusCode::CREATED, Json(view(repo, true))))
}

pub async fn list(
    State(app): State<AppState>,
    caller: RepoCaller,
) -> Result<Json<Vec<RepoView>>, ApiError> {
    let admin = caller.principal().is_admin();
    Ok(Json(
        app.repos
            .list()
            .await?
            .into_iter()
            .filter(|r| caller.sees(&r.name))
            .map(|r| view(r, admin))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgeSettings {
    repo: String,
    /// github, gitea or gitlab.
    kind: String,
    /// The API root: https://api.github.com, https://gitea.example/api/v1,
    /// https://gitlab.example/api/v4.
    api_url: String,
    /// The repository there: owner/name (GitLab: the project's full path).
    repository: String,
    /// A token allowed to set commit statuses (kept encrypted like a secret).
    token: Option<String>,
}

/// The longest `poll_interval`.
const MAX_POLL: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// An http(s) URL with a host, for the body field `what`.
fn http_url(what: &str, url: &str) -> Result<(), ApiError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Ok(())
    } else {
        Err(ApiError::invalid(
            Part::Body,
            what,
            format!("{what} {url:?} must be an http(s):// URL with a host"),
        ))
    }
}

/// Admin not limited to repositories (the server calls the URL): report
/// this repository's pipeline states to a forge's commit-status API.
pub async fn set_forge(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<ForgeSettings>,
) -> Result<StatusCode, ApiError> {
    caller.require_unlimited_admin("setting a forge (a URL the server calls)")?;
    caller.check(&body.repo)?;
    let repo = app.repos.get(&body.repo).await?;
    if crate::pipeline::notify::ForgeKind::parse(&body.kind).is_none() {
        return Err(ApiError::invalid(
            Part::Body,
            "kind",
            format!("forge kind {:?} is not github, gitea or gitlab", body.kind),
        ));
    }
    http_url("api_url", &body.api_url)?;
    if body.repository.is_empty() || body.repository.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(
            Part::Body,
            "repository",
            "repository must be owner/name, without white space",
        ));
    }
    sqlx::query(
        "UPDATE git_repos SET forge_kind = ?, forge_api = ?, forge_repository = ? WHERE id = ?",
    )
    .bind(&body.kind)
    .bind(&body.api_url)
    .bind(&body.repository)
    .bind(repo.id)
    .execute(&app.db)
    .await?;
    if let Some(token) = &body.token {
        app.secrets
            .set_internal(repo.id, crate::pipeline::notify::FORGE_TOKEN, token)
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    repo: String,
    /// Where to POST each state change; null to stop.
    url: Option<String>,
}

/// Admin not limited to repositories (the server calls the URL): a generic
/// outgoing webhook for state changes, signed with the repository's
/// webhook secret.
pub async fn set_notify(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<NotifySettings>,
) -> Result<StatusCode, ApiError> {
    caller.require_unlimited_admin("setting a notification URL (a URL the server calls)")?;
    caller.check(&body.repo)?;
    let repo = app.repos.get(&body.repo).await?;
    if let Some(url) = &body.url {
        http_url("url", url)?;
    }
    sqlx::query("UPDATE git_repos SET notify_url = ? WHERE id = ?")
        .bind(&body.url)
        .bind(repo.id)
        .execute(&app.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    repo: String,
    /// Jobs of this repository running at once; null for no limit.
    max_concurrent: Option<i64>,
}

/// Admin: cap how many of a repository's jobs run at once.
pub async fn set_limits(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<Limits>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    caller.check(&body.repo)?;
    let repo = app.repos.get(&body.repo).await?;
    if body
        .max_concurrent
        .is_some_and(|n| !(1..=10_000).contains(&n))
    {
        return Err(ApiError::invalid(
            Part::Body,
            "max_concurrent",
            "max_concurrent must be 1 to 10000, or null",
        ));
    }
    sqlx::query("UPDATE git_repos SET max_concurrent = ? WHERE id = ?")
        .bind(body.max_concurrent)
        .bind(repo.id)
        .execute(&app.db)
        .await?;
    // A raised limit may let queued jobs start.
    app.scheduler.wake();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullAllow {
    repo: String,
    /// Repositories of this server's registry its pipelines may pull
    /// besides their own: names, `prefix/*`, or `*`. Replaces the list.
    patterns: Vec<String>,
}

/// Admin: what a repository's pipelines may pull from this server's
/// registry besides their own repository (`pipeline::pull_allow`).
pub async fn set_pull_allow(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<PullAllow>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    caller.check(&body.repo)?;
    let repo = app.repos.get(&body.repo).await?;
    let patterns = crate::pipeline::pull_allow::validate(&body.patterns)
        .map_err(|e| ApiError::invalid(Part::Body, "patterns", format!("pull allowlist: {e}")))?;
    caller.check_pull_allow(&repo, &patterns)?;
    sqlx::query("UPDATE git_repos SET pull_allow = ? WHERE id = ?")
        .bind(serde_json::to_string(&patterns).expect("serialisable"))
        .bind(repo.id)
        .execute(&app.db)
        .await?;
    tracing::info!(repo = %repo.name, patterns = ?patterns, by = %caller.user().username, "pull allowlist set");
    Ok(StatusCode::NO_CONTENT)
}
