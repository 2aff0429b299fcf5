//! The embedded SQLite database: opening it and applying `migrations/` at start-up.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

/// Open (creating if needed) the database file and bring its schema up to date.
/// WAL lets readers run beside the one writer; `synchronous = NORMAL` in WAL mode
/// survives a process crash (SIGKILL) without losing committed transactions.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Each pooled connection has its own page cache (2 MiB by default); the
        // operating system caches the file anyway, so keep them small.
        .pragma("cache_size", "-512")
        .statement_cache_capacity(64);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .min_connections(1)
        // Connections opened for a burst are closed again when idle.
        .idle_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?;
    sqlx::migrate!("../migrations").run(&pool).await?;
    Ok(pool)
}

/// Unix milliseconds as people read them: `2026-12-03 16:40:00 UTC`.
pub fn format_utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use sqlx::Executor;

    /// Migration 0005 rebuilds `users` inside sqlx's transaction, with foreign
    /// keys on: the API tokens and registration tokens referencing users must
    /// survive it, and the new role must be accepted.
    #[tokio::test]
    async fn the_viewer_migration_keeps_what_references_users() {
        let dir = tempfile::tempdir().unwrap();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("db.sqlite"))
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        for sql in [
            include_str!("../../migrations/0001_users_and_registry.sql"),
            include_str!("../../migrations/0002_pipelines.sql"),
            include_str!("../../migrations/0003_secrets.sql"),
            include_str!("../../migrations/0004_commit_status.sql"),
        ] {
            pool.execute(sql).await.unwrap();
        }
        pool.execute(
            "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'ann', 'h', 'user', 0);
             INSERT INTO api_tokens (user_id, name, token_hash, scopes, created_at) VALUES (1, 't', 'x', 'pull', 0);
             INSERT INTO runner_registration_tokens (token_hash, created_by, created_at, expires_at) VALUES ('r', 1, 0, 1);",
        )
        .await
        .unwrap();
        let mut tx = pool.begin().await.unwrap();
        tx.execute(include_str!("../../migrations/0005_viewer_role.sql"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(tokens, 1, "the rebuild deleted API tokens");
        let created_by: Option<i64> =
            sqlx::query_scalar("SELECT created_by FROM runner_registration_tokens")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(created_by, Some(1));
        pool.execute("INSERT INTO users (username, password_hash, role, created_at) VALUES ('vic', 'h', 'viewer', 0)")
            .await
            .unwrap();
        // References still point at the new table: deleting a user cascades.
        pool.execute("DELETE FROM users WHERE id = 1")
            .await
            .unwrap();
        let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(tokens, 0);
        let violations: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }
}
