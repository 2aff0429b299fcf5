//! The durable queue: jobs are rows, and everything here is a transition of
//! those rows in an immediate transaction, so a server restart loses nothing
//! and two requests never both win a transition.
//!
//! - `advance.rs`: after a job ends, unblock, skip or finish what follows, and
//!   keep the pipeline's status in step with its jobs.
//! - `lease.rs`: a runner's long-poll takes the oldest queued job it can run
//!   (labels, capacity, the repository's concurrency limit); heartbeats renew.
//! - `report.rs`: step results, job results and cancellation, fenced by the
//!   attempt number.
//! - `expire.rs`: leases that were not renewed go back to the queue, or fail
//!   the job after too many attempts.
//! - `queue.rs`: what waits, in which position, and which runners could take it
//!   (or why none can).

mod advance;
mod expire;
mod lease;
pub mod queue;
mod report;

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::Notify;

pub use advance::advance;
pub use expire::expire_leases;
pub use lease::{lease, lease_token_hash, renew, RunnerInfo};
pub use report::{cancel_pipeline, finish_job, report_step, ReportError};

#[derive(Clone)]
pub struct Scheduler {
    pub db: SqlitePool,
    /// Woken whenever a job may have become leasable.
    pub queued: Arc<Notify>,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// Leases a job may lose before it fails.
    pub max_attempts: i64,
}

impl Scheduler {
    pub fn new(db: SqlitePool, lease: Duration, max_attempts: i64) -> Scheduler {
        Scheduler {
            db,
            queued: Arc::new(Notify::new()),
            lease,
            max_attempts,
        }
    }

    pub fn wake(&self) {
        self.queued.notify_waiters();
    }
}

/// Terminal job states.
pub const DONE: [&str; 5] = ["success", "failure", "cancelled", "skipped", "error"];

#[cfg(test)]
mod tests {
    use slipway_runner::api::{JobStatus, StepStatus};

    use super::*;

    /// A database with one repository, one pipeline whose one job (two steps)
    /// is queued, and two runners; the scheduler gives up after two leases.
    async fn one_queued_job(dir: &std::path::Path) -> (Scheduler, i64, [RunnerInfo; 2]) {
        let db = crate::db::open(&dir.join("db.sqlite")).await.unwrap();
        let now = crate::db::now_ms();
        sqlx::query(
            "INSERT INTO git_repos (id, name, url, default_branch, webhook_secret, created_at)
             VALUES (1, 'team/app', '/nowhere', 'main', 'secret', ?)",
        )
        .bind(now)
        .execute(&db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO pipelines (id, repo_id, number, commit_sha, git_ref, event, triggered_by,
                 status, created_at)
             VALUES (1, 1, 1, 'abc', 'refs/heads/main', 'manual', 'test', 'pending', ?)",
        )
        .bind(now)
        .execute(&db)
        .await
        .unwrap();
        let definition = r#"{"name":"test","steps":[],"services":[]}"#;
        sqlx::query(
            "INSERT INTO jobs (id, pipeline_id, name, definition, needs, labels, status, queued_at)
             VALUES (1, 1, 'test', ?, '[]', '[]', 'queued', ?)",
        )
        .bind(definition)
        .bind(now)
        .execute(&db)
        .await
        .unwrap();
        for position in 0..2 {
            sqlx::query(
                "INSERT INTO steps (job_id, position, name, status) VALUES (1, ?, 's', 'pending')",
            )
            .bind(position)
            .execute(&db)
            .await
            .unwrap();
        }
        let mut runners = Vec::new();
        for (id, name) in [(1, "a"), (2, "b")] {
            sqlx::query(
                "INSERT INTO runners (id, name, token_hash, labels, capacity, created_at)
                 VALUES (?, ?, ?, '[]', 1, ?)",
            )
            .bind(id)
            .bind(name)
            .bind(name)
            .bind(now)
            .execute(&db)
            .await
            .unwrap();
            runners.push(RunnerInfo {
                id,
                labels: vec![],
                capacity: 1,
                repositories: None,
            });
        }
        let s = Scheduler::new(db, Duration::from_secs(60), 2);
        (s, 1, [runners[0].clone(), runners[1].clone()])
    }

