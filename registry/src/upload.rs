//! Upload sessions: start, append (PATCH), complete (PUT), status, cancel, and the
//! single-request monolithic upload.
//!
//! A session's bytes are in `uploads/<id>`; its row in `uploads` records how many
//! bytes were acknowledged to the client (`committed`). The open file and running
//! hash are kept in memory between requests, so a chunked upload is hashed once as
//! it streams in. After a restart or a failed request the session is reopened from
//! disk: truncated to `committed` and rehashed.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use axum::body::Body;
use futures_util::StreamExt;
use sqlx::Sqlite;
use tokio::sync::Mutex;

use crate::digest::Digest;
use crate::error::{RegistryError, Result};
use crate::upload_file::UploadFile;
use crate::{blob, now_ms, repository, Registry};

type Slot = Arc<Mutex<Option<UploadFile>>>;
pub(crate) type Sessions = std::sync::Mutex<HashMap<String, Slot>>;

/// Body bytes are hashed and written in blocks of this size, on the blocking pool,
/// while the next block is received.
const WRITE_BLOCK: usize = 1 << 20;

fn unknown(id: &str) -> RegistryError {
    RegistryError::BlobUploadUnknown(id.to_owned())
}

/// Session ids are 32 lowercase hex characters; anything else is unknown (and can
/// never name a path outside `uploads/`).
fn check_id(id: &str) -> Result<()> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(unknown(id))
    }
}

fn slot(registry: &Registry, id: &str) -> Slot {
    registry
        .sessions
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .clone()
}

fn forget(registry: &Registry, id: &str) {
    registry.sessions.lock().unwrap().remove(id);
}

/// Bytes acknowledged so far for session `id` of repository `repo`.
async fn committed(registry: &Registry, repo: &str, id: &str) -> Result<u64> {
    check_id(id)?;
    sqlx::query_scalar::<Sqlite, i64>(
        "SELECT u.committed FROM uploads u JOIN repositories r ON r.id = u.repository_id WHERE u.id = ? AND r.name = ?",
    )
    .bind(id)
    .bind(repo)
    .fetch_optional(&registry.db)
    .await?
    .map(|c| c as u64)
    .ok_or_else(|| unknown(id))
}

/// Take the session's open file, or reopen it from disk at `committed`.
async fn take_file(
    registry: &Registry,
    id: &str,
    held: &mut Option<UploadFile>,
    committed: u64,
) -> Result<UploadFile> {
    if let Some(file) = held.take() {
        if file.len() == committed {
            return Ok(file);
        }
    }
    let path = registry.store.upload_path(id);
    let file = tokio::task::spawn_blocking(move || UploadFile::reopen(path, committed))
        .await
        .map_err(io::Error::other)?;
    file.map_err(|e| {
        tracing::warn!(upload = id, error = %e, "upload session cannot be resumed");
        unknown(id)
    })
}

pub async fn start(registry: &Registry, repo: &str) -> Result<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = registry.store.upload_path(&id);
    let file = tokio::task::spawn_blocking(move || UploadFile::create(path))
        .await
        .map_err(io::Error::other)??;
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = repository::ensure(&mut tx, repo).await?;
    let now = now_ms();
    sqlx::query("INSERT INTO uploads (id, repository_id, committed, created_at, updated_at) VALUES (?, ?, 0, ?, ?)")
        .bind(&id)
        .bind(repo_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    *slot(registry, &id).lock().await = Some(file);
    Ok(id)
}

pub async fn status(registry: &Registry, repo: &str, id: &str) -> Result<u64> {
    committed(registry, repo, id).await
}

