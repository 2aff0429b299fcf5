//! The queue explaining itself: for each waiting job, its position and which
//! runners could take it, or why none can; and the runners' state.

use crate::db::now_ms;

/// A runner that has not called in for this long is offline.
pub const ONLINE_WITHIN_MS: i64 = 30_000;

#[derive(Debug, Clone)]
pub struct RunnerState {
    pub id: i64,
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: i64,
    /// `None`: a shared runner.
    pub repositories: Option<Vec<String>>,
    pub running: Vec<i64>,
    pub last_seen_at: Option<i64>,
    pub online: bool,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub runner: String,
    /// `None` when it can take the job now.
    pub why_not: Option<String>,
    /// When it is limited to repositories that exclude the job's: its
    /// patterns (`why_not` names them; [`Candidate::why_not_for`] only
    /// those a limited viewer reaches).
    pub takes_only: Option<Vec<String>>,
}

impl Candidate {
    /// `why_not` as a viewer whose credential reaches `viewer` may read
    /// it: a runner's repository patterns outside the viewer's pattern are
    /// "other repositories", not named.
    pub fn why_not_for(&self, viewer: &slipway_registry::access::RepoPattern) -> Option<String> {
        let Some(patterns) = &self.takes_only else {
            return self.why_not.clone();
        };
        let mut named: Vec<&str> = patterns
            .iter()
            .filter(|p| viewer.covers(&slipway_registry::access::RepoPattern::new(p.as_str())))
            .map(String::as_str)
            .collect();
        if named.len() < patterns.len() {
            named.push("other repositories");
        }
        Some(format!("takes only jobs of {}", named.join(", ")))
    }
}

#[derive(Debug, Clone)]
pub struct Waiting {
    pub job_id: i64,
    pub pipeline_id: i64,
    pub repo: String,
    pub job: String,
    /// 1-based among queued jobs; `None` for jobs still waiting on `needs`.
    pub position: Option<usize>,
    pub waiting_ms: i64,
    pub labels: Vec<String>,
    pub blocked_on: Vec<String>,
    pub runners: Vec<Candidate>,
}

pub async fn runners(db: &sqlx::SqlitePool) -> Result<Vec<RunnerState>, sqlx::Error> {
    let now = now_ms();
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, String, String, i64, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT id, name, labels, capacity, last_seen_at, repositories FROM runners
         ORDER BY name, id",
    )
    .fetch_all(db)
    .await?;
    let leased: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT runner_id, id FROM jobs WHERE status = 'leased' AND runner_id IS NOT NULL",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, labels, capacity, last_seen_at, repositories)| RunnerState {
                id,
                name,
                labels: serde_json::from_str(&labels).unwrap_or_default(),
                capacity,
                repositories: repositories.map(|r| serde_json::from_str(&r).unwrap_or_default()),
                running: leased
                    .iter()
                    .filter(|(r, _)| *r == id)
                    .map(|(_, j)| *j)
                    .collect(),
                online: last_seen_at.is_some_and(|t| now - t < ONLINE_WITHIN_MS),
                last_seen_at,
            },
        )
        .collect())
}

pub async fn explain(db: &sqlx::SqlitePool) -> Result<Vec<Waiting>, sqlx::Error> {
    let now = now_ms();
    let runners = runners(db).await?;
    #[allow(clippy::type_complexity)]
    let rows: Vec<(i64, i64, String, String, String, String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT j.id, j.pipeline_id, r.name, j.name, j.status, j.labels, j.needs, j.queued_at, p.created_at
         FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id JOIN git_repos r ON r.id = p.repo_id
         WHERE j.status IN ('queued', 'blocked')
         ORDER BY j.status = 'blocked', j.queued_at, j.id",
    )
    .fetch_all(db)
    .await?;
    let mut position = 0;
    let mut out = Vec::new();
    for (job_id, pipeline_id, repo, job, status, labels, needs, queued_at, created_at) in rows {
        let labels: Vec<String> = serde_json::from_str(&labels).unwrap_or_default();
        let blocked_on = if status == "blocked" {
            let needs: Vec<String> = serde_json::from_str(&needs).unwrap_or_default();
            let mut open = Vec::new();
            for n in needs {
                let done: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM jobs WHERE pipeline_id = ? AND name = ?",
                )
                .bind(pipeline_id)
                .bind(&n)
                .fetch_optional(db)
                .await?;
                if !matches!(done.as_deref(), Some("success" | "skipped")) {
                    open.push(n);
                }
            }
            open
        } else {
            Vec::new()
        };
        let queued = status == "queued";
        if queued {
            position += 1;
        }
        let candidates = runners
            .iter()
            .map(|r| {
                let missing: Vec<&String> =
                    labels.iter().filter(|l| !r.labels.contains(l)).collect();
                let excluded = !super::lease::takes(r.repositories.as_deref(), &repo);
                let why_not = if excluded {
                    Some(format!(
                        "takes only jobs of {}",
                        r.repositories.as_deref().unwrap_or_default().join(", ")
                    ))
                } else if !missing.is_empty() {
                    Some(format!(
                        "lacks label{} {}",
                        if missing.len() == 1 { "" } else { "s" },
                        missing
                            .iter()
                            .map(|l| l.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else if !r.online {
                    Some(match r.last_seen_at {
                        Some(t) => format!("offline (last seen {} s ago)", (now - t) / 1000),
                        None => "offline (never seen)".into(),
                    })
                } else if r.running.len() as i64 >= r.capacity {
                    Some(format!(
                        "busy ({} of {} slots)",
                        r.running.len(),
                        r.capacity
                    ))
                } else {
                    None
                };
                Candidate {
                    runner: r.name.clone(),
                    why_not,
                    takes_only: excluded.then(|| r.repositories.clone().unwrap_or_default()),
                }
            })
            .collect();
        out.push(Waiting {
            job_id,
            pipeline_id,
            repo,
            job,
            position: queued.then_some(position),
            waiting_ms: now - queued_at.unwrap_or(created_at),
            labels,
            blocked_on,
            runners: candidates,
        });
    }
    Ok(out)
}
