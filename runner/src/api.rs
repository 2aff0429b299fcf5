//! The runner protocol: JSON bodies between the server and `slipway runner`,
//! kept apart from both sides' domain types so each can change without the
//! other. All under `/api/v1/runner/`, authenticated with the runner's token
//! (`Authorization: Bearer slr_…`), except `register`, which takes a one-time
//! registration token.
//!
//! - `POST register` [`RegisterRequest`] → [`RegisterResponse`]
//! - `POST lease` [`LeaseRequest`] → 200 [`Lease`], or 204 after the long-poll
//!   wait with nothing to do
//! - `GET  jobs/{job}/credentials?attempt=N` → [`JobCredentials`]: the steps'
//!   secrets and the job's registry tokens, never in the lease itself
//! - `POST jobs/{job}/heartbeat` [`Heartbeat`] → [`HeartbeatResponse`]
//! - `GET  jobs/{job}/source?attempt=N` → the commit's files as a tar
//! - `POST jobs/{job}/steps/{position}` [`StepReport`]
//! - `POST jobs/{job}/steps/{position}/log?attempt=N&offset=B` raw bytes →
//!   [`LogAck`]; bytes before the stored length are skipped (a resend), a gap
//!   is 409 with the length to resend from
//! - `POST jobs/{job}/artifacts?attempt=N` a tar of the job's artifacts
//! - `GET  jobs/{job}/artifacts/{from}?attempt=N` the artifacts of a needed job
//! - `POST jobs/{job}/images` [`ImageReport`]: an image a build step pushed
//! - `POST jobs/{job}/finish` [`JobReport`]
//!
//! Every report carries the attempt (the lease's fencing token); one from an
//! older attempt is refused with 409 and changes nothing.
//!
//! Every `jobs/{job}/…` call also carries the lease's own token
//! ([`Lease::lease_token`]) in [`LEASE_HEADER`]: the runner's token alone
//! reaches no job, so a leaked runner token cannot take over another
//! runner's job or its secrets. A lease's token is valid only while that
//! lease (job, attempt, runner) is current.

use serde::{Deserialize, Serialize};

/// A secret value in a `Debug` form: whether it is set, never what it is.
fn redacted(value: &str) -> &'static str {
    if value.is_empty() {
        "\"\""
    } else {
        "<redacted>"
    }
}

/// Secret `(name, value)` pairs as their names only.
fn names(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(name, _)| name.as_str()).collect()
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("registration_token", &redacted(&self.registration_token))
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("runner_id", &self.runner_id)
            .field("token", &redacted(&self.token))
            .finish()
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("lease_ms", &self.lease_ms)
            .field("lease_token", &redacted(&self.lease_token))
            .field("registry_token", &redacted(&self.registry_token))
            .field("push_token", &self.push_token.as_deref().map(redacted))
            .field("context", &self.context)
            .field("job", &self.job)
            .field("artifacts_from", &self.artifacts_from)
            .finish()
    }
}

impl std::fmt::Debug for JobCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCredentials")
            .field("registry_token", &redacted(&self.registry_token))
            .field("push_token", &self.push_token.as_deref().map(redacted))
            .field("steps", &self.steps)
            .finish()
    }
}

impl std::fmt::Debug for StepCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCredentials")
            .field("position", &self.position)
            .field("secrets", &names(&self.secrets))
            .field("withheld", &self.withheld)
            .finish()
    }
}

impl std::fmt::Debug for StepDefinition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepDefinition")
            .field("position", &self.position)
            .field("name", &self.name)
            .field("image", &self.image)
            .field("command", &self.command)
            .field("env", &self.env)
            .field("secrets", &names(&self.secrets))
            .field("withheld", &self.withheld)
            .field("timeout_secs", &self.timeout_secs)
            .field("retry", &self.retry)
            .field("skip", &self.skip)
            .field("build", &self.build)
            .field("refused", &self.refused)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    pub registration_token: String,
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: u32,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub runner_id: i64,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Jobs this runner can start now.
    pub free: u32,
    /// How long the server may hold the request open when nothing is queued.
    pub wait_ms: u64,
}