/// Append a chunk. With `range` (from `Content-Range: start-end`) the chunk must
/// start exactly at the committed offset and have exactly that many bytes; without
/// it the body is appended as a stream. Returns the new committed length.
pub async fn append(
    registry: &Registry,
    repo: &str,
    id: &str,
    range: Option<(u64, u64)>,
    body: Body,
) -> Result<u64> {
    let slot = slot(registry, id);
    let mut held = slot.lock().await;
    let committed = committed(registry, repo, id).await?;
    let file = take_file(registry, id, &mut held, committed).await?;
    let file = write_chunk(registry, file, range, body).await?;
    let len = file.len();
    sqlx::query("UPDATE uploads SET committed = ?, updated_at = ? WHERE id = ?")
        .bind(len as i64)
        .bind(now_ms())
        .bind(id)
        .execute(&registry.db)
        .await?;
    *held = Some(file);
    Ok(len)
}

/// Finish a session with `PUT ?digest=`, optionally with a last chunk in the body.
pub async fn complete(
    registry: &Registry,
    repo: &str,
    id: &str,
    expected: &Digest,
    range: Option<(u64, u64)>,
    body: Body,
) -> Result<()> {
    let slot = slot(registry, id);
    let mut held = slot.lock().await;
    let committed = committed(registry, repo, id).await?;
    let file = take_file(registry, id, &mut held, committed).await?;
    let file = write_chunk(registry, file, range, body).await?;
    let result = install(registry, repo, file, expected).await;
    sqlx::query("DELETE FROM uploads WHERE id = ?")
        .bind(id)
        .execute(&registry.db)
        .await?;
    forget(registry, id);
    result
}

pub async fn cancel(registry: &Registry, repo: &str, id: &str) -> Result<()> {
    let slot = slot(registry, id);
    let mut held = slot.lock().await;
    committed(registry, repo, id).await?;
    held.take();
    sqlx::query("DELETE FROM uploads WHERE id = ?")
        .bind(id)
        .execute(&registry.db)
        .await?;
    forget(registry, id);
    remove_upload_file(registry, id).await;
    Ok(())
}

/// `POST ?digest=D&local=NAME`: adopt `incoming/NAME`, a file a client on
/// this machine hard-linked into the store's incoming directory. It is
/// opened without following symlinks, must be a regular file, is hashed and
/// fsynced like an upload, and is renamed into place only if it is `D`;
/// otherwise it is removed.
pub async fn adopt(registry: &Registry, repo: &str, name: &str, expected: &Digest) -> Result<()> {
    let valid = (16..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(RegistryError::BlobUploadInvalid(format!(
            "local={name:?} is not the name of a file in the incoming directory ([A-Za-z0-9_-], 16 to 64 characters)"
        )));
    }
    let path = registry.store.incoming_dir().join(name);
    let opened = path.clone();
    let hashed = tokio::task::spawn_blocking(move || -> io::Result<(Digest, u64)> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&opened)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha2::Digest::update(&mut hasher, &buf[..n]);
            size += n as u64;
        }
        file.sync_all()?;
        Ok((Digest::from_hasher(hasher), size))
    })
    .await
    .map_err(io::Error::other)?;
    let (actual, size) = match hashed {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(RegistryError::BlobUploadInvalid(format!(
                "local={name}: {e}"
            )));
        }
    };
    if &actual != expected {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(RegistryError::DigestInvalid(format!(
            "local file has digest {actual} ({size} bytes), not the {expected} the client named"
        )));
    }
    let _guard = registry.store.lock_digest(expected).await;
    registry.store.install(path, expected).await?;
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = repository::ensure(&mut tx, repo).await?;
    blob::record(&mut tx, repo_id, expected, size).await?;
    tx.commit().await?;
    Ok(())
}

/// `POST ?digest=` with the whole blob as the body: no session row, because a
/// crash mid-request leaves nothing a client could resume.
pub async fn monolithic(
    registry: &Registry,
    repo: &str,
    expected: &Digest,
    body: Body,
) -> Result<()> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = registry.store.upload_path(&id);
    let file = tokio::task::spawn_blocking(move || UploadFile::create(path))
        .await
        .map_err(io::Error::other)??;
    match write_body(registry, file, body).await {
        Ok(file) => install(registry, repo, file, expected).await,
        Err(e) => {
            remove_upload_file(registry, &id).await;
            Err(e)
        }
    }
}

