//! Tag listing with `n`/`last` pagination.

use sqlx::Sqlite;

use crate::error::Result;
use crate::{repository, Registry};

/// Tags of `repo` in lexical order after `last`, at most `limit` of them.
pub async fn list(
    registry: &Registry,
    repo: &str,
    last: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    let repo_id = repository::require(registry, repo).await?;
    Ok(sqlx::query_scalar::<Sqlite, String>(
        "SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?",
    )
    .bind(repo_id)
    .bind(last.unwrap_or(""))
    .bind(limit)
    .fetch_all(&registry.db)
    .await?)
}
