//! Reporting deployments outward: to the forge's deployments API where it
//! has one (GitHub Deployments and their statuses; GitLab deployments) and
//! to the repository's outgoing webhook (`deployment.status`, signed like
//! pipeline events: `pipeline/notify.rs`).
//!
//! Database triggers (migration 0016) write a `deploy_status_outbox` row in
//! the transaction that changes a deployment's state or verification; this
//! loop delivers the deployment's state as it is then, newest first per
//! deployment, with retries and backoff (deadline: [`MAX_ATTEMPTS`] tries
//! over about an hour; action: logged and dropped). A forge deployment is
//! created once (its id kept in `deployments.forge_deployment_id`), then
//! each state is a status of it. Gitea has no deployments API: it gets the
//! webhook only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::model::Deployment;
use crate::app::App;
use crate::db::now_ms;
use crate::pipeline::notify::{forge_token, percent, post_signed, ForgeKind};

const MAX_ATTEMPTS: i64 = 15;

/// Where a deployment is reported, and what it is.
struct Target {
    d: Deployment,
    repo_id: i64,
    repo: String,
    environment: String,
    /// The last environment of the chain (GitHub's production environment).
    last: bool,
    git_ref: Option<String>,
    webhook_secret: String,
    forge_kind: Option<String>,
    forge_api: Option<String>,
    forge_repository: Option<String>,
    notify_url: Option<String>,
    forge_deployment_id: Option<String>,
}

/// The state a person would name: a deployment whose verification failed
/// is `failed`; verified, `verified`.
fn state_of(d: &Deployment) -> &str {
    match (d.state.as_str(), d.verification.as_deref()) {
        ("succeeded", Some("verified")) => "verified",
        (state, _) => state,
    }
}

fn github_state(d: &Deployment) -> &'static str {
    match d.state.as_str() {
        "awaiting_approval" => "pending",
        "pending" => "queued",
        "progressing" => "in_progress",
        "succeeded" => "success",
        "failed" | "rejected" => "failure",
        "superseded" => "inactive",
        _ => "error",
    }
}

fn gitlab_state(d: &Deployment) -> &'static str {
    match d.state.as_str() {
        "awaiting_approval" | "pending" | "progressing" => "running",
        "succeeded" => "success",
        "superseded" => "canceled",
        _ => "failed",
    }
}

async fn deliver(app: &App, http: &reqwest::Client, t: &Target) -> Result<(), String> {
    let base = app.settings.default_public_url();
    let base = base.trim_end_matches('/');
    let d = &t.d;
    let page = format!("{base}/deployments/{}", d.id);
    let api_url = format!("{base}/api/v1/deployments/{}", d.id);
    let state = state_of(d);
    let description = match &d.reason {
        Some(r) if state == "failed" || state == "rejected" => format!("{state}: {r}"),
        _ => format!("{} {state}", d.kind),
    };
    let description: String = description.chars().take(140).collect();
    if let (Some(kind), Some(api), Some(repository), Some(sha)) = (
        &t.forge_kind,
        &t.forge_api,
        &t.forge_repository,
        &d.commit_sha,
    ) {
        let kind = ForgeKind::parse(kind).ok_or_else(|| format!("unknown forge kind {kind:?}"))?;
        let token = forge_token(app, t.repo_id).await?;
        let api = api.trim_end_matches('/');
        let auth = |req: reqwest::RequestBuilder| match (&token, kind) {
            (Some(token), ForgeKind::GitHub) => req.bearer_auth(token),
            (Some(token), ForgeKind::GitLab) => req.header("PRIVATE-TOKEN", token),
            (Some(token), ForgeKind::Gitea) => {
                req.header("Authorization", format!("token {token}"))
            }
            (None, _) => req,
        };
        match kind {
            ForgeKind::GitHub => {
                let id = match &t.forge_deployment_id {
                    Some(id) => id.clone(),
                    None => {
                        let created = send(auth(
                            http.post(format!("{api}/repos/{repository}/deployments"))
                                .json(&json!({
                                    "ref": sha,
                                    "environment": t.environment,
                                    "description": format!("{} of {}", d.kind, d.image()),
                                    "auto_merge": false,
                                    "required_contexts": [],
                                    "payload": {"slipway_deployment": d.id, "image": d.image()},
                                    "production_environment": t.last,
                                    "transient_environment": false,
                                })),
                        ))
                        .await?;
                        remember(app, d.id, &created).await?
                    }
                };
                send(auth(
                    http.post(format!(
                        "{api}/repos/{repository}/deployments/{id}/statuses"
                    ))
                    .json(&json!({
                        "state": github_state(d),
                        "environment": t.environment,
                        "log_url": page,
                        "description": description,
                        "auto_inactive": true,
                    })),
                ))
                .await?;
            }
            ForgeKind::GitLab => {
                let project = percent(repository);
                let status = gitlab_state(d);
                match &t.forge_deployment_id {
                    None => {
                        let branch = t
                            .git_ref
                            .as_deref()
                            .and_then(|r| r.strip_prefix("refs/heads/"))
                            .unwrap_or("main");
                        let created = send(auth(
                            http.post(format!("{api}/projects/{project}/deployments"))
                                .json(&json!({
                                    "environment": t.environment,
                                    "sha": sha,
                                    "ref": branch,
                                    "tag": false,
                                    "status": status,
                                })),
                        ))
                        .await?;
                        remember(app, d.id, &created).await?;
                    }
                    Some(id) => {
                        send(auth(
                            http.put(format!("{api}/projects/{project}/deployments/{id}"))
                                .json(&json!({ "status": status })),
                        ))
                        .await?;
                    }
                }
            }
            // No deployments API: the webhook below is all.
            ForgeKind::Gitea => {}
        }
    }
    if let Some(url) = &t.notify_url {
        let body = json!({
            "event": "deployment.status",
            "deployment": {
                "id": d.id,
                "repo": t.repo,
                "environment": t.environment,
                "kind": d.kind,
                "image": d.image(),
                "digest": d.digest,
                "commit": d.commit_sha,
                "state": d.state,
                "verification": d.verification,
                "reason": d.reason,
                "requested_by": d.requested_by,
                "url": page,
                "api_url": api_url,
            }
        });
        post_signed(http, url, &t.webhook_secret, "deployment.status", &body).await?;
    }
    Ok(())
}

