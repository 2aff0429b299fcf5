//! OCI image layers on disk.

mod cache;
mod extract;

pub(crate) use cache::pid_alive;
pub use cache::{CacheError, LayerCache, LayerLease};
pub use extract::{extract_layer, LayerError, LayerStats};
