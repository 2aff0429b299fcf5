//! The deploy controller's domain: deployment states, the configuration a
//! deployment snapshots, and instances as the controller sees them.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::spec::{EnvironmentSpec, Strategy};

/// How a deployment ended (pending → progressing → succeeded | failed |
/// superseded; the first two and superseded are set in SQL where they happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Succeeded,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }
}

/// What a deployment runs besides its digest, frozen when it is made (so a
/// rollback restores the configuration too). Stored as JSON in
/// `deployments.config`; secrets by name only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub app: String,
    pub strategy: String,
    pub replicas: u32,
    pub port: u16,
    pub health: String,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub deadline_ms: u64,
    pub keep_ms: u64,
    /// The environment has a verify job (read from the deployment's commit
    /// when it runs). Absent in snapshots made before verification existed.
    #[serde(default)]
    pub verify: bool,
    /// How long it must stay healthy after rolling out before it is verified.
    #[serde(default)]
    pub soak_ms: u64,
    /// A failed verification rolls back by itself.
    #[serde(default)]
    pub rollback_on_verify_failure: bool,
}

impl Config {
    pub fn from_spec(app: &str, port: u16, health: &str, env: &EnvironmentSpec) -> Config {
        Config {
            app: app.to_owned(),
            strategy: env.strategy.name().to_owned(),
            replicas: env.settings.replicas,
            port,
            health: health.to_owned(),
            env: env.settings.env.clone(),
            secrets: env.secrets.clone(),
            memory_bytes: env.settings.memory_bytes,
            cpus: env.settings.cpus,
            deadline_ms: env.settings.deadline.as_millis() as u64,
            keep_ms: env.settings.keep.as_millis() as u64,
            verify: env.verification.job.is_some(),
            soak_ms: env.verification.soak.map_or(0, |d| d.as_millis() as u64),
            rollback_on_verify_failure: env.verification.rollback_on_failure,
        }
    }

    pub fn strategy(&self) -> Strategy {
        Strategy::parse(&self.strategy).unwrap_or(Strategy::Rolling)
    }

    /// Instances of two deployments with the same hash run the same thing
    /// and are interchangeable (a rollback finds its warm set by it).
    pub fn spec_hash(&self, digest: &str) -> String {
        let instance = serde_json::json!({
            "digest": digest,
            "port": self.port,
            "health": self.health,
            "env": self.env,
            "secrets": self.secrets,
            "memory_bytes": self.memory_bytes,
            "cpus": self.cpus,
        });
        hex::encode(&Sha256::digest(instance.to_string().as_bytes())[..16])
    }
}

/// How long a stopping instance may go unreported: the node's drain deadline
/// (30 s) and stop grace (10 s), with margin.
pub const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// A deployment row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Deployment {
    pub id: i64,
    pub environment_id: i64,
    pub kind: String,
    pub repository: String,
    pub digest: String,
    pub pipeline_id: Option<i64>,
    pub commit_sha: Option<String>,
    pub config: String,
    pub spec_hash: String,
    pub state: String,
    pub progress: Option<String>,
    pub preview_since: Option<i64>,
    pub reason: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// JSON array of the approvers' names, once its approvals counted.
    pub approved_by: Option<String>,
    /// An admin's reason to start during a freeze.
    pub freeze_override: Option<String>,
    /// soaking | verifying | verified | failed | cancelled; None until it
    /// rolled out (`verify.rs`).
    pub verification: Option<String>,
    pub verify_pipeline_id: Option<i64>,
    pub soak_until: Option<i64>,
    pub verified_at: Option<i64>,
    pub verify_reason: Option<String>,
    /// Someone asked to abort it while in progress (`aborted by …`): the
    /// reconciler fails it and reverts.
    pub abort_requested: Option<String>,
}

impl Deployment {
    pub fn config(&self) -> Config {
        serde_json::from_str(&self.config).unwrap_or_else(|e| {
            tracing::error!(deployment = self.id, error = %e, "unreadable deployment config");
            Config {
                app: String::new(),
                strategy: "rolling".into(),
                replicas: 1,
                port: 8080,
                health: "/".into(),
                env: Vec::new(),
                secrets: Vec::new(),
                memory_bytes: None,
                cpus: None,
                deadline_ms: 120_000,
                keep_ms: 600_000,
                verify: false,
                soak_ms: 0,
                rollback_on_verify_failure: false,
            }
        })
    }

    /// Who approved it (empty when none was needed).
    pub fn approvers(&self) -> Vec<String> {
        self.approved_by
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// `repository@sha256:…`.
    pub fn image(&self) -> String {
        format!("{}@{}", self.repository, self.digest)
    }
}

/// The deployments that run in an environment, newest first: rolled out
/// and not since failed by its rollout (one whose verification failed
/// keeps running until a rollback or the next deploy replaces it).
pub const RUNNING: &str = "(state = 'succeeded' OR (state = 'failed' AND verification = 'failed'))";

/// An instance row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Instance {
    pub id: i64,
    pub name: String,
    pub environment_id: i64,
    pub deployment_id: i64,
    pub spec_hash: String,
    pub goal: String,
    pub routed: String,
    /// The route the node reports it has (`routed`, once applied there).
    pub node_route: String,
    pub observed: String,
    pub warm_until: Option<i64>,
    pub container_id: Option<String>,
    pub restarts: i64,
    pub health: Option<String>,
    pub log_tail: Option<String>,
    pub created_at: i64,
    pub ready_at: Option<i64>,
    pub updated_at: i64,
}

impl Instance {
    pub fn running(&self) -> bool {
        self.goal == "run"
    }

    pub fn ready(&self) -> bool {
        self.observed == "ready"
    }

    /// Still on the node in some form (counts toward N+1 / 2N). One told
    /// to stop that its node has not reported on for [`STOP_DEADLINE`]
    /// (a dead node) no longer counts, so a rollout never waits on it.
    pub fn alive(&self, now: i64) -> bool {
        self.observed != "gone"
            && !(self.goal == "stop" && now - self.updated_at > STOP_DEADLINE.as_millis() as i64)
    }
}

/// The short form of a digest people read: `sha256:ab12cd34ef56`.
pub fn short_digest(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
