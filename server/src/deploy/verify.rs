//! Verification: what it means for a digest to be verified in an
//! environment, and what follows from it.
//!
//! A deployment that rolled out (`succeeded`) is verified once it stayed
//! healthy through the environment's `soak` and its `verify` job passed. The
//! verify job is a pipeline of its own (event `verify`, `pipeline/create.rs`
//! `create_verify`) whose steps reach the environment's router through their
//! runner (`runner/src/agent/reach.rs`). Only a verified digest is promoted
//! to the next environment (`request.rs`), and a rollback goes only to a
//! digest verified in that environment before.
//!
//! `deployments.verification`, each wait with its deadline and action:
//! - soaking (when the environment sets a `soak`): until `soak_until`,
//!   every instance of its spec stays ready; one that is not fails it. Then
//!   verifying (or verified without a job). Without a soak or a job, a
//!   deployment is verified as it rolls out; so is a rollback.
//! - verifying: the verify pipeline is created, then waited on for at most
//!   [`VERIFY_DEADLINE`]; action: it is cancelled and the verification fails.
//!   It passes → verified; anything else → failed.
//! - failed: the deployment's state becomes `failed` with the reason (it
//!   keeps running: `model::RUNNING`); with `on_verify_failure: rollback` a
//!   rollback to the last digest verified there is requested at once.
//! - cancelled: another deployment started or rolled out in the environment
//!   before the verification ended (its verify pipeline is cancelled).
//! - verified: audited and on the timeline in the same transaction, with
//!   `follow_up` set; the next pass, if the next environment's spec says
//!   `auto: true`, promotes to it, then clears `follow_up` (a restart in
//!   between loses nothing).
//!
//! Every transition is one conditional UPDATE on the row's current value,
//! so a pass that runs twice (or on a restarted server) acts once.

use std::time::Duration;

use sqlx::SqliteConnection;

use super::audit::{self, Entry};
use super::environments::Environment;
use super::gates::Requester;
use super::model::{short_digest, Deployment, RUNNING};
use super::{request, DeployError};
use crate::app::App;
use crate::db::now_ms;
use crate::pipeline::create::{create_verify, VerifyRun};
use crate::pipeline::repo::Commit;
use crate::pipeline::scheduler::cancel_pipeline;

/// The longest a verify pipeline may take from its creation.
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(3600);

/// Called in the transaction that marks `d` succeeded: what its
/// verification starts with.
pub(crate) async fn rolled_out(
    conn: &mut SqliteConnection,
    d: &Deployment,
    now: i64,
) -> Result<(), sqlx::Error> {
    let config = d.config();
    // A rollback goes only to a digest verified here before: it is verified
    // again once it runs (and promotes nothing by itself). Without a soak or
    // a verify job, rolling out healthy is all there is to verify.
    let (state, soak_until, how, follow_up) = if d.kind == "rollback" {
        (
            "verified",
            None,
            Some("rolled back to a digest verified here before"),
            false,
        )
    } else if config.soak_ms > 0 {
        ("soaking", Some(now + config.soak_ms as i64), None, false)
    } else if config.verify {
        ("verifying", None, None, false)
    } else {
        ("verified", None, Some("rolled out healthy"), true)
    };
    sqlx::query(
        "UPDATE deployments SET verification = ?, soak_until = ?, verify_reason = ?, follow_up = ?,
             verified_at = CASE WHEN ? = 'verified' THEN ? END
         WHERE id = ? AND verification IS NULL",
    )
    .bind(state)
    .bind(soak_until)
    .bind(how)
    .bind(follow_up)
    .bind(state)
    .bind(now)
    .bind(d.id)
    .execute(&mut *conn)
    .await?;
    match how {
        // A rollback is on the timeline, not in the audit as a verification.
        Some(how) if d.kind == "rollback" => {
            super::events::record(conn, d.id, "verified", how).await?
        }
        Some(how) => {
            record_outcome(conn, d, "verified", how).await?;
        }
        None => {}
    }
    Ok(())
}

