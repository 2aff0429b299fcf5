//! The content-addressed layer cache: each layer is unpacked once, under
//! `layers/<sha256 hex>`, and shared by every container that uses it.
//!
//! - Concurrent requests for the same layer wait for one extraction.
//! - The archive is hashed while it is unpacked; a digest mismatch discards the
//!   result, so a cached directory always matches its name.
//! - Unpacking happens in `tmp/` and is renamed into place, so a crash never leaves
//!   a half-unpacked layer under `layers/` (leftovers of dead processes in `tmp/`
//!   are removed at open).
//! - A size cap evicts the least recently used layers; a layer held by a
//!   [`LayerLease`] is never evicted, not even by another process sharing the
//!   directory: a lease holds a shared `flock` on `meta/<hex>`, and eviction needs
//!   the exclusive lock.
//! - `meta/<hex>` also records the layer's size, so opening a cache reads one small
//!   file per layer instead of walking every unpacked tree.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::extract::{extract_layer, LayerError, LayerStats};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("layer digest {0:?} is not sha256:<64 hex>")]
    BadDigest(String),
    #[error("layer {expected}: content has digest {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("layer {digest}: {source}")]
    Layer {
        digest: String,
        #[source]
        source: LayerError,
    },
    #[error("layer cache at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

struct Entry {
    size: u64,
    last_used: u64,
    pins: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    clock: u64,
    total: u64,
}

struct Inner {
    root: PathBuf,
    cap_bytes: u64,
    state: Mutex<State>,
    /// One lock per layer being fetched, so concurrent requests extract once.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Clone)]
pub struct LayerCache(Arc<Inner>);

/// A layer held in use: its directory stays until the lease is dropped.
pub struct LayerLease {
    cache: LayerCache,
    hex: String,
    path: PathBuf,
    /// Shared `flock` on `meta/<hex>`: other processes' eviction keeps off.
    lock: Option<std::fs::File>,
}

impl LayerLease {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The layer's digest (`sha256:<hex>`).
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.hex)
    }

    /// The file holding the shared lock. A process that inherits it (a forked
    /// child) shares the lock, so the layer outlives this process while that
    /// child runs: a node's instance keeps its layers this way.
    pub fn lock_file(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.lock.as_ref().map(std::os::fd::AsFd::as_fd)
    }
}

impl Drop for LayerLease {
    fn drop(&mut self) {
        // Unlocked first, or this process's own eviction would see it held.
        drop(self.lock.take());
        let mut state = self.cache.0.state.lock().unwrap();
        if let Some(entry) = state.entries.get_mut(&self.hex) {
            entry.pins -= 1;
        }
        drop(state);
        self.cache.evict();
    }
}

fn io_error(path: &Path, source: io::Error) -> CacheError {
    CacheError::Io {
        path: path.to_owned(),
        source,
    }
}

fn hex_of(digest: &str) -> Result<String, CacheError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex.to_owned())
        }
        _ => Err(CacheError::BadDigest(digest.to_owned())),
    }
}

/// Is `pid` a live (not zombie) process?
pub(crate) fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The pid at the end of a `name.<pid>` temp entry.
fn owner_pid(name: &str) -> Option<u32> {
    name.rsplit_once('.').and_then(|(_, pid)| pid.parse().ok())
}

fn lock_shared(path: &Path) -> Option<std::fs::File> {
    let file = std::fs::File::open(path).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared).ok()?;
    Some(file)
}