/// Send to the forge; its JSON answer (Null when it has none).
async fn send(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("forge deployment: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!(
            "forge deployment: {} answered {status}",
            response.url()
        ));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("forge deployment: {e}"))?;
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Keep the id the forge gave a new deployment; it.
async fn remember(app: &App, deployment: i64, created: &Value) -> Result<String, String> {
    let id = match &created["id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() && s.len() <= 64 => s.clone(),
        _ => {
            return Err(format!(
                "the forge created a deployment without an id: {created}"
            ))
        }
    };
    sqlx::query("UPDATE deployments SET forge_deployment_id = ? WHERE id = ?")
        .bind(&id)
        .bind(deployment)
        .execute(&app.db)
        .await
        .map_err(|e| e.to_string())?;
    Ok(id)
}

/// One pass over what is due; how many reports were delivered.
pub async fn deliver_due(app: &App, http: &reqwest::Client) -> Result<usize, sqlx::Error> {
    let now = now_ms();
    // The newest report per deployment says its state as it is now.
    sqlx::query(
        "DELETE FROM deploy_status_outbox WHERE id NOT IN
             (SELECT MAX(id) FROM deploy_status_outbox GROUP BY deployment_id)",
    )
    .execute(&app.db)
    .await?;
    let due: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT id, deployment_id, attempts FROM deploy_status_outbox
         WHERE next_attempt_at <= ? ORDER BY id LIMIT 50",
    )
    .bind(now)
    .fetch_all(&app.db)
    .await?;
    let mut delivered = 0;
    for (id, deployment, attempts) in due {
        let Some(target) = target(app, deployment).await? else {
            sqlx::query("DELETE FROM deploy_status_outbox WHERE id = ?")
                .bind(id)
                .execute(&app.db)
                .await?;
            continue;
        };
        if target.forge_kind.is_none() && target.notify_url.is_none() {
            sqlx::query("DELETE FROM deploy_status_outbox WHERE id = ?")
                .bind(id)
                .execute(&app.db)
                .await?;
            continue;
        }
        match deliver(app, http, &target).await {
            Ok(()) => {
                sqlx::query("DELETE FROM deploy_status_outbox WHERE id = ?")
                    .bind(id)
                    .execute(&app.db)
                    .await?;
                delivered += 1;
            }
            Err(e) if attempts + 1 >= MAX_ATTEMPTS => {
                tracing::error!(deployment, error = %e, "giving up on reporting a deployment state");
                sqlx::query("DELETE FROM deploy_status_outbox WHERE id = ?")
                    .bind(id)
                    .execute(&app.db)
                    .await?;
            }
            Err(e) => {
                let backoff = 1000i64 << attempts.min(9); // 1 s .. ~8.5 min
                tracing::warn!(deployment, error = %e, "reporting a deployment state failed; will retry");
                sqlx::query(
                    "UPDATE deploy_status_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
                     WHERE id = ?",
                )
                .bind(now + backoff)
                .bind(&e)
                .bind(id)
                .execute(&app.db)
                .await?;
            }
        }
    }
    Ok(delivered)
}

async fn target(app: &App, deployment: i64) -> Result<Option<Target>, sqlx::Error> {
    let Some(d) = sqlx::query_as::<_, Deployment>("SELECT * FROM deployments WHERE id = ?")
        .bind(deployment)
        .fetch_optional(&app.db)
        .await?
    else {
        return Ok(None);
    };
    #[allow(clippy::type_complexity)]
    let row: (
        i64,
        String,
        String,
        bool,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = sqlx::query_as(
        "SELECT r.id, r.name, e.name,
                 e.position = (SELECT MAX(position) FROM environments WHERE repo_id = e.repo_id),
                 r.webhook_secret, r.forge_kind, r.forge_api, r.forge_repository, r.notify_url,
                 d.forge_deployment_id
             FROM deployments d JOIN environments e ON e.id = d.environment_id
             JOIN git_repos r ON r.id = e.repo_id WHERE d.id = ?",
    )
    .bind(deployment)
    .fetch_one(&app.db)
    .await?;
    let git_ref: Option<String> = sqlx::query_scalar("SELECT git_ref FROM pipelines WHERE id = ?")
        .bind(d.pipeline_id)
        .fetch_optional(&app.db)
        .await?;
    Ok(Some(Target {
        d,
        repo_id: row.0,
        repo: row.1,
        environment: row.2,
        last: row.3,
        git_ref,
        webhook_secret: row.4,
        forge_kind: row.5,
        forge_api: row.6,
        forge_repository: row.7,
        notify_url: row.8,
        forge_deployment_id: row.9,
    }))
}

/// Deliver reports in the background, checking twice a second.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&app, &http).await {
                tracing::error!(error = %e, "deployment status delivery pass failed");
            }
        }
    })
}
