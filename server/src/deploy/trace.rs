//! Traceability: from what runs (an environment, or one instance) back to
//! where it came from, in one answer: the digest and image, its provenance
//! referrer (the Containerfile's digest, the base images' digests, the
//! source), the pipeline that built it (commit, message, author) with every
//! job and step result and where their logs are, and every environment the
//! digest went through, with who asked and who approved.

use std::io::Read;

use serde::Serialize;
use slipway_registry::{referrer, Digest};

use super::environments::Environment;
use super::model::Deployment;
use super::DeployError;
use crate::app::App;

/// The in-toto statement's media type on the provenance referrer.
const PROVENANCE: &str = "application/vnd.in-toto+json";
/// A provenance statement larger than this is not read.
const MAX_STATEMENT: u64 = 1 << 20;

#[derive(Debug, Serialize)]
pub struct Trace {
    pub image: String,
    pub digest: String,
    /// `None` when the image has no provenance referrer (pushed from
    /// elsewhere, or its statement is unreadable).
    pub provenance: Option<Provenance>,
    /// `None` when no pipeline of this server built the digest.
    pub pipeline: Option<PipelineTrace>,
    /// Every deployment of the digest in the repository's environments,
    /// oldest first.
    pub environments: Vec<EnvironmentStep>,
}

