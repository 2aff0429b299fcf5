//! Storing, reading and deleting manifests. Bodies are kept verbatim in the
//! database (so a GET returns the exact bytes that were pushed) together with the
//! blobs and child manifests they reference.

use bytes::Bytes;
use sqlx::{Sqlite, SqliteConnection};

use super::validate;
use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::name::Reference;
use crate::{now_ms, repository, Registry};

pub struct StoredManifest {
    pub digest: String,
    pub media_type: String,
    pub body: Vec<u8>,
}

pub struct PutOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

pub async fn get(registry: &Registry, repo: &str, reference: &Reference) -> Result<StoredManifest> {
    let row = match reference {
        Reference::Tag(tag) => {
            sqlx::query_as::<Sqlite, (String, String, Vec<u8>)>(
                "SELECT m.digest, m.media_type, m.body FROM tags t
                 JOIN repositories r ON r.id = t.repository_id JOIN manifests m ON m.id = t.manifest_id
                 WHERE r.name = ? AND t.name = ?",
            )
            .bind(repo)
            .bind(tag)
            .fetch_optional(&registry.db)
            .await?
        }
        Reference::Digest(digest) => {
            sqlx::query_as::<Sqlite, (String, String, Vec<u8>)>(
                "SELECT m.digest, m.media_type, m.body FROM manifests m JOIN repositories r ON r.id = m.repository_id
                 WHERE r.name = ? AND m.digest = ?",
            )
            .bind(repo)
            .bind(digest.to_string())
            .fetch_optional(&registry.db)
            .await?
        }
    };
    let (digest, media_type, body) =
        row.ok_or_else(|| RegistryError::ManifestUnknown(describe(repo, reference)))?;
    Ok(StoredManifest {
        digest,
        media_type,
        body,
    })
}

fn describe(repo: &str, reference: &Reference) -> String {
    match reference {
        Reference::Tag(t) => format!("{repo}:{t}"),
        Reference::Digest(d) => format!("{repo}@{d}"),
    }
}

fn is_immutable(registry: &Registry, tag: &str) -> Option<String> {
    registry
        .config
        .immutable_tags
        .iter()
        .find(|re| re.is_match(tag))
        .map(|re| re.as_str().to_owned())
}

async fn missing<'a>(
    conn: &mut SqliteConnection,
    sql: &str,
    repo_id: i64,
    digests: &'a [Digest],
) -> Result<Vec<&'a Digest>> {
    let mut missing = Vec::new();
    for digest in digests {
        let found = sqlx::query_scalar::<Sqlite, i64>(sql)
            .bind(repo_id)
            .bind(digest.to_string())
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            missing.push(digest);
        }
    }
    Ok(missing)
}

