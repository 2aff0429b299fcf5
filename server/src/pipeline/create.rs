//! Creating a pipeline: read `.slipway.yml` at the commit, expand matrices,
//! evaluate `when`, and write the pipeline, its jobs and steps in one
//! transaction. A missing or invalid spec still makes a pipeline, in state
//! `error` with the reason, so the person who pushed sees why nothing ran.

use slipway_runner::api::{
    BuildDefinition, Command, JobDefinition, Reach, ServiceDefinition, StepDefinition,
};

use super::repo::{Commit, GitRepo, Repos, SPEC_FILE};
use super::spec::{self, Event, JobSpec, PipelineSpec, Run, Trigger};
use crate::db::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Repo(#[from] super::repo::RepoError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Not something to create (a re-run of a verify pipeline).
    #[error("{0}")]
    Refused(String),
}

/// What started a pipeline.
#[derive(Debug, Clone)]
pub struct Cause {
    pub event: Event,
    /// "manual by admin", "push webhook (github)", "cron nightly".
    pub triggered_by: String,
    /// Files changed by the push, when the trigger knows them.
    pub changed_files: Option<Vec<String>>,
    /// A pull request from a fork: its steps get no secrets unless allowed.
    pub from_fork: bool,
    /// Jobs that already succeeded at this commit (a re-run of failed jobs):
    /// recorded as successful without running, with where they ran.
    pub reuse: Option<(i64, Vec<String>)>,
}

pub fn event_name(e: Event) -> &'static str {
    match e {
        Event::Push => "push",
        Event::Tag => "tag",
        Event::PullRequest => "pull_request",
        Event::Manual => "manual",
        Event::Cron => "cron",
    }
}

/// A job as it will be stored: expanded from the spec.
struct PlannedJob {
    name: String,
    needs: Vec<String>,
    labels: Vec<String>,
    skip: bool,
    definition: JobDefinition,
}

fn command(run: &Run) -> Command {
    match run {
        Run::Commands(c) => Command::Commands(c.clone()),
        Run::Exec { entrypoint, args } => Command::Exec {
            entrypoint: entrypoint.clone(),
            args: args.clone(),
        },
    }
}

