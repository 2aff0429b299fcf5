//! Images: resolving user references, pulling images into the layer cache, and
//! the local index of pulled images.

mod import;
mod pull;
mod reference;
mod store;

pub use import::{busybox_rootfs, layer_from_dir, layer_from_tar, push_image, ImportError, Layer};
pub use pull::{local, obtain, pull, PullError, PullPolicy, PulledImage};
pub use reference::{resolve, ReferenceError};
pub use store::{ImageRecord, ImageStore};
