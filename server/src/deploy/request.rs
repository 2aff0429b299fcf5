//! New deployments: from a pipeline, a promotion or a rollback. A deployment
//! is (environment, digest, configuration snapshot); it starts pending and
//! supersedes the environment's older pending ones.

use sqlx::SqlitePool;

use super::audit;
use super::environments::{self, Environment};
use super::events;
use super::gates::{self, Requester};
use super::model::{Config, Deployment};
use super::DeployError;
use crate::app::App;
use crate::auth::users::User;
use crate::db::now_ms;
use crate::pipeline::repo::{GitRepo, SPEC_FILE};
use crate::pipeline::spec::{self, DeploySpec};

pub struct NewDeployment {
    pub kind: &'static str,
    pub repository: String,
    pub digest: String,
    pub pipeline_id: Option<i64>,
    pub commit_sha: Option<String>,
    pub config: Config,
    pub requester: Requester,
}

/// Queue a deployment to `env` through the environment's gates (who may
/// deploy, freezes, approvals: `gates.rs`); returns its id. It starts
/// `pending`, or `awaiting_approval` where approvals are required, and
/// supersedes the environment's older requests that have not started.
pub async fn create(app: &App, env: &Environment, new: NewDeployment) -> Result<i64, DeployError> {
    if !new.digest.starts_with("sha256:") || new.digest.len() != 71 {
        return Err(DeployError::Invalid(format!(
            "{:?} is not a sha256 digest: deploys take digests, never tags",
            new.digest
        )));
    }
    let now = now_ms();
    let spec_hash = new.config.spec_hash(&new.digest);
    let config = serde_json::to_string(&new.config).expect("config serialises");
    let repo: String = sqlx::query_scalar("SELECT name FROM git_repos WHERE id = ?")
        .bind(env.repo_id)
        .fetch_one(&app.db)
        .await?;
    let mut tx = app.db.begin_with("BEGIN IMMEDIATE").await?;
    let admission =
        match gates::admit(&mut tx, (env.id, &env.name), new.kind, &new.requester).await? {
            Ok(a) => a,
            // The caller (`promote`, `rollback`, the pipeline trigger)
            // audits it.
            Err(refusal) => return Err(refusal.into()),
        };
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO deployments (environment_id, kind, repository, digest, pipeline_id, commit_sha,
             config, spec_hash, state, requested_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(env.id)
    .bind(new.kind)
    .bind(&new.repository)
    .bind(&new.digest)
    .bind(new.pipeline_id)
    .bind(&new.commit_sha)
    .bind(&config)
    .bind(&spec_hash)
    .bind(admission.state)
    .bind(new.requester.name())
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let superseded: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE deployments SET state = 'superseded', reason = ?, finished_at = ?
         WHERE environment_id = ? AND state IN ('pending', 'awaiting_approval') AND id < ?
         RETURNING id, digest",
    )
    .bind(format!("superseded by deployment {id}"))
    .bind(now)
    .bind(env.id)
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let actor = new.requester.name();
    let what = format!(
        "{} of {} asked by {actor}: {}",
        new.kind,
        super::model::short_digest(&new.digest),
        admission.state
    );
    events::record(&mut tx, id, "requested", &what).await?;
    for (old, digest) in &superseded {
        events::record(
            &mut tx,
            *old,
            "superseded",
            &format!("superseded by deployment {id}"),
        )
        .await?;
        audit::record(
            &mut tx,
            audit::Entry {
                actor: &actor,
                action: "supersede",
                repo: Some(&repo),
                environment: Some(&env.name),
                digest: Some(digest),
                deployment_id: Some(*old),
                reason: Some(&format!("superseded by deployment {id}")),
                ..Default::default()
            },
        )
        .await?;
    }
    if admission.overrode.is_some() {
        sqlx::query("UPDATE deployments SET freeze_override = ? WHERE id = ?")
            .bind(new.requester.reason_text().unwrap_or_default())
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    gates::audit_request(
        &mut tx,
        &repo,
        &env.name,
        (id, new.kind, &new.digest),
        &new.requester,
        &admission,
    )
    .await?;
    if admission.state == "awaiting_approval" {
        // Approvals of this digest for this environment given earlier (and
        // not expired) count.
        let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        gates::settle(&mut tx, &d, now).await?;
    }
    tx.commit().await?;
    app.deploys.wake();
    tracing::info!(
        deployment = id,
        environment = %env.name,
        image = %format!("{}@{}", new.repository, new.digest),
        kind = new.kind,
        state = admission.state,
        "deployment queued"
    );
    Ok(id)
}

/// The deploy section of `.slipway.yml` at `sha`.
pub async fn deploy_spec(app: &App, repo: &GitRepo, sha: &str) -> Result<DeploySpec, DeployError> {
    let text = app
        .repos
        .read_file(repo, sha, SPEC_FILE, spec::MAX_BYTES)
        .await
        .map_err(|e| DeployError::Refused(e.to_string()))?
        .ok_or_else(|| DeployError::Refused(format!("there is no {SPEC_FILE} at commit {sha}")))?;
    let text = String::from_utf8(text)
        .map_err(|_| DeployError::Refused(format!("{SPEC_FILE} at {sha} is not UTF-8")))?;
    let parsed = spec::parse(SPEC_FILE, &text)
        .map_err(|e| DeployError::Refused(format!("{SPEC_FILE} at {sha}: {e}")))?;
    parsed
        .deploy
        .ok_or_else(|| DeployError::Refused(format!("{SPEC_FILE} at {sha} has no deploy section")))
}

/// The configuration of environment `env` in `deploy`.
pub fn config_for(deploy: &DeploySpec, env: &str) -> Result<Config, DeployError> {
    let e = deploy
        .environments
        .iter()
        .find(|e| e.name == env)
        .ok_or_else(|| {
            DeployError::Refused(format!(
                "the deploy section of the commit that built this image has no environment {env:?}"
            ))
        })?;
    Ok(Config::from_spec(
        &deploy.app,
        deploy.port,
        &deploy.health,
        e,
    ))
}

/// `promote --to ENV`: deploy to ENV the digest that runs healthy in the
/// environment before it in the chain. A refusal is audited.
pub async fn promote(
    app: &App,
    repo: &GitRepo,
    to: &str,
    requester: Requester,
) -> Result<(i64, Deployment), DeployError> {
    let who = requester.clone();
    let result = promote_unaudited(app, repo, to, requester).await;
    audit_refusal(app, repo, to, "promote", &who, &result).await?;
    result
}

/// Record a refused request in the audit (a database failure is not a
/// refusal).
async fn audit_refusal<T>(
    app: &App,
    repo: &GitRepo,
    env: &str,
    kind: &str,
    requester: &Requester,
    result: &Result<T, DeployError>,
) -> Result<(), DeployError> {
    match result {
        Err(DeployError::Db(_)) | Ok(_) => Ok(()),
        Err(e) => {
            gates::audit_refusal(&app.db, &repo.name, env, kind, requester, &e.to_string()).await?;
            Ok(())
        }
    }
}

async fn promote_unaudited(
    app: &App,
    repo: &GitRepo,
    to: &str,
    requester: Requester,
) -> Result<(i64, Deployment), DeployError> {
    let target = environments::get(&app.db, repo.id, to).await?;
    if target.position < 0 {
        return Err(DeployError::Refused(format!(
            "environment {to:?} is no longer in the deploy section's chain"
        )));
    }
    if target.position == 0 {
        return Err(DeployError::Refused(format!(
            "{to:?} is the first environment of the chain: pipelines on the default branch deploy to it"
        )));
    }
    let from: Environment =
        sqlx::query_as("SELECT * FROM environments WHERE repo_id = ? AND position = ?")
            .bind(repo.id)
            .bind(target.position - 1)
            .fetch_one(&app.db)
            .await?;
    let source = healthy_deployment(&app.db, &from).await?;
    let sha = source.commit_sha.clone().ok_or_else(|| {
        DeployError::Refused(format!(
            "deployment {} in {} has no commit to read the deploy section from",
            source.id, from.name
        ))
    })?;
    let deploy = deploy_spec(app, repo, &sha).await?;
    let config = config_for(&deploy, to)?;
    let id = create(
        app,
        &target,
        NewDeployment {
            kind: "promote",
            repository: source.repository.clone(),
            digest: source.digest.clone(),
            pipeline_id: source.pipeline_id,
            commit_sha: source.commit_sha.clone(),
            config,
            requester,
        },
    )
    .await?;
    Ok((id, source))
}

/// The environment's current deployment, if it is verified (`verify.rs`),
/// whole and healthy now.
async fn healthy_deployment(db: &SqlitePool, env: &Environment) -> Result<Deployment, DeployError> {
    let current: Option<Deployment> = sqlx::query_as(&format!(
        "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
        super::model::RUNNING
    ))
    .bind(env.id)
    .fetch_optional(db)
    .await?;
    let Some(current) = current else {
        return Err(DeployError::Refused(format!(
            "nothing runs in {} yet: a successful deployment there comes first",
            env.name
        )));
    };
    let progressing: Option<i64> = sqlx::query_scalar(
        "SELECT id FROM deployments WHERE environment_id = ? AND state = 'progressing'",
    )
    .bind(env.id)
    .fetch_optional(db)
    .await?;
    if let Some(id) = progressing {
        return Err(DeployError::Refused(format!(
            "deployment {id} is in progress in {}; promote once it has ended",
            env.name
        )));
    }
    if let Some(why) = super::verify::not_verified_because(db, &current).await? {
        return Err(DeployError::Refused(format!(
            "{}@{} is not verified in {} ({why})",
            current.repository,
            super::model::short_digest(&current.digest),
            env.name
        )));
    }
    let (ready, wanted): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(observed = 'ready'), 0), ? FROM instances
         WHERE environment_id = ? AND spec_hash = ? AND goal = 'run' AND routed = 'live'",
    )
    .bind(current.config().replicas as i64)
    .bind(env.id)
    .bind(&current.spec_hash)
    .fetch_one(db)
    .await?;
    if ready < wanted {
        return Err(DeployError::Refused(format!(
            "{}@{} is not healthy in {}: {ready} of {wanted} instances ready",
            current.repository,
            super::model::short_digest(&current.digest),
            env.name
        )));
    }
    Ok(current)
}

