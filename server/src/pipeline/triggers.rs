//! Triggers that come from time rather than from someone: git polling, for
//! repositories that cannot send webhooks, and the `cron` schedules in
//! `.slipway.yml`. One background loop checks both every second.
//!
//! - Polling fetches a repository every `poll_interval` and starts a push
//!   pipeline when its default branch moved (the first poll only records the
//!   head: enabling polling does not run the current commit).
//! - Cron reads the schedules from the default branch's head (cached by
//!   commit) and starts a pipeline on `branch` (default: the default branch)
//!   for each occurrence that came due. `cron_runs` remembers the last one, so
//!   an occurrence runs at most once, also across restarts; after downtime,
//!   missed occurrences start one run, not one each. A schedule seen for the
//!   first time starts from now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::create::{create, Cause};
use super::repo::{GitRepo, SPEC_FILE};
use super::spec::{self, Event};
use crate::app::App;
use crate::db::now_ms;

/// Schedules per repository, from the commit they were read at, and when the
/// default branch was last looked at.
#[derive(Default)]
struct CronCache {
    by_repo: HashMap<i64, (String, Vec<spec::CronSpec>, std::time::Instant)>,
}

/// How often the default branch is looked at again for changed schedules (the
/// cron loop itself runs every second).
const RECHECK_SCHEDULES: Duration = Duration::from_secs(10);

async fn start(app: &App, repo: &GitRepo, wanted: &str, cause: Cause) -> Result<i64, String> {
    let commit = app
        .repos
        .resolve(repo, wanted)
        .await
        .map_err(|e| e.to_string())?;
    let id = create(&app.db, &app.repos, repo, &commit, &cause)
        .await
        .map_err(|e| e.to_string())?;
    app.scheduler.wake();
    Ok(id)
}

async fn poll(app: &App, now: i64) -> Result<(), String> {
    let due: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT id, last_polled_sha FROM git_repos
         WHERE poll_interval_ms IS NOT NULL AND COALESCE(last_polled_at, 0) + poll_interval_ms <= ?",
    )
    .bind(now)
    .fetch_all(&app.db)
    .await
    .map_err(|e| e.to_string())?;
    for (id, last) in due {
        let repo = app.repos.by_id(id).await.map_err(|e| e.to_string())?;
        sqlx::query("UPDATE git_repos SET last_polled_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&app.db)
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = app.repos.fetch(&repo, Vec::new()).await {
            tracing::warn!(repo = %repo.name, error = %e, "polling: fetch failed");
            continue;
        }
        let head = match app.repos.resolve(&repo, &repo.default_branch).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(repo = %repo.name, error = %e, "polling: no default branch");
                continue;
            }
        };
        if last.as_deref() == Some(head.sha.as_str()) {
            continue;
        }
        sqlx::query("UPDATE git_repos SET last_polled_sha = ? WHERE id = ?")
            .bind(&head.sha)
            .bind(id)
            .execute(&app.db)
            .await
            .map_err(|e| e.to_string())?;
        if last.is_none() {
            continue; // the first poll only records where the branch is
        }
        let cause = Cause {
            event: Event::Push,
            triggered_by: "git poll".into(),
            changed_files: None,
            from_fork: false,
            reuse: None,
        };
        match start(app, &repo, &head.git_ref, cause).await {
            Ok(pipeline) => {
                tracing::info!(repo = %repo.name, pipeline, commit = %head.sha, "polling found a new commit")
            }
            Err(e) => {
                tracing::error!(repo = %repo.name, error = %e, "polling: starting a pipeline failed")
            }
        }
    }
    Ok(())
}

async fn schedules(app: &App, cache: &mut CronCache, repo: &GitRepo) -> Vec<spec::CronSpec> {
    if let Some((_, specs, checked)) = cache.by_repo.get(&repo.id) {
        if checked.elapsed() < RECHECK_SCHEDULES {
            return specs.clone();
        }
    }
    let Ok(head) = app.repos.resolve(repo, &repo.default_branch).await else {
        return Vec::new();
    };
    if let Some((sha, specs, checked)) = cache.by_repo.get_mut(&repo.id) {
        if *sha == head.sha {
            *checked = std::time::Instant::now();
            return specs.clone();
        }
    }
    let specs = match app
        .repos
        .read_file(repo, &head.sha, SPEC_FILE, spec::MAX_BYTES)
        .await
    {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .ok()
            .and_then(|text| spec::parse(SPEC_FILE, &text).ok())
            .map(|s| s.cron)
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    cache.by_repo.insert(
        repo.id,
        (head.sha, specs.clone(), std::time::Instant::now()),
    );
    specs
}

async fn cron(app: &App, cache: &mut CronCache, now: i64) -> Result<(), String> {
    let repos = app.repos.list().await.map_err(|e| e.to_string())?;
    for repo in repos {
        for schedule in schedules(app, cache, &repo).await {
            let last: Option<i64> = sqlx::query_scalar(
                "SELECT last_run_at FROM cron_runs WHERE repo_id = ? AND name = ?",
            )
            .bind(repo.id)
            .bind(&schedule.name)
            .fetch_optional(&app.db)
            .await
            .map_err(|e| e.to_string())?;
            let Some(last) = last else {
                sqlx::query("INSERT INTO cron_runs (repo_id, name, last_run_at) VALUES (?, ?, ?)")
                    .bind(repo.id)
                    .bind(&schedule.name)
                    .bind(now)
                    .execute(&app.db)
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            };
            let Some(after) = Utc.timestamp_millis_opt(last).single() else {
                continue;
            };
            let Ok(next) = schedule.schedule.find_next_occurrence(&after, false) else {
                continue;
            };
            if next.timestamp_millis() > now {
                continue;
            }
            // The latest occurrence that is due (missed ones are not replayed).
            let mut due = next;
            while let Ok(n) = schedule.schedule.find_next_occurrence(&due, false) {
                if n.timestamp_millis() > now {
                    break;
                }
                due = n;
            }
            sqlx::query("UPDATE cron_runs SET last_run_at = ? WHERE repo_id = ? AND name = ?")
                .bind(due.timestamp_millis())
                .bind(repo.id)
                .bind(&schedule.name)
                .execute(&app.db)
                .await
                .map_err(|e| e.to_string())?;
            let branch = schedule
                .branch
                .clone()
                .unwrap_or_else(|| repo.default_branch.clone());
            let cause = Cause {
                event: Event::Cron,
                triggered_by: format!("cron {} ({})", schedule.name, schedule.schedule_text),
                changed_files: None,
                from_fork: false,
                reuse: None,
            };
            match start(app, &repo, &branch, cause).await {
                Ok(pipeline) => {
                    tracing::info!(repo = %repo.name, pipeline, cron = %schedule.name, "cron pipeline started")
                }
                Err(e) => {
                    tracing::error!(repo = %repo.name, cron = %schedule.name, error = %e, "cron: starting a pipeline failed")
                }
            }
        }
    }
    Ok(())
}

pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cache = CronCache::default();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now_ms();
            if let Err(e) = poll(&app, now).await {
                tracing::error!(error = %e, "polling pass failed");
            }
            if let Err(e) = cron(&app, &mut cache, now).await {
                tracing::error!(error = %e, "cron pass failed");
            }
        }
    })
}
