//! Moving a pipeline forward after any job changed state.

use sqlx::SqliteConnection;

use super::DONE;
use crate::db::now_ms;

/// Unblock jobs whose needs all succeeded (or were skipped by `when`), skip jobs
/// whose needs failed, and set the pipeline's status from its jobs. Returns
/// whether some job became queued. Runs inside the caller's transaction.
pub async fn advance(conn: &mut SqliteConnection, pipeline_id: i64) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let jobs: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, name, needs, status, reason FROM jobs WHERE pipeline_id = ? ORDER BY id",
    )
    .bind(pipeline_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut status: std::collections::HashMap<String, String> =
        jobs.iter().map(|j| (j.1.clone(), j.3.clone())).collect();
    let mut queued_any = false;
    // Repeat until nothing changes: skipping one job can decide the next.
    loop {
        let mut changed = false;
        for (id, name, needs, _, _) in &jobs {
            if status[name] != "blocked" {
                continue;
            }
            let needs: Vec<String> = serde_json::from_str(needs).unwrap_or_default();
            let states: Vec<(&String, &str)> = needs
                .iter()
                .map(|n| (n, status.get(n).map(String::as_str).unwrap_or("error")))
                .collect();
            if let Some((failed, state)) = states
                .iter()
                .find(|(_, s)| matches!(*s, "failure" | "cancelled" | "error"))
            {
                let reason = format!("not run: it needs {failed:?}, which ended {state}");
                sqlx::query(
                    "UPDATE jobs SET status = 'skipped', reason = ?, finished_at = ? WHERE id = ?",
                )
                .bind(&reason)
                .bind(now)
                .bind(id)
                .execute(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE steps SET status = 'skipped' WHERE job_id = ? AND status = 'pending'",
                )
                .bind(id)
                .execute(&mut *conn)
                .await?;
                status.insert(name.clone(), "skipped-failed".into());
                changed = true;
            } else if states
                .iter()
                .all(|(_, s)| matches!(*s, "success" | "skipped"))
            {
                sqlx::query("UPDATE jobs SET status = 'queued', queued_at = ? WHERE id = ?")
                    .bind(now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                status.insert(name.clone(), "queued".into());
                changed = true;
                queued_any = true;
            }
        }
        if !changed {
            break;
        }
    }
    // A job skipped because its needs failed counts as failed for what needs it
    // (above) but as skipped in the table; map it back for the pipeline status.
    let states: Vec<&str> = status
        .values()
        .map(|s| {
            if s == "skipped-failed" {
                "skipped"
            } else {
                s.as_str()
            }
        })
        .collect();
    let pipeline_status = if states.iter().all(|s| DONE.contains(s)) {
        if states.iter().any(|s| matches!(*s, "failure" | "error")) {
            "failure"
        } else if states.contains(&"cancelled") {
            "cancelled"
        } else {
            "success"
        }
    } else if states.iter().any(|s| *s == "leased" || DONE.contains(s)) {
        "running"
    } else {
        "pending"
    };
    let finished = DONE.contains(&pipeline_status);
    let before: Option<String> = sqlx::query_scalar("SELECT status FROM pipelines WHERE id = ?")
        .bind(pipeline_id)
        .fetch_optional(&mut *conn)
        .await?;
    let changed = before
        .as_deref()
        .is_some_and(|b| b != pipeline_status && b != "error");
    sqlx::query(
        "UPDATE pipelines SET status = ?,
             started_at = COALESCE(started_at, CASE WHEN ? != 'pending' THEN ? END),
             finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) END
         WHERE id = ? AND status NOT IN ('error')",
    )
    .bind(pipeline_status)
    .bind(pipeline_status)
    .bind(now)
    .bind(finished)
    .bind(now)
    .bind(pipeline_id)
    .execute(&mut *conn)
    .await?;
    if changed {
        crate::pipeline::notify::record(&mut *conn, pipeline_id, pipeline_status).await?;
        if pipeline_status == "success" {
            crate::deploy::trigger::record(&mut *conn, pipeline_id).await?;
        }
    }
    Ok(queued_any)
}