/// One step for every deployment whose verification is under way, and the
/// auto-promotions of the ones that just passed.
pub async fn advance(app: &App) -> Result<(), sqlx::Error> {
    let open: Vec<Deployment> = sqlx::query_as(
        "SELECT * FROM deployments WHERE verification IN ('soaking', 'verifying') ORDER BY id",
    )
    .fetch_all(&app.db)
    .await?;
    for d in open {
        if let Err(e) = step(app, &d).await {
            tracing::warn!(deployment = d.id, error = %e, "verification step failed");
        }
    }
    let verified: Vec<Deployment> =
        sqlx::query_as("SELECT * FROM deployments WHERE follow_up = 1 ORDER BY id")
            .fetch_all(&app.db)
            .await?;
    for d in verified {
        match passed(app, &d).await {
            // Done: not again (a failure is tried on the next pass).
            Ok(()) => {
                sqlx::query("UPDATE deployments SET follow_up = 0 WHERE id = ?")
                    .bind(d.id)
                    .execute(&app.db)
                    .await?;
            }
            Err(e) => tracing::warn!(deployment = d.id, error = %e, "after a verification"),
        }
    }
    Ok(())
}

/// Mark `d` verified (from `from`), `how`, with its follow-up due.
async fn verified(app: &App, d: &Deployment, from: &str, how: &str) -> Result<(), sqlx::Error> {
    let mut tx = app.db.begin().await?;
    let moved = sqlx::query(
        "UPDATE deployments SET verification = 'verified', verified_at = ?, verify_reason = ?,
             follow_up = 1
         WHERE id = ? AND verification = ?",
    )
    .bind(now_ms())
    .bind(how)
    .bind(d.id)
    .bind(from)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved > 0 {
        record_outcome(&mut tx, d, "verified", how).await?;
    }
    tx.commit().await?;
    app.deploys.wake();
    Ok(())
}

async fn step(app: &App, d: &Deployment) -> Result<(), DeployError> {
    let now = now_ms();
    // Another deployment started or rolled out: this one's verification
    // ends unfinished.
    let newer: Option<(i64, String)> = sqlx::query_as(&format!(
        "SELECT id, state FROM deployments WHERE environment_id = ? AND id > ?
             AND (state = 'progressing' OR {RUNNING}) ORDER BY id LIMIT 1"
    ))
    .bind(d.environment_id)
    .bind(d.id)
    .fetch_optional(&app.db)
    .await?;
    if let Some((other, state)) = newer {
        let why = if state == "progressing" {
            format!("deployment {other} started before the verification ended")
        } else {
            format!("deployment {other} replaced it before the verification ended")
        };
        if settle(app, d, "cancelled", &why).await? {
            let mut conn = app.db.acquire().await?;
            super::events::record(&mut conn, d.id, "verify_cancelled", &why).await?;
            if let Some(p) = d.verify_pipeline_id {
                cancel_pipeline(&app.scheduler, p).await?;
            }
        }
        return Ok(());
    }
    match d.verification.as_deref() {
        Some("soaking") => {
            if let Some(why) = unhealthy(&app.db, d).await? {
                return fail(app, d, &format!("not healthy during the soak: {why}")).await;
            }
            if d.soak_until.is_some_and(|t| now >= t) {
                if d.config().verify {
                    sqlx::query(
                        "UPDATE deployments SET verification = 'verifying'
                         WHERE id = ? AND verification = 'soaking'",
                    )
                    .bind(d.id)
                    .execute(&app.db)
                    .await?;
                    app.deploys.wake();
                } else {
                    let soak = Duration::from_millis(d.config().soak_ms);
                    let how = format!(
                        "stayed healthy through its soak of {}",
                        humantime::format_duration(soak)
                    );
                    verified(app, d, "soaking", &how).await?;
                }
            }
        }
        Some("verifying") => match d.verify_pipeline_id {
            None => start_job(app, d).await?,
            Some(pipeline) => {
                let (number, status, created): (i64, String, i64) =
                    sqlx::query_as("SELECT number, status, created_at FROM pipelines WHERE id = ?")
                        .bind(pipeline)
                        .fetch_one(&app.db)
                        .await?;
                match status.as_str() {
                    "success" => {
                        let how = format!("verify job passed: pipeline {number}");
                        verified(app, d, "verifying", &how).await?;
                    }
                    "pending" | "running" => {
                        if now - created > VERIFY_DEADLINE.as_millis() as i64 {
                            cancel_pipeline(&app.scheduler, pipeline).await?;
                            let took = humantime::format_duration(VERIFY_DEADLINE);
                            fail(
                                app,
                                d,
                                &format!("verify job did not finish within {took}: pipeline {number} (cancelled)"),
                            )
                            .await?;
                        }
                    }
                    other => {
                        fail(
                            app,
                            d,
                            &format!("verify job {}: pipeline {number}", verb(other)),
                        )
                        .await?
                    }
                }
            }
        },
        _ => {}
    }
    Ok(())
}

