//! What runners and users report: step results, job results, cancellation.
//! Runner reports are fenced by the attempt number: one from an older lease
//! changes nothing and is refused.

use slipway_runner::api::{JobStatus, StepStatus};

use super::{advance, Scheduler};
use crate::db::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("job {job} is not leased to this runner at attempt {attempt} (stale or finished)")]
    Stale { job: i64, attempt: i64 },
    #[error("job {job} has no step at position {position}")]
    NoStep { job: i64, position: i64 },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The job's pipeline, if `attempt` is the current lease of `runner`.
async fn current(
    conn: &mut sqlx::SqliteConnection,
    runner_id: i64,
    job_id: i64,
    attempt: i64,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pipeline_id, status FROM jobs WHERE id = ? AND attempt = ? AND runner_id = ?",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(runner_id)
    .fetch_optional(&mut *conn)
    .await
}

/// Record a step's state. Repeating the same report is harmless.
pub async fn report_step(
    s: &Scheduler,
    runner_id: i64,
    job_id: i64,
    position: i64,
    attempt: i64,
    status: StepStatus,
    exit_code: Option<i32>,
) -> Result<(), ReportError> {
    let mut tx = s.db.begin_with("BEGIN IMMEDIATE").await?;
    match current(&mut tx, runner_id, job_id, attempt).await? {
        Some((_, job_status)) if job_status == "leased" => {}
        _ => {
            return Err(ReportError::Stale {
                job: job_id,
                attempt,
            })
        }
    }
    let now = now_ms();
    let done = status != StepStatus::Running;
    let updated = sqlx::query(
        "UPDATE steps SET status = ?, exit_code = ?, attempt = ?,
             started_at = CASE WHEN ? THEN COALESCE(started_at, ?) ELSE started_at END,
             finished_at = CASE WHEN ? THEN ? END
         WHERE job_id = ? AND position = ?",
    )
    .bind(status.as_str())
    .bind(exit_code)
    .bind(attempt)
    .bind(status == StepStatus::Running)
    .bind(now)
    .bind(done)
    .bind(now)
    .bind(job_id)
    .bind(position)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(ReportError::NoStep {
            job: job_id,
            position,
        });
    }
    tx.commit().await?;
    Ok(())
}

/// Record how a job ended and move its pipeline on. Repeating the same report
/// for the same attempt is harmless.
pub async fn finish_job(
    s: &Scheduler,
    runner_id: i64,
    job_id: i64,
    attempt: i64,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<(), ReportError> {
    let mut tx = s.db.begin_with("BEGIN IMMEDIATE").await?;
    let pipeline_id = match current(&mut tx, runner_id, job_id, attempt).await? {
        Some((pipeline, job_status)) if job_status == "leased" => pipeline,
        Some((_, job_status)) if job_status == status.as_str() => return Ok(()),
        _ => {
            return Err(ReportError::Stale {
                job: job_id,
                attempt,
            })
        }
    };
    let now = now_ms();
    sqlx::query(
        "UPDATE jobs SET status = ?, reason = ?, finished_at = ?, lease_expires_at = NULL
         WHERE id = ?",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    // Steps the runner never reached.
    let leftover = if status == JobStatus::Cancelled {
        "cancelled"
    } else {
        "skipped"
    };
    sqlx::query(
        "UPDATE steps SET status = ?, finished_at = ? WHERE job_id = ? AND status IN ('pending', 'running')",
    )
    .bind(leftover)
    .bind(now)
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    let queued = advance(&mut tx, pipeline_id).await?;
    tx.commit().await?;
    // A finished job frees capacity and maybe a concurrency slot, and may
    // have queued the jobs that need it.
    let _ = queued;
    s.wake();
    Ok(())
}

/// Cancel a pipeline: jobs not started are cancelled at once; running ones are
/// flagged, and their runner stops them at its next heartbeat. Returns whether
/// the pipeline was still running.
pub async fn cancel_pipeline(s: &Scheduler, pipeline_id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = s.db.begin_with("BEGIN IMMEDIATE").await?;
    let now = now_ms();
    let waiting = sqlx::query(
        "UPDATE jobs SET status = 'cancelled', reason = 'cancelled before it started', finished_at = ?
         WHERE pipeline_id = ? AND status IN ('queued', 'blocked')",
    )
    .bind(now)
    .bind(pipeline_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE steps SET status = 'cancelled' WHERE status = 'pending'
         AND job_id IN (SELECT id FROM jobs WHERE pipeline_id = ? AND status = 'cancelled')",
    )
    .bind(pipeline_id)
    .execute(&mut *tx)
    .await?;
    let running = sqlx::query(
        "UPDATE jobs SET cancel_requested = 1 WHERE pipeline_id = ? AND status = 'leased'",
    )
    .bind(pipeline_id)
    .execute(&mut *tx)
    .await?;
    advance(&mut tx, pipeline_id).await?;
    tx.commit().await?;
    Ok(waiting.rows_affected() + running.rows_affected() > 0)
}
