//! Slipway's builder: Containerfile parser, build graph, layer diffs to OCI layers,
//! build cache, image assembly (issue 5, in progress).
//!
//! Built so far: `containerfile` (parsing the subset Slipway builds, with every
//! error at line and column) and `layer` (a directory tree, such as an overlay
//! upper dir, as a reproducible OCI layer with whiteouts). The builder never depends on the runner: `RUN`
//! will go through a trait the runner implements.

pub mod containerfile;
pub mod layer;
