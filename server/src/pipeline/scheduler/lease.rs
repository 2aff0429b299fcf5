//! Leasing: a runner takes the oldest queued job it can run. Each lease gets
//! its own token, returned only to the runner that asked: the job's routes,
//! its secrets and its registry tokens need it beside the runner's token.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use slipway_registry::access::RepoPattern;
use slipway_runner::api::JobDefinition;

use super::Scheduler;
use crate::db::now_ms;

/// The runner asking, as the server knows it.
#[derive(Debug, Clone)]
pub struct RunnerInfo {
    pub id: i64,
    pub labels: Vec<String>,
    pub capacity: i64,
    /// Patterns of the repositories whose jobs it takes; `None`: a shared
    /// runner, every repository's.
    pub repositories: Option<Vec<String>>,
}

impl RunnerInfo {
    /// It takes jobs of `repo`.
    pub fn takes(&self, repo: &str) -> bool {
        takes(self.repositories.as_deref(), repo)
    }
}

/// A runner limited to `repositories` (or not: `None`) takes jobs of `repo`.
pub fn takes(repositories: Option<&[String]>, repo: &str) -> bool {
    repositories.is_none_or(|patterns| {
        patterns
            .iter()
            .any(|p| RepoPattern::new(p.as_str()).matches(repo))
    })
}

/// How a lease token is kept: its sha256, in hex.
pub fn lease_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A job just leased.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub job_id: i64,
    pub attempt: i64,
    pub pipeline_id: i64,
    pub definition: JobDefinition,
    /// This lease's own secret (`sll_…`), kept only as a hash.
    pub lease_token: String,
}

/// One try: the oldest queued job whose labels the runner has, if the runner
/// has room and the job's repository is under its concurrency limit.
async fn try_lease(s: &Scheduler, runner: &RunnerInfo) -> Result<Option<LeasedJob>, sqlx::Error> {
    let mut tx = s.db.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_ms();
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE runner_id = ? AND status = 'leased'")
            .bind(runner.id)
            .fetch_one(&mut *tx)
            .await?;
    if running >= runner.capacity {
        return Ok(None);
    }
    #[allow(clippy::type_complexity)]
    let candidates: Vec<(i64, String, String, i64, Option<i64>, i64, String)> = sqlx::query_as(
        "SELECT j.id, j.labels, j.definition, j.pipeline_id, r.max_concurrent, r.id, r.name
         FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id JOIN git_repos r ON r.id = p.repo_id
         WHERE j.status = 'queued' ORDER BY j.queued_at, j.id LIMIT 200",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (job_id, labels, definition, pipeline_id, max_concurrent, repo_id, repo) in candidates {
        let labels: Vec<String> = serde_json::from_str(&labels).unwrap_or_default();
        if !labels.iter().all(|l| runner.labels.contains(l)) || !runner.takes(&repo) {
            continue;
        }
        if let Some(limit) = max_concurrent {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
                 WHERE p.repo_id = ? AND j.status = 'leased'",
            )
            .bind(repo_id)
            .fetch_one(&mut *tx)
            .await?;
            if active >= limit {
                continue;
            }
        }
        let lease_token = format!("sll_{}", hex::encode(rand::random::<[u8; 32]>()));
        let attempt: i64 = sqlx::query_scalar(
            "UPDATE jobs SET status = 'leased', attempt = attempt + 1, runner_id = ?,
                 lease_token_hash = ?, lease_expires_at = ?, started_at = COALESCE(started_at, ?)
             WHERE id = ? AND status = 'queued' RETURNING attempt",
        )
        .bind(runner.id)
        .bind(lease_token_hash(&lease_token))
        .bind(now + s.lease.as_millis() as i64)
        .bind(now)
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let started = sqlx::query(
            "UPDATE pipelines SET status = 'running', started_at = COALESCE(started_at, ?)
             WHERE id = ? AND status = 'pending'",
        )
        .bind(now)
        .bind(pipeline_id)
        .execute(&mut *tx)
        .await?;
        if started.rows_affected() > 0 {
            crate::pipeline::notify::record(&mut tx, pipeline_id, "running").await?;
        }
        tx.commit().await?;
        let definition =
            serde_json::from_str(&definition).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        return Ok(Some(LeasedJob {
            job_id,
            attempt,
            pipeline_id,
            definition,
            lease_token,
        }));
    }
    Ok(None)
}

/// Long-poll: wait up to `wait` for a job this runner can take.
pub async fn lease(
    s: &Scheduler,
    runner: &RunnerInfo,
    wait: Duration,
) -> Result<Option<LeasedJob>, sqlx::Error> {
    let deadline = Instant::now() + wait;
    loop {
        // Registered before looking, so a job queued in between is not missed.
        let woken = s.queued.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if let Some(job) = try_lease(s, runner).await? {
            return Ok(Some(job));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // Also look again now and then: a lease elsewhere may have freed a
        // concurrency slot without a wake-up.
        let _ = tokio::time::timeout(left.min(Duration::from_secs(5)), woken).await;
    }
}

/// Renew a lease. `Ok(Some(cancel))` when the attempt is current, `Ok(None)`
/// when it is stale (the job was re-leased, finished or expired).
pub async fn renew(
    s: &Scheduler,
    runner_id: i64,
    job_id: i64,
    attempt: i64,
) -> Result<Option<bool>, sqlx::Error> {
    let cancel: Option<i64> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = ?
         WHERE id = ? AND attempt = ? AND runner_id = ? AND status = 'leased'
         RETURNING cancel_requested",
    )
    .bind(now_ms() + s.lease.as_millis() as i64)
    .bind(job_id)
    .bind(attempt)
    .bind(runner_id)
    .fetch_optional(&s.db)
    .await?;
    sqlx::query("UPDATE runners SET last_seen_at = ? WHERE id = ?")
        .bind(now_ms())
        .bind(runner_id)
        .execute(&s.db)
        .await?;
    Ok(cancel.map(|c| c != 0))
}
