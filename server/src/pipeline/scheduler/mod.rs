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
pub use lease::{lease, renew, RunnerInfo};
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
