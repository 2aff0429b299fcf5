//! What the builder needs from a container engine, as a trait: the builder
//! never depends on the runner crate; the runner implements this with its
//! engine and layer cache (`slipway_runner::build`).

use std::path::{Path, PathBuf};

/// One layer of an image being built on: a base image's (already known to the
/// executor) or one the builder wrote (`blob` is then its file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// `sha256:` of the compressed blob.
    pub digest: String,
    /// `sha256:` of the tar.
    pub diff_id: String,
    pub size: u64,
    pub media_type: String,
    /// The blob on disk, for layers the builder made.
    pub blob: Option<PathBuf>,
    /// The repository (`host/name`) a base layer came from, so a push can
    /// mount it instead of uploading it again.
    pub from_repository: Option<String>,
}

/// A base image, resolved to its digest; its layers stay available for runs
/// and views while this value lives.
pub struct BaseImage {
    /// The reference as resolved (`host/repo:tag`).
    pub reference: String,
    /// `host/repo`, for cross-repository mounts when pushing.
    pub repository: String,
    /// The manifest's digest.
    pub digest: String,
    /// The image config, as stored.
    pub config: serde_json::Value,
    /// Bottom first.
    pub layers: Vec<LayerRef>,
    /// Whatever keeps the layers from being evicted (leases).
    pub hold: Box<dyn std::any::Any + Send + Sync>,
}

/// A `RUN`: a command in a container whose root filesystem is `layers` with a
/// fresh upper dir on top; the upper dir is left at `upper` afterwards.
pub struct RunSpec<'a> {
    /// Bottom first.
    pub layers: &'a [LayerRef],
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    /// `USER` as written (`name`, `uid`, `uid:gid`), or none for root.
    pub user: Option<String>,
    /// Where the container's upper dir must be when `run` returns; it does not
    /// exist before.
    pub upper: PathBuf,
    /// The container's stdout and stderr, as they come.
    pub output: &'a (dyn Fn(&[u8]) + Sync),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    pub exit_code: i32,
    /// Why it was stopped, when it did not end by itself (memory limit, ...).
    pub stopped: Option<String>,
}

/// A read-only view of a root filesystem; gone when dropped.
pub trait View: Send + Sync {
    fn path(&self) -> &Path;
}

/// Fills an empty directory with a layer's files; the second argument is an
/// earlier unpacking to hard-link unchanged files from.
pub type Populate<'a> = dyn Fn(&Path, Option<&Path>) -> Result<(), String> + Sync + 'a;

pub trait Executor: Send + Sync {
    /// Resolve (pulling if needed) a base image reference as written after
    /// `FROM` or `COPY --from`.
    fn base(&self, reference: &str) -> Result<BaseImage, String>;

    /// Run a command; `Err` only when it could not be run at all.
    fn run(&self, spec: RunSpec<'_>) -> Result<RunResult, String>;

    /// Mount `layers` (bottom first) read-only, merged, for `COPY --from` and
    /// for looking up users and existing directories.
    fn view(&self, layers: &[LayerRef]) -> Result<Box<dyn View>, String>;

    /// Unpack `layer` for later runs by calling `populate` on an empty
    /// directory (instead of extracting its blob), unless it is unpacked
    /// already. `previous` names an unpacked layer `populate` may hard-link
    /// unchanged files from (it gets that layer's directory, if still there).
    /// The default does nothing: the layer is then extracted when used.
    fn unpack_with(
        &self,
        layer: &LayerRef,
        previous: Option<&str>,
        populate: &Populate<'_>,
    ) -> Result<(), String> {
        let _ = (layer, previous, populate);
        Ok(())
    }

    /// What container root's files are owned by in an upper dir on the host
    /// (the user namespace's base; 0 without one).
    fn id_shift(&self) -> u32;
}

/// A build cache kept somewhere else (a registry), so builds on other
/// machines can reuse layers: instruction keys to layers, and their blobs.
pub trait RemoteCache: Send + Sync {
    /// What the remote cache has for `key`: `None` if nothing, `Some(None)`
    /// for an instruction that made no layer.
    fn lookup(&self, key: &str) -> Option<Option<LayerRef>>;

    /// Download `layer`'s blob to the file `to`.
    fn fetch(&self, layer: &LayerRef, to: &Path) -> Result<(), String>;
}
