//! Slipway's builder: Containerfile builds without a daemon, reproducible
//! layer for layer.
//!
//! - `containerfile`: parsing the subset Slipway builds, every error at line
//!   and column.
//! - `context`: the build context: `.dockerignore`, what a `COPY` source names
//!   (inside the context only), and its content digest for the cache.
//! - `build`: the build itself: stages in parallel where they can be, each
//!   instruction from the cache or run; the image config and manifest.
//! - `exec`: the trait through which `RUN` executes; the runner implements it
//!   (the builder never depends on the runner).
//! - `copy`: `COPY`/`ADD` layers written directly, tar archives unpacked.
//! - `layer`: reproducible OCI layers from entries or an overlay upper dir.
//! - `beneath`: opening a file under a directory without leaving it (no
//!   symlink on the way, or symlinks resolved inside it): every file a
//!   checkout or an image controls is read this way.
//! - `quote`: short, escaped excerpts of untrusted text for error messages.
//! - `cache`: instruction keys to layers, and the layer blobs.
//! - `image`: config, manifest and provenance documents.

pub mod beneath;
pub mod build;
pub mod cache;
pub mod containerfile;
pub mod context;
pub mod copy;
pub mod exec;
pub mod image;
pub mod layer;
pub mod quote;

pub use build::{build, BuildError, BuildOptions, Built, Event};
