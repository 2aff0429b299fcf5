//! Pipelines: the `.slipway.yml` spec (`spec/`), git repositories and their
//! mirrors (`repo.rs`), creating a pipeline from a commit (`create.rs`), the
//! durable job queue (`scheduler/`), step logs (`logs.rs`), forge webhooks
//! (`webhook/`), polling and cron (`triggers.rs`), secrets (`secrets.rs`),
//! what pipelines may pull (`pull_allow.rs`) and commit status (`notify.rs`).

pub mod artifacts;
pub mod create;
pub mod logs;
pub mod notify;
pub mod pull_allow;
pub mod repo;
pub mod scheduler;
pub mod secrets;
pub mod triggers;

// Parts of the model (spans, the glob patterns' source text) are kept for the
// web UI (issue 6), which will show them; nothing reads them yet.
#[allow(dead_code, unused_imports)]
pub mod spec;
pub mod webhook;
