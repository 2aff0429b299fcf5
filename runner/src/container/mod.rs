//! Containers: the OCI runtime bundle a container runs from (`bundle`). Rootfs
//! assembly and running with runc come next (issue 3).

mod bundle;

pub use bundle::{
    host_nofile_hard, runtime_spec, BindMount, BundleError, Limits, Network, RunOptions,
};