fn verb(status: &str) -> &'static str {
    match status {
        "cancelled" => "was cancelled",
        "error" => "could not run",
        _ => "failed",
    }
}

/// Why `d` is not whole and ready now, if it is not. On a Kubernetes
/// cluster the soak does not watch pods yet (its rollout waited for them
/// Ready): it only waits.
async fn unhealthy(db: &sqlx::SqlitePool, d: &Deployment) -> Result<Option<String>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    if super::kube::rollout::bound(&mut conn, d.environment_id)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    drop(conn);
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, observed, health FROM instances
         WHERE environment_id = ? AND spec_hash = ? AND goal = 'run' AND routed = 'live'
         ORDER BY id",
    )
    .bind(d.environment_id)
    .bind(&d.spec_hash)
    .fetch_all(db)
    .await?;
    if let Some((name, observed, health)) = rows.iter().find(|(_, o, _)| o != "ready") {
        let detail = health
            .as_deref()
            .map(|h| format!(": {h}"))
            .unwrap_or_default();
        return Ok(Some(format!("instance {name} is {observed}{detail}")));
    }
    let wanted = d.config().replicas as usize;
    if rows.len() < wanted {
        return Ok(Some(format!("{} of {wanted} instances serve", rows.len())));
    }
    Ok(None)
}

