//! Stopping an instance: SIGTERM to its processes, the grace period, SIGKILL,
//! then removing everything it had: the runc container, the root filesystem
//! and layer mounts, the network namespace, the cgroups and the directory.
//! Removal is checked: what is still there is an error, not a silent leak.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::instance_start::CGROUP_PARENT;
use super::{Inner, Instance, InstanceState, NodeError, Supervisor};
use crate::container::rootfs;

/// Deadline for the monitor task to notice a stop; the action: abort it.
const MONITOR_STOP_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline for the container to end after SIGKILL; the action: kill the
/// shim, force-delete the container and remove everything anyway.
const KILL_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of one runc command; the action: kill it and go on.
const RUNC_DEADLINE: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Stop instance `id` (SIGTERM, `grace`, SIGKILL) and remove everything
    /// it had.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), NodeError> {
        let inner = &self.inner;
        let instance = inner.instance(id)?;
        {
            let mut live = instance.live.lock().unwrap();
            if live.state == InstanceState::Stopping {
                return Err(NodeError::Stopping(id.to_owned()));
            }
            live.state = InstanceState::Stopping;
            live.ready_since = None;
        }
        {
            let mut record = instance.record.lock().unwrap();
            record.stopping = true;
            let _ = record.save(&instance.dir);
        }
        inner.notify();
        instance.stop.send_replace(true);
        let task = instance.task.lock().unwrap().take();
        if let Some(mut task) = task {
            if tokio::time::timeout(MONITOR_STOP_DEADLINE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let shim = instance.shim.lock().unwrap().take();
        if let Some(shim) = shim {
            runc(inner, &["kill", "--all", &instance.container_id, "TERM"]).await;
            if tokio::time::timeout(grace, shim.exited()).await.is_err() {
                runc(inner, &["kill", "--all", &instance.container_id, "KILL"]).await;
                if tokio::time::timeout(KILL_DEADLINE, shim.exited())
                    .await
                    .is_err()
                {
                    tracing::error!(instance = %id, "still running {KILL_DEADLINE:?} after SIGKILL");
                    shim.kill();
                }
            }
        }
        let removed = teardown(inner, &instance).await;
        inner.instances.lock().unwrap().remove(id);
        inner.notify();
        removed
    }
}

/// Run `runc --root <instances' root> args…`, within [`RUNC_DEADLINE`].
pub(super) async fn runc(inner: &Inner, args: &[&str]) -> Option<std::process::Output> {
    let child = tokio::process::Command::new(&inner.runc)
        .arg("--root")
        .arg(inner.runc_root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(RUNC_DEADLINE, child).await {
        Ok(Ok(output)) => Some(output),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "running runc");
            None
        }
        Err(_) => {
            tracing::error!(?args, "runc did not finish within {RUNC_DEADLINE:?}");
            None
        }
    }
}

/// Force-delete the instance's runc container (after it ended, before a restart).
pub(super) async fn delete_container(inner: &Inner, instance: &Instance) {
    delete_by_id(inner, &instance.container_id).await;
}

pub(super) async fn delete_by_id(inner: &Inner, container_id: &str) {
    if inner.runc_root().join(container_id).exists() {
        runc(inner, &["delete", "--force", container_id]).await;
    }
}

/// Remove everything of an instance (tolerating what is already gone), and
/// check that nothing is left.
pub(super) async fn teardown(inner: &Arc<Inner>, instance: &Instance) -> Result<(), NodeError> {
    let shim = instance.shim.lock().unwrap().take();
    delete_by_id(inner, &instance.container_id).await;
    if let Some(shim) = shim {
        // The container is gone, so the shim ends (its log pipe closed); it
        // must, before the directory it writes into is removed.
        if tokio::time::timeout(KILL_DEADLINE, shim.exited())
            .await
            .is_err()
        {
            shim.kill();
            let _ = tokio::time::timeout(KILL_DEADLINE, shim.exited()).await;
        }
    }
    let (inner2, id, cid, dir) = (
        inner.clone(),
        instance.id.clone(),
        instance.container_id.clone(),
        instance.dir.clone(),
    );
    instance.leases.lock().unwrap().clear();
    tokio::task::spawn_blocking(move || remove_leftovers(&inner2, &id, &cid, &dir))
        .await
        .map_err(|e| NodeError::Leftover {
            id: instance.id.clone(),
            what: format!("the removal task failed: {e}"),
        })?
}

/// Unmount everything below `dir` (deepest first), remove the container's
/// cgroups and `dir`; report what is still there.
pub(super) fn remove_leftovers(
    inner: &Inner,
    id: &str,
    container_id: &str,
    dir: &Path,
) -> Result<(), NodeError> {
    for mount in rootfs::mounts_below(dir) {
        if let Err(e) = rootfs::unmount(&mount) {
            tracing::error!(instance = %id, mount = %mount.display(), error = %e, "unmounting");
        }
    }
    for cgroup in cgroups(&inner.cgroup_name(container_id)) {
        let _ = std::fs::remove_dir(&cgroup);
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(instance = %id, error = %e, "removing the instance directory");
        }
    }
    let mut left = Vec::new();
    if inner.runc_root().join(container_id).exists() {
        left.push(format!("runc container {container_id}"));
    }
    left.extend(
        rootfs::mounts_below(dir)
            .iter()
            .map(|m| format!("mount {}", m.display())),
    );
    left.extend(
        cgroups(&inner.cgroup_name(container_id))
            .iter()
            .filter(|c| c.exists())
            .map(|c| format!("cgroup {}", c.display())),
    );
    if dir.exists() {
        left.push(format!("directory {}", dir.display()));
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(NodeError::Leftover {
            id: id.to_owned(),
            what: left.join(", "),
        })
    }
}

/// The container's cgroup in every hierarchy.
pub(super) fn cgroups(name: &str) -> Vec<std::path::PathBuf> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut found: Vec<_> = hierarchies
        .flatten()
        .map(|h| h.path().join(CGROUP_PARENT).join(name))
        .collect();
    // cgroup v2: the parent is at the top of the unified tree.
    found.push(Path::new("/sys/fs/cgroup").join(CGROUP_PARENT).join(name));
    found.sort();
    found.dedup();
    found
}
