//! The runner protocol's server side (wire types in `slipway_runner::api`), and
//! `POST /api/v1/runner-tokens` (admin) for registration tokens.
//!
//! Runner routes authenticate with the runner's own token (`Bearer slr_…`);
//! user credentials are not accepted there, and runner tokens are not accepted
//! anywhere else. A job's routes (`/jobs/{job}/…`) also need the current
//! lease's token (`X-Slipway-Lease: sll_…`, [`LeaseCaller`]), which only the
//! leasing connection received: a runner token alone reaches no job, and a
//! stale attempt or another runner is refused. The secrets' values and the
//! job's registry tokens come only from `jobs/{job}/credentials`.
//!
//! A registration token may limit its runners to repositories (`team/*`):
//! such a runner only leases those repositories' jobs, so its token, should
//! it leak, reaches nothing else.

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slipway_runner::api::{
    Heartbeat, HeartbeatResponse, ImageReport, JobCredentials, JobDefinition, JobReport, Lease,
    LeaseRequest, LogAck, RegisterRequest, RegisterResponse, RunContext, StepCredentials,
    StepDefinition, StepReport, LEASE_HEADER,
};

use super::extract::{Bytes, Json, OptionalJson, Path, Query};
use super::{ApiCaller, ApiError};
use crate::app::AppState;
use crate::auth::registry_token::AccessEntry;
use crate::db::now_ms;
use crate::pipeline::logs::LogError;
use crate::pipeline::scheduler::{self, ReportError, RunnerInfo};

const REGISTRATION_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/lease", post(lease))
        .route("/jobs/{job}/credentials", get(credentials))
        .route("/jobs/{job}/heartbeat", post(heartbeat))
        .route("/jobs/{job}/source", get(source))
        .route("/jobs/{job}/steps/{position}", post(step))
        .route("/jobs/{job}/steps/{position}/log", post(append_log))
        .route(
            "/jobs/{job}/artifacts",
            post(upload_artifacts).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/jobs/{job}/artifacts/{from}", get(download_artifacts))
        .route("/jobs/{job}/images", post(report_image))
        .route("/jobs/{job}/finish", post(finish))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Stale { .. } => ApiError::Conflict(e.to_string()),
            ReportError::NoStep { .. } => ApiError::NotFound(e.to_string()),
            ReportError::Db(e) => e.into(),
        }
    }
}

#[derive(Serialize)]
pub struct RegistrationToken {
    token: String,
    expires_at: i64,
    /// The repositories its runners take jobs of; `null`: every one.
    repositories: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewRegistration {
    /// Limit the runners registered with it to these repository patterns
    /// (`team/*`, `team/app`); absent: shared runners, every repository.
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

/// Admin: a token runners register with (reusable until it expires, 7 days),
/// optionally limiting them to some repositories. The body is optional.
pub async fn create_registration_token(
    State(app): State<AppState>,
    caller: ApiCaller,
    OptionalJson(body): OptionalJson<NewRegistration>,
) -> Result<(StatusCode, Json<RegistrationToken>), ApiError> {
    caller.require_admin()?;
    if let Some(patterns) = &body.repositories {
        if patterns.is_empty() || patterns.len() > 100 {
            return Err(ApiError::BadRequest(
                "repositories: give 1 to 100 patterns, or leave it out for a shared runner".into(),
            ));
        }
        for p in patterns {
            crate::auth::check_pattern(p)
                .map_err(|e| ApiError::BadRequest(format!("repositories: {p:?}: {e}")))?;
        }
    }
    let token = format!("srt_{}", hex::encode(rand::random::<[u8; 32]>()));
    let expires_at = now_ms() + REGISTRATION_TTL_MS;
    sqlx::query(
        "INSERT INTO runner_registration_tokens
             (token_hash, created_by, created_at, expires_at, repositories)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(hash(&token))
    .bind(caller.0.user.id)
    .bind(now_ms())
    .bind(expires_at)
    .bind(
        body.repositories
            .as_ref()
            .map(|r| serde_json::to_string(r).expect("serialisable")),
    )
    .execute(&app.db)
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegistrationToken {
            token,
            expires_at,
            repositories: body.repositories,
        }),
    ))
}

/// The runner making a request.
pub struct RunnerCaller(RunnerInfo);

