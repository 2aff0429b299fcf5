//! Reporting pipeline states outward: to the forge's commit-status API (GitHub,
//! Gitea, GitLab) and to a generic outgoing webhook.
//!
//! Every state change writes a `status_outbox` row in the transaction that
//! makes the change ([`record`]); a background task ([`spawn`]) delivers them
//! with retries and backoff, latest state per pipeline first (older undelivered
//! states of the same pipeline are superseded), so a restart or a forge outage
//! loses no final state. The generic webhook is signed like GitHub's:
//! `X-Slipway-Signature-256: sha256=<HMAC of the body with the repository's
//! webhook secret>`.

use std::sync::Arc;
use std::time::Duration;

use hmac::Mac;
use serde_json::json;
use sqlx::SqliteConnection;

use crate::app::App;
use crate::db::now_ms;

/// The secret name the forge token is kept under (not a valid step secret
/// name, so no step can ask for it).
pub const FORGE_TOKEN: &str = "slipway:forge-token";
const MAX_ATTEMPTS: i64 = 15;

/// Queue a report of `status` for `pipeline_id` (inside the caller's
/// transaction).
pub async fn record(
    conn: &mut SqliteConnection,
    pipeline_id: i64,
    status: &str,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO status_outbox (pipeline_id, status, created_at, next_attempt_at) VALUES (?, ?, ?, ?)",
    )
    .bind(pipeline_id)
    .bind(status)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    Gitea,
    GitLab,
}

impl ForgeKind {
    pub fn parse(s: &str) -> Option<ForgeKind> {
        match s {
            "github" => Some(ForgeKind::GitHub),
            "gitea" => Some(ForgeKind::Gitea),
            "gitlab" => Some(ForgeKind::GitLab),
            _ => None,
        }
    }
}

struct Target {
    pipeline_id: i64,
    number: i64,
    repo_id: i64,
    repo: String,
    commit: String,
    git_ref: String,
    webhook_secret: String,
    forge_kind: Option<String>,
    forge_api: Option<String>,
    forge_repository: Option<String>,
    notify_url: Option<String>,
}

/// Percent-encoding for a URL path segment or query value.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn deliver(
    app: &App,
    http: &reqwest::Client,
    t: &Target,
    status: &str,
) -> Result<(), String> {
    let base = app.settings.default_public_url();
    // The forge links to the pipeline's page in the web UI.
    let base = base.trim_end_matches('/');
    let target_url = format!("{base}/pipelines/{}", t.pipeline_id);
    let api_url = format!("{base}/api/v1/pipelines/{}", t.pipeline_id);
    let description = format!("pipeline #{} {status}", t.number);
    if let (Some(kind), Some(api), Some(repository)) =
        (&t.forge_kind, &t.forge_api, &t.forge_repository)
    {
        let kind = ForgeKind::parse(kind).ok_or_else(|| format!("unknown forge kind {kind:?}"))?;
        let token = forge_token(app, t.repo_id).await?;
        let api = api.trim_end_matches('/');
        let request = match kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                let state = match status {
                    "pending" | "running" => "pending",
                    "success" => "success",
                    "failure" => "failure",
                    _ => "error",
                };
                let req = http
                    .post(format!("{api}/repos/{repository}/statuses/{}", t.commit))
                    .json(&json!({
                        "state": state,
                        "target_url": target_url,
                        "description": description,
                        "context": "slipway",
                    }));
                match &token {
                    Some(token) if kind == ForgeKind::GitHub => req.bearer_auth(token),
                    Some(token) => req.header("Authorization", format!("token {token}")),
                    None => req,
                }
            }
            ForgeKind::GitLab => {
                let state = match status {
                    "pending" => "pending",
                    "running" => "running",
                    "success" => "success",
                    "cancelled" => "canceled",
                    _ => "failed",
                };
                let req = http
                    .post(format!(
                        "{api}/projects/{}/statuses/{}",
                        percent(repository),
                        t.commit
                    ))
                    .query(&[
                        ("state", state),
                        ("name", "slipway"),
                        ("target_url", target_url.as_str()),
                        ("description", description.as_str()),
                    ]);
                match &token {
                    Some(token) => req.header("PRIVATE-TOKEN", token),
                    None => req,
                }
            }
        };
        let response = request
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("forge status: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "forge status: {} answered {}",
                api,
                response.status()
            ));
        }
    }
    if let Some(url) = &t.notify_url {
        let body = json!({
            "event": "pipeline.status",
            "pipeline": {
                "id": t.pipeline_id,
                "number": t.number,
                "repo": t.repo,
                "commit": t.commit,
                "ref": t.git_ref,
                "status": status,
                "url": target_url,
                "api_url": api_url,
            }
        });
        post_signed(http, url, &t.webhook_secret, "pipeline.status", &body).await?;
    }
    Ok(())
}

