//! Running containers with runc.
//!
//! Each container gets `containers/<id>/` under the engine root: `upper/` and
//! `work/` (overlay), `bundle/config.json` and `bundle/rootfs` (the overlay mount).
//! runc keeps its state under the engine's own `runc/` root, so the engine can
//! list and remove exactly its containers. Pods (shared network namespaces)
//! live under `pods/<id>/`. Ids start with `slipway-<pid>-`, so an engine
//! opening a root another live process shares never touches that process's
//! containers.
//!
//! Architecture invariant: every path out of [`Engine::run`] (exit, failure,
//! timeout, cancel, or the future being dropped) force-deletes the runc container,
//! unmounts the rootfs and removes the container directory; [`Engine::open`] does
//! the same for anything a crashed engine left behind.

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci_spec::image::ImageConfiguration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::UnboundedSender;

use super::bundle::{host_nofile_hard, runtime_spec, BundleError, RunOptions};
use super::pod::{self, Pod};
use super::userns::{idmapped_mount, Mapping};
use super::{cgroup, rootfs};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not searchable by other users (mode {mode:o}), so container root in a user \
         namespace cannot reach its root filesystem under the engine root; make it a+x \
         (e.g. chmod 711) or run without a user namespace"
    )]
    Unreachable { path: PathBuf, mode: u32 },
    #[error("creating the user namespace for {mapping:?}: {source}")]
    UserNamespace {
        mapping: Mapping,
        #[source]
        source: std::io::Error,
    },
    #[error("engine root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
    /// Why it was stopped, when it did not end by itself.
    pub stopped: Option<String>,
    pub elapsed: Duration,
}

