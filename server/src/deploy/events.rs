//! A deployment's timeline, for people: what happened to it and when (state
//! changes, each instance started, ready or unhealthy, routing, the
//! blue/green swap, drain and stop of old instances, approvals and
//! rejections). One row per event, written in the transaction of the change
//! it records (so a rolled-back change leaves no event), by one-line calls
//! at each transition. The audit (`audit.rs`) says who did what; this says
//! how the rollout went.

use sqlx::{SqliteConnection, SqlitePool};

use crate::db::now_ms;

/// The most events a timeline shows (the newest; a crash-looping instance of
/// a long-lived deployment keeps adding some).
pub const SHOWN: i64 = 1000;

/// Append an event of `kind` to deployment `deployment_id`'s timeline.
pub async fn record(
    conn: &mut SqliteConnection,
    deployment_id: i64,
    kind: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    insert(conn, deployment_id, kind, None, detail).await
}

/// Append an event about instance `instance` of deployment `deployment_id`.
pub async fn record_instance(
    conn: &mut SqliteConnection,
    deployment_id: i64,
    kind: &str,
    instance: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    insert(conn, deployment_id, kind, Some(instance), detail).await
}

async fn insert(
    conn: &mut SqliteConnection,
    deployment_id: i64,
    kind: &str,
    instance: Option<&str>,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO deployment_events (deployment_id, at, kind, detail, instance) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(deployment_id)
    .bind(now_ms())
    .bind(kind)
    .bind(detail)
    .bind(instance)
    .execute(conn)
    .await?;
    Ok(())
}

/// One event of a timeline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub kind: String,
    pub detail: String,
    pub instance: Option<String>,
}

/// Deployment `deployment_id`'s timeline, oldest first (the newest
/// [`SHOWN`]).
pub async fn list(db: &SqlitePool, deployment_id: i64) -> Result<Vec<Event>, sqlx::Error> {
    let mut events: Vec<Event> = sqlx::query_as(
        "SELECT id, at, kind, detail, instance FROM deployment_events
         WHERE deployment_id = ? ORDER BY id DESC LIMIT ?",
    )
    .bind(deployment_id)
    .bind(SHOWN)
    .fetch_all(db)
    .await?;
    events.reverse();
    Ok(events)
}
