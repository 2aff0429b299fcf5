//! Leases that ran out: the runner is gone (crashed, cut off, killed). The job
//! goes back to the queue with its steps reset, or fails with the reason once
//! it has lost `max_attempts` leases.

use super::{advance, Scheduler};
use crate::db::now_ms;

/// One pass; returns how many jobs were requeued or failed.
pub async fn expire_leases(s: &Scheduler) -> Result<usize, sqlx::Error> {
    let now = now_ms();
    let mut tx = s.db.begin_with("BEGIN IMMEDIATE").await?;
    let expired: Vec<(i64, i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT j.id, j.pipeline_id, j.attempt, r.name FROM jobs j
         LEFT JOIN runners r ON r.id = j.runner_id
         WHERE j.status = 'leased' AND j.lease_expires_at < ?",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    for (job_id, pipeline_id, attempt, runner) in &expired {
        let runner = runner.as_deref().unwrap_or("a removed runner");
        if *attempt >= s.max_attempts {
            let reason = format!(
                "lost {attempt} times: the lease expired without a heartbeat (last on runner {runner:?}); giving up"
            );
            tracing::warn!(job = job_id, %reason, "job failed");
            sqlx::query(
                "UPDATE jobs SET status = 'error', reason = ?, finished_at = ?, lease_expires_at = NULL
                 WHERE id = ?",
            )
            .bind(&reason)
            .bind(now)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE steps SET status = 'skipped' WHERE job_id = ? AND status IN ('pending', 'running')",
            )
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        } else {
            let reason = format!(
                "requeued: the lease of attempt {attempt} on runner {runner:?} expired without a heartbeat"
            );
            tracing::warn!(job = job_id, %reason, "job requeued");
            sqlx::query(
                "UPDATE jobs SET status = 'queued', runner_id = NULL, lease_expires_at = NULL,
                     queued_at = ?, reason = ? WHERE id = ?",
            )
            .bind(now)
            .bind(&reason)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE steps SET status = 'pending', exit_code = NULL, started_at = NULL, finished_at = NULL
                 WHERE job_id = ? AND status != 'skipped'",
            )
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        }
        advance(&mut tx, *pipeline_id).await?;
    }
    tx.commit().await?;
    if !expired.is_empty() {
        s.wake();
    }
    Ok(expired.len())
}