/// `rollback --env ENV [--to DIGEST]`: the previous digest verified there
/// (or the named one, if it was verified there), with the configuration it
/// had. A refusal is
/// audited.
pub async fn rollback(
    app: &App,
    repo: &GitRepo,
    env_name: &str,
    to: Option<&str>,
    requester: Requester,
) -> Result<(i64, Deployment), DeployError> {
    let who = requester.clone();
    let result = rollback_unaudited(app, repo, env_name, to, requester).await;
    audit_refusal(app, repo, env_name, "rollback", &who, &result).await?;
    result
}

async fn rollback_unaudited(
    app: &App,
    repo: &GitRepo,
    env_name: &str,
    to: Option<&str>,
    requester: Requester,
) -> Result<(i64, Deployment), DeployError> {
    let env = environments::get(&app.db, repo.id, env_name).await?;
    let current: Option<Deployment> = sqlx::query_as(&format!(
        "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
        super::model::RUNNING
    ))
    .bind(env.id)
    .fetch_optional(&app.db)
    .await?;
    let verified: Vec<Deployment> = sqlx::query_as(
        "SELECT * FROM deployments WHERE environment_id = ? AND verification = 'verified' ORDER BY id DESC",
    )
    .bind(env.id)
    .fetch_all(&app.db)
    .await?;
    let chosen = match to {
        Some(digest) => verified
            .iter()
            .find(|d| d.digest == digest)
            .ok_or_else(|| {
                DeployError::Refused(format!(
                    "{digest} was never verified in {env_name}: a rollback goes only to a digest \
                 verified there before"
                ))
            })?,
        None => verified
            .iter()
            .find(|d| current.as_ref().is_none_or(|c| d.spec_hash != c.spec_hash))
            .ok_or_else(|| {
                DeployError::Refused(format!(
                    "no earlier verified deployment in {env_name} to roll back to"
                ))
            })?,
    };
    let id = create(
        app,
        &env,
        NewDeployment {
            kind: "rollback",
            repository: chosen.repository.clone(),
            digest: chosen.digest.clone(),
            pipeline_id: chosen.pipeline_id,
            commit_sha: chosen.commit_sha.clone(),
            config: chosen.config(),
            requester,
        },
    )
    .await?;
    Ok((id, chosen.clone()))
}

