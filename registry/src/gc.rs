//! Online, incremental garbage collection.
//!
//! Architecture invariant: GC never holds a lock or transaction across more than one
//! object. Each blob is removed in its own short write transaction, under the
//! blob's digest lock, and only if at that moment no manifest references it and its
//! GC clock (`touched_at`) is older than the grace period. Pushes and pulls are
//! never blocked for longer than one such transaction.

use std::time::{Duration, SystemTime};

use sqlx::Sqlite;

use crate::digest::Digest;
use crate::error::Result;
use crate::{now_ms, Registry};

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Unreferenced blobs younger than this are kept (a client may be about to push
    /// the manifest that references them).
    pub grace_period: Duration,
    /// When set, manifests without tags, not listed by an index and not referrers,
    /// older than this, are removed.
    pub untagged_retention: Option<Duration>,
    /// How many objects one batch handles before yielding.
    pub batch: i64,
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace_period: Duration::from_secs(3600),
            untagged_retention: None,
            batch: 100,
            dry_run: false,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub manifests_removed: u64,
    pub uploads_expired: u64,
    pub orphan_files_removed: u64,
}

fn cutoff(age: Duration) -> i64 {
    now_ms() - age.as_millis() as i64
}

pub async fn collect(registry: &Registry, options: &GcOptions) -> Result<GcReport> {
    let mut report = GcReport::default();
    expire_uploads(registry, options, &mut report).await?;
    if let Some(retention) = options.untagged_retention {
        remove_untagged(registry, options, cutoff(retention), &mut report).await?;
    }
    remove_blobs(registry, options, &mut report).await?;
    if !options.dry_run {
        sweep_orphans(registry, options, &mut report).await?;
    }
    Ok(report)
}

async fn expire_uploads(
    registry: &Registry,
    options: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let expired =
        sqlx::query_scalar::<Sqlite, String>("SELECT id FROM uploads WHERE updated_at < ? LIMIT ?")
            .bind(cutoff(registry.config.upload_expiry))
            .bind(options.batch)
            .fetch_all(&registry.db)
            .await?;
    for id in expired {
        report.uploads_expired += 1;
        if options.dry_run {
            continue;
        }
        let slot = registry.sessions.lock().unwrap().get(&id).cloned();
        // A session busy with a request right now is not expired.
        let _held = match &slot {
            Some(slot) => match slot.try_lock() {
                Ok(held) => Some(held),
                Err(_) => continue,
            },
            None => None,
        };
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(&id)
            .execute(&registry.db)
            .await?;
        registry.sessions.lock().unwrap().remove(&id);
        let _ = tokio::fs::remove_file(registry.store.upload_path(&id)).await;
    }
    Ok(())
}

async fn remove_untagged(
    registry: &Registry,
    options: &GcOptions,
    older_than: i64,
    report: &mut GcReport,
) -> Result<()> {
    let candidates = "FROM manifests m WHERE m.created_at < ? AND m.subject_digest IS NULL
         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
         AND NOT EXISTS (SELECT 1 FROM manifest_children c JOIN manifests p ON p.id = c.manifest_id
                         WHERE c.child_digest = m.digest AND p.repository_id = m.repository_id)";
    if options.dry_run {
        let n = sqlx::query_scalar::<Sqlite, i64>(&format!("SELECT count(*) {candidates}"))
            .bind(older_than)
            .fetch_one(&registry.db)
            .await?;
        report.manifests_removed += n as u64;
        return Ok(());
    }
    loop {
        let ids = sqlx::query_scalar::<Sqlite, i64>(&format!("SELECT m.id {candidates} LIMIT ?"))
            .bind(older_than)
            .bind(options.batch)
            .fetch_all(&registry.db)
            .await?;
        for id in &ids {
            let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
            // Re-check inside the transaction: a tag may have been pushed meanwhile.
            let removed = sqlx::query(&format!(
                "DELETE FROM manifests WHERE id = ? AND id IN (SELECT m.id {candidates})"
            ))
            .bind(id)
            .bind(older_than)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            report.manifests_removed += removed;
        }
        if (ids.len() as i64) < options.batch {
            return Ok(());
        }
        tokio::task::yield_now().await;
    }
}

