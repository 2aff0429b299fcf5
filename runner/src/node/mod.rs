//! The node's instance supervisor: deployed instances run with runc, each with
//! its own network namespace, health checks, restarts with backoff, and logs,
//! and they outlive the node agent.
//!
//! Under the supervisor root:
//! - `runc/`: runc's state for instances only (container ids
//!   `slipway-inst-<instance id>`), apart from the execution engine's root, so
//!   the engine's reaping of dead `slipway-<pid>-…` containers never sees them;
//! - `instances/<id>/`: `instance.json` (the [`record`]), `bundle/` (runc's
//!   `config.json`, `rootfs` the overlay mount), `upper/`, `work/`, `lower/<n>`
//!   (idmapped layer views), `netns` (the bind-mounted network namespace),
//!   `init.pid`, `log` and `log.1`, and `exit` once the container ended;
//! - `supervisor.lock`: held while a supervisor has the root open.
//!
//! Verbs: [`instance_start`], [`instance_stop`], [`adopt`] (open), [`health`],
//! [`monitor`] (exit, restart with backoff), [`log`]; [`shim`] is the process
//! that keeps an instance's log, exit status and layers while no agent runs.
//!
//! Architecture invariant: an instance outlives the agent. Nothing the agent
//! holds (a child process, a pipe, a lock) is needed for it to keep running;
//! a new [`Supervisor`] adopts it (same container, not restarted), and dropping
//! a supervisor never stops an instance. Only [`Supervisor::stop`] does.
//!
//! Architecture invariant: nothing is leaked. Stopping an instance, or a start
//! that fails at any step, removes its runc container, mounts, network
//! namespace, cgroups and directory; [`Supervisor::open`] does the same for an
//! instance whose shim is gone.

mod adopt;
mod health;
mod instance_start;
mod instance_stop;
mod log;
mod monitor;
mod record;
mod shim;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::container::{BundleError, EngineError, Mapping};
use crate::image::PulledImage;
use crate::layer::{LayerCache, LayerLease};

pub use health::{HealthResult, HealthTiming};
pub use log::LogFollow;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "instance id {0:?} is invalid: it must be 1 to 63 characters of a-z, 0-9 and -, \
         not starting with -"
    )]
    BadId(String),
    #[error(
        "instance {id}: health path {path:?} must start with / and have no spaces or control \
         characters (at most 1024 bytes)"
    )]
    BadHealthPath { id: String, path: String },
    #[error("instance {0}: port 0 is not a port an instance can listen on")]
    BadPort(String),
    #[error("instance {id}: image {image}: {what}")]
    BadImage {
        id: String,
        image: String,
        what: String,
    },
    #[error("instance {0} already exists on this node")]
    Exists(String),
    #[error("no instance {0} on this node")]
    Unknown(String),
    #[error("instance {0} is already being stopped")]
    Stopping(String),
    #[error("instance {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("instance {id}: {source}")]
    Bundle {
        id: String,
        #[source]
        source: BundleError,
    },
    #[error("instance {id}: {source}")]
    Engine {
        id: String,
        #[source]
        source: EngineError,
    },
    #[error(
        "instance {id}: runc could not start the container (exit {status}); last log lines: {log}"
    )]
    Runc {
        id: String,
        status: i32,
        log: String,
    },
    #[error("instance {id}: left behind after removal: {what}")]
    Leftover { id: String, what: String },
    #[error("supervisor root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("supervisor root {0} is open in another node agent")]
    Busy(PathBuf),
}

/// An image ready to run: its config and its unpacked layers, held in the
/// layer cache for as long as the instance runs.
pub struct ResolvedImage {
    /// What it is, for people: `host/repo@sha256:…`.
    pub reference: String,
    /// The image config JSON.
    pub config: String,
    /// Bottom layer first.
    pub layers: Vec<LayerLease>,
}

impl From<PulledImage> for ResolvedImage {
    fn from(image: PulledImage) -> Self {
        ResolvedImage {
            reference: format!(
                "{}/{}@{}",
                image.reference.registry(),
                image.reference.repository(),
                image.manifest_digest
            ),
            config: image.record.config,
            layers: image.layers,
        }
    }
}

/// One instance to run.
pub struct InstanceSpec {
    /// Assigned by the server: 1 to 63 of `[a-z0-9-]`, used in paths and ids.
    pub id: String,
    pub image: ResolvedImage,
    /// Given to the instance, with `PORT=<port>` on top. May hold secrets:
    /// never logged, and `Debug` shows the names only.
    pub env: Vec<(String, String)>,
    /// The instance listens on this port on its own loopback.
    pub port: u16,
    /// The health check path, e.g. `/healthz`.
    pub health: String,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    /// Most processes at once; [`DEFAULT_PIDS`] when not given.
    pub pids: Option<u64>,
    /// Replaces the image's Entrypoint (and then its Cmd is not used).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub command: Option<Vec<String>>,
}

/// Processes an instance may have when its spec sets no limit.
pub const DEFAULT_PIDS: u64 = 4096;

impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("id", &self.id)
            .field("image", &self.image.reference)
            .field(
                "env",
                &self.env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            )
            .field("port", &self.port)
            .field("health", &self.health)
            .field("memory_bytes", &self.memory_bytes)
            .field("cpus", &self.cpus)
            .field("pids", &self.pids)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// Running, not (yet) answering its health check with 2xx.
    Starting,
    Ready,
    /// Was ready; its health check failed several times in a row since.
    Unhealthy,
    /// Exited with this code (128 + signal when killed; `None` when the
    /// shim was killed too); restarted after a backoff.
    Crashed {
        exit_code: Option<i32>,
    },
    Stopping,
}