/// Abort deployment `id` as `user` (`admin`: the credential acts as one),
/// who must be among its environment's deployers: one that has not started
/// (awaiting approval, pending) ends at once, failed; one in progress is
/// marked, and the reconciler's next pass fails it and reverts, as for a
/// failure. Audited. Returns the deployment after.
pub async fn abort(
    app: &App,
    id: i64,
    (user, admin): (&User, bool),
    reason: Option<&str>,
) -> Result<Deployment, DeployError> {
    let now = now_ms();
    let mut tx = app.db.begin_with("BEGIN IMMEDIATE").await?;
    let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("no deployment {id}")))?;
    let (repo, env): (String, String) = sqlx::query_as(
        "SELECT r.name, e.name FROM environments e JOIN git_repos r ON r.id = e.repo_id WHERE e.id = ?",
    )
    .bind(d.environment_id)
    .fetch_one(&mut *tx)
    .await?;
    let policy = gates::policy(&mut tx, d.environment_id).await?;
    if !gates::deployer(&policy, user, admin) {
        return Err(DeployError::Forbidden(format!(
            "{} may not abort deployments to {env}: only its deployers may",
            user.username
        )));
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let why = match reason {
        Some(r) => format!("aborted by {}: {r}", user.username),
        None => format!("aborted by {}", user.username),
    };
    match d.state.as_str() {
        "awaiting_approval" | "pending" => {
            sqlx::query(
                "UPDATE deployments SET state = 'failed', reason = ?, progress = NULL, finished_at = ? WHERE id = ?",
            )
            .bind(&why)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            events::record(&mut tx, id, "failed", &why).await?;
        }
        "progressing" => {
            sqlx::query("UPDATE deployments SET abort_requested = ? WHERE id = ?")
                .bind(&why)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            events::record(&mut tx, id, "abort", &format!("{why}: reverting")).await?;
        }
        other => {
            return Err(DeployError::Refused(format!(
                "deployment {id} is {other}: only one that has not ended can be aborted"
            )))
        }
    }
    audit::record(
        &mut tx,
        audit::Entry {
            actor: &user.username,
            action: "abort",
            repo: Some(&repo),
            environment: Some(&env),
            digest: Some(&d.digest),
            deployment_id: Some(id),
            reason,
            before: Some(serde_json::json!({ "state": d.state })),
            ..Default::default()
        },
    )
    .await?;
    let after: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    app.deploys.wake();
    tracing::info!(deployment = id, by = %user.username, %why, "deployment abort asked");
    Ok(after)
}

/// A repository's deployments, newest first.
pub async fn history(
    db: &SqlitePool,
    repo_id: i64,
    env: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Deployment)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e.name, d.id FROM deployments d JOIN environments e ON e.id = d.environment_id
         WHERE e.repo_id = ? AND (? IS NULL OR e.name = ?) ORDER BY d.id DESC LIMIT ?",
    )
    .bind(repo_id)
    .bind(env)
    .bind(env)
    .bind(limit)
    .fetch_all(db)
    .await?;
    let mut out = Vec::new();
    for (name, id) in rows {
        let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_one(db)
            .await?;
        out.push((name, d));
    }
    Ok(out)
}
