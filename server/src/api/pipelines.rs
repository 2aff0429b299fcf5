//! Pipelines: start one (`POST /api/v1/pipelines`), read it with its jobs and
//! steps, cancel it, and read a step's log.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::extract::{Json, OptionalJson, Path, Query};
use super::{ApiError, Part, RepoCaller, SqlScope};
use crate::app::AppState;
use crate::pipeline::create::{create, Cause};
use crate::pipeline::scheduler::cancel_pipeline;
use crate::pipeline::spec::Event;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPipeline {
    repo: String,
    /// Branch, tag, full ref or commit; the default branch when absent.
    #[serde(rename = "ref")]
    git_ref: Option<String>,
}

#[derive(Serialize)]
pub struct StepView {
    pub position: i64,
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    pub attempt: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Serialize)]
pub struct JobView {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub needs: Vec<String>,
    pub attempt: i64,
    pub reason: Option<String>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Size of the job's artifacts tar (`GET /api/v1/jobs/{id}/artifacts`).
    pub artifacts_bytes: Option<i64>,
    /// Name of the runner that has (or last had) the job.
    pub runner: Option<String>,
    pub steps: Vec<StepView>,
}

#[derive(Serialize)]
pub struct PipelineView {
    pub id: i64,
    pub number: i64,
    pub repo: String,
    pub commit: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub event: String,
    pub triggered_by: String,
    pub message: Option<String>,
    pub author: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub jobs: Vec<JobView>,
    /// Images the run's build steps pushed.
    pub images: Vec<ImageView>,
}

#[derive(Serialize)]
pub struct ImageView {
    pub job: String,
    pub step: String,
    pub repository: String,
    /// The commit sha first.
    pub tags: Vec<String>,
    pub digest: String,
    /// `repository@digest`, to pull exactly this image.
    pub pull: String,
}

/// Start a pipeline for a ref of a repository (fetching it first).
pub async fn trigger(
    State(app): State<AppState>,
    caller: RepoCaller,
    Json(body): Json<NewPipeline>,
) -> Result<(StatusCode, Json<PipelineView>), ApiError> {
    caller.require_developer()?;
    caller.check(&body.repo)?;
    if let Some(r) = &body.git_ref {
        if !crate::pipeline::repo::valid_ref(r) {
            return Err(ApiError::invalid(
                Part::Body,
                "ref",
                format!(
                    "ref {:?} is not a branch, tag, full ref or commit: at most {} bytes, \
                     git check-ref-format rules",
                    excerpt(r),
                    crate::pipeline::repo::MAX_REF
                ),
            ));
        }
    }
    let id = start(&app, &body.repo, body.git_ref, &caller.user().username).await?;
    Ok((StatusCode::CREATED, Json(load(&app, id).await?)))
}

/// At most 40 characters of untrusted text, for a message.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A manual run of `repo` at `git_ref` (its default branch when none), by
/// `by`: fetch, resolve, create, wake the scheduler. The caller has checked
/// that `by` may.
pub async fn start(
    app: &AppState,
    repo: &str,
    git_ref: Option<String>,
    by: &str,
) -> Result<i64, ApiError> {
    let repo = app.repos.get(repo).await?;
    app.repos.fetch(&repo, Vec::new()).await?;
    let commit = match git_ref.filter(|r| !r.trim().is_empty()) {
        Some(wanted) => app.repos.resolve(&repo, wanted.trim()).await?,
        None => app.repos.resolve_default(&repo).await?,
    };
    let cause = Cause {
        event: Event::Manual,
        triggered_by: format!("manual by {by}"),
        changed_files: None,
        from_fork: false,
        reuse: None,
    };
    let id = create(&app.db, &app.repos, &repo, &commit, &cause)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    app.scheduler.wake();
    Ok(id)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    repo: Option<String>,
    /// At most this many, newest first (default 25, 1 to [`MAX_LIST`]).
    limit: Option<i64>,
}