const UNREFERENCED: &str =
    "FROM blobs b WHERE b.touched_at < ? AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = b.digest)";

async fn remove_blobs(
    registry: &Registry,
    options: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let older_than = cutoff(options.grace_period);
    if options.dry_run {
        let (n, bytes) = sqlx::query_as::<Sqlite, (i64, Option<i64>)>(&format!(
            "SELECT count(*), sum(b.size) {UNREFERENCED}"
        ))
        .bind(older_than)
        .fetch_one(&registry.db)
        .await?;
        report.blobs_removed += n as u64;
        report.bytes_freed += bytes.unwrap_or(0) as u64;
        return Ok(());
    }
    let mut after = String::new();
    loop {
        let batch = sqlx::query_as::<Sqlite, (String, i64)>(&format!(
            "SELECT b.digest, b.size {UNREFERENCED} AND b.digest > ? ORDER BY b.digest LIMIT ?"
        ))
        .bind(older_than)
        .bind(&after)
        .bind(options.batch)
        .fetch_all(&registry.db)
        .await?;
        for (digest_text, size) in &batch {
            let Ok(digest) = digest_text.parse::<Digest>() else {
                continue;
            };
            let _guard = registry.store.lock_digest(&digest).await;
            let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
            let removed = sqlx::query(&format!(
                "DELETE FROM blobs WHERE digest = ? AND digest IN (SELECT b.digest {UNREFERENCED})"
            ))
            .bind(digest_text)
            .bind(older_than)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            if removed == 1 {
                registry.store.remove(&digest).await?;
                report.blobs_removed += 1;
                report.bytes_freed += *size as u64;
            }
        }
        match batch.last() {
            Some((last, _)) if batch.len() as i64 == options.batch => after = last.clone(),
            _ => return Ok(()),
        }
        tokio::task::yield_now().await;
    }
}

fn older_than(path: &std::path::Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > age)
        .unwrap_or(false)
}

/// Files left by a crash: a blob file whose row was never written (crash between
/// rename and insert), or an upload file with no session (a crashed monolithic
/// upload). Old ones are removed.
async fn sweep_orphans(
    registry: &Registry,
    options: &GcOptions,
    report: &mut GcReport,
) -> Result<()> {
    let root = registry.store.root().to_owned();
    let store_files =
        tokio::task::spawn_blocking(move || crate::storage::BlobStore::list_blob_files(&root))
            .await
            .map_err(std::io::Error::other)??;
    for (digest, path) in store_files {
        if !older_than(&path, options.grace_period) {
            continue;
        }
        let _guard = registry.store.lock_digest(&digest).await;
        let known = sqlx::query_scalar::<Sqlite, i64>("SELECT 1 FROM blobs WHERE digest = ?")
            .bind(digest.to_string())
            .fetch_optional(&registry.db)
            .await?
            .is_some();
        if !known && tokio::fs::remove_file(&path).await.is_ok() {
            report.orphan_files_removed += 1;
        }
    }
    let mut entries = tokio::fs::read_dir(registry.store.uploads_dir()).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !older_than(&entry.path(), registry.config.upload_expiry) {
            continue;
        }
        let has_session = sqlx::query_scalar::<Sqlite, i64>("SELECT 1 FROM uploads WHERE id = ?")
            .bind(&name)
            .fetch_optional(&registry.db)
            .await?
            .is_some();
        if !has_session && tokio::fs::remove_file(entry.path()).await.is_ok() {
            report.orphan_files_removed += 1;
        }
    }
    // Local uploads a client linked but never asked to adopt. Their mtime is
    // the client's file's; linking set the change time.
    let mut entries = tokio::fs::read_dir(registry.store.incoming_dir()).await?;
    while let Some(entry) = entries.next_entry().await? {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let age = crate::now_ms() / 1000 - meta.ctime();
        if age > registry.config.upload_expiry.as_secs() as i64
            && tokio::fs::remove_file(entry.path()).await.is_ok()
        {
            report.orphan_files_removed += 1;
        }
    }
    Ok(())
}
