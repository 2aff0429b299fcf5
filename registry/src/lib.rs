//! Slipway's OCI registry: an axum router implementing the OCI distribution spec
//! v1.1, over a content-addressed blob store on disk and metadata in the server's
//! database.
//!
//! The server builds a [`Registry`] (database pool, store root, an
//! [`access::Authenticator`]) and merges [`routes::router`] into its app.
//! Domain operations live one verb-group per file (`blob`, `upload`, `manifest`,
//! `tag`, `referrer`, `gc`); `routes/` only parses requests and maps results.

pub mod access;
pub mod blob;
pub mod digest;
pub mod error;
pub mod gc;
pub mod manifest;
pub mod name;
pub mod referrer;
pub mod repository;
pub mod routes;
pub mod storage;
pub mod tag;
pub mod upload;
pub mod upload_file;

#[cfg(test)]
mod untrusted_input_tests;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use sqlx::SqlitePool;

pub use access::{Action, Authenticator, Caller};
pub use digest::Digest;
pub use error::RegistryError;
pub use routes::router;

/// Registry settings, already validated by the server's config loader.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Largest manifest body accepted on PUT.
    pub max_manifest_bytes: usize,
    /// Tags matching any of these never move once set.
    pub immutable_tags: Vec<Regex>,
    /// Upload sessions untouched for this long are removed by GC.
    pub upload_expiry: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_manifest_bytes: 4 * 1024 * 1024,
            immutable_tags: vec![Regex::new("^[0-9a-f]{40}$").unwrap()],
            upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// Counters the server exports on `/metrics`.
#[derive(Default)]
pub struct RegistryStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

pub struct Inner {
    pub db: SqlitePool,
    pub store: storage::BlobStore,
    pub auth: Arc<dyn Authenticator>,
    pub config: RegistryConfig,
    pub stats: RegistryStats,
    pub(crate) sessions: upload::Sessions,
}

/// A handle to the registry; cheap to clone.
#[derive(Clone)]
pub struct Registry(Arc<Inner>);

impl std::ops::Deref for Registry {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Registry {
    pub fn new(
        db: SqlitePool,
        store_root: impl Into<std::path::PathBuf>,
        auth: Arc<dyn Authenticator>,
        config: RegistryConfig,
    ) -> std::io::Result<Registry> {
        let store = storage::BlobStore::open(store_root)?;
        Ok(Registry(Arc::new(Inner {
            db,
            store,
            auth,
            config,
            stats: RegistryStats::default(),
            sessions: upload::Sessions::new(HashMap::new()),
        })))
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