/// A pipeline in a list (the dashboard, a repository's history).
#[derive(Serialize)]
pub struct PipelineSummary {
    pub id: i64,
    pub number: i64,
    pub repo: String,
    pub commit: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub event: String,
    pub triggered_by: String,
    pub message: Option<String>,
    pub author: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// The most pipelines a list returns.
pub const MAX_LIST: i64 = 200;

/// Recent pipelines, newest first, of every repository in `scope` or one.
pub async fn recent(
    app: &AppState,
    repo: Option<&str>,
    scope: &SqlScope,
    limit: i64,
) -> Result<Vec<PipelineSummary>, ApiError> {
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        i64,
        i64,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        i64,
        Option<i64>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT p.id, p.number, r.name, p.commit_sha, p.git_ref, p.event, p.triggered_by,
                p.message, p.author, p.status, p.created_at, p.started_at, p.finished_at
         FROM pipelines p JOIN git_repos r ON r.id = p.repo_id
         WHERE (?1 IS NULL OR r.name = ?1)
           AND (?3 IS NULL OR r.name = ?3)
           AND (?4 IS NULL OR substr(r.name, 1, length(?4)) = ?4)
         ORDER BY p.id DESC LIMIT ?2",
    )
    .bind(repo)
    .bind(limit.clamp(1, MAX_LIST))
    .bind(&scope.exact)
    .bind(&scope.prefix)
    .fetch_all(&app.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PipelineSummary {
            id: r.0,
            number: r.1,
            repo: r.2,
            commit: r.3,
            git_ref: r.4,
            event: r.5,
            triggered_by: r.6,
            message: r.7,
            author: r.8,
            status: r.9,
            created_at: r.10,
            started_at: r.11,
            finished_at: r.12,
        })
        .collect())
}

pub async fn list(
    State(app): State<AppState>,
    caller: RepoCaller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<PipelineSummary>>, ApiError> {
    if let Some(repo) = &q.repo {
        caller.check(repo)?;
    }
    if q.limit.is_some_and(|n| !(1..=MAX_LIST).contains(&n)) {
        return Err(ApiError::invalid(
            Part::Query,
            "limit",
            format!("limit must be 1 to {MAX_LIST}"),
        ));
    }
    Ok(Json(
        recent(
            &app,
            q.repo.as_deref(),
            &caller.sql_scope(),
            q.limit.unwrap_or(25),
        )
        .await?,
    ))
}

pub async fn show(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
) -> Result<Json<PipelineView>, ApiError> {
    caller.check_pipeline(&app, id).await?;
    Ok(Json(load(&app, id).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rerun {
    /// Only the jobs that did not succeed (and what needs them).
    #[serde(default)]
    failed_only: bool,
}

/// A new pipeline at the same commit.
pub async fn rerun(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
    OptionalJson(body): OptionalJson<Rerun>,
) -> Result<(StatusCode, Json<PipelineView>), ApiError> {
    caller.require_developer()?;
    caller.check_pipeline(&app, id).await?;
    let failed_only = body.failed_only;
    let new = crate::pipeline::create::rerun(
        &app.db,
        &app.repos,
        id,
        failed_only,
        &caller.user().username,
    )
    .await
    .map_err(|e| match e {
        crate::pipeline::create::CreateError::Refused(why) => ApiError::Conflict(why),
        e => ApiError::Internal(e.to_string()),
    })?
    .ok_or_else(|| ApiError::NotFound(format!("no pipeline {id}")))?;
    app.scheduler.wake();
    Ok((StatusCode::CREATED, Json(load(&app, new).await?)))
}

pub async fn cancel(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(id): Path<i64>,
) -> Result<Json<PipelineView>, ApiError> {
    caller.require_developer()?;
    caller.check_pipeline(&app, id).await?;
    load(&app, id).await?;
    cancel_pipeline(&app.scheduler, id).await?;
    app.scheduler.wake();
    Ok(Json(load(&app, id).await?))
}

#[derive(Deserialize)]
pub struct LogQuery {
    /// Byte offset to read from.
    #[serde(default)]
    offset: u64,
    /// The job attempt; the step's latest when absent.
    attempt: Option<i64>,
    /// Lines `from_line..to_line` (0-based) instead of bytes from `offset`.
    from_line: Option<u64>,
    to_line: Option<u64>,
    /// The last `tail` lines (at most 10,000).
    tail: Option<u64>,
    /// `json`: the lines (`from_line` or `tail`) as [`LogLines`], with times.
    format: Option<String>,
    /// `1`: the whole log, as an attachment.
    #[serde(default, deserialize_with = "flag")]
    download: bool,
}

/// A range of a log's lines (`format=json`).
#[derive(Serialize)]
pub struct LogLines {
    from_line: u64,
    /// After the last line returned: fewer than asked for when they would
    /// not fit in 4 MiB.
    to_line: u64,
    total_lines: u64,
    /// Byte offsets of the first line's start and after the last line (where
    /// `log/stream?offset=` goes on).
    start_offset: u64,
    end_offset: u64,
    /// The last line has no newline yet: text appended later continues it.
    last_line_partial: bool,
    /// The one line returned did not fit in 4 MiB and is cut.
    truncated: bool,
    /// Without their newlines (invalid UTF-8 replaced).
    lines: Vec<String>,
    /// When each line's first byte arrived (ms since the epoch), if known.
    times: Vec<Option<i64>>,
    attempt: i64,
    status: String,
    /// The step has ended: the log will not grow.
    finished: bool,
}

/// `1`/`true` or `0`/`false` in a query string.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match String::deserialize(d)?.as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "`{other}` is not a flag: use 1 or 0"
        ))),
    }
}

