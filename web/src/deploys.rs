//! The deploy pages' view models: the environments board (one board per
//! app, a column per environment in chain order), a deployment's page with
//! its timeline, an environment's history, the audit and the traceability
//! view. Each live part is a template of its own (`*_live.html`), included
//! by its page and served alone for the page's script to swap in.

use askama::Template;

use crate::Nav;

/// A deployment state as an icon and text (never colour alone).
pub fn state_icon(state: &str) -> &'static str {
    match state {
        "succeeded" | "ready" => "✔",
        "failed" | "rejected" | "crashed" | "unhealthy" => "✘",
        "progressing" | "starting" => "▶",
        "pending" | "awaiting_approval" | "stopping" => "…",
        "superseded" | "expired" | "gone" => "⊘",
        _ => "•",
    }
}

/// One instance's health on the board and the deployment page.
#[derive(Debug, Clone)]
pub struct InstanceChip {
    pub name: String,
    /// As the node observed it: `starting`, `ready`, `unhealthy`, ...
    pub state: String,
    pub icon: &'static str,
    pub health: String,
    /// `live`, `preview` or `none`.
    pub routed: String,
    /// Of the deployment in progress (else of the one running before it).
    pub new: bool,
    pub short_digest: String,
}

/// A rollout in progress: how far it is.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub deployment_id: i64,
    pub kind: String,
    pub state: String,
    pub short_digest: String,
    pub strategy: String,
    pub replicas: u32,
    pub new_ready: usize,
    pub new_total: usize,
    pub old_running: usize,
    pub old_ready: usize,
    pub progress: String,
    /// The viewer may abort it (a deployer there).
    pub can_abort: bool,
}

/// A request waiting for approvals, with the viewer's buttons.
#[derive(Debug, Clone)]
pub struct Awaiting {
    pub deployment_id: i64,
    pub kind: String,
    pub short_digest: String,
    pub requested_by: String,
    pub approved_by: String,
    pub count: usize,
    pub required: u32,
    pub can_decide: bool,
    /// The viewer may abort the request (a deployer there).
    pub can_abort: bool,
}

/// One environment's column on the board.
#[derive(Debug, Clone)]
pub struct EnvColumn {
    pub name: String,
    pub position: i64,
    pub cluster: String,
    pub url: Option<String>,
    /// The running deployment (the last that succeeded).
    pub current_id: Option<i64>,
    pub short_digest: String,
    pub commit_short: String,
    pub pipeline_id: Option<i64>,
    /// Tags of the digest in the registry, else the pipeline's number.
    pub version: String,
    /// Since the running deployment finished.
    pub age: String,
    pub instances: Vec<InstanceChip>,
    pub rollout: Option<Rollout>,
    pub awaiting: Vec<Awaiting>,
    /// Protection in words (`2 approvals · frozen until …`), empty if none.
    pub protection: String,
    pub frozen: Option<String>,
    /// The viewer may promote into it (not the first of the chain).
    pub can_promote: bool,
    /// The viewer may roll it back (something succeeded before the current).
    pub can_rollback: bool,
    /// The environment it promotes from.
    pub from: String,
}

/// One app's board.
#[derive(Debug, Clone)]
pub struct AppBoard {
    pub app: String,
    pub envs: Vec<EnvColumn>,
}

/// The live part of the environments page.
#[derive(Template)]
#[template(path = "environments_live.html")]
pub struct EnvironmentsLive {
    pub repo: String,
    pub boards: Vec<AppBoard>,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "environments.html")]
pub struct EnvironmentsPage {
    pub nav: Option<Nav>,
    pub repo: String,
    pub boards: Vec<AppBoard>,
    pub csrf: String,
}

/// A repository with environments, on `/environments`.
#[derive(Debug, Clone)]
pub struct RepoEnvironments {
    pub repo: String,
    /// Its environments in chain order, comma-separated.
    pub chain: String,
}

#[derive(Template)]
#[template(path = "environments_index.html")]
pub struct EnvironmentsIndex {
    pub nav: Option<Nav>,
    pub repos: Vec<RepoEnvironments>,
}

/// One event of a deployment's timeline.
#[derive(Debug, Clone)]
pub struct TimelineItem {
    pub at: String,
    /// Since the deployment was asked for.
    pub offset: String,
    pub kind: String,
    pub detail: String,
    pub instance: Option<String>,
}