    /// The lease ran out (as if its runner stopped sending heartbeats).
    async fn run_out(s: &Scheduler, job: i64) -> usize {
        sqlx::query("UPDATE jobs SET lease_expires_at = 0 WHERE id = ?")
            .bind(job)
            .execute(&s.db)
            .await
            .unwrap();
        expire_leases(s).await.unwrap()
    }

    async fn job_row(s: &Scheduler, job: i64) -> (String, i64, Option<String>) {
        sqlx::query_as("SELECT status, attempt, reason FROM jobs WHERE id = ?")
            .bind(job)
            .fetch_one(&s.db)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn reports_from_a_stale_attempt_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, job, [a, b]) = one_queued_job(dir.path()).await;
        let first = lease(&s, &a, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!((first.job_id, first.attempt), (job, 1));
        report_step(&s, a.id, job, 0, 1, StepStatus::Running, None)
            .await
            .unwrap();
        assert_eq!(run_out(&s, job).await, 1);
        assert_eq!(job_row(&s, job).await.0, "queued");
        let second = lease(&s, &b, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(second.attempt, 2);

        // Runner a comes back with attempt 1: every report is refused.
        let stale = |r: Result<(), ReportError>| {
            assert!(
                matches!(r, Err(ReportError::Stale { job: 1, attempt: 1 })),
                "{r:?}"
            )
        };
        stale(report_step(&s, a.id, job, 0, 1, StepStatus::Success, Some(0)).await);
        stale(finish_job(&s, a.id, job, 1, JobStatus::Success, None).await);
        assert_eq!(renew(&s, a.id, job, 1).await.unwrap(), None);
        // Nor may it use the new attempt's number: the lease is b's.
        assert!(matches!(
            report_step(&s, a.id, job, 0, 2, StepStatus::Success, Some(0)).await,
            Err(ReportError::Stale { .. })
        ));
        let step: (String, Option<i64>) =
            sqlx::query_as("SELECT status, exit_code FROM steps WHERE job_id = ? AND position = 0")
                .bind(job)
                .fetch_one(&s.db)
                .await
                .unwrap();
        assert_eq!(step, ("pending".to_owned(), None));
        assert_eq!(job_row(&s, job).await.0, "leased");

        // The current attempt reports normally, and repeating it is harmless.
        assert_eq!(renew(&s, b.id, job, 2).await.unwrap(), Some(false));
        for _ in 0..2 {
            finish_job(&s, b.id, job, 2, JobStatus::Success, None)
                .await
                .unwrap();
        }
        assert_eq!(job_row(&s, job).await.0, "success");
        stale(finish_job(&s, a.id, job, 1, JobStatus::Failure, None).await);
        assert_eq!(job_row(&s, job).await.0, "success");
    }

    #[tokio::test]
    async fn a_job_that_loses_too_many_leases_fails_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (s, job, [a, b]) = one_queued_job(dir.path()).await;
        lease(&s, &a, Duration::ZERO).await.unwrap().unwrap();
        run_out(&s, job).await;
        let (status, attempt, reason) = job_row(&s, job).await;
        assert_eq!((status.as_str(), attempt), ("queued", 1));
        assert_eq!(
            reason.unwrap(),
            "requeued: the lease of attempt 1 on runner \"a\" expired without a heartbeat"
        );

        lease(&s, &b, Duration::ZERO).await.unwrap().unwrap();
        run_out(&s, job).await;
        let (status, attempt, reason) = job_row(&s, job).await;
        assert_eq!((status.as_str(), attempt), ("error", 2));
        assert_eq!(
            reason.unwrap(),
            "lost 2 times: the lease expired without a heartbeat (last on runner \"b\"); giving up"
        );
        let steps: Vec<String> = sqlx::query_scalar("SELECT status FROM steps WHERE job_id = ?")
            .bind(job)
            .fetch_all(&s.db)
            .await
            .unwrap();
        assert_eq!(steps, ["skipped", "skipped"]);
        let pipeline: String = sqlx::query_scalar("SELECT status FROM pipelines WHERE id = 1")
            .fetch_one(&s.db)
            .await
            .unwrap();
        assert_eq!(pipeline, "failure");
        // Nothing is left to lease.
        assert!(lease(&s, &a, Duration::ZERO).await.unwrap().is_none());
    }
}