async fn remove_upload_file(registry: &Registry, id: &str) {
    let _ = tokio::fs::remove_file(registry.store.upload_path(id)).await;
}

async fn write_chunk(
    registry: &Registry,
    file: UploadFile,
    range: Option<(u64, u64)>,
    body: Body,
) -> Result<UploadFile> {
    let start_len = file.len();
    if let Some((start, end)) = range {
        if start != start_len || end < start {
            return Err(RegistryError::RangeInvalid {
                message: format!("chunk range {start}-{end} does not continue the upload, which has {start_len} bytes"),
                upload_offset: Some(start_len),
                blob_size: None,
            });
        }
    }
    let file = write_body(registry, file, body).await?;
    if let Some((start, end)) = range {
        let got = file.len() - start_len;
        if got != end - start + 1 {
            // The file is dropped here; the session reopens at the committed offset.
            return Err(RegistryError::BlobUploadInvalid(format!(
                "Content-Range {start}-{end} announces {} bytes but the body had {got}",
                end - start + 1
            )));
        }
    }
    Ok(file)
}

/// Stream a request body into the upload file, hashing as it goes. The body's
/// own buffers are handed to the blocking pool in batches of about
/// `WRITE_BLOCK` bytes (no copy), one batch written while the next arrives, so
/// memory stays at two batches whatever the body size.
async fn write_body(registry: &Registry, file: UploadFile, body: Body) -> Result<UploadFile> {
    let mut stream = body.into_data_stream();
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut idle = Some(file);
    let mut writing: Option<tokio::task::JoinHandle<io::Result<UploadFile>>> = None;
    loop {
        let next = stream.next().await;
        let done = match next {
            None => true,
            Some(Ok(chunk)) => {
                registry
                    .stats
                    .bytes_in
                    .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                batched += chunk.len();
                batch.push(chunk);
                false
            }
            Some(Err(e)) => {
                if let Some(w) = writing {
                    let _ = w.await;
                }
                return Err(RegistryError::BlobUploadInvalid(format!(
                    "reading the request body failed: {e}"
                )));
            }
        };
        if batched >= WRITE_BLOCK || (done && !batch.is_empty()) {
            let mut file = match writing.take() {
                Some(w) => w.await.map_err(io::Error::other)??,
                None => idle.take().expect("file is idle when no write is pending"),
            };
            let chunks = std::mem::take(&mut batch);
            batched = 0;
            writing = Some(tokio::task::spawn_blocking(move || {
                file.append_all(&chunks).map(|()| file)
            }));
        }
        if done {
            break;
        }
    }
    let mut file = match writing {
        Some(w) => w.await.map_err(io::Error::other)??,
        None => idle.expect("file is idle when no write is pending"),
    };
    // Every byte of the request is in the file before it is acknowledged.
    Ok(
        tokio::task::spawn_blocking(move || file.flush().map(|()| file))
            .await
            .map_err(io::Error::other)??,
    )
}

/// Verify, fsync and move the upload into the blob store, then record and link it.
async fn install(
    registry: &Registry,
    repo: &str,
    file: UploadFile,
    expected: &Digest,
) -> Result<()> {
    let (actual, size, path) = tokio::task::spawn_blocking(move || file.finish())
        .await
        .map_err(io::Error::other)??;
    if &actual != expected {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(RegistryError::DigestInvalid(format!(
            "uploaded content has digest {actual} ({size} bytes), not the {expected} the client named"
        )));
    }
    let _guard = registry.store.lock_digest(expected).await;
    registry.store.install(path, expected).await?;
    let mut tx = registry.db.begin_with("BEGIN IMMEDIATE").await?;
    let repo_id = repository::ensure(&mut tx, repo).await?;
    blob::record(&mut tx, repo_id, expected, size).await?;
    tx.commit().await?;
    Ok(())
}
