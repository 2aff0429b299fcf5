//! Slipway's builder: Containerfile parser, build graph, layer diffs to OCI layers,
//! build cache, image assembly (issue 5, in progress).
//!
//! Built so far: `containerfile` (parsing the subset Slipway builds, with every
//! error at line and column). The builder never depends on the runner: `RUN`
//! will go through a trait the runner implements.

pub mod containerfile;
