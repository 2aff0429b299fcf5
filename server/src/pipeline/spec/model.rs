//! What a valid `.slipway.yml` says, as domain types (no serde: the file format
//! and these types evolve apart; `read.rs` maps one onto the other).

use std::time::Duration;

use globset::GlobMatcher;

use super::yaml::Span;

#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// In the order the file declares them.
    pub jobs: Vec<JobSpec>,
    /// For every step of every job (a job's and a step's own env override it).
    pub env: Vec<(String, String)>,
    pub cron: Vec<CronSpec>,
    pub deploy: Option<DeploySpec>,
}

#[derive(Debug, Clone)]
pub struct JobSpec {
    pub name: String,
    pub span: Span,
    pub needs: Vec<String>,
    /// Labels a runner must have.
    pub runs_on: Vec<String>,
    /// Containers sharing the job's network namespace, by name.
    pub services: Vec<ServiceSpec>,
    /// Variable → values; the job runs once per combination.
    pub matrix: Vec<(String, Vec<String>)>,
    /// Paths (relative to the workspace) handed to the jobs that need this one.
    pub artifacts: Vec<String>,
    pub env: Vec<(String, String)>,
    pub when: Option<When>,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    pub span: Span,
    pub image: String,
    pub run: Run,
    pub env: Vec<(String, String)>,
    /// Names of repository secrets given to this step as environment variables.
    pub secrets: Vec<String>,
    pub when: Option<When>,
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure.
    pub retry: u32,
    /// A build step (then `image` is empty and `run` unused).
    pub build: Option<BuildSpec>,
}

/// `build:` of a step: a Containerfile built and pushed to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    /// Relative to the workspace, `.` by default.
    pub context: String,
    pub file: Option<String>,
    /// The registry repository; the pipeline's repository name by default.
    pub image: Option<String>,
    /// Tags besides the commit sha, which is always pushed.
    pub tags: Vec<String>,
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    /// Share the build cache through the registry (`cache: registry`, the
    /// default) or keep it on the runner (`cache: local`).
    pub registry_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Shell commands, run in order by `/bin/sh` with `set -e`.
    Commands(Vec<String>),
    /// The image's entrypoint (or this one) with these arguments.
    Exec {
        entrypoint: Option<Vec<String>>,
        args: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    pub span: Span,
    pub image: String,
    pub run: Run,
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Push,
    Tag,
    PullRequest,
    Manual,
    Cron,
}

impl Event {
    pub const NAMES: [&'static str; 5] = ["push", "tag", "pull_request", "manual", "cron"];

    pub fn parse(name: &str) -> Option<Event> {
        Some(match name {
            "push" => Event::Push,
            "tag" => Event::Tag,
            "pull_request" => Event::PullRequest,
            "manual" => Event::Manual,
            "cron" => Event::Cron,
            _ => return None,
        })
    }
}

/// A glob with the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub matcher: GlobMatcher,
}

/// Conditions, all of which must hold (each list: any of its entries). An empty
/// list does not constrain.
#[derive(Debug, Clone, Default)]
pub struct When {
    pub branch: Vec<Pattern>,
    pub tag: Vec<Pattern>,
    pub event: Vec<Event>,
    /// Changed paths: at least one changed file must match.
    pub paths: Vec<Pattern>,
}

/// What a run is about, for evaluating `when`.
#[derive(Debug, Clone, Default)]
pub struct Trigger<'a> {
    pub event: Option<Event>,
    pub branch: Option<&'a str>,
    pub tag: Option<&'a str>,
    /// `None` when unknown (then `paths` does not constrain).
    pub changed: Option<&'a [String]>,
}

impl When {
    pub fn matches(&self, t: &Trigger<'_>) -> bool {
        let any = |patterns: &[Pattern], value: Option<&str>| {
            patterns.is_empty()
                || value.is_some_and(|v| patterns.iter().any(|p| p.matcher.is_match(v)))
        };
        any(&self.branch, t.branch)
            && any(&self.tag, t.tag)
            && (self.event.is_empty() || t.event.is_some_and(|e| self.event.contains(&e)))
            && (self.paths.is_empty()
                || t.changed.is_none_or(|files| {
                    files
                        .iter()
                        .any(|f| self.paths.iter().any(|p| p.matcher.is_match(f)))
                }))
    }
}

#[derive(Debug, Clone)]
pub struct CronSpec {
    pub name: String,
    pub span: Span,
    pub schedule: croner::Cron,
    pub schedule_text: String,
    /// The branch to run on; the repository's default branch when absent.
    pub branch: Option<String>,
}

/// `deploy:`: the app this repository deploys and its promotion chain.
#[derive(Debug, Clone)]
pub struct DeploySpec {
    pub app: String,
    pub span: Span,
    /// The registry repository whose digest, pushed by this pipeline, is deployed.
    pub image: String,
    /// Every instance gets `PORT` and must listen on it.
    pub port: u16,
    /// An instance is ready once a GET of this path answers 2xx.
    pub health: String,
    pub defaults: EnvironmentSettings,
    /// In promotion order.
    pub environments: Vec<EnvironmentSpec>,
}

/// What the top of `deploy:` sets for every environment, and each environment
/// may override.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvironmentSettings {
    pub replicas: u32,
    pub env: Vec<(String, String)>,
    pub memory_bytes: Option<u64>,
    /// CPUs as a fraction (`0.5`).
    pub cpus: Option<f64>,
    /// How long a rollout waits for an instance to be ready.
    pub deadline: Duration,
    /// The blue/green rollback window.
    pub keep: Duration,
}

impl Default for EnvironmentSettings {
    fn default() -> Self {
        EnvironmentSettings {
            replicas: 1,
            env: Vec::new(),
            memory_bytes: None,
            cpus: None,
            deadline: Duration::from_secs(120),
            keep: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnvironmentSpec {
    pub name: String,
    pub span: Span,
    pub strategy: Strategy,
    /// The deploy section's defaults with this environment's overrides applied
    /// (`env` merged, the environment's value winning).
    pub settings: EnvironmentSettings,
    /// Names of this environment's secrets given to its instances.
    pub secrets: Vec<String>,
    /// What makes a deployment here verified, and what follows.
    pub verification: VerificationSpec,
}

/// An environment's verification: once a deployment there succeeded, it
/// stays healthy through `soak`, then its `verify` job runs; only a verified
/// digest may be promoted to the next environment.
#[derive(Debug, Clone, Default)]
pub struct VerificationSpec {
    /// Steps in containers, like any job; they see `SLIPWAY_ENV_URL` and
    /// `SLIPWAY_DIGEST`. Named `verify-<environment>`.
    pub job: Option<JobSpec>,
    pub soak: Option<Duration>,
    /// Promoted here by itself once the previous environment verifies a digest.
    pub auto: bool,
    /// `on_verify_failure: rollback`: a failed verification rolls back by itself.
    pub rollback_on_failure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Rolling,
    BlueGreen,
}

impl Strategy {
    pub const NAMES: [&'static str; 2] = ["rolling", "blue-green"];

    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "rolling" => Some(Strategy::Rolling),
            "blue-green" => Some(Strategy::BlueGreen),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Rolling => "rolling",
            Strategy::BlueGreen => "blue-green",
        }
    }
}
