//! The audit: one row per deploy, approval, rejection, freeze override,
//! rollback and protection change, with the policy before and after.
//! Append-only (the table's triggers refuse UPDATE and DELETE), and written
//! in the transaction of the change it records, so neither exists without
//! the other. Names, not ids: deleting a user or an environment never
//! rewrites it.

use serde::Serialize;
use sqlx::{SqliteConnection, SqlitePool};

use crate::db::now_ms;

/// One entry to append.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    pub actor: &'a str,
    /// `deploy`, `promote`, `rollback`, `abort`, `approve`, `reject`, `expire`,
    /// `freeze_override`, `refused`, `protect`, `bind_cluster`, `verified`,
    /// `verify_failed`.
    pub action: &'a str,
    pub repo: Option<&'a str>,
    pub environment: Option<&'a str>,
    pub digest: Option<&'a str>,
    pub deployment_id: Option<i64>,
    pub reason: Option<&'a str>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub async fn record(conn: &mut SqliteConnection, e: Entry<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor, action, repo, environment, digest, deployment_id, reason, before, after)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(now_ms())
    .bind(e.actor)
    .bind(e.action)
    .bind(e.repo)
    .bind(e.environment)
    .bind(e.digest)
    .bind(e.deployment_id)
    .bind(e.reason)
    .bind(e.before.map(|v| v.to_string()))
    .bind(e.after.map(|v| v.to_string()))
    .fetch_one(conn)
    .await
}

/// An entry as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub repo: Option<String>,
    pub environment: Option<String>,
    pub digest: Option<String>,
    pub deployment_id: Option<i64>,
    pub reason: Option<String>,
    /// JSON text, shown as JSON.
    #[serde(serialize_with = "as_json")]
    pub before: Option<String>,
    #[serde(serialize_with = "as_json")]
    pub after: Option<String>,
}

fn as_json<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    let value: Option<serde_json::Value> =
        text.as_deref().and_then(|t| serde_json::from_str(t).ok());
    value.serialize(s)
}

/// Entries, oldest first, after id `after`: of `repo` (every repository's
/// and the server's own when `None`), of `environment` when given.
pub async fn list(
    db: &SqlitePool,
    repo: Option<&str>,
    environment: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, actor, action, repo, environment, digest, deployment_id, reason, before, after
         FROM audit_log
         WHERE id > ? AND (? IS NULL OR repo = ?) AND (? IS NULL OR environment = ?)
         ORDER BY id LIMIT ?",
    )
    .bind(after)
    .bind(repo)
    .bind(repo)
    .bind(environment)
    .bind(environment)
    .bind(limit)
    .fetch_all(db)
    .await
}
