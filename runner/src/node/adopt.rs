//! Opening a supervisor root: instances whose shim still runs are adopted
//! (same container, not restarted: the shim kept its log, exit status and
//! layers while no agent ran); everything else there is removed: instances
//! whose shim is gone, stops that were interrupted, half-made directories,
//! runc containers that belong to no instance.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::instance_stop::{delete_by_id, remove_leftovers};
use super::monitor::ShimProcess;
use super::record::Record;
use super::{
    container_id, valid_id, Inner, Instance, InstanceState, Live, NodeError, SupervisorOptions,
};
use crate::layer::LayerCache;

/// The start time of process `pid` (clock ticks after boot), if it lives.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command: state is field 3, starttime field 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

pub(super) async fn open(
    root: &Path,
    runc_path: &Path,
    cache: LayerCache,
    options: SupervisorOptions,
) -> Result<(Arc<Inner>, std::fs::File), NodeError> {
    let root_error = |path: &Path| {
        let path = path.to_owned();
        move |source| NodeError::Root { path, source }
    };
    // The shim execs runc without a PATH search: find it now.
    let found = find_program(runc_path).ok_or_else(|| NodeError::Root {
        path: runc_path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the OCI runtime is not an executable file here nor in PATH",
        ),
    })?;
    let runc_path = found.as_path();
    for dir in [root.join("instances"), root.join("runc")] {
        std::fs::create_dir_all(&dir).map_err(root_error(&dir))?;
    }
    let lock_path = root.join("supervisor.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(root_error(&lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| NodeError::Busy(root.to_owned()))?;
    let inner = Arc::new(Inner {
        root: root.to_owned(),
        runc: runc_path.to_owned(),
        cache,
        options,
        userns: Mutex::new(None),
        instances: Mutex::new(BTreeMap::new()),
        changes: tokio::sync::watch::channel(0).0,
    });

    let entries = std::fs::read_dir(inner.instances_dir()).map_err(root_error(root))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !valid_id(&name) {
            // Not made by a supervisor: nothing of it is ours to remove.
            tracing::warn!(entry = %dir.display(), "ignoring a stray entry in instances/");
            continue;
        }
        match adopt(&inner, &name, &dir) {
            Some((instance, shim)) => {
                tracing::info!(instance = %name, container = %instance.container_id, "adopted a running instance");
                inner
                    .instances
                    .lock()
                    .unwrap()
                    .insert(name.clone(), instance.clone());
                super::monitor::spawn(inner.clone(), instance, shim);
            }
            None => {
                tracing::warn!(instance = %name, "removing an instance that no longer runs");
                let cid = container_id(&name);
                delete_by_id(&inner, &cid).await;
                let (inner2, dir2) = (inner.clone(), dir.clone());
                let removed = tokio::task::spawn_blocking(move || {
                    remove_leftovers(&inner2, &name, &cid, &dir2)
                })
                .await
                .map_err(|e| root_error(root)(std::io::Error::other(e)))?;
                if let Err(e) = removed {
                    tracing::error!(error = %e, "removing a dead instance");
                }
            }
        }
    }
    reap_strays(&inner).await;
    Ok((inner, lock))
}

/// The instance in `dir`, if its shim still runs the container.
fn adopt(inner: &Inner, id: &str, dir: &Path) -> Option<(Arc<Instance>, Arc<ShimProcess>)> {
    let record = Record::load(dir).ok()?;
    if record.stopping || record.id != id || record.container_id != container_id(id) {
        return None;
    }
    let shim = record.shim?;
    let shim = Arc::new(ShimProcess::watch(shim.pid, shim.start_time).ok()?);
    // The shim holds the layers' locks; the supervisor leases them too, for
    // restarts after the shim is gone.
    let leases = record
        .layers
        .iter()
        .filter_map(|digest| {
            let lease = inner.cache.cached(digest);
            if lease.is_none() {
                tracing::warn!(instance = %id, layer = %digest, "a layer of an adopted instance is not in the cache; it cannot be restarted");
            }
            lease
        })
        .collect();
    let pid = std::fs::read_to_string(dir.join("init.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let instance = Arc::new(Instance {
        id: id.to_owned(),
        container_id: record.container_id.clone(),
        dir: dir.to_owned(),
        port: record.port,
        health: record.health.clone(),
        image: record.image.clone(),
        live: Mutex::new(Live {
            state: InstanceState::Starting,
            restarts: record.restarts,
            ready_since: None,
            last_health: None,
            failures: 0,
            pid,
        }),
        record: Mutex::new(record),
        leases: Mutex::new(leases),
        shim: Mutex::new(Some(shim.clone())),
        stop: tokio::sync::watch::channel(false).0,
        task: Mutex::new(None),
    });
    Some((instance, shim))
}

/// runc containers that belong to no adopted instance (their cgroups go
/// with them).
async fn reap_strays(inner: &Inner) {
    let known: Vec<String> = inner
        .instances
        .lock()
        .unwrap()
        .values()
        .map(|i| i.container_id.clone())
        .collect();
    for entry in std::fs::read_dir(inner.runc_root())
        .into_iter()
        .flatten()
        .flatten()
    {
        let cid = entry.file_name().to_string_lossy().into_owned();
        if !known.contains(&cid) {
            tracing::warn!(container = %cid, "removing a runc container of no instance");
            delete_by_id(inner, &cid).await;
        }
    }
}

/// `program` itself when it names a path, else the first executable of that
/// name in `PATH`.
fn find_program(program: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program).then(|| program.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
}
