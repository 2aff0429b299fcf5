//! The local build cache: layer blobs by digest, and instruction keys to the
//! layer each one produced (or to "no layer", for a `RUN` that changed
//! nothing).
//!
//! Layout under the builder's work dir:
//! - `blobs/<hex>`: layer blobs, content-addressed;
//! - `keys/<hex of the key>`: JSON, `{"digest", "diff_id", "size",
//!   "media_type"}` or `{"empty": true}`;
//! - `tmp/`: upper dirs and blobs being written (cleared on open).
//!
//! A key is only written after its blob is in place, and a hit needs the blob
//! to exist with its recorded size, so a crash never leaves a key pointing at
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::exec::LayerRef;
use crate::layer::Layer;

pub struct Cache {
    root: PathBuf,
    counter: AtomicU64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(default)]
    empty: bool,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    diff_id: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    media_type: String,
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

impl Cache {
    pub fn open(root: &Path) -> std::io::Result<Cache> {
        for dir in ["blobs", "keys"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let tmp = root.join("tmp");
        // Leftovers of a build that died; several builds may share the work
        // dir, so only entries of processes that are gone are removed.
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
                let alive =
                    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    let path = e.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(Cache {
            root: root.to_owned(),
            counter: AtomicU64::new(0),
        })
    }

    /// A fresh path under `tmp/` (not created).
    pub fn temp(&self, what: &str) -> PathBuf {
        self.root.join("tmp").join(format!(
            "{}-{}-{what}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs").join(hex_of(digest))
    }

    /// The outcome recorded for `key`: `Some(None)` for "no layer".
    pub fn lookup(&self, key: &str) -> Option<Option<LayerRef>> {
        let bytes = std::fs::read(self.root.join("keys").join(key)).ok()?;
        let rec: Record = serde_json::from_slice(&bytes).ok()?;
        if rec.empty {
            return Some(None);
        }
        let blob = self.blob_path(&rec.digest);
        let size = std::fs::metadata(&blob).ok()?.len();
        if size != rec.size {
            return None;
        }
        Some(Some(LayerRef {
            digest: rec.digest,
            diff_id: rec.diff_id,
            size: rec.size,
            media_type: rec.media_type,
            blob: Some(blob),
            from_repository: None,
        }))
    }

    /// Move a finished blob from `tmp` into `blobs/`.
    pub fn adopt(&self, tmp: &Path, layer: &Layer) -> std::io::Result<LayerRef> {
        let blob = self.blob_path(&layer.digest);
        std::fs::rename(tmp, &blob)?;
        Ok(LayerRef {
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            size: layer.size,
            media_type: layer.media_type.to_owned(),
            blob: Some(blob),
            from_repository: None,
        })
    }

    /// The last unpacking recorded for an instruction identity: the layer's
    /// digest and what it holds.
    pub fn unpacked(&self, identity: &str) -> Option<(String, crate::copy::Unpacked)> {
        let bytes = std::fs::read(self.root.join("unpacked").join(identity)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Best effort: losing it only costs the next rebuild some linking.
    pub fn record_unpacked(&self, identity: &str, digest: &str, files: &crate::copy::Unpacked) {
        let dir = self.root.join("unpacked");
        let _ = std::fs::create_dir_all(&dir);
        let tmp = self.temp("unpacked");
        let bytes = serde_json::to_vec(&(digest, files)).expect("json");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(identity));
        }
    }

    pub fn store(&self, key: &str, layer: Option<&LayerRef>) -> std::io::Result<()> {
        let rec = match layer {
            None => Record {
                empty: true,
                digest: String::new(),
                diff_id: String::new(),
                size: 0,
                media_type: String::new(),
            },
            Some(l) => Record {
                empty: false,
                digest: l.digest.clone(),
                diff_id: l.diff_id.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            },
        };
        let tmp = self.temp("key");
        std::fs::write(&tmp, serde_json::to_vec(&rec).expect("json"))?;
        std::fs::rename(&tmp, self.root.join("keys").join(key))
    }
}