/// Every combination of a job's matrix, as (suffix, variables).
fn combinations(matrix: &[(String, Vec<String>)]) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (key, values) in matrix {
        out = out
            .into_iter()
            .flat_map(|partial| {
                values.iter().map(move |v| {
                    let mut next = partial.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    out.into_iter()
        .map(|vars| {
            let suffix = if vars.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(" [{}]", parts.join(", "))
            };
            (suffix, vars)
        })
        .collect()
}

/// The jobs of a run; `repo_name` is the default repository of build steps.
fn plan(spec: &PipelineSpec, trigger: &Trigger<'_>, repo_name: &str) -> Vec<PlannedJob> {
    // A job name in `needs` stands for all of its matrix instances.
    let instances = |job: &JobSpec| -> Vec<String> {
        combinations(&job.matrix)
            .into_iter()
            .map(|(suffix, _)| format!("{}{suffix}", job.name))
            .collect()
    };
    let mut planned = Vec::new();
    for job in &spec.jobs {
        let job_skipped = job.when.as_ref().is_some_and(|w| !w.matches(trigger));
        let needs: Vec<String> = job
            .needs
            .iter()
            .filter_map(|n| spec.jobs.iter().find(|j| &j.name == n))
            .flat_map(instances)
            .collect();
        for (suffix, vars) in combinations(&job.matrix) {
            let name = format!("{}{suffix}", job.name);
            let mut env: Vec<(String, String)> = spec.env.clone();
            env.extend(job.env.iter().cloned());
            env.extend(vars.iter().cloned());
            let steps = job
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let mut step_env = env.clone();
                    step_env.extend(s.env.iter().cloned());
                    StepDefinition {
                        position: i as i64,
                        name: s.name.clone(),
                        image: s.image.clone(),
                        command: command(&s.run),
                        env: step_env,
                        // Values are filled in when the job is leased.
                        secrets: s
                            .secrets
                            .iter()
                            .map(|n| (n.clone(), String::new()))
                            .collect(),
                        withheld: Vec::new(),
                        timeout_secs: s.timeout.map(|d| d.as_secs().max(1)),
                        retry: s.retry,
                        skip: s.when.as_ref().is_some_and(|w| !w.matches(trigger)),
                        build: s.build.as_ref().map(|b| BuildDefinition {
                            context: b.context.clone(),
                            file: b.file.clone(),
                            repository: b
                                .image
                                .clone()
                                .unwrap_or_else(|| repo_name.to_ascii_lowercase()),
                            tags: b.tags.clone(),
                            args: b.args.clone(),
                            target: b.target.clone(),
                            registry_cache: b.registry_cache,
                        }),
                        refused: None,
                    }
                })
                .collect();
            let services = job
                .services
                .iter()
                .map(|s| {
                    let mut service_env = env.clone();
                    service_env.extend(s.env.iter().cloned());
                    ServiceDefinition {
                        name: s.name.clone(),
                        image: s.image.clone(),
                        command: command(&s.run),
                        env: service_env,
                    }
                })
                .collect();
            planned.push(PlannedJob {
                name: name.clone(),
                needs: needs.clone(),
                labels: job.runs_on.clone(),
                skip: job_skipped,
                definition: JobDefinition {
                    name,
                    steps,
                    services,
                    artifacts: job.artifacts.clone(),
                    reach: None,
                },
            });
        }
    }
    planned
}

/// The branch or tag a ref names.
pub fn split_ref(git_ref: &str) -> (Option<&str>, Option<&str>) {
    (
        git_ref.strip_prefix("refs/heads/"),
        git_ref.strip_prefix("refs/tags/"),
    )
}

/// `.slipway.yml` at `sha`, or why it cannot be read.
async fn read_spec(repos: &Repos, repo: &GitRepo, sha: &str) -> Result<PipelineSpec, String> {
    let text = repos.read_file(repo, sha, SPEC_FILE, spec::MAX_BYTES).await;
    match text {
        Ok(Some(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => spec::parse(SPEC_FILE, &text).map_err(|e| e.to_string()),
            Err(_) => Err(format!("{SPEC_FILE} is not UTF-8 text")),
        },
        Ok(None) => Err(format!("there is no {SPEC_FILE} at commit {sha}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A verify job to run: deployment `deployment_id` of `image` in
/// `environment`, which the job reaches through `reach`.
pub struct VerifyRun<'a> {
    pub deployment_id: i64,
    pub environment: &'a str,
    /// `repository@sha256:…`.
    pub image: &'a str,
    pub digest: &'a str,
    pub reach: Reach,
}

/// The pipeline (event `verify`) of an environment's verify job, as the
/// deploy section at the deployment's commit declares it. Its steps see
/// `SLIPWAY_ENV_URL`, `SLIPWAY_ENVIRONMENT`, `SLIPWAY_IMAGE` and
/// `SLIPWAY_DIGEST`. Returns its id.
pub async fn create_verify(
    db: &sqlx::SqlitePool,
    repos: &Repos,
    repo: &GitRepo,
    commit: &Commit,
    run: VerifyRun<'_>,
) -> Result<i64, CreateError> {
    let parsed = read_spec(repos, repo, &commit.sha).await;
    let (branch, tag) = split_ref(&commit.git_ref);
    let trigger = Trigger {
        event: None,
        branch,
        tag,
        changed: None,
    };
    let planned = parsed.and_then(|spec| {
        let job = spec
            .deploy
            .as_ref()
            .and_then(|d| d.environments.iter().find(|e| e.name == run.environment))
            .and_then(|e| e.verification.job.clone())
            .ok_or_else(|| {
                format!(
                    "the deploy section at {} declares no verify job for environment {:?}",
                    commit.sha, run.environment
                )
            })?;
        let mut env = spec.env.clone();
        env.extend([
            (
                "SLIPWAY_ENV_URL".to_owned(),
                format!("http://127.0.0.1:{}", run.reach.port),
            ),
            ("SLIPWAY_ENVIRONMENT".to_owned(), run.environment.to_owned()),
            ("SLIPWAY_IMAGE".to_owned(), run.image.to_owned()),
            ("SLIPWAY_DIGEST".to_owned(), run.digest.to_owned()),
        ]);
        let alone = PipelineSpec {
            jobs: vec![job],
            env,
            cron: Vec::new(),
            deploy: None,
        };
        let mut jobs = plan(&alone, &trigger, &repo.name);
        for job in &mut jobs {
            job.definition.reach = Some(run.reach.clone());
        }
        let definitions: Vec<&JobDefinition> = jobs.iter().map(|j| &j.definition).collect();
        super::pull_allow::check_images(repo, &definitions)?;
        Ok(jobs)
    });
    let triggered_by = format!(
        "verify of deployment {} in {}",
        run.deployment_id, run.environment
    );
    insert(
        db,
        repo,
        commit,
        Insert {
            event: "verify",
            triggered_by: &triggered_by,
            from_fork: false,
            reuse: None,
            verifies: Some(run.deployment_id),
        },
        planned,
    )
    .await
}

/// Create the pipeline for `commit` of `repo` (its mirror already fetched).
/// Returns its id.
pub async fn create(
    db: &sqlx::SqlitePool,
    repos: &Repos,
    repo: &GitRepo,
    commit: &Commit,
    cause: &Cause,
) -> Result<i64, CreateError> {
    let parsed = read_spec(repos, repo, &commit.sha).await;
    let (branch, tag) = split_ref(&commit.git_ref);
    let trigger = Trigger {
        event: Some(cause.event),
        branch,
        tag,
        changed: cause.changed_files.as_deref(),
    };
    // The jobs, unless the spec is unreadable or names images the
    // repository may not pull (then the pipeline is an error saying so).
    let planned: Result<Vec<PlannedJob>, String> = parsed.and_then(|spec| {
        let jobs = plan(&spec, &trigger, &repo.name);
        let definitions: Vec<&JobDefinition> = jobs.iter().map(|j| &j.definition).collect();
        super::pull_allow::check_images(repo, &definitions)?;
        Ok(jobs)
    });
    insert(
        db,
        repo,
        commit,
        Insert {
            event: event_name(cause.event),
            triggered_by: &cause.triggered_by,
            from_fork: cause.from_fork,
            reuse: cause.reuse.as_ref(),
            verifies: None,
        },
        planned,
    )
    .await
}

/// What a new pipeline row says besides its commit.
struct Insert<'a> {
    event: &'a str,
    triggered_by: &'a str,
    from_fork: bool,
    reuse: Option<&'a (i64, Vec<String>)>,
    /// A verify pipeline's deployment.
    verifies: Option<i64>,
}

/// Write the pipeline, its jobs and steps in one transaction (an unplanned
/// one is recorded as an error with the reason). Returns its id.
async fn insert(
    db: &sqlx::SqlitePool,
    repo: &GitRepo,
    commit: &Commit,
    what: Insert<'_>,
    planned: Result<Vec<PlannedJob>, String>,
) -> Result<i64, CreateError> {
    let now = now_ms();
    // Immediate: this transaction reads (the next number) then writes, and a
    // deferred one could not upgrade while a runner's lease is writing.
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let number: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM pipelines WHERE repo_id = ?")
            .bind(repo.id)
            .fetch_one(&mut *tx)
            .await?;
    let (status, error) = match &planned {
        Ok(_) => ("pending", None),
        Err(e) => ("error", Some(e.clone())),
    };
    let pipeline_id: i64 = sqlx::query_scalar(
        "INSERT INTO pipelines (repo_id, number, commit_sha, git_ref, event, triggered_by,
             message, author, status, error, created_at, finished_at, from_fork, commit_time,
             verifies_deployment)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(repo.id)
    .bind(number)
    .bind(&commit.sha)
    .bind(&commit.git_ref)
    .bind(what.event)
    .bind(what.triggered_by)
    .bind(&commit.message)
    .bind(&commit.author)
    .bind(status)
    .bind(&error)
    .bind(now)
    .bind(error.as_ref().map(|_| now))
    .bind(what.from_fork)
    .bind(commit.time)
    .bind(what.verifies)
    .fetch_one(&mut *tx)
    .await?;
    super::notify::record(&mut tx, pipeline_id, status).await?;
    if let Ok(jobs) = planned.as_ref() {
        for job in jobs {
            let reused = what
                .reuse
                .filter(|(_, names)| names.contains(&job.name))
                .map(|(number, _)| format!("succeeded in pipeline #{number}; not run again"));
            let status = if job.skip {
                "skipped"
            } else if reused.is_some() {
                "success"
            } else if job.needs.is_empty() {
                "queued"
            } else {
                "blocked"
            };
            let job_id: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (pipeline_id, name, definition, needs, labels, status,
                     queued_at, finished_at, reason)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(pipeline_id)
            .bind(&job.name)
            .bind(serde_json::to_string(&job.definition).expect("serialisable"))
            .bind(serde_json::to_string(&job.needs).expect("serialisable"))
            .bind(serde_json::to_string(&job.labels).expect("serialisable"))
            .bind(status)
            .bind((status == "queued").then_some(now))
            .bind((job.skip || reused.is_some()).then_some(now))
            .bind(if job.skip {
                Some("`when` does not match this trigger".to_owned())
            } else {
                reused.clone()
            })
            .fetch_one(&mut *tx)
            .await?;
            for step in &job.definition.steps {
                let step_status = if job.skip || step.skip {
                    "skipped"
                } else if reused.is_some() {
                    "success"
                } else {
                    "pending"
                };
                sqlx::query(
                    "INSERT INTO steps (job_id, position, name, status) VALUES (?, ?, ?, ?)",
                )
                .bind(job_id)
                .bind(step.position)
                .bind(&step.name)
                .bind(step_status)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    if what.reuse.is_some() && planned.is_ok() {
        // Reused jobs may unblock others, or finish the pipeline outright.
        crate::pipeline::scheduler::advance(&mut tx, pipeline_id).await?;
    }
    tx.commit().await?;
    Ok(pipeline_id)
}

/// Run pipeline `id` again at the same commit, whole or (`failed_only`) only
/// the jobs that did not succeed (and what needs them). Returns the new id.
pub async fn rerun(
    db: &sqlx::SqlitePool,
    repos: &Repos,
    id: i64,
    failed_only: bool,
    by: &str,
) -> Result<Option<i64>, CreateError> {
    #[allow(clippy::type_complexity)]
    let row: Option<(
        i64,
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        bool,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT repo_id, number, commit_sha, git_ref, event, message, author, from_fork,
             commit_time FROM pipelines WHERE id = ?",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some((repo_id, number, sha, git_ref, event, message, author, from_fork, time)) = row else {
        return Ok(None);
    };
    if event == "verify" {
        return Err(CreateError::Refused(format!(
            "pipeline #{number} verifies a deployment and runs with it, not again by itself: \
             deploy or promote again to verify again"
        )));
    }
    let repo = repos.by_id(repo_id).await?;
    let succeeded: Vec<String> = if failed_only {
        sqlx::query_scalar("SELECT name FROM jobs WHERE pipeline_id = ? AND status = 'success'")
            .bind(id)
            .fetch_all(db)
            .await?
    } else {
        Vec::new()
    };
    let event = match event.as_str() {
        "push" => Event::Push,
        "tag" => Event::Tag,
        "pull_request" => Event::PullRequest,
        "cron" => Event::Cron,
        _ => Event::Manual,
    };
    let cause = Cause {
        event,
        triggered_by: format!(
            "re-run{} of #{number} by {by}",
            if failed_only { " (failed jobs)" } else { "" }
        ),
        changed_files: None,
        from_fork,
        reuse: failed_only.then_some((number, succeeded)),
    };
    let commit = Commit {
        sha,
        git_ref,
        message: message.unwrap_or_default(),
        author: author.unwrap_or_default(),
        time: time.unwrap_or(0),
    };
    create(db, repos, &repo, &commit, &cause).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_expand_and_needs_cover_every_instance() {
        let text = "jobs:\n  test:\n    matrix: {A: [1, 2], B: [x]}\n    steps: [{image: i, commands: [echo $A]}]\n  after:\n    needs: [test]\n    steps: [{image: i, when: {branch: nope}}]\n";
        let spec = spec::parse("f", text).unwrap();
        let trigger = Trigger {
            event: Some(Event::Push),
            branch: Some("main"),
            ..Default::default()
        };
        let jobs = plan(&spec, &trigger, "demo");
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["test [A=1, B=x]", "test [A=2, B=x]", "after"]);
        assert_eq!(jobs[2].needs, ["test [A=1, B=x]", "test [A=2, B=x]"]);
        assert!(jobs[1].definition.steps[0]
            .env
            .contains(&("A".to_owned(), "2".to_owned())));
        assert!(jobs[2].definition.steps[0].skip);
        assert!(!jobs[0].definition.steps[0].skip);
    }
}