impl FromRequestParts<AppState> for RunnerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| t.starts_with("slr_"))
            .ok_or_else(|| {
                ApiError::Unauthenticated("runner routes need `Authorization: Bearer slr_…`".into())
            })?;
        let row: Option<(i64, String, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, labels, capacity, repositories FROM runners WHERE token_hash = ?",
        )
        .bind(hash(token))
        .fetch_optional(&app.db)
        .await?;
        let (id, labels, capacity, repositories) =
            row.ok_or_else(|| ApiError::Unauthenticated("unknown runner token".into()))?;
        Ok(RunnerCaller(RunnerInfo {
            id,
            labels: serde_json::from_str(&labels).unwrap_or_default(),
            capacity,
            // A limit that cannot be read takes nothing rather than everything.
            repositories: repositories.map(|r| serde_json::from_str(&r).unwrap_or_default()),
        }))
    }
}

/// The runner holding the current lease of the job in the path: its runner
/// token and that lease's token. Handlers still check the attempt they are
/// told about (the fencing token).
pub struct LeaseCaller(RunnerInfo);

impl FromRequestParts<AppState> for LeaseCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let RunnerCaller(runner) = RunnerCaller::from_request_parts(parts, app).await?;
        let job: i64 = axum::extract::RawPathParams::from_request_parts(parts, app)
            .await
            .ok()
            .and_then(|params| {
                params
                    .iter()
                    .find(|(k, _)| *k == "job")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .ok_or_else(|| ApiError::BadRequest("the path names no job".into()))?;
        let presented = parts
            .headers
            .get(LEASE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::Unauthenticated(format!(
                    "job routes need the lease's token in {LEASE_HEADER} beside the runner's"
                ))
            })?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM jobs WHERE id = ? AND runner_id = ? AND lease_token_hash = ?",
        )
        .bind(job)
        .bind(runner.id)
        .bind(scheduler::lease_token_hash(presented))
        .fetch_optional(&app.db)
        .await?;
        if current.is_none() {
            // Another runner's job, a lease since replaced, or a wrong token:
            // not this caller's lease (the runner stops working on it).
            return Err(ApiError::Conflict(format!(
                "job {job} is not this runner's current lease (another runner's, a newer \
                 attempt's, or the wrong lease token)"
            )));
        }
        Ok(LeaseCaller(runner))
    }
}

/// Decide where each build step may push: under the repository's own name,
/// never from a fork's pull request. Steps that may not are marked
/// `refused`; the repositories the others push to are returned.
fn push_targets(repo: &str, from_fork: bool, steps: &mut [StepDefinition]) -> Vec<String> {
    let own = repo.to_ascii_lowercase();
    let mut pushes = Vec::new();
    for step in steps {
        let Some(build) = &step.build else { continue };
        let r = &build.repository;
        step.refused = if from_fork {
            Some("builds of pull requests from forks do not push images".into())
        } else if !(*r == own || r.starts_with(&format!("{own}/"))) {
            Some(format!(
                "a pipeline of {repo} may push images to {own} and {own}/..., not to {r}"
            ))
        } else if !crate::pipeline::spec::valid_repository(r) {
            Some(format!("{r} is not a valid registry repository name"))
        } else {
            pushes.push(r.clone());
            None
        };
    }
    pushes
}

/// The current lease's secrets and registry tokens: secret values only for
/// the steps naming them (withheld from forks' pull requests unless allowed),
/// a pull token for the repository and its pull allowlist, and a push token
/// for where its build steps may push.
async fn credentials(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Query(q): Query<AttemptQuery>,
) -> Result<Json<JobCredentials>, ApiError> {
    leased_pipeline(&app, runner.id, job, q.attempt).await?;
    let (repo_id, from_fork, definition): (i64, bool, String) = sqlx::query_as(
        "SELECT p.repo_id, p.from_fork, j.definition FROM jobs j
         JOIN pipelines p ON p.id = j.pipeline_id WHERE j.id = ?",
    )
    .bind(job)
    .fetch_one(&app.db)
    .await?;
    let mut definition: JobDefinition =
        serde_json::from_str(&definition).map_err(|e| ApiError::Internal(e.to_string()))?;
    let repo = app.repos.by_id(repo_id).await?;
    let mut steps = Vec::new();
    for step in &definition.steps {
        let names: Vec<String> = step.secrets.iter().map(|(n, _)| n.clone()).collect();
        let values = app
            .secrets
            .values(repo_id, &names, from_fork)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        steps.push(StepCredentials {
            position: step.position,
            withheld: names
                .iter()
                .filter(|n| !values.iter().any(|(v, _)| v == *n))
                .cloned()
                .collect(),
            secrets: values,
        });
    }
    let pushes = push_targets(&repo.name, from_fork, &mut definition.steps);
    // Pulls reach the repository's own images and its pull allowlist only
    // (`pipeline::pull_allow`), so a build's FROM is limited too.
    let pulls: Vec<AccessEntry> = crate::pipeline::pull_allow::patterns(&repo)
        .into_iter()
        .map(|p| AccessEntry::repository(p, &["pull"]))
        .collect();
    let subject = format!("runner:{}", runner.id);
    let ttl = std::time::Duration::from_secs(6 * 3600);
    let tokens = &app.auth.registry_tokens;
    let registry_token = tokens.issue_for(&subject, pulls.clone(), ttl).token;
    let push_token = (!pushes.is_empty()).then(|| {
        let mut access = pulls;
        for r in &pushes {
            access.push(AccessEntry::repository(r.clone(), &["pull", "push"]));
        }
        tokens.issue_for(&subject, access, ttl).token
    });
    tracing::info!(
        job,
        attempt = q.attempt,
        runner = runner.id,
        "job credentials handed over"
    );
    Ok(Json(JobCredentials {
        registry_token,
        push_token,
        steps,
    }))
}