#[derive(Debug, Serialize)]
pub struct Provenance {
    /// The referrer manifest's digest.
    pub referrer: String,
    pub containerfile_path: Option<String>,
    pub containerfile_digest: Option<String>,
    pub context_digest: Option<String>,
    /// Base images: name and digest.
    pub bases: Vec<Base>,
    pub source_repository: Option<String>,
    pub source_commit: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Base {
    pub image: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
pub struct PipelineTrace {
    pub id: i64,
    pub repo: String,
    pub number: i64,
    pub commit: String,
    pub git_ref: String,
    pub message: Option<String>,
    pub author: Option<String>,
    pub status: String,
    pub jobs: Vec<JobTrace>,
}

#[derive(Debug, Serialize)]
pub struct JobTrace {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub steps: Vec<StepTrace>,
}

#[derive(Debug, Serialize)]
pub struct StepTrace {
    pub name: String,
    pub status: String,
    pub exit_code: Option<i64>,
    /// The API path of its log.
    pub log: String,
}

#[derive(Debug, Serialize)]
pub struct EnvironmentStep {
    pub environment: String,
    pub deployment_id: i64,
    pub kind: String,
    pub state: String,
    pub requested_by: String,
    pub approved_by: Vec<String>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// The trace of `env`'s running deployment (the last that succeeded).
pub async fn of_environment(app: &App, env: &Environment) -> Result<Trace, DeployError> {
    let d: Option<Deployment> = sqlx::query_as(&format!(
        "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
        super::model::RUNNING
    ))
    .bind(env.id)
    .fetch_optional(&app.db)
    .await?;
    let d = d.ok_or_else(|| DeployError::NotFound(format!("nothing runs in {} yet", env.name)))?;
    of_deployment(app, env.repo_id, &d).await
}

/// The trace of what `d` deploys, in repository `repo_id`.
pub async fn of_deployment(app: &App, repo_id: i64, d: &Deployment) -> Result<Trace, DeployError> {
    let pipeline = match d.pipeline_id {
        Some(p) => pipeline(app, p).await?,
        None => None,
    };
    let ids: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e.name, d.id FROM deployments d JOIN environments e ON e.id = d.environment_id
         WHERE e.repo_id = ? AND d.digest = ? ORDER BY d.id",
    )
    .bind(repo_id)
    .bind(&d.digest)
    .fetch_all(&app.db)
    .await?;
    let mut steps = Vec::new();
    for (name, id) in ids {
        let row: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
            .bind(id)
            .fetch_one(&app.db)
            .await?;
        steps.push((name, row));
    }
    Ok(Trace {
        image: d.image(),
        digest: d.digest.clone(),
        provenance: provenance(app, &d.repository, &d.digest).await,
        pipeline,
        environments: steps
            .into_iter()
            .map(|(environment, s)| EnvironmentStep {
                environment,
                deployment_id: s.id,
                approved_by: s.approvers(),
                kind: s.kind,
                state: s.state,
                requested_by: s.requested_by,
                created_at: s.created_at,
                finished_at: s.finished_at,
            })
            .collect(),
    })
}

async fn pipeline(app: &App, id: i64) -> Result<Option<PipelineTrace>, sqlx::Error> {
    let row: Option<(
        String,
        i64,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
    )> = sqlx::query_as(
        "SELECT r.name, p.number, p.commit_sha, p.git_ref, p.message, p.author, p.status
             FROM pipelines p JOIN git_repos r ON r.id = p.repo_id WHERE p.id = ?",
    )
    .bind(id)
    .fetch_optional(&app.db)
    .await?;
    let Some((repo, number, commit, git_ref, message, author, status)) = row else {
        return Ok(None);
    };
    let jobs: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, status FROM jobs WHERE pipeline_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await?;
    let mut out = Vec::new();
    for (job, name, status) in jobs {
        let steps: Vec<(i64, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT position, name, status, exit_code FROM steps WHERE job_id = ? ORDER BY position",
        )
        .bind(job)
        .fetch_all(&app.db)
        .await?;
        out.push(JobTrace {
            id: job,
            name,
            status,
            steps: steps
                .into_iter()
                .map(|(position, name, status, exit_code)| StepTrace {
                    name,
                    status,
                    exit_code,
                    log: format!("/api/v1/jobs/{job}/steps/{position}/log"),
                })
                .collect(),
        });
    }
    Ok(Some(PipelineTrace {
        id,
        repo,
        number,
        commit,
        git_ref,
        message,
        author,
        status,
        jobs: out,
    }))
}

/// The newest provenance referrer of `repository@digest`, read from the
/// registry; `None` when there is none or it cannot be read (logged).
async fn provenance(app: &App, repository: &str, digest: &str) -> Option<Provenance> {
    let subject: Digest = digest.parse().ok()?;
    let referrers = referrer::list(&app.registry, repository, &subject, Some(PROVENANCE))
        .await
        .ok()?;
    let newest = referrers.last()?;
    let body: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT m.body FROM manifests m JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ? AND m.digest = ?",
    )
    .bind(repository)
    .bind(&newest.digest)
    .fetch_optional(&app.db)
    .await
    .ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&body?).ok()?;
    let layer: Digest = manifest["layers"][0]["digest"].as_str()?.parse().ok()?;
    let file = app.registry.store.open_blob(&layer).ok()?;
    let statement = tokio::task::spawn_blocking(move || {
        let mut text = Vec::new();
        file.take(MAX_STATEMENT)
            .read_to_end(&mut text)
            .map(|_| text)
    })
    .await
    .ok()?
    .ok()?;
    let doc: serde_json::Value = match serde_json::from_slice(&statement) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(referrer = %newest.digest, error = %e, "unreadable provenance statement");
            return None;
        }
    };
    let params = &doc["predicate"]["buildDefinition"]["externalParameters"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let bases = doc["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .map(|deps| {
            deps.iter()
                .filter_map(|d| {
                    Some(Base {
                        image: d["uri"].as_str()?.to_owned(),
                        digest: format!("sha256:{}", d["digest"]["sha256"].as_str()?),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Provenance {
        referrer: newest.digest.clone(),
        containerfile_path: text(&params["containerfile"]["path"]),
        containerfile_digest: text(&params["containerfile"]["digest"]),
        context_digest: text(&params["context"]),
        bases,
        source_repository: text(&params["source"]["repository"]),
        source_commit: text(&params["source"]["commit"]),
    })
}