/// Raw log bytes from `offset` (at most 1 MiB per call), or a range of lines
/// (`X-Log-Lines` then says how many the log has; `format=json` gives them as
/// [`LogLines`]), or with `download=1` the whole log as an attachment.
/// `X-Log-Complete: true` once the step has finished and everything from the
/// offset was returned.
pub async fn log(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path((job, position)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
) -> Result<axum::response::Response, ApiError> {
    caller.check_job(&app, job).await?;
    let step = step_detail(&app, job, position).await?;
    let attempt = step.log_attempt(q.attempt);
    let finished = step.finished();
    if q.download {
        return download_log(&app, job, position, attempt, finished).await;
    }
    let json = match q.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                Part::Query,
                "format",
                format!("format={other}: the formats are text and json"),
            ))
        }
    };
    let logs = app.logs.clone();
    let offset = q.offset;
    const MAX: usize = 1 << 20;
    const JSON_MAX: usize = 4 << 20;
    let lines = q
        .from_line
        .map(|from| (from, q.to_line.unwrap_or(from + 1000).min(from + 10_000)));
    let tail = q.tail.map(|n| n.min(10_000));
    if lines.is_none() && tail.is_none() {
        if json {
            return Err(ApiError::invalid(
                Part::Query,
                "from_line",
                "format=json reads lines: give from_line or tail",
            ));
        }
        let bytes = blocking(move || logs.read_from(job, position, attempt, offset, MAX)).await?;
        let complete = finished && bytes.len() < MAX;
        return Ok((
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
                (
                    header::HeaderName::from_static("x-log-complete"),
                    complete.to_string(),
                ),
            ],
            bytes,
        )
            .into_response());
    }
    let budget = if json { JSON_MAX } else { usize::MAX };
    let range = blocking(move || {
        let (from, to) = match (tail, lines) {
            (Some(n), _) => {
                // Counting the lines is cheap (the index); then read the last n.
                let total = logs.total_lines(job, position, attempt)?;
                (total.saturating_sub(n), u64::MAX)
            }
            (None, Some(span)) => span,
            (None, None) => (0, 0),
        };
        logs.range(job, position, attempt, from, to, budget)
    })
    .await?;
    if json {
        let body = LogLines {
            from_line: range.from,
            to_line: range.to,
            total_lines: range.total,
            start_offset: range.start_offset,
            end_offset: range.end_offset,
            last_line_partial: range.last_line_partial(),
            truncated: range.truncated,
            lines: range
                .lines()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect(),
            times: range.times,
            attempt,
            status: step.status,
            finished,
        };
        return Ok(Json(body).into_response());
    }
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::HeaderName::from_static("x-log-complete"),
                "false".to_owned(),
            ),
        ],
        range.bytes,
    )
        .into_response();
    response.headers_mut().insert(
        header::HeaderName::from_static("x-log-lines"),
        range.total.into(),
    );
    Ok(response)
}

