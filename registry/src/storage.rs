//! The content-addressed blob store on the local filesystem.
//!
//! Layout under the store root:
//! - `blobs/sha256/<first 2 hex>/<64 hex>`: one file per blob, shared by every
//!   repository (deduplication is by path).
//! - `uploads/<session id>`: bytes of an upload in progress.
//! - `incoming/<name>`: blobs a client on this machine hard-linked here (the
//!   directory is root's only, 0700) for the registry to adopt after checking
//!   their digest, instead of sending their bytes over HTTP.
//!
//! Architecture invariant: a file appears under `blobs/` only by `rename` of a
//! fully written, hash-verified and fsynced upload file, followed by an fsync of
//! the directory. A crash at any point leaves either no blob file or a complete one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};

use tokio::sync::{Mutex, MutexGuard};

use crate::digest::Digest;

const LOCK_STRIPES: usize = 64;

pub struct BlobStore {
    root: PathBuf,
    /// Serialises "install a blob" against "collect a blob" for the same digest.
    digest_locks: Vec<Mutex<()>>,
}

impl BlobStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<BlobStore> {
        let root = root.into();
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        std::fs::create_dir_all(root.join("uploads"))?;
        let incoming = root.join("incoming");
        std::fs::create_dir_all(&incoming)?;
        std::fs::set_permissions(
            &incoming,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )?;
        Ok(BlobStore {
            root,
            digest_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn incoming_dir(&self) -> PathBuf {
        self.root.join("incoming")
    }

    pub fn upload_path(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(id)
    }

    pub async fn lock_digest(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        digest.hash(&mut h);
        self.digest_locks[(h.finish() as usize) % LOCK_STRIPES]
            .lock()
            .await
    }

    /// Move a verified, fsynced upload file into place as `digest`. If the blob is
    /// already there (same digest, so same bytes) the upload file is dropped.
    /// The caller holds the digest lock.
    pub async fn install(&self, upload_file: PathBuf, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        tokio::task::spawn_blocking(move || {
            let dir = target.parent().expect("blob path has a parent");
            std::fs::create_dir_all(dir)?;
            if target.exists() {
                return std::fs::remove_file(&upload_file);
            }
            std::fs::rename(&upload_file, &target)?;
            std::fs::File::open(dir)?.sync_all()?;
            // Uploads bypass the page cache (O_DIRECT); a blob just pushed is
            // usually pulled soon, so start reading it back in the background.
            if let Ok(file) = std::fs::File::open(&target) {
                use std::os::fd::AsRawFd;
                // SAFETY: plain advisory syscall on a valid descriptor.
                unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Remove a blob file. The caller holds the digest lock and has already
    /// removed the blob's database row.
    pub async fn remove(&self, digest: &Digest) -> io::Result<()> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Open a blob file for reading with [`map_window`].
    pub fn open_blob(&self, digest: &Digest) -> io::Result<std::fs::File> {
        std::fs::File::open(self.blob_path(digest))
    }

    /// Every blob file on disk under store root `root`, for the orphan sweep.
    pub fn list_blob_files(root: &Path) -> io::Result<Vec<(Digest, PathBuf)>> {
        let mut found = Vec::new();
        for shard in std::fs::read_dir(root.join("blobs/sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                if let Ok(d) = format!("sha256:{}", name.to_string_lossy()).parse::<Digest>() {
                    found.push((d, entry.path()));
                }
            }
        }
        Ok(found)
    }
}

/// Map `len` bytes of a blob file from `offset` (any offset; the mapping starts
/// at the page below it) and return them as `Bytes` that unmap when dropped.
///
/// Blob files are never modified after they are renamed into place, only
/// unlinked (which leaves a mapping valid), so a mapping cannot change under a
/// reader. Mapping one window per response frame keeps the process's resident
/// size at the frames in flight rather than whole blobs.
pub fn map_window(file: &std::fs::File, offset: u64, len: usize) -> io::Result<bytes::Bytes> {
    const PAGE: u64 = 4096;
    let start = offset - offset % PAGE;
    let skip = (offset - start) as usize;
    // SAFETY: see above; the file is immutable for as long as it exists.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(skip + len)
            .map(file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(bytes::Bytes::from_owner(map).slice(skip..))
}