async fn register(
    State(app): State<AppState>,
    Json(body): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ApiError> {
    // The token's repository limit (JSON patterns, or NULL) passes to the runner.
    let valid: Option<(i64, Option<String>)> = sqlx::query_as(
        "SELECT expires_at, repositories FROM runner_registration_tokens
         WHERE token_hash = ? AND expires_at > ?",
    )
    .bind(hash(&body.registration_token))
    .bind(now_ms())
    .fetch_optional(&app.db)
    .await?;
    let Some((_, repositories)) = valid else {
        return Err(ApiError::Unauthenticated(
            "registration token unknown or expired (slipway runner-token create makes one)".into(),
        ));
    };
    let name = body.name.trim();
    if name.is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "runner name must be 1 to 100 characters".into(),
        ));
    }
    if !(1..=256).contains(&body.capacity) {
        return Err(ApiError::BadRequest("capacity must be 1 to 256".into()));
    }
    if body
        .labels
        .iter()
        .any(|l| l.is_empty() || l.chars().count() > 64 || l.contains(','))
    {
        return Err(ApiError::BadRequest(
            "labels must be 1 to 64 characters, without commas".into(),
        ));
    }
    let token = format!("slr_{}", hex::encode(rand::random::<[u8; 32]>()));
    let runner_id: i64 = sqlx::query_scalar(
        "INSERT INTO runners (name, token_hash, labels, capacity, last_seen_at, created_at,
             repositories)
         VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(name)
    .bind(hash(&token))
    .bind(serde_json::to_string(&body.labels).expect("serialisable"))
    .bind(body.capacity as i64)
    .bind(now_ms())
    .bind(now_ms())
    .bind(&repositories)
    .fetch_one(&app.db)
    .await?;
    tracing::info!(runner = runner_id, name, repositories = ?repositories, "runner registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse { runner_id, token }),
    ))
}

async fn lease(
    State(app): State<AppState>,
    RunnerCaller(runner): RunnerCaller,
    Json(body): Json<LeaseRequest>,
) -> Result<Response, ApiError> {
    sqlx::query("UPDATE runners SET last_seen_at = ? WHERE id = ?")
        .bind(now_ms())
        .bind(runner.id)
        .execute(&app.db)
        .await?;
    if body.free == 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let wait = std::time::Duration::from_millis(body.wait_ms.min(30_000));
    let Some(job) = scheduler::lease(&app.scheduler, &runner, wait).await? else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    #[allow(clippy::type_complexity)]
    let (repo, number, commit, git_ref, name, from_fork, commit_time): (
        String,
        i64,
        String,
        String,
        String,
        bool,
        Option<i64>,
    ) = sqlx::query_as(
        "SELECT r.name, p.number, p.commit_sha, p.git_ref, j.name, p.from_fork,
             p.commit_time FROM jobs j
         JOIN pipelines p ON p.id = j.pipeline_id JOIN git_repos r ON r.id = p.repo_id
         WHERE j.id = ?",
    )
    .bind(job.job_id)
    .fetch_one(&app.db)
    .await?;
    // Build steps push only under the repository's own name. The secrets'
    // values and the registry tokens are not in the lease: the runner asks
    // for them with the lease's token (`credentials`).
    let mut definition = job.definition;
    push_targets(&repo, from_fork, &mut definition.steps);
    tracing::info!(
        job = job.job_id,
        attempt = job.attempt,
        runner = runner.id,
        "job leased"
    );
    // Artifacts of the jobs this one needs, where they left some.
    let needs: String = sqlx::query_scalar("SELECT needs FROM jobs WHERE id = ?")
        .bind(job.job_id)
        .fetch_one(&app.db)
        .await?;
    let needs: Vec<String> = serde_json::from_str(&needs).unwrap_or_default();
    let mut artifacts_from = Vec::new();
    for need in needs {
        let from: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE pipeline_id = ? AND name = ? AND artifacts_bytes IS NOT NULL",
        )
        .bind(job.pipeline_id)
        .bind(&need)
        .fetch_optional(&app.db)
        .await?;
        artifacts_from.extend(from);
    }
    Ok(Json(Lease {
        artifacts_from,
        job_id: job.job_id,
        attempt: job.attempt,
        lease_ms: app.scheduler.lease.as_millis() as u64,
        lease_token: job.lease_token,
        registry_token: String::new(),
        push_token: None,
        context: RunContext {
            repo,
            pipeline_id: job.pipeline_id,
            pipeline_number: number,
            commit,
            git_ref,
            job: name,
            commit_time: commit_time.unwrap_or(0),
        },
        job: definition,
    })
    .into_response())
}