/// A step's log live, as Server-Sent Events: `log` events carry
/// `{"offset", "text"}` with the event id being the offset after them (a
/// reconnect with `Last-Event-ID` resumes there), and one `end` event once the
/// step has finished and everything was sent.
pub async fn log_stream(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path((job, position)): Path<(i64, i64)>,
    Query(q): Query<LogQuery>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    caller.check_job(&app, job).await?;
    use axum::response::sse::{Event, KeepAlive, Sse};
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM steps WHERE job_id = ? AND position = ?")
            .bind(job)
            .bind(position)
            .fetch_optional(&app.db)
            .await?;
    if exists.is_none() {
        return Err(ApiError::NotFound(format!(
            "job {job} has no step {position}"
        )));
    }
    struct State {
        app: AppState,
        offset: u64,
        fixed_attempt: Option<i64>,
        done: bool,
    }
    let start = State {
        app: app.clone(),
        offset: resume.unwrap_or(q.offset),
        fixed_attempt: q.attempt,
        done: false,
    };
    let stream = futures_util::stream::unfold(start, move |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            // Registered before reading, so an append in between is not missed.
            let notify = st.app.logs.appended.clone();
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let row: Option<(String, Option<i64>, i64)> = sqlx::query_as(
                "SELECT s.status, s.attempt, j.attempt FROM steps s JOIN jobs j ON j.id = s.job_id
                 WHERE s.job_id = ? AND s.position = ?",
            )
            .bind(job)
            .bind(position)
            .fetch_optional(&st.app.db)
            .await
            .ok()
            .flatten();
            let (status, step_attempt, job_attempt) = row?;
            let attempt = st.fixed_attempt.or(step_attempt).unwrap_or(job_attempt);
            let finished = !matches!(status.as_str(), "pending" | "running");
            let logs = st.app.logs.clone();
            let offset = st.offset;
            let bytes = tokio::task::spawn_blocking(move || {
                logs.read_from(job, position, attempt, offset, 64 << 10)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            // Whole characters only; a split one waits for its other bytes.
            let valid = match std::str::from_utf8(&bytes) {
                Ok(_) => bytes.len(),
                Err(e) if e.error_len().is_none() && !finished => e.valid_up_to(),
                Err(_) => bytes.len(),
            };
            if valid > 0 {
                let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
                let event = Event::default()
                    .event("log")
                    .id((st.offset + valid as u64).to_string())
                    .json_data(serde_json::json!({ "offset": st.offset, "text": text }))
                    .expect("serialisable");
                st.offset += valid as u64;
                return Some((Ok::<_, std::convert::Infallible>(event), st));
            }
            if finished {
                st.done = true;
                let event = Event::default()
                    .event("end")
                    .json_data(serde_json::json!({ "status": status, "offset": st.offset }))
                    .expect("serialisable");
                return Some((Ok(event), st));
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), woken).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A job's artifacts, as the tar it uploaded.
pub async fn artifacts(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path(job): Path<i64>,
) -> Result<axum::response::Response, ApiError> {
    caller.check_job(&app, job).await?;
    let bytes: Option<Option<i64>> =
        sqlx::query_scalar("SELECT artifacts_bytes FROM jobs WHERE id = ?")
            .bind(job)
            .fetch_optional(&app.db)
            .await?;
    match bytes {
        Some(Some(_)) => super::runner::stream_file(&app.artifacts.path(job)).await,
        Some(None) => Err(ApiError::NotFound(format!("job {job} has no artifacts"))),
        None => Err(ApiError::NotFound(format!("no job {job}"))),
    }
}

pub async fn load(app: &AppState, id: i64) -> Result<PipelineView, ApiError> {
    #[allow(clippy::type_complexity)]
    let row: Option<(
        i64,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        i64,
        Option<i64>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT p.number, r.name, p.commit_sha, p.git_ref, p.event, p.triggered_by, p.message,
             p.author, p.status, p.error, p.created_at, p.started_at, p.finished_at
         FROM pipelines p JOIN git_repos r ON r.id = p.repo_id WHERE p.id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    let p = row.ok_or_else(|| ApiError::NotFound(format!("no pipeline {id}")))?;
    #[allow(clippy::type_complexity)]
    let jobs: Vec<(
        i64,
        String,
        String,
        String,
        i64,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    )> = sqlx::query_as(
        "SELECT j.id, j.name, j.status, j.needs, j.attempt, j.reason, j.started_at, j.finished_at,
                j.artifacts_bytes, r.name
             FROM jobs j LEFT JOIN runners r ON r.id = j.runner_id
             WHERE j.pipeline_id = ? ORDER BY j.id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await?;
    #[allow(clippy::type_complexity)]
    let steps: Vec<(
        i64,
        i64,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT s.job_id, s.position, s.name, s.status, s.exit_code, s.attempt, s.started_at,
                 s.finished_at
             FROM steps s JOIN jobs j ON j.id = s.job_id WHERE j.pipeline_id = ?
             ORDER BY s.job_id, s.position",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await?;
    let images: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT j.name, COALESCE(s.name, ''), i.repository, i.tags, i.digest
             FROM pipeline_images i JOIN jobs j ON j.id = i.job_id
             LEFT JOIN steps s ON s.job_id = i.job_id AND s.position = i.step
             WHERE i.pipeline_id = ? ORDER BY i.id",
    )
    .bind(id)
    .fetch_all(&app.db)
    .await?;
    let images = images
        .into_iter()
        .map(|(job, step, repository, tags, digest)| ImageView {
            pull: format!("{repository}@{digest}"),
            job,
            step,
            tags: serde_json::from_str(&tags).unwrap_or_default(),
            repository,
            digest,
        })
        .collect();
    let jobs = jobs
        .into_iter()
        .map(|j| JobView {
            id: j.0,
            name: j.1,
            status: j.2,
            needs: serde_json::from_str(&j.3).unwrap_or_default(),
            attempt: j.4,
            reason: j.5,
            started_at: j.6,
            finished_at: j.7,
            artifacts_bytes: j.8,
            runner: j.9,
            steps: steps
                .iter()
                .filter(|s| s.0 == j.0)
                .map(|s| StepView {
                    position: s.1,
                    name: s.2.clone(),
                    status: s.3.clone(),
                    exit_code: s.4,
                    attempt: s.5,
                    started_at: s.6,
                    finished_at: s.7,
                })
                .collect(),
        })
        .collect();
    Ok(PipelineView {
        id,
        number: p.0,
        repo: p.1,
        commit: p.2,
        git_ref: p.3,
        event: p.4,
        triggered_by: p.5,
        message: p.6,
        author: p.7,
        status: p.8,
        error: p.9,
        created_at: p.10,
        started_at: p.11,
        finished_at: p.12,
        jobs,
        images,
    })
}

/// A step with its job and pipeline: what its log and its page need.
pub struct StepDetail {
    pub pipeline_id: i64,
    pub pipeline_number: i64,
    pub repo: String,
    pub job_name: String,
    pub job_attempt: i64,
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    /// The job attempt the step last ran in.
    pub attempt: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

impl StepDetail {
    /// The attempt whose log to read: the one asked for, else the step's latest.
    pub fn log_attempt(&self, asked: Option<i64>) -> i64 {
        asked.or(self.attempt).unwrap_or(self.job_attempt)
    }

    /// Its log will not grow any more.
    pub fn finished(&self) -> bool {
        !matches!(self.status.as_str(), "pending" | "running")
    }
}

pub async fn step_detail(app: &AppState, job: i64, position: i64) -> Result<StepDetail, ApiError> {
    #[allow(clippy::type_complexity)]
    let row: Option<(
        i64,
        i64,
        String,
        String,
        i64,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    )> = sqlx::query_as(
        "SELECT p.id, p.number, r.name, j.name, j.attempt, s.name, s.status, s.exit_code,
                s.attempt, s.started_at, s.finished_at
         FROM steps s JOIN jobs j ON j.id = s.job_id JOIN pipelines p ON p.id = j.pipeline_id
              JOIN git_repos r ON r.id = p.repo_id
         WHERE s.job_id = ? AND s.position = ?",
    )
    .bind(job)
    .bind(position)
    .fetch_optional(&app.db)
    .await?;
    let r = row.ok_or_else(|| ApiError::NotFound(format!("job {job} has no step {position}")))?;
    Ok(StepDetail {
        pipeline_id: r.0,
        pipeline_number: r.1,
        repo: r.2,
        job_name: r.3,
        job_attempt: r.4,
        name: r.5,
        status: r.6,
        exit_code: r.7,
        attempt: r.8,
        started_at: r.9,
        finished_at: r.10,
    })
}

/// Log reading off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::pipeline::logs::LogError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// `log?download=1`: the whole file, streamed, as an attachment.
async fn download_log(
    app: &AppState,
    job: i64,
    position: i64,
    attempt: i64,
    finished: bool,
) -> Result<axum::response::Response, ApiError> {
    let path = app.logs.path(job, position, attempt);
    let body = match tokio::fs::File::open(&path).await {
        Ok(file) => axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => axum::body::Body::empty(),
        Err(e) => return Err(ApiError::Internal(format!("{}: {e}", path.display()))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{job}-step-{position}-attempt-{attempt}.log\""),
            ),
            (
                header::HeaderName::from_static("x-log-complete"),
                finished.to_string(),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct LogSearchQuery {
    /// A plain string, matched in each line's visible text (colours and other
    /// escape sequences removed).
    q: String,
    /// `1`: ASCII letters match either case.
    #[serde(default, deserialize_with = "flag")]
    ignore_case: bool,
    /// The first line to look at (0-based), to go on after `next_line`.
    #[serde(default)]
    from_line: u64,
    /// Matching lines to return at most (default 1,000, at most 10,000).
    limit: Option<usize>,
    /// The job attempt; the step's latest when absent.
    attempt: Option<i64>,
}

#[derive(Serialize)]
pub struct LogSearchHits {
    /// Matching lines, 0-based (as `from_line`), ascending.
    lines: Vec<u64>,
    /// Set when the limit stopped the search: search again from this line.
    next_line: Option<u64>,
}

/// The lines of a step's log containing a string, read from the file in
/// pieces (`pipeline::logs`, `Logs::search`).
pub async fn log_search(
    State(app): State<AppState>,
    caller: RepoCaller,
    Path((job, position)): Path<(i64, i64)>,
    Query(q): Query<LogSearchQuery>,
) -> Result<Json<LogSearchHits>, ApiError> {
    caller.check_job(&app, job).await?;
    use crate::pipeline::logs::{SearchQuery, MAX_NEEDLE};
    if q.q.is_empty() || q.q.len() > MAX_NEEDLE {
        return Err(ApiError::invalid(
            Part::Query,
            "q",
            format!("q has {} bytes: search for 1 to {MAX_NEEDLE}", q.q.len()),
        ));
    }
    if q.limit.is_some_and(|n| !(1..=10_000).contains(&n)) {
        return Err(ApiError::invalid(
            Part::Query,
            "limit",
            "limit must be 1 to 10000",
        ));
    }
    let step = step_detail(&app, job, position).await?;
    let attempt = step.log_attempt(q.attempt);
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let logs = app.logs.clone();
    let hits = blocking(move || {
        logs.search(
            job,
            position,
            attempt,
            &SearchQuery {
                text: &q.q,
                ignore_case: q.ignore_case,
                from_line: q.from_line,
                limit,
            },
        )
    })
    .await?;
    Ok(Json(LogSearchHits {
        lines: hits.lines,
        next_line: hits.next_line,
    }))
}