/// Bytes a directory tree takes (file sizes), for the cap.
fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.path().symlink_metadata() {
                total += if meta.is_dir() {
                    tree_size(&entry.path())
                } else {
                    meta.len()
                };
            }
        }
    }
    total
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl LayerCache {
    /// Open (or create) a cache under `root`, indexing layers already there and
    /// removing unfinished extractions.
    pub fn open(root: impl Into<PathBuf>, cap_bytes: u64) -> Result<LayerCache, CacheError> {
        let root = root.into();
        let tmp = root.join("tmp");
        for dir in [root.join("layers"), root.join("meta"), tmp.clone()] {
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        }
        // Unfinished work of processes that are gone (another live process may
        // share this cache; its work in progress stays).
        for entry in std::fs::read_dir(&tmp)
            .map_err(|e| io_error(&tmp, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_none_or(|pid| !pid_alive(pid)) {
                let path = entry.path();
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        let mut state = State::default();
        let layers = root.join("layers");
        for entry in std::fs::read_dir(&layers)
            .map_err(|e| io_error(&layers, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if hex_of(&format!("sha256:{name}")).is_ok() {
                let meta = root.join("meta").join(&name);
                let size = match std::fs::read_to_string(&meta)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                {
                    Some(size) => size,
                    None => {
                        let size = tree_size(&entry.path());
                        let _ = std::fs::write(&meta, size.to_string());
                        size
                    }
                };
                state.clock += 1;
                state.total += size;
                state.entries.insert(
                    name,
                    Entry {
                        size,
                        last_used: state.clock,
                        pins: 0,
                    },
                );
            }
        }
        Ok(LayerCache(Arc::new(Inner {
            root,
            cap_bytes,
            state: Mutex::new(state),
            fetching: Mutex::default(),
        })))
    }

    pub fn total_bytes(&self) -> u64 {
        self.0.state.lock().unwrap().total
    }

    pub fn contains(&self, digest: &str) -> bool {
        hex_of(digest)
            .map(|hex| self.0.state.lock().unwrap().entries.contains_key(&hex))
            .unwrap_or(false)
    }

    /// The layer `digest` if it is cached (leased), without fetching anything.
    pub fn cached(&self, digest: &str) -> Option<LayerLease> {
        self.lease(&hex_of(digest).ok()?)
    }

    fn lease(&self, hex: &str) -> Option<LayerLease> {
        let mut state = self.0.state.lock().unwrap();
        state.clock += 1;
        let now = state.clock;
        let entry = state.entries.get_mut(hex)?;
        entry.pins += 1;
        entry.last_used = now;
        drop(state);
        let lock = lock_shared(&self.0.root.join("meta").join(hex));
        let path = self.0.root.join("layers").join(hex);
        if lock.is_none() || !path.is_dir() {
            // Another process sharing the cache evicted it.
            let mut state = self.0.state.lock().unwrap();
            if let Some(entry) = state.entries.get_mut(hex) {
                entry.pins -= 1;
                if entry.pins == 0 {
                    let size = entry.size;
                    state.entries.remove(hex);
                    state.total -= size;
                }
            }
            return None;
        }
        Some(LayerLease {
            cache: self.clone(),
            hex: hex.to_owned(),
            path,
            lock,
        })
    }

    /// The unpacked layer `digest`, unpacking it from what `open_blob` returns
    /// (the compressed or plain layer blob) if it is not cached yet.
    pub async fn get<R, F>(&self, digest: &str, open_blob: F) -> Result<LayerLease, CacheError>
    where
        F: FnOnce() -> io::Result<R> + Send + 'static,
        R: Read,
    {
        self.obtain(digest, |hex| async move {
            self.unpack_blocking(&hex, digest, open_blob).await
        })
        .await
    }

    /// Like [`get`](Self::get), but when the layer is missing `fetch` first
    /// downloads the blob into the path it is given. The per-layer lock is held
    /// across the download, so concurrent pulls of one layer download it once.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        digest: &str,
        fetch: F,
    ) -> Result<LayerLease, CacheError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: std::future::Future<Output = io::Result<()>>,
    {
        self.obtain(digest, |hex| async move {
            let blob = self.0.root.join("tmp").join(format!("{hex}.blob"));
            let unpacked = match fetch(blob.clone()).await {
                Ok(()) => {
                    let path = blob.clone();
                    self.unpack_blocking(&hex, digest, move || std::fs::File::open(path))
                        .await
                }
                Err(e) => Err(io_error(&blob, e)),
            };
            let _ = std::fs::remove_file(&blob);
            unpacked
        })
        .await
    }

    /// The shared path of `get` and `get_or_fetch`: a cached layer is leased at
    /// once; otherwise, under the layer's fetch lock (so only one caller does it),
    /// `unpack` produces it and it is recorded.
    async fn obtain<F, Fut>(&self, digest: &str, unpack: F) -> Result<LayerLease, CacheError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<u64, CacheError>>,
    {
        let hex = hex_of(digest)?;
        if let Some(lease) = self.lease(&hex) {
            return Ok(lease);
        }
        let lock = self
            .0
            .fetching
            .lock()
            .unwrap()
            .entry(hex.clone())
            .or_default()
            .clone();
        let _fetching = lock.lock().await;
        if let Some(lease) = self.lease(&hex) {
            return Ok(lease);
        }
        let unpacked = unpack(hex.clone()).await;
        self.record(&hex, unpacked)
    }

    async fn unpack_blocking<R: Read, F>(
        &self,
        hex: &str,
        digest: &str,
        open_blob: F,
    ) -> Result<u64, CacheError>
    where
        F: FnOnce() -> io::Result<R> + Send + 'static,
    {
        let (cache, key, digest_text) = (self.clone(), hex.to_owned(), digest.to_owned());
        tokio::task::spawn_blocking(move || cache.unpack(&key, &digest_text, open_blob))
            .await
            .map_err(|e| io_error(&self.0.root, io::Error::other(e)))?
    }

    /// Record a finished unpack (leased to the caller) and release the fetch lock.
    fn record(
        &self,
        hex: &str,
        unpacked: Result<u64, CacheError>,
    ) -> Result<LayerLease, CacheError> {
        let size = match unpacked {
            Ok(size) => size,
            Err(e) => {
                self.0.fetching.lock().unwrap().remove(hex);
                return Err(e);
            }
        };
        let lease = {
            // Recorded (and leased) before the fetch lock goes, so a request that
            // arrives in between finds the layer instead of unpacking it again.
            let mut state = self.0.state.lock().unwrap();
            state.clock += 1;
            let now = state.clock;
            state.total += size;
            let replaced = state.entries.insert(
                hex.to_owned(),
                Entry {
                    size,
                    last_used: now,
                    pins: 1,
                },
            );
            if let Some(old) = replaced {
                state.total -= old.size;
                if let Some(entry) = state.entries.get_mut(hex) {
                    entry.pins += old.pins;
                }
            }
            LayerLease {
                cache: self.clone(),
                hex: hex.to_owned(),
                path: self.0.root.join("layers").join(hex),
                lock: lock_shared(&self.0.root.join("meta").join(hex)),
            }
        };
        self.0.fetching.lock().unwrap().remove(hex);
        self.evict();
        Ok(lease)
    }

    fn unpack<R: Read>(
        &self,
        hex: &str,
        digest: &str,
        open_blob: impl FnOnce() -> io::Result<R>,
    ) -> Result<u64, CacheError> {
        let work = self
            .0
            .root
            .join("tmp")
            .join(format!("{hex}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir(&work).map_err(|e| io_error(&work, e))?;
        let result = (|| {
            let blob = open_blob().map_err(|e| io_error(&work, e))?;
            let mut reader = HashingReader {
                inner: blob,
                hasher: Sha256::new(),
            };
            let stats: LayerStats =
                extract_layer(&mut reader, &work).map_err(|source| CacheError::Layer {
                    digest: digest.to_owned(),
                    source,
                })?;
            // Hash what the extractor did not read (tar padding, trailing blocks).
            io::copy(&mut reader, &mut io::sink()).map_err(|e| io_error(&work, e))?;
            let actual = format!("sha256:{}", hex::encode(reader.hasher.finalize()));
            if actual != digest {
                return Err(CacheError::DigestMismatch {
                    expected: digest.to_owned(),
                    actual,
                });
            }
            self.install(hex, &work, stats.bytes)?;
            Ok(stats.bytes)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    }

    /// Record an unpacked tree's size and move it into place.
    fn install(&self, hex: &str, work: &Path, bytes: u64) -> Result<(), CacheError> {
        let meta = self.0.root.join("meta").join(hex);
        std::fs::write(&meta, bytes.to_string()).map_err(|e| io_error(&meta, e))?;
        let target = self.0.root.join("layers").join(hex);
        if let Err(e) = std::fs::rename(work, &target) {
            // Another process sharing the cache unpacked it first: same
            // digest, same content.
            if !target.is_dir() {
                return Err(io_error(&target, e));
            }
            let _ = std::fs::remove_dir_all(work);
        }
        Ok(())
    }

    /// The layer `digest`, made by `populate` in an empty directory when it
    /// is not cached (instead of unpacking a blob). Only for layers the
    /// caller made itself from the same entries as their blob (the builder's
    /// COPY layers): the tree is trusted to match the digest, not checked.
    /// `populate` runs on the calling thread.
    pub async fn populate<F>(&self, digest: &str, populate: F) -> Result<LayerLease, CacheError>
    where
        F: FnOnce(&Path) -> io::Result<()>,
    {
        self.obtain(digest, |hex| async move {
            let work = self
                .0
                .root
                .join("tmp")
                .join(format!("{hex}.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&work);
            std::fs::create_dir(&work).map_err(|e| io_error(&work, e))?;
            let result = populate(&work)
                .map_err(|e| io_error(&work, e))
                .and_then(|()| {
                    let bytes = tree_size(&work);
                    self.install(&hex, &work, bytes).map(|()| bytes)
                });
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&work);
            }
            result
        })
        .await
    }

    /// Remove least recently used, unleased layers until the total fits the cap.
    /// A layer another process holds (its shared lock) is skipped this round.
    fn evict(&self) {
        let mut busy = std::collections::HashSet::new();
        loop {
            let victim = {
                let mut state = self.0.state.lock().unwrap();
                if state.total <= self.0.cap_bytes {
                    return;
                }
                let Some(hex) = state
                    .entries
                    .iter()
                    .filter(|(h, e)| e.pins == 0 && !busy.contains(*h))
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(h, _)| h.clone())
                else {
                    return; // everything left is in use
                };
                let meta = self.0.root.join("meta").join(&hex);
                let exclusive = std::fs::File::open(&meta).ok().filter(|f| {
                    rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                        .is_ok()
                });
                let Some(lock) = exclusive else {
                    busy.insert(hex);
                    continue;
                };
                let entry = state.entries.remove(&hex).expect("present");
                state.total -= entry.size;
                (hex, meta, lock)
            };
            let (victim, meta, _lock) = victim;
            // Move it out of `layers/` first so a concurrent reader never sees a
            // half-deleted layer, then delete; the size record goes last.
            let from = self.0.root.join("layers").join(&victim);
            let to = self
                .0
                .root
                .join("tmp")
                .join(format!("evict-{victim}.{}", std::process::id()));
            if std::fs::rename(&from, &to).is_ok() {
                let _ = std::fs::remove_dir_all(&to);
            }
            let _ = std::fs::remove_file(&meta);
        }
    }
}
