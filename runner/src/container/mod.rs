//! Containers: the OCI runtime bundle (`bundle`), the overlay root filesystem
//! (`rootfs`), user namespaces with idmapped layers (`userns`) and running them
//! with runc (`engine`).

mod bundle;
pub(crate) mod cgroup;
mod engine;
pub mod netns;
pub(crate) mod pod;
pub mod rootfs;
pub(crate) mod userns;

pub(crate) use engine::check_searchable;
pub use engine::{Cancel, Engine, EngineError, Outcome, RunRequest, Stream};
pub use pod::Pod;
pub use userns::Mapping;

pub use bundle::{
    host_nofile_hard, runtime_spec, BindMount, BundleError, Limits, Network, RunOptions,
};
