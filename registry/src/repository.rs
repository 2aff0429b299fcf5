//! Repository rows: created on first push, looked up by name.

use sqlx::{Sqlite, SqliteConnection};

use crate::error::{RegistryError, Result};
use crate::Registry;

pub async fn find(registry: &Registry, name: &str) -> Result<Option<i64>> {
    Ok(
        sqlx::query_scalar::<Sqlite, i64>("SELECT id FROM repositories WHERE name = ?")
            .bind(name)
            .fetch_optional(&registry.db)
            .await?,
    )
}

pub async fn require(registry: &Registry, name: &str) -> Result<i64> {
    find(registry, name)
        .await?
        .ok_or_else(|| RegistryError::NameUnknown(name.to_owned()))
}

pub async fn ensure(conn: &mut SqliteConnection, name: &str) -> Result<i64> {
    sqlx::query(
        "INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(crate::now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar::<Sqlite, i64>("SELECT id FROM repositories WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Repository names in order, after `last`, at most `limit`.
pub async fn list(registry: &Registry, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar::<Sqlite, String>(
        "SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?",
    )
    .bind(last.unwrap_or(""))
    .bind(limit)
    .fetch_all(&registry.db)
    .await?)
}