#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub id: String,
    pub container_id: String,
    pub image: String,
    pub state: InstanceState,
    /// Restarts after crashes since the instance was started.
    pub restarts: u32,
    pub ready_since: Option<SystemTime>,
    pub last_health: Option<HealthResult>,
    pub netns: PathBuf,
    pub port: u16,
    /// The container's init process (host pid) while it runs.
    pub pid: Option<u32>,
}

/// Settings of a supervisor (the defaults suit a node; tests shorten them).
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// User namespace for instances; `None` runs them as host root (only for
    /// hosts without user namespaces).
    pub mapping: Option<Mapping>,
    /// `log` is moved to `log.1` at this size.
    pub log_cap_bytes: u64,
    pub health: HealthTiming,
    /// First restart delay, doubled per crash up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        SupervisorOptions {
            mapping: Some(Mapping::default()),
            log_cap_bytes: 4 << 20,
            health: HealthTiming::default(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Runs and watches a node's instances. Dropping it (or [`detach`](Self::detach))
/// stops watching and leaves every instance running for the next supervisor.
pub struct Supervisor {
    inner: Arc<Inner>,
    /// The exclusive `flock` on `supervisor.lock`, released as soon as the
    /// supervisor is dropped (its tasks may take a moment longer to end).
    _lock: std::fs::File,
}

pub(crate) struct Inner {
    root: PathBuf,
    runc: PathBuf,
    cache: LayerCache,
    options: SupervisorOptions,
    /// A user namespace with the mapping, for idmapping layers; made once.
    userns: Mutex<Option<Arc<OwnedFd>>>,
    instances: Mutex<BTreeMap<String, Arc<Instance>>>,
    /// Bumped on every state change.
    changes: tokio::sync::watch::Sender<u64>,
}

/// What the supervisor knows of one instance.
pub(crate) struct Instance {
    id: String,
    container_id: String,
    dir: PathBuf,
    port: u16,
    health: String,
    image: String,
    live: Mutex<Live>,
    /// What is on disk in `instance.json`.
    record: Mutex<record::Record>,
    /// Held while the instance exists (the shim holds their locks too).
    leases: Mutex<Vec<LayerLease>>,
    /// The running shim, when there is one.
    shim: Mutex<Option<Arc<monitor::ShimProcess>>>,
    /// Set to stop the monitor task.
    stop: tokio::sync::watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Live {
    state: InstanceState,
    restarts: u32,
    ready_since: Option<SystemTime>,
    last_health: Option<HealthResult>,
    failures: u32,
    pid: Option<u32>,
}

impl Instance {
    fn netns(&self) -> PathBuf {
        self.dir.join("netns")
    }

    fn status(&self) -> InstanceStatus {
        let live = self.live.lock().unwrap();
        InstanceStatus {
            id: self.id.clone(),
            container_id: self.container_id.clone(),
            image: self.image.clone(),
            state: live.state.clone(),
            restarts: live.restarts,
            ready_since: live.ready_since,
            last_health: live.last_health.clone(),
            netns: self.netns(),
            port: self.port,
            pid: live.pid,
        }
    }
}

impl Inner {
    fn notify(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// An instance's cgroup name: its container id after a tag of this
    /// supervisor's root, so two nodes on one host (tests, or nodes of two
    /// clusters) never share a cgroup even when their instance ids match.
    pub(crate) fn cgroup_name(&self, container_id: &str) -> String {
        use sha2::Digest;
        let tag = sha2::Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        format!("{}-{container_id}", &hex::encode(tag)[..8])
    }

    fn instances_dir(&self) -> PathBuf {
        self.root.join("instances")
    }

    fn runc_root(&self) -> PathBuf {
        self.root.join("runc")
    }

    fn instance(&self, id: &str) -> Result<Arc<Instance>, NodeError> {
        self.instances
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| NodeError::Unknown(id.to_owned()))
    }
}

/// The runc container id of instance `id`.
pub fn container_id(id: &str) -> String {
    format!("slipway-inst-{id}")
}

/// Is `id` a valid instance id?
pub fn valid_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Supervisor {
    /// Open the supervisor under `root` (created if missing): adopt the
    /// instances a previous agent left running (same containers, not
    /// restarted) and remove what is left of dead ones. Needs a Tokio runtime
    /// (each instance gets a task).
    pub async fn open(
        root: &Path,
        runc: &Path,
        cache: LayerCache,
        options: SupervisorOptions,
    ) -> Result<Supervisor, NodeError> {
        let (inner, lock) = adopt::open(root, runc, cache, options).await?;
        Ok(Supervisor { inner, _lock: lock })
    }

    /// Every instance and how it is.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let instances: Vec<_> = self
            .inner
            .instances
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        instances.iter().map(|i| i.status()).collect()
    }

    /// The network namespace of instance `id` (for `netns::connect`).
    pub fn netns(&self, id: &str) -> Option<PathBuf> {
        self.inner.instance(id).ok().map(|i| i.netns())
    }

    /// A counter bumped on every change of any instance's state: wait on it,
    /// then read [`status`](Self::status).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Stop watching and leave every instance running (as dropping does); a
    /// supervisor opened on the same root adopts them.
    pub fn detach(self) {}
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let instances: Vec<_> = self
            .inner
            .instances
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for instance in instances {
            if let Some(task) = instance.task.lock().unwrap().take() {
                task.abort();
            }
        }
    }
}
