//! OCI image layers on disk.

mod extract;

pub use extract::{extract_layer, LayerError, LayerStats};
