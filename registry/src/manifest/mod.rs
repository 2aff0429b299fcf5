//! Manifests: validation of pushed bodies (`validate`) and their storage, lookup and
//! deletion (`store`).

pub mod store;
pub mod validate;

pub use store::{delete, get, put, PutOutcome, StoredManifest};
pub use validate::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
