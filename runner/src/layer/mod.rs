//! OCI image layers on disk.

mod cache;
mod extract;

pub use cache::{CacheError, LayerCache, LayerLease};
pub use extract::{extract_layer, LayerError, LayerStats};
