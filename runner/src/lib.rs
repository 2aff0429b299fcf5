//! Slipway's runner: the execution engine every step, build `RUN` and deployed
//! instance goes through.
//!
//! Built so far: `layer` — unpacking OCI layer tars into directories that serve
//! as overlayfs lower dirs, safely against hostile archives. Still to come (issue 3):
//! the image store and layer cache, rootfs assembly, OCI bundles run with runc,
//! and the `slipway exec` / `slipway image` commands.

pub mod layer;
