//! Images: resolving user references and pulling images into the layer cache.

mod import;
mod pull;
mod reference;

pub use import::{busybox_rootfs, layer_from_dir, layer_from_tar, push_image, ImportError, Layer};
pub use pull::{pull, PullError, PulledImage};
pub use reference::{resolve, ReferenceError};
