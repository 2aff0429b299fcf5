//! Images: resolving user references and pulling images into the layer cache.

mod pull;
mod reference;

pub use pull::{pull, PullError, PulledImage};
pub use reference::{resolve, ReferenceError};
