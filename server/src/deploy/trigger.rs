//! A pipeline on the default branch that succeeded and pushed `deploy.image`
//! deploys that digest to the first environment of the chain the server
//! keeps (see `environments::sync`). Pull requests, tags and other branches
//! never deploy.

use sqlx::SqliteConnection;

use super::environments;
use super::gates::{self, Requester};
use super::request::{self, NewDeployment};
use super::DeployError;
use crate::app::App;
use crate::db::now_ms;

/// Note a pipeline that succeeded (in the transaction that ends it).
pub async fn record(conn: &mut SqliteConnection, pipeline_id: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deploy_outbox (pipeline_id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(pipeline_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Handle every noted pipeline; each row goes once handled (a failure is
/// logged: the pipeline's own result does not change).
pub async fn drain(app: &App) -> Result<(), sqlx::Error> {
    let pending: Vec<i64> =
        sqlx::query_scalar("SELECT pipeline_id FROM deploy_outbox ORDER BY pipeline_id LIMIT 50")
            .fetch_all(&app.db)
            .await?;
    for pipeline in pending {
        match handle(app, pipeline).await {
            Ok(Some(id)) => tracing::info!(pipeline, deployment = id, "pipeline deploys"),
            Ok(None) => {}
            // The database failed: the row stays and is tried again.
            Err(DeployError::Db(e)) => return Err(e),
            Err(e) => tracing::warn!(pipeline, error = %e, "pipeline could not deploy"),
        }
        sqlx::query("DELETE FROM deploy_outbox WHERE pipeline_id = ?")
            .bind(pipeline)
            .execute(&app.db)
            .await?;
    }
    Ok(())
}

async fn handle(app: &App, pipeline_id: i64) -> Result<Option<i64>, DeployError> {
    let row: Option<(i64, i64, String, String, String)> = sqlx::query_as(
        "SELECT repo_id, number, commit_sha, git_ref, event FROM pipelines WHERE id = ? AND status = 'success'",
    )
    .bind(pipeline_id)
    .fetch_optional(&app.db)
    .await?;
    let Some((repo_id, number, sha, git_ref, event)) = row else {
        return Ok(None);
    };
    let repo = app
        .repos
        .by_id(repo_id)
        .await
        .map_err(|e| DeployError::Refused(e.to_string()))?;
    // A verify pipeline tests what runs; it never deploys.
    if event == "pull_request"
        || event == "verify"
        || git_ref != format!("refs/heads/{}", repo.default_branch)
    {
        return Ok(None);
    }
    let deploy = match request::deploy_spec(app, &repo, &sha).await {
        Ok(d) => d,
        Err(DeployError::Refused(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let digest: Option<String> = sqlx::query_scalar(
        "SELECT digest FROM pipeline_images WHERE pipeline_id = ? AND repository = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(pipeline_id)
    .bind(&deploy.image)
    .fetch_optional(&app.db)
    .await?;
    let Some(digest) = digest else {
        tracing::info!(pipeline_id, image = %deploy.image, "the pipeline pushed no deploy.image; nothing to deploy");
        return Ok(None);
    };
    let mut conn = app.db.acquire().await?;
    for kept in environments::sync(&mut conn, repo_id, &deploy).await? {
        tracing::warn!(pipeline_id, repo = %repo.name, "{kept}");
    }
    drop(conn);
    // The first environment of the server's chain, which this commit's spec
    // may not name (then nothing deploys by itself).
    let Some(env) = environments::list(&app.db, repo_id)
        .await?
        .into_iter()
        .find(|e| e.position == 0)
    else {
        return Ok(None);
    };
    if !deploy.environments.iter().any(|e| e.name == env.name) {
        tracing::warn!(pipeline_id, environment = %env.name, "the deploy section does not name the chain's first environment; nothing deploys");
        return Ok(None);
    }
    let config = request::config_for(&deploy, &env.name)?;
    let requester = Requester::Pipeline(number);
    let created = request::create(
        app,
        &env,
        NewDeployment {
            kind: "deploy",
            repository: deploy.image.clone(),
            digest,
            pipeline_id: Some(pipeline_id),
            commit_sha: Some(sha),
            config,
            requester: requester.clone(),
        },
    )
    .await;
    if let Err(
        e @ (DeployError::Refused(_) | DeployError::Forbidden(_) | DeployError::Invalid(_)),
    ) = &created
    {
        let why = e.to_string();
        gates::audit_refusal(&app.db, &repo.name, &env.name, "deploy", &requester, &why).await?;
    }
    Ok(Some(created?))
}