/// The repository's forge token, if it has one.
pub async fn forge_token(app: &App, repo_id: i64) -> Result<Option<String>, String> {
    Ok(app
        .secrets
        .values(repo_id, &[FORGE_TOKEN.to_owned()], false)
        .await
        .map_err(|e| e.to_string())?
        .pop()
        .map(|(_, v)| v))
}

/// POST `body` to the outgoing webhook `url` as event `event`, signed with
/// the repository's webhook secret (`X-Slipway-Signature-256`).
pub async fn post_signed(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    event: &str,
    body: &serde_json::Value,
) -> Result<(), String> {
    let body = serde_json::to_vec(body).expect("serialisable");
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Slipway-Event", event)
        .header("X-Slipway-Signature-256", signature)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("notify webhook: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "notify webhook: {url} answered {}",
            response.status()
        ));
    }
    Ok(())
}

/// One pass over what is due; returns how many reports were delivered.
pub async fn deliver_due(app: &App, http: &reqwest::Client) -> Result<usize, sqlx::Error> {
    let now = now_ms();
    // Only the newest report per pipeline matters; older ones are superseded.
    sqlx::query(
        "DELETE FROM status_outbox WHERE id NOT IN (SELECT MAX(id) FROM status_outbox GROUP BY pipeline_id)",
    )
    .execute(&app.db)
    .await?;
    #[allow(clippy::type_complexity)]
    let due: Vec<(
        i64,
        String,
        i64,
        i64,
        i64,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT o.id, o.status, o.attempts, p.id, p.number, r.id, r.name, p.commit_sha, p.git_ref,
                 r.webhook_secret, r.forge_kind, r.forge_api, r.forge_repository, r.notify_url
             FROM status_outbox o JOIN pipelines p ON p.id = o.pipeline_id
             JOIN git_repos r ON r.id = p.repo_id
             WHERE o.next_attempt_at <= ? ORDER BY o.id LIMIT 50",
    )
    .bind(now)
    .fetch_all(&app.db)
    .await?;
    let mut delivered = 0;
    for row in due {
        let (id, status, attempts) = (row.0, row.1.clone(), row.2);
        let target = Target {
            pipeline_id: row.3,
            number: row.4,
            repo_id: row.5,
            repo: row.6,
            commit: row.7,
            git_ref: row.8,
            webhook_secret: row.9,
            forge_kind: row.10,
            forge_api: row.11,
            forge_repository: row.12,
            notify_url: row.13,
        };
        match deliver(app, http, &target, &status).await {
            Ok(()) => {
                sqlx::query("DELETE FROM status_outbox WHERE id = ?")
                    .bind(id)
                    .execute(&app.db)
                    .await?;
                delivered += 1;
            }
            Err(e) if attempts + 1 >= MAX_ATTEMPTS => {
                tracing::error!(pipeline = target.pipeline_id, status, error = %e, "giving up on reporting a pipeline state");
                sqlx::query("DELETE FROM status_outbox WHERE id = ?")
                    .bind(id)
                    .execute(&app.db)
                    .await?;
            }
            Err(e) => {
                let backoff = 1000i64 << attempts.min(9); // 1 s .. ~8.5 min
                tracing::warn!(pipeline = target.pipeline_id, status, error = %e, "reporting a pipeline state failed; will retry");
                sqlx::query(
                    "UPDATE status_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
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

/// Deliver reports in the background, checking twice a second.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if let Err(e) = deliver_due(&app, &http).await {
                tracing::error!(error = %e, "status delivery pass failed");
            }
        }
    })
}
