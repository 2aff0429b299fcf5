//! Slipway's runner: the execution engine every step, build `RUN` and deployed
//! instance goes through.
//!
//! Built so far: `layer` (safe unpacking of OCI layers, the content-addressed layer
//! cache) and `image` (reference resolution, pulling into the cache). Still to come
//! (issue 3): rootfs assembly, OCI bundles run with runc, and the `slipway exec` /
//! `slipway image` commands.

pub mod agent;
pub mod api;
pub mod build;
pub mod container;
pub mod image;
pub mod layer;
pub mod node;
pub mod node_agent;
pub mod node_protocol;
pub mod router;