/// The header carrying a lease's token on every `jobs/{job}/…` call.
pub const LEASE_HEADER: &str = "x-slipway-lease";

#[derive(Clone, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: i64,
    pub attempt: i64,
    /// Renew (heartbeat) well within this.
    pub lease_ms: u64,
    /// This lease's own secret, for [`LEASE_HEADER`]; returned only here.
    pub lease_token: String,
    /// A pull-only bearer token for the server's registry, valid for hours:
    /// from [`JobCredentials`], not part of the lease's JSON.
    #[serde(skip)]
    pub registry_token: String,
    /// For jobs with build steps: a token that may also push to the
    /// repositories those steps name (none for a fork's pull request). From
    /// [`JobCredentials`], not part of the lease's JSON.
    #[serde(skip)]
    pub push_token: Option<String>,
    pub context: RunContext,
    pub job: JobDefinition,
    /// Jobs (that this one needs) whose artifacts go into the workspace
    /// before the first step: `GET jobs/{job}/artifacts/{from}?attempt=N`.
    #[serde(default)]
    pub artifacts_from: Vec<i64>,
}

/// What only the current lease may have: the steps' secret values and the
/// job's registry tokens (`GET jobs/{job}/credentials?attempt=N`, with the
/// lease's token).
#[derive(Clone, Serialize, Deserialize)]
pub struct JobCredentials {
    /// Pulls the pipeline's repository and its pull allowlist.
    pub registry_token: String,
    /// Also pushes where the job's build steps push (none when they may not).
    pub push_token: Option<String>,
    /// One per step, by position.
    pub steps: Vec<StepCredentials>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct StepCredentials {
    pub position: i64,
    /// The values of the secrets the step names (masked in its logs).
    pub secrets: Vec<(String, String)>,
    /// The secrets it names that it does not get (see
    /// [`StepDefinition::withheld`]).
    pub withheld: Vec<String>,
}

impl Lease {
    /// Put the lease's credentials where the job reads them.
    pub fn fill(&mut self, credentials: JobCredentials) {
        self.registry_token = credentials.registry_token;
        self.push_token = credentials.push_token;
        for c in credentials.steps {
            if let Some(step) = self.job.steps.iter_mut().find(|s| s.position == c.position) {
                step.secrets = c.secrets;
                step.withheld = c.withheld;
            }
        }
    }
}

/// What a step's `SLIPWAY_*` variables say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunContext {
    pub repo: String,
    pub pipeline_id: i64,
    pub pipeline_number: i64,
    pub commit: String,
    pub git_ref: String,
    pub job: String,
    /// The commit's time (seconds since the epoch): builds' SOURCE_DATE_EPOCH.
    #[serde(default)]
    pub commit_time: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobDefinition {
    pub name: String,
    pub steps: Vec<StepDefinition>,
    pub services: Vec<ServiceDefinition>,
    /// Workspace paths (files or directories) handed to the jobs that need
    /// this one, uploaded as a tar when the job succeeds.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// A verify job's one way out of its network namespace: the runner
    /// relays `127.0.0.1:{port}` inside it to the environment's router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

/// What a verify job reaches (`agent/reach.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reach {
    /// Where the job connects, on its own loopback.
    pub port: u16,
    /// `host:port` of the environment's router, as the runner reaches it.
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Command {
    /// Shell commands, run in order with `set -e`.
    Commands(Vec<String>),
    Exec {
        entrypoint: Option<Vec<String>>,
        args: Vec<String>,
    },
}

#[derive(Clone, Serialize, Deserialize)]
pub struct StepDefinition {
    pub position: i64,
    pub name: String,
    pub image: String,
    pub command: Command,
    /// Pipeline, job and matrix variables, then the step's own.
    pub env: Vec<(String, String)>,
    /// The secrets this step names; their values arrive with the lease's
    /// [`JobCredentials`] (in a lease's JSON the values are empty). The
    /// runner masks them in logs.
    pub secrets: Vec<(String, String)>,
    /// Secrets the step names that it does not get (not defined for the
    /// repository, or withheld from a fork's pull request): the step fails
    /// with a message naming them instead of running without them.
    #[serde(default)]
    pub withheld: Vec<String>,
    pub timeout_secs: Option<u64>,
    pub retry: u32,
    /// `when` did not match: report it skipped without running it.
    pub skip: bool,
    /// A build step: `image` and `command` are unused.
    #[serde(default)]
    pub build: Option<BuildDefinition>,
    /// The step fails with this message instead of running (e.g. a build
    /// that may not push where it names).
    #[serde(default)]
    pub refused: Option<String>,
}

/// A `build` step: a Containerfile built in the workspace and pushed to the
/// server's registry as `repository:<commit sha>` plus `tags`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildDefinition {
    /// Relative to the workspace.
    pub context: String,
    /// Relative to the workspace; `None`: the context's Containerfile or
    /// Dockerfile.
    pub file: Option<String>,
    /// A repository of the server's registry, e.g. `demo/app`.
    pub repository: String,
    pub tags: Vec<String>,
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    /// Share the build cache through the registry as `repository:buildcache`.
    #[serde(default)]
    pub registry_cache: bool,
}

/// An image a build step pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageReport {
    pub attempt: i64,
    pub step: i64,
    pub repository: String,
    /// The commit sha first.
    pub tags: Vec<String>,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceDefinition {
    pub name: String,
    pub image: String,
    pub command: Command,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub attempt: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Stop the job: kill its containers and report it cancelled.
    pub cancel: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Success,
    Failure,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Running => "running",
            StepStatus::Success => "success",
            StepStatus::Failure => "failure",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    pub attempt: i64,
    pub status: StepStatus,
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogAck {
    /// Bytes the server holds for this step attempt.
    pub length: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Success,
    Failure,
    Cancelled,
    Error,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub attempt: i64,
    pub status: JobStatus,
    /// Why, when it is not a plain success or failure.
    pub reason: Option<String>,
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    /// `{:?}` of the wire types that carry tokens and secret values shows
    /// the names, never the values.
    #[test]
    fn debug_output_redacts_tokens_and_secret_values() {
        let credentials = JobCredentials {
            registry_token: "REG-VALUE".into(),
            push_token: Some("PUSH-VALUE".into()),
            steps: vec![StepCredentials {
                position: 0,
                secrets: vec![("API_TOKEN".into(), "SECRET-VALUE".into())],
                withheld: vec![],
            }],
        };
        let shown = format!(
            "{credentials:?} {:?} {:?}",
            RegisterRequest {
                registration_token: "REGISTRATION-VALUE".into(),
                name: "r".into(),
                labels: vec![],
                capacity: 1,
            },
            RegisterResponse {
                runner_id: 1,
                token: "RUNNER-VALUE".into(),
            }
        );
        assert!(shown.contains("API_TOKEN"), "{shown}");
        for value in [
            "REG-VALUE",
            "PUSH-VALUE",
            "SECRET-VALUE",
            "REGISTRATION-VALUE",
            "RUNNER-VALUE",
        ] {
            assert!(!shown.contains(value), "{value} in {shown}");
        }
        let step: StepDefinition = serde_json::from_value(serde_json::json!({
            "position": 0, "name": "s", "image": "busybox",
            "command": {"Commands": ["true"]}, "env": [],
            "secrets": [["API_TOKEN", "SECRET-VALUE"]],
            "timeout_secs": null, "retry": 0, "skip": false
        }))
        .unwrap();
        let shown = format!("{step:?}");
        assert!(
            shown.contains("API_TOKEN") && !shown.contains("SECRET-VALUE"),
            "{shown}"
        );
    }
}