/// The verify pipeline of `d`, once: the row is claimed first, so two
/// passes never make two.
async fn start_job(app: &App, d: &Deployment) -> Result<(), DeployError> {
    let env: Environment = sqlx::query_as("SELECT * FROM environments WHERE id = ?")
        .bind(d.environment_id)
        .fetch_one(&app.db)
        .await?;
    let repo = match app.repos.by_id(env.repo_id).await {
        Ok(r) => r,
        Err(e) => return fail(app, d, &format!("verify job could not start: {e}")).await,
    };
    let host: Option<String> = match env.node_id {
        Some(node) => {
            sqlx::query_scalar("SELECT router_host FROM nodes WHERE id = ?")
                .bind(node)
                .fetch_optional(&app.db)
                .await?
        }
        None => None,
    };
    let (Some(host), Some(port)) = (host, env.port) else {
        return fail(
            app,
            d,
            "verify job could not start: the environment has no router address",
        )
        .await;
    };
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let Some(sha) = d.commit_sha.clone() else {
        return fail(
            app,
            d,
            "verify job could not start: the deployment has no commit to read it from",
        )
        .await;
    };
    // The commit as its pipeline recorded it (message and author for people).
    let row: Option<(String, Option<String>, Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT git_ref, message, author, commit_time FROM pipelines WHERE id = ?")
            .bind(d.pipeline_id)
            .fetch_optional(&app.db)
            .await?;
    let (git_ref, message, author, time) = row.unwrap_or_else(|| {
        (
            format!("refs/heads/{}", repo.default_branch),
            None,
            None,
            None,
        )
    });
    let commit = Commit {
        sha,
        git_ref,
        message: message.unwrap_or_default(),
        author: author.unwrap_or_default(),
        time: time.unwrap_or(0),
    };
    let image = d.image();
    let pipeline = create_verify(
        &app.db,
        &app.repos,
        &repo,
        &commit,
        VerifyRun {
            deployment_id: d.id,
            environment: &env.name,
            image: &image,
            digest: &d.digest,
            reach: slipway_runner::api::Reach {
                port: port as u16,
                target,
            },
        },
    )
    .await
    .map_err(|e| DeployError::Refused(format!("creating the verify pipeline: {e}")))?;
    let claimed = sqlx::query(
        "UPDATE deployments SET verify_pipeline_id = ?
         WHERE id = ? AND verification = 'verifying' AND verify_pipeline_id IS NULL",
    )
    .bind(pipeline)
    .bind(d.id)
    .execute(&app.db)
    .await?
    .rows_affected();
    if claimed == 0 {
        // Another pass got there first, or the verification ended meanwhile.
        cancel_pipeline(&app.scheduler, pipeline).await?;
        return Ok(());
    }
    let number: i64 = sqlx::query_scalar("SELECT number FROM pipelines WHERE id = ?")
        .bind(pipeline)
        .fetch_one(&app.db)
        .await?;
    let mut conn = app.db.acquire().await?;
    super::events::record(
        &mut conn,
        d.id,
        "verify_started",
        &format!("verify job queued: pipeline {number} (/pipelines/{pipeline})"),
    )
    .await?;
    app.scheduler.wake();
    tracing::info!(deployment = d.id, pipeline, environment = %env.name, "verify job queued");
    Ok(())
}

/// Move `d` from its open verification state to `to` (`failed`,
/// `cancelled`) with `why`; false if another pass already did.
async fn settle(app: &App, d: &Deployment, to: &str, why: &str) -> Result<bool, sqlx::Error> {
    let failed = to == "failed";
    let moved = sqlx::query(
        "UPDATE deployments SET verification = ?, verify_reason = ?,
             state = CASE WHEN ? THEN 'failed' ELSE state END,
             reason = CASE WHEN ? THEN ? ELSE reason END
         WHERE id = ? AND verification IN ('soaking', 'verifying')",
    )
    .bind(to)
    .bind(why)
    .bind(failed)
    .bind(failed)
    .bind(why)
    .bind(d.id)
    .execute(&app.db)
    .await?
    .rows_affected();
    Ok(moved > 0)
}

/// The verification failed: the deployment is marked failed (and audited);
/// with `on_verify_failure: rollback`, a rollback is requested.
async fn fail(app: &App, d: &Deployment, why: &str) -> Result<(), DeployError> {
    if !settle(app, d, "failed", why).await? {
        return Ok(());
    }
    let mut conn = app.db.acquire().await?;
    let env = record_outcome(&mut conn, d, "verify_failed", why).await?;
    drop(conn);
    tracing::warn!(deployment = d.id, environment = %env, "{why}");
    if d.config().rollback_on_verify_failure {
        let git = app
            .repos
            .by_id(env_repo_id(app, d).await?)
            .await
            .map_err(|e| DeployError::Refused(e.to_string()))?;
        let because = format!(
            "on_verify_failure: rollback ({}@{}: {why})",
            d.repository,
            short_digest(&d.digest)
        );
        match request::rollback(app, &git, &env, None, Requester::Controller(because)).await {
            Ok((id, to)) => tracing::info!(
                deployment = id,
                environment = %env,
                to = %to.image(),
                "verification failed; rolling back"
            ),
            Err(DeployError::Db(e)) => return Err(DeployError::Db(e)),
            // Refused (nothing verified here before): audited by rollback.
            Err(e) => tracing::warn!(environment = %env, "verification failed; no rollback: {e}"),
        }
    }
    app.deploys.wake();
    Ok(())
}

/// `d` is verified (and audited as such): promote to the next environment
/// of the chain when the deploy section of `d`'s commit says `auto: true`
/// there.
async fn passed(app: &App, d: &Deployment) -> Result<(), DeployError> {
    let how = d.verify_reason.as_deref().unwrap_or("verified");
    let env: String = sqlx::query_scalar("SELECT name FROM environments WHERE id = ?")
        .bind(d.environment_id)
        .fetch_one(&app.db)
        .await?;
    tracing::info!(deployment = d.id, environment = %env, "verified: {how}");
    let repo_id = env_repo_id(app, d).await?;
    let next: Option<String> = sqlx::query_scalar(
        "SELECT n.name FROM environments e JOIN environments n
             ON n.repo_id = e.repo_id AND n.position = e.position + 1
         WHERE e.id = ? AND e.position >= 0",
    )
    .bind(d.environment_id)
    .fetch_optional(&app.db)
    .await?;
    let (Some(next), Some(sha)) = (next, d.commit_sha.as_deref()) else {
        return Ok(());
    };
    let git = app
        .repos
        .by_id(repo_id)
        .await
        .map_err(|e| DeployError::Refused(e.to_string()))?;
    let auto = match request::deploy_spec(app, &git, sha).await {
        Ok(spec) => spec
            .environments
            .iter()
            .any(|e| e.name == next && e.verification.auto),
        Err(DeployError::Refused(_)) => false,
        Err(e) => return Err(e),
    };
    if !auto {
        return Ok(());
    }
    let because = format!("auto: {} verified in {env} ({how})", d.image());
    match request::promote(app, &git, &next, Requester::Controller(because)).await {
        Ok((id, _)) => {
            tracing::info!(deployment = id, environment = %next, "auto-promoted")
        }
        Err(DeployError::Db(e)) => return Err(DeployError::Db(e)),
        // Refused (a freeze, who may deploy): audited by promote.
        Err(e) => tracing::warn!(environment = %next, "auto-promotion refused: {e}"),
    }
    Ok(())
}

/// Record how `d`'s verification ended (`verified`, `verify_failed`) and
/// why, in the audit and on its timeline, in the caller's transaction; its
/// environment's name.
async fn record_outcome(
    conn: &mut SqliteConnection,
    d: &Deployment,
    action: &str,
    why: &str,
) -> Result<String, sqlx::Error> {
    let (repo, env): (String, String) = sqlx::query_as(
        "SELECT r.name, e.name FROM environments e JOIN git_repos r ON r.id = e.repo_id WHERE e.id = ?",
    )
    .bind(d.environment_id)
    .fetch_one(&mut *conn)
    .await?;
    audit::record(
        &mut *conn,
        Entry {
            actor: "slipway",
            action,
            repo: Some(&repo),
            environment: Some(&env),
            digest: Some(&d.digest),
            deployment_id: Some(d.id),
            reason: Some(why),
            ..Default::default()
        },
    )
    .await?;
    super::events::record(conn, d.id, action, why).await?;
    Ok(env)
}

async fn env_repo_id(app: &App, d: &Deployment) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT repo_id FROM environments WHERE id = ?")
        .bind(d.environment_id)
        .fetch_one(&app.db)
        .await
}

/// Why `d` does not count as verified, for a refusal; None when it does.
pub async fn not_verified_because(
    db: &sqlx::SqlitePool,
    d: &Deployment,
) -> Result<Option<String>, sqlx::Error> {
    Ok(match d.verification.as_deref() {
        Some("verified") => None,
        Some("soaking") => Some(match d.soak_until {
            Some(t) => format!(
                "soaking until {}",
                chrono::DateTime::from_timestamp_millis(t)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            ),
            None => "soaking".to_owned(),
        }),
        Some("verifying") => {
            let number: Option<i64> =
                sqlx::query_scalar("SELECT number FROM pipelines WHERE id = ?")
                    .bind(d.verify_pipeline_id)
                    .fetch_optional(db)
                    .await?;
            Some(match number {
                Some(n) => format!("verify job running: pipeline {n}"),
                None => "verify job starting".to_owned(),
            })
        }
        Some(_) => Some(
            d.verify_reason
                .clone()
                .unwrap_or_else(|| "its verification did not pass".to_owned()),
        ),
        None => Some("it has not rolled out".to_owned()),
    })
}