/// The live part of a deployment's page.
#[derive(Template)]
#[template(path = "deployment_live.html")]
pub struct DeploymentLive {
    pub id: i64,
    pub state: String,
    pub icon: &'static str,
    pub progress: Option<String>,
    pub reason: Option<String>,
    pub rollout: Option<Rollout>,
    pub instances: Vec<InstanceChip>,
    pub awaiting: Option<Awaiting>,
    pub verification: Option<Verification>,
    pub timeline: Vec<TimelineItem>,
    pub csrf: String,
    /// Still moving (the page keeps following it).
    pub active: bool,
}

/// How a deployment's verification stands (soak, verify job).
#[derive(Debug, Clone)]
pub struct Verification {
    pub state: String,
    pub reason: Option<String>,
    /// The verify job's pipeline, whose page has its logs.
    pub pipeline_id: Option<i64>,
}

#[derive(Template)]
#[template(path = "deployment.html")]
pub struct DeploymentPage {
    pub nav: Option<Nav>,
    pub repo: String,
    pub environment: String,
    pub id: i64,
    pub kind: String,
    pub image: String,
    pub digest: String,
    pub commit: String,
    pub pipeline_id: Option<i64>,
    pub strategy: String,
    pub replicas: u32,
    pub requested_by: String,
    pub approved_by: String,
    pub created: String,
    pub state: String,
    pub icon: &'static str,
    pub progress: Option<String>,
    pub reason: Option<String>,
    pub rollout: Option<Rollout>,
    pub instances: Vec<InstanceChip>,
    pub awaiting: Option<Awaiting>,
    pub verification: Option<Verification>,
    pub timeline: Vec<TimelineItem>,
    pub csrf: String,
    pub active: bool,
}

/// One deployment in an environment's history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub id: i64,
    pub kind: String,
    pub short_digest: String,
    pub commit_short: String,
    pub pipeline_id: Option<i64>,
    pub requested_by: String,
    pub approved_by: String,
    pub state: String,
    pub icon: &'static str,
    pub reason: String,
    pub created: String,
    /// From the request to the start (approvals, queue).
    pub waited: String,
    /// From the start to the end.
    pub took: String,
}

#[derive(Template)]
#[template(path = "env_history.html")]
pub struct HistoryPage {
    pub nav: Option<Nav>,
    pub repo: String,
    pub environment: String,
    pub rows: Vec<HistoryRow>,
}

/// One audit entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub environment: String,
    pub short_digest: String,
    pub deployment_id: Option<i64>,
    pub reason: String,
    /// JSON text of the policy before and after (protection changes).
    pub before: String,
    pub after: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Option<Nav>,
    pub repo: String,
    pub rows: Vec<AuditRow>,
}

#[derive(Debug, Clone)]
pub struct TraceStep {
    pub name: String,
    pub status: String,
    pub icon: &'static str,
    pub exit_code: String,
    /// The log page's path.
    pub log: String,
}

#[derive(Debug, Clone)]
pub struct TraceJob {
    pub name: String,
    pub status: String,
    pub icon: &'static str,
    pub steps: Vec<TraceStep>,
}

#[derive(Debug, Clone)]
pub struct TraceEnv {
    pub environment: String,
    pub deployment_id: i64,
    pub kind: String,
    pub state: String,
    pub icon: &'static str,
    pub requested_by: String,
    pub approved_by: String,
    pub when: String,
}

#[derive(Debug, Clone)]
pub struct TraceBase {
    pub image: String,
    pub digest: String,
}

#[derive(Template)]
#[template(path = "trace.html")]
pub struct TracePage {
    pub nav: Option<Nav>,
    pub repo: String,
    /// What was traced: `staging`, or `instance i4-web-staging`.
    pub subject: String,
    pub image: String,
    pub digest: String,
    pub has_provenance: bool,
    pub referrer: String,
    pub containerfile: String,
    pub containerfile_digest: String,
    pub context_digest: String,
    pub source: String,
    pub bases: Vec<TraceBase>,
    /// The pipeline that built it: id, `repo #N`, status.
    pub pipeline_id: Option<i64>,
    pub pipeline: String,
    pub pipeline_status: String,
    pub commit: String,
    pub message: String,
    pub author: String,
    pub jobs: Vec<TraceJob>,
    pub environments: Vec<TraceEnv>,
}