/// Signals a running container to stop; cheap to clone.
#[derive(Clone, Default)]
pub struct Cancel(
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

impl Cancel {
    pub fn cancel(&self) {
        self.1.store(true, Ordering::SeqCst);
        self.0.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }

    async fn cancelled(&self) {
        loop {
            let notified = self.0.notified();
            if self.1.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

pub struct RunRequest<'a> {
    pub image: &'a ImageConfiguration,
    /// Unpacked layers, bottom first.
    pub layers: Vec<&'a Path>,
    pub options: RunOptions,
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when stopping.
    pub grace: Duration,
    pub cancel: Cancel,
    pub output: UnboundedSender<(Stream, Vec<u8>)>,
}

pub struct Engine {
    root: PathBuf,
    runc: PathBuf,
    /// `slipway-<pid>-<engine number>-`: every container id of this engine starts
    /// with it, so ids never collide across engines or processes.
    id_prefix: String,
    /// One user namespace per mapping in use, made on first use, for idmapping
    /// layers.
    namespaces: std::sync::Mutex<std::collections::HashMap<Mapping, std::sync::Arc<OwnedFd>>>,
}

static ENGINES: AtomicU64 = AtomicU64::new(0);
static CONTAINERS: AtomicU64 = AtomicU64::new(0);

/// Removes everything of one container when dropped.
struct Cleanup<'a> {
    engine: &'a Engine,
    id: String,
    dir: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.engine.remove(&self.id, &self.dir);
    }
}

impl Engine {
    /// Open the engine under `root` (created if missing), reaping containers,
    /// mounts and directories a previous, crashed engine left there.
    pub fn open(root: impl Into<PathBuf>, runc: impl Into<PathBuf>) -> Result<Engine, EngineError> {
        let root = root.into();
        let containers = root.join("containers");
        std::fs::create_dir_all(&containers).map_err(|source| EngineError::Root {
            path: containers.clone(),
            source,
        })?;
        let id_prefix = format!(
            "slipway-{}-{}-",
            std::process::id(),
            ENGINES.fetch_add(1, Ordering::Relaxed)
        );
        let engine = Engine {
            root,
            runc: runc.into(),
            id_prefix,
            namespaces: Default::default(),
        };
        let leftovers = std::fs::read_dir(&containers).map_err(|source| EngineError::Root {
            path: containers.clone(),
            source,
        })?;
        for entry in leftovers.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            // A live process may share this root (two `slipway exec` at once):
            // only containers of processes that are gone are leftovers.
            if owner_pid(&id).is_some_and(crate::layer::pid_alive) {
                continue;
            }
            tracing::warn!(container = %id, "reaping a container left by an earlier engine");
            engine.remove(&id, &entry.path());
        }
        // Pods' network namespaces likewise.
        let pods = engine.root.join("pods");
        for entry in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !owner_pid(&id).is_some_and(crate::layer::pid_alive) {
                tracing::warn!(pod = %id, "reaping a pod left by an earlier engine");
                pod::remove(&entry.path());
            }
        }
        Ok(engine)
    }

    fn runc(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.runc);
        cmd.arg("--root").arg(self.root.join("runc"));
        cmd
    }

    /// Force-delete the runc container, unmount everything below its directory,
    /// remove the directory. Every step tolerates "already gone".
    fn remove(&self, id: &str, dir: &Path) {
        // `runc run` deletes its own state when the container exits; only a
        // container that outlived it (killed engine, stop in progress) has some.
        if self.root.join("runc").join(id).exists() {
            let _ = self
                .runc()
                .args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for mount in rootfs::mounts_below(dir) {
            let _ = rootfs::unmount(&mount);
        }
        let _ = std::fs::remove_dir_all(dir);
        cgroup::remove(id);
    }

    /// Ids of runc containers this engine knows about (for tests and reaping).
    pub fn runc_containers(&self) -> Vec<String> {
        let out = self.runc().args(["list", "-q"]).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    }

    /// The prefix of every container id (and cgroup name) of this engine.
    pub fn id_prefix(&self) -> &str {
        &self.id_prefix
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// A new pod: a network namespace with loopback only, for containers run
    /// with [`Pod::network`]. It goes away when the `Pod` is dropped.
    pub fn create_pod(&self) -> Result<Pod, EngineError> {
        let id = format!(
            "{}pod{}",
            self.id_prefix,
            CONTAINERS.fetch_add(1, Ordering::Relaxed)
        );
        Pod::create(self.root.join("pods").join(&id)).map_err(|source| EngineError::Io {
            id,
            what: "creating the pod network namespace",
            source,
        })
    }

    fn namespace(&self, mapping: Mapping) -> Result<std::sync::Arc<OwnedFd>, EngineError> {
        let mut namespaces = self.namespaces.lock().unwrap();
        if let Some(fd) = namespaces.get(&mapping) {
            return Ok(fd.clone());
        }
        let fd = std::sync::Arc::new(
            mapping
                .namespace()
                .map_err(|source| EngineError::UserNamespace { mapping, source })?,
        );
        namespaces.insert(mapping, fd.clone());
        Ok(fd)
    }

    fn check_reachable(&self) -> Result<(), EngineError> {
        check_searchable(&self.containers_dir())
    }

    pub async fn run(&self, request: RunRequest<'_>) -> Result<Outcome, EngineError> {
        self.run_inner(request, None).await
    }

    /// `run`, then move the container's upper dir (what the command changed,
    /// in overlayfs's format) to `keep_upper`, which must be on the same
    /// filesystem as the engine root and must not exist. For image builds.
    pub async fn run_keeping_upper(
        &self,
        request: RunRequest<'_>,
        keep_upper: &Path,
    ) -> Result<Outcome, EngineError> {
        self.run_inner(request, Some(keep_upper)).await
    }

    async fn run_inner(
        &self,
        request: RunRequest<'_>,
        keep_upper: Option<&Path>,
    ) -> Result<Outcome, EngineError> {
        let id = format!(
            "{}{}",
            self.id_prefix,
            CONTAINERS.fetch_add(1, Ordering::Relaxed)
        );
        let dir = self.root.join("containers").join(&id);
        let _cleanup = Cleanup {
            engine: self,
            id: id.clone(),
            dir: dir.clone(),
        };
        let io = |what: &'static str| {
            let id = id.clone();
            move |source: std::io::Error| EngineError::Io { id, what, source }
        };
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io("creating the container directory"))?;
        // A memory limit goes on a parent cgroup the engine owns, so an OOM kill
        // can be reported as such (see `cgroup`).
        let memory = request
            .options
            .limits
            .memory_bytes
            .and_then(|limit| cgroup::MemoryCgroup::create(&id, limit));
        let mut options = request.options.clone();
        if memory.is_some() {
            options.limits.memory_bytes = None;
        }
        let mut spec = runtime_spec(request.image, "rootfs", &options, host_nofile_hard())?;
        if memory.is_some() {
            if let Some(linux) = spec.linux_mut() {
                linux.set_cgroups_path(Some(cgroup::MemoryCgroup::runc_path(&id).into()));
            }
        }
        spec.save(bundle.join("config.json"))
            .map_err(|e| io("writing config.json")(std::io::Error::other(e)))?;
        // In a user namespace the layers are seen through idmapped mounts, so
        // their root-owned files belong to container root (see `userns`).
        let mut mapped = Vec::new();
        if let Some(mapping) = options.user_namespace {
            self.check_reachable()?;
            let userns = self.namespace(mapping)?;
            for (i, layer) in request.layers.iter().enumerate() {
                let view = dir.join("lower").join(i.to_string());
                std::fs::create_dir_all(&view).map_err(io("creating a layer mount point"))?;
                idmapped_mount(layer, &view, &userns).map_err(io("idmapping a layer"))?;
                mapped.push(view);
            }
        }
        let lower: Vec<&Path> = match options.user_namespace {
            Some(_) => mapped.iter().map(PathBuf::as_path).collect(),
            None => request.layers.clone(),
        };
        let root_owner = options
            .user_namespace
            .map(|m| (m.host_root(), m.host_root()));
        rootfs::mount_overlay(
            &lower,
            &dir.join("empty"),
            &dir.join("upper"),
            &dir.join("work"),
            &bundle.join("rootfs"),
            root_owner,
        )
        .map_err(io("mounting the root filesystem"))?;

        let started = Instant::now();
        let mut child = tokio::process::Command::from(self.runc())
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io("starting runc"))?;
        let readers = [
            forward(
                child.stdout.take().expect("piped"),
                Stream::Stdout,
                request.output.clone(),
            ),
            forward(
                child.stderr.take().expect("piped"),
                Stream::Stderr,
                request.output.clone(),
            ),
        ];
        let deadline = async {
            match request.timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            status = child.wait() => {
                let status = status.map_err(io("waiting for runc"))?;
                for r in readers { let _ = r.await; }
                let stopped = memory
                    .as_ref()
                    .filter(|m| m.oom_killed(exit_code(status)))
                    .map(|m| format!("killed: memory limit {} exceeded", cgroup::human(m.limit)));
                let outcome = Outcome { exit_code: exit_code(status), stopped, elapsed: started.elapsed() };
                if let Some(to) = keep_upper {
                    self.keep_upper(&dir, to).map_err(io("keeping the upper dir"))?;
                }
                return Ok(outcome);
            }
            () = deadline => format!("timed out after {:?}", request.timeout.unwrap_or_default()),
            () = request.cancel.cancelled() => "cancelled".to_owned(),
        };
        // Stop: SIGTERM to every process, then SIGKILL after the grace period.
        let _ = self
            .runc()
            .args(["kill", "--all", &id, "TERM"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let status = match tokio::time::timeout(request.grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                let _ = self
                    .runc()
                    .args(["kill", "--all", &id, "KILL"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                child.wait().await
            }
        }
        .map_err(io("waiting for runc"))?;
        for r in readers {
            let _ = r.await;
        }
        Ok(Outcome {
            exit_code: exit_code(status),
            stopped: Some(stopped),
            elapsed: started.elapsed(),
        })
    }

    /// Unmount a finished container's root filesystem and move its upper dir
    /// out of the container directory before that is removed.
    fn keep_upper(&self, dir: &Path, to: &Path) -> std::io::Result<()> {
        for mount in rootfs::mounts_below(dir) {
            rootfs::unmount(&mount)?;
        }
        std::fs::rename(dir.join("upper"), to)
    }
}

/// Container root in a user namespace is "others" to host-owned directories:
/// every directory down to `dir` must let others search it.
pub(crate) fn check_searchable(dir: &Path) -> Result<(), EngineError> {
    for dir in dir.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            return Err(EngineError::Unreachable {
                path: dir.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

/// The pid in a container id `slipway-<pid>-<engine>-<n>`.
fn owner_pid(id: &str) -> Option<u32> {
    id.strip_prefix("slipway-")?.split('-').next()?.parse().ok()
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn forward(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    out: UnboundedSender<(Stream, Vec<u8>)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 || out.send((stream, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    })
}
