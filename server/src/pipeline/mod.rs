//! Pipelines: the `.slipway.yml` spec (`spec/`), git repositories and their
//! mirrors (`repo.rs`), creating a pipeline from a commit (`create.rs`), the
//! durable job queue (`scheduler/`), step logs (`logs.rs`) and forge webhooks
//! (`webhook/`).

pub mod create;
pub mod logs;
pub mod notify;
pub mod repo;
pub mod scheduler;
pub mod secrets;

// Parts of the model (cron, spans, glob texts) wait for the triggers that use
// them (issue 4, in progress).
#[allow(dead_code, unused_imports)]
pub mod spec;
pub mod webhook;
