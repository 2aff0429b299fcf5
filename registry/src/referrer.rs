//! The referrers API: manifests whose `subject` is a given digest.

use std::collections::BTreeMap;

use sqlx::Sqlite;

use crate::digest::Digest;
use crate::error::Result;
use crate::Registry;

pub struct Referrer {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

pub async fn list(
    registry: &Registry,
    repo: &str,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Vec<Referrer>> {
    let rows = sqlx::query_as::<Sqlite, (String, String, i64, Option<String>, Option<String>)>(
        "SELECT m.media_type, m.digest, length(m.body), m.artifact_type, m.annotations
         FROM manifests m JOIN repositories r ON r.id = m.repository_id
         WHERE r.name = ? AND m.subject_digest = ? AND (? IS NULL OR m.artifact_type = ?)
         ORDER BY m.created_at, m.digest",
    )
    .bind(repo)
    .bind(subject.to_string())
    .bind(artifact_type)
    .bind(artifact_type)
    .fetch_all(&registry.db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(media_type, digest, size, artifact_type, annotations)| Referrer {
                media_type,
                digest,
                size,
                artifact_type,
                annotations: annotations.and_then(|a| serde_json::from_str(&a).ok()),
            },
        )
        .collect())
}
