//! Blobs as seen from a repository: stat, read, link (after upload or mount),
//! unlink.

use sqlx::{Sqlite, SqliteConnection};

use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::{now_ms, repository, Registry};

/// Size of `digest` if it is linked into `repo`. Refreshes the blob's GC clock when
/// it is getting old, so a client that checks a blob exists and then pushes a
/// manifest referencing it is not raced by the collector.
pub async fn stat(registry: &Registry, repo: &str, digest: &Digest) -> Result<u64> {
    let row = sqlx::query_as::<Sqlite, (i64, i64)>(
        "SELECT b.size, b.touched_at FROM blobs b
         JOIN repository_blobs rb ON rb.digest = b.digest
         JOIN repositories r ON r.id = rb.repository_id
         WHERE r.name = ? AND b.digest = ?",
    )
    .bind(repo)
    .bind(digest.to_string())
    .fetch_optional(&registry.db)
    .await?;
    let (size, touched_at) = row.ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))?;
    if now_ms() - touched_at > 60_000 {
        sqlx::query("UPDATE blobs SET touched_at = ? WHERE digest = ?")
            .bind(now_ms())
            .bind(digest.to_string())
            .execute(&registry.db)
            .await?;
    }
    Ok(size as u64)
}

/// Record an installed blob and link it into a repository. The caller holds the
/// digest lock, so GC cannot remove the file between install and this row.
pub async fn record(
    conn: &mut SqliteConnection,
    repo_id: i64,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (digest) DO UPDATE SET touched_at = excluded.touched_at",
    )
    .bind(digest.to_string())
    .bind(size as i64)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    link(conn, repo_id, digest).await
}

pub async fn link(conn: &mut SqliteConnection, repo_id: i64, digest: &Digest) -> Result<()> {
    sqlx::query(
        "INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?)
         ON CONFLICT DO NOTHING",
    )
    .bind(repo_id)
    .bind(digest.to_string())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Does the blob exist anywhere in the store (any repository)?
pub async fn exists_globally(conn: &mut SqliteConnection, digest: &Digest) -> Result<Option<u64>> {
    Ok(
        sqlx::query_scalar::<Sqlite, i64>("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .map(|s| s as u64),
    )
}

/// Repositories (other than `except`) that have `digest` linked, for mounts
/// without `from`.
pub async fn repositories_with(
    registry: &Registry,
    digest: &Digest,
    except: &str,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar::<Sqlite, String>(
        "SELECT r.name FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
         WHERE rb.digest = ? AND r.name <> ? ORDER BY r.name LIMIT 50",
    )
    .bind(digest.to_string())
    .bind(except)
    .fetch_all(&registry.db)
    .await?)
}

/// Cross-repository mount: link a blob that `from` has into `repo`. Returns false
/// when `from` does not have it (the caller then starts a normal upload).
pub async fn mount(registry: &Registry, repo: &str, from: &str, digest: &Digest) -> Result<bool> {
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let linked = sqlx::query_scalar::<Sqlite, i64>(
        "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id WHERE r.name = ? AND rb.digest = ?",
    )
    .bind(from)
    .bind(digest.to_string())
    .fetch_optional(&mut *tx)
    .await?
    .is_some();
    if !linked {
        return Ok(false);
    }
    let repo_id = repository::ensure(&mut tx, repo).await?;
    sqlx::query("UPDATE blobs SET touched_at = ? WHERE digest = ?")
        .bind(now_ms())
        .bind(digest.to_string())
        .execute(&mut *tx)
        .await?;
    link(&mut tx, repo_id, digest).await?;
    tx.commit().await?;
    Ok(true)
}

/// DELETE of a blob: remove it from the repository. The bytes stay until GC finds
/// nothing references them. Refused while a manifest in the repository uses it,
/// because that manifest could no longer be pulled.
pub async fn unlink(registry: &Registry, repo: &str, digest: &Digest) -> Result<()> {
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = sqlx::query_scalar::<Sqlite, i64>("SELECT id FROM repositories WHERE name = ?")
        .bind(repo)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| RegistryError::BlobUnknown(digest.to_string()))?;
    let user = sqlx::query_scalar::<Sqlite, String>(
        "SELECT m.digest FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
         WHERE m.repository_id = ? AND mb.digest = ? LIMIT 1",
    )
    .bind(repo_id)
    .bind(digest.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(manifest) = user {
        return Err(RegistryError::Conflict(format!(
            "blob {digest} is used by manifest {manifest} in {repo}; delete the manifest first"
        )));
    }
    let removed =
        sqlx::query("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?")
            .bind(repo_id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if removed == 0 {
        return Err(RegistryError::BlobUnknown(digest.to_string()));
    }
    tx.commit().await?;
    Ok(())
}