async fn heartbeat(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Json(body): Json<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    match scheduler::renew(&app.scheduler, runner.id, job, body.attempt).await? {
        Some(cancel) => Ok(Json(HeartbeatResponse { cancel })),
        None => Err(ReportError::Stale {
            job,
            attempt: body.attempt,
        }
        .into()),
    }
}

#[derive(Deserialize)]
pub struct AttemptQuery {
    attempt: i64,
}

/// The job's commit as a tar, for the runner's workspace.
async fn source(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ApiError> {
    let row: Option<(i64, String)> = sqlx::query_as(
        "SELECT p.repo_id, p.commit_sha FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
         WHERE j.id = ? AND j.attempt = ? AND j.runner_id = ? AND j.status = 'leased'",
    )
    .bind(job)
    .bind(q.attempt)
    .bind(runner.id)
    .fetch_optional(&app.db)
    .await?;
    let (repo_id, sha) = row.ok_or_else(|| {
        ApiError::from(ReportError::Stale {
            job,
            attempt: q.attempt,
        })
    })?;
    let repo = app.repos.by_id(repo_id).await?;
    let tmp = app.settings.data_dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| ApiError::Internal(e.to_string()))?;
    let path = tmp.join(format!(
        "source-{job}-{}-{}.tar",
        q.attempt,
        rand::random::<u32>()
    ));
    app.repos
        .write_source_tar(&repo, &sha, path.clone())
        .await?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Open files outlive their name: the archive goes when the response ends.
    let _ = std::fs::remove_file(&path);
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn step(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path((job, position)): Path<(i64, i64)>,
    Json(body): Json<StepReport>,
) -> Result<StatusCode, ApiError> {
    scheduler::report_step(
        &app.scheduler,
        runner.id,
        job,
        position,
        body.attempt,
        body.status,
        body.exit_code,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct LogQuery {
    attempt: i64,
    offset: u64,
}

/// Append log bytes at an offset (see `pipeline::logs`).
async fn append_log(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path((job, position)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
    Bytes(body): Bytes,
) -> Result<Response, ApiError> {
    // Only the current lease writes; a stale attempt's bytes are refused.
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM jobs j JOIN steps s ON s.job_id = j.id
         WHERE j.id = ? AND j.attempt = ? AND j.runner_id = ? AND j.status = 'leased' AND s.position = ?",
    )
    .bind(job)
    .bind(q.attempt)
    .bind(runner.id)
    .bind(position)
    .fetch_optional(&app.db)
    .await?;
    if current.is_none() {
        return Err(ReportError::Stale {
            job,
            attempt: q.attempt,
        }
        .into());
    }
    let logs = app.logs.clone();
    let appended =
        tokio::task::spawn_blocking(move || logs.append(job, position, q.attempt, q.offset, &body))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    match appended {
        Ok(length) => Ok(Json(LogAck { length }).into_response()),
        Err(LogError::Gap { length, .. }) => {
            Ok((StatusCode::CONFLICT, Json(LogAck { length })).into_response())
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The current lease of `job` by `runner`, or a stale-attempt error.
async fn leased_pipeline(
    app: &AppState,
    runner: i64,
    job: i64,
    attempt: i64,
) -> Result<i64, ApiError> {
    sqlx::query_scalar(
        "SELECT pipeline_id FROM jobs WHERE id = ? AND attempt = ? AND runner_id = ? AND status = 'leased'",
    )
    .bind(job)
    .bind(attempt)
    .bind(runner)
    .fetch_optional(&app.db)
    .await?
    .ok_or_else(|| ReportError::Stale { job, attempt }.into())
}

async fn upload_artifacts(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Query(q): Query<AttemptQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    leased_pipeline(&app, runner.id, job, q.attempt).await?;
    let size = app.artifacts.store(job, body).await.map_err(|e| match e {
        crate::pipeline::artifacts::ArtifactError::TooLarge => ApiError::Input(super::Input::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            super::Part::Body,
            None,
            e.to_string(),
        )),
        other => ApiError::Internal(other.to_string()),
    })?;
    sqlx::query("UPDATE jobs SET artifacts_bytes = ? WHERE id = ?")
        .bind(size as i64)
        .bind(job)
        .execute(&app.db)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The artifacts of `from`, for `job`, which must need it.
async fn download_artifacts(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path((job, from)): Path<(i64, i64)>,
    Query(q): Query<AttemptQuery>,
) -> Result<Response, ApiError> {
    let pipeline = leased_pipeline(&app, runner.id, job, q.attempt).await?;
    let needs: String = sqlx::query_scalar("SELECT needs FROM jobs WHERE id = ?")
        .bind(job)
        .fetch_one(&app.db)
        .await?;
    let needs: Vec<String> = serde_json::from_str(&needs).unwrap_or_default();
    let source: Option<String> = sqlx::query_scalar(
        "SELECT name FROM jobs WHERE id = ? AND pipeline_id = ? AND artifacts_bytes IS NOT NULL",
    )
    .bind(from)
    .bind(pipeline)
    .fetch_optional(&app.db)
    .await?;
    match source {
        Some(name) if needs.contains(&name) => {}
        _ => {
            return Err(ApiError::NotFound(format!(
                "job {job} does not need artifacts from job {from}"
            )))
        }
    }
    stream_file(&app.artifacts.path(from)).await
}

pub async fn stream_file(path: &std::path::Path) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar")],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response())
}

/// An image a build step of the current lease pushed.
async fn report_image(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Json(body): Json<ImageReport>,
) -> Result<StatusCode, ApiError> {
    let pipeline = leased_pipeline(&app, runner.id, job, body.attempt).await?;
    let valid_digest = body.digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !valid_digest || !crate::pipeline::spec::valid_repository(&body.repository) {
        return Err(ApiError::BadRequest(format!(
            "{}@{} is not a repository and sha256 digest",
            body.repository, body.digest
        )));
    }
    // Only where the step's build pushes: a runner cannot list another
    // repository's image among this pipeline's (same rules as the push
    // token, `push_targets`).
    let (from_fork, definition, repo_name): (bool, String, String) = sqlx::query_as(
        "SELECT p.from_fork, j.definition, r.name FROM jobs j
         JOIN pipelines p ON p.id = j.pipeline_id JOIN git_repos r ON r.id = p.repo_id
         WHERE j.id = ?",
    )
    .bind(job)
    .fetch_one(&app.db)
    .await?;
    let mut definition: JobDefinition =
        serde_json::from_str(&definition).map_err(|e| ApiError::Internal(e.to_string()))?;
    push_targets(&repo_name, from_fork, &mut definition.steps);
    let pushes_there = definition.steps.iter().any(|s| {
        s.position == body.step
            && s.refused.is_none()
            && s.build
                .as_ref()
                .is_some_and(|b| b.repository == body.repository)
    });
    if !pushes_there {
        return Err(ApiError::Forbidden(format!(
            "step {} of job {job} pushes no image to {}",
            body.step, body.repository
        )));
    }
    sqlx::query(
        "INSERT INTO pipeline_images (pipeline_id, job_id, step, repository, tags, digest, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (job_id, step, repository) DO UPDATE
             SET tags = excluded.tags, digest = excluded.digest, created_at = excluded.created_at",
    )
    .bind(pipeline)
    .bind(job)
    .bind(body.step)
    .bind(&body.repository)
    .bind(serde_json::to_string(&body.tags).expect("json"))
    .bind(&body.digest)
    .bind(now_ms())
    .execute(&app.db)
    .await?;
    tracing::info!(job, repository = %body.repository, digest = %body.digest, "image reported");
    Ok(StatusCode::NO_CONTENT)
}

async fn finish(
    State(app): State<AppState>,
    LeaseCaller(runner): LeaseCaller,
    Path(job): Path<i64>,
    Json(body): Json<JobReport>,
) -> Result<StatusCode, ApiError> {
    scheduler::finish_job(
        &app.scheduler,
        runner.id,
        job,
        body.attempt,
        body.status,
        body.reason.as_deref(),
    )
    .await?;
    tracing::info!(
        job,
        attempt = body.attempt,
        status = body.status.as_str(),
        "job finished"
    );
    Ok(StatusCode::NO_CONTENT)
}