/// Validate and store a manifest, link what it references, and point the tag at it.
/// Everything happens in one write transaction, so a concurrent GC either sees the
/// new references or makes this push fail cleanly with MANIFEST_BLOB_UNKNOWN.
pub async fn put(
    registry: &Registry,
    repo: &str,
    reference: &Reference,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<PutOutcome> {
    if body.len() > registry.config.max_manifest_bytes {
        return Err(RegistryError::SizeInvalid(format!(
            "manifest is {} bytes; the limit is {}",
            body.len(),
            registry.config.max_manifest_bytes
        )));
    }
    let parsed = validate::parse(content_type, &body)?;
    let digest = Digest::of(&body);
    if let Reference::Digest(named) = reference {
        if named != &digest {
            return Err(RegistryError::DigestInvalid(format!(
                "manifest body has digest {digest}, not {named}"
            )));
        }
    }
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = repository::ensure(&mut tx, repo).await?;

    let missing_blobs = missing(
        &mut tx,
        "SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?",
        repo_id,
        &parsed.blobs,
    )
    .await?;
    let missing_children = missing(
        &mut tx,
        "SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?",
        repo_id,
        &parsed.children,
    )
    .await?;
    if !missing_blobs.is_empty() || !missing_children.is_empty() {
        let list: Vec<String> = missing_blobs
            .iter()
            .map(|d| format!("blob {d}"))
            .chain(missing_children.iter().map(|d| format!("manifest {d}")))
            .collect();
        return Err(RegistryError::ManifestBlobUnknown(list.join(", ")));
    }

    if let Reference::Tag(tag) = reference {
        let current = sqlx::query_scalar::<Sqlite, String>(
            "SELECT m.digest FROM tags t JOIN manifests m ON m.id = t.manifest_id WHERE t.repository_id = ? AND t.name = ?",
        )
        .bind(repo_id)
        .bind(tag)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(current), Some(pattern)) = (&current, is_immutable(registry, tag)) {
            if current != &digest.to_string() {
                return Err(RegistryError::Denied(format!(
                    "tag {repo}:{tag} is immutable (matches {pattern}) and already points to {current}; refusing to move it to {digest}"
                )));
            }
        }
    }

    let annotations = parsed
        .annotations
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("string map serialises"));
    let inserted = sqlx::query(
        "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, subject_digest, annotations, body, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository_id, digest) DO NOTHING",
    )
    .bind(repo_id)
    .bind(digest.to_string())
    .bind(&parsed.media_type)
    .bind(&parsed.artifact_type)
    .bind(parsed.subject.as_ref().map(|s| s.to_string()))
    .bind(annotations)
    .bind(body.as_ref())
    .bind(now_ms())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let manifest_id = sqlx::query_scalar::<Sqlite, i64>(
        "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?",
    )
    .bind(repo_id)
    .bind(digest.to_string())
    .fetch_one(&mut *tx)
    .await?;
    if inserted {
        for blob in &parsed.blobs {
            sqlx::query("INSERT INTO manifest_blobs (manifest_id, digest) VALUES (?, ?)")
                .bind(manifest_id)
                .bind(blob.to_string())
                .execute(&mut *tx)
                .await?;
        }
        for child in &parsed.children {
            sqlx::query("INSERT INTO manifest_children (manifest_id, child_digest) VALUES (?, ?)")
                .bind(manifest_id)
                .bind(child.to_string())
                .execute(&mut *tx)
                .await?;
        }
    }
    if let Reference::Tag(tag) = reference {
        sqlx::query(
            "INSERT INTO tags (repository_id, name, manifest_id, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (repository_id, name) DO UPDATE SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(tag)
        .bind(manifest_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(PutOutcome {
        digest,
        subject: parsed.subject,
    })
}

/// DELETE by tag removes the tag; by digest removes the manifest and its tags.
/// Immutable tags cannot be deleted (that would let a different image take the
/// name later), and a manifest an index still lists cannot be deleted.
pub async fn delete(registry: &Registry, repo: &str, reference: &Reference) -> Result<()> {
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = sqlx::query_scalar::<Sqlite, i64>("SELECT id FROM repositories WHERE name = ?")
        .bind(repo)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| RegistryError::ManifestUnknown(describe(repo, reference)))?;
    match reference {
        Reference::Tag(tag) => {
            if let Some(pattern) = is_immutable(registry, tag) {
                return Err(RegistryError::Denied(format!(
                    "tag {repo}:{tag} is immutable (matches {pattern}) and cannot be deleted"
                )));
            }
            let n = sqlx::query("DELETE FROM tags WHERE repository_id = ? AND name = ?")
                .bind(repo_id)
                .bind(tag)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(RegistryError::ManifestUnknown(describe(repo, reference)));
            }
        }
        Reference::Digest(digest) => {
            let id = sqlx::query_scalar::<Sqlite, i64>(
                "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?",
            )
            .bind(repo_id)
            .bind(digest.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| RegistryError::ManifestUnknown(describe(repo, reference)))?;
            let tags =
                sqlx::query_scalar::<Sqlite, String>("SELECT name FROM tags WHERE manifest_id = ?")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            if let Some(tag) = tags.iter().find(|t| is_immutable(registry, t).is_some()) {
                return Err(RegistryError::Denied(format!(
                    "manifest {digest} is tagged with immutable tag {repo}:{tag} and cannot be deleted"
                )));
            }
            let parent = sqlx::query_scalar::<Sqlite, String>(
                "SELECT m.digest FROM manifest_children c JOIN manifests m ON m.id = c.manifest_id
                 WHERE m.repository_id = ? AND c.child_digest = ? LIMIT 1",
            )
            .bind(repo_id)
            .bind(digest.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(parent) = parent {
                return Err(RegistryError::Conflict(format!(
                    "manifest {digest} is listed by index {parent} in {repo}; delete the index first"
                )));
            }
            // The blobs it frees get a full grace period before GC may take them.
            sqlx::query("UPDATE blobs SET touched_at = ? WHERE digest IN (SELECT digest FROM manifest_blobs WHERE manifest_id = ?)")
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM manifests WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
