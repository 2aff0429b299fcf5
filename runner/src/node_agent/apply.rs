//! The desired state onto this machine, idempotently, on every change:
//!
//! 1. Routers: started, re-bound when their address changed, stopped when
//!    gone; each table set from the desired live and preview sets, holding
//!    only instances that run here and answer their health check.
//! 2. Instances to run that do not exist: pulled by digest and started.
//! 3. Instances to stop (or that the server no longer lists): they are out
//!    of every table by step 1; each is drained (nothing in flight) and then
//!    stopped and removed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;

use super::{Node, RouterEntry, Task};
use crate::image::{obtain, resolve, PullPolicy};
use crate::node::{InstanceSpec as SupervisedSpec, InstanceState, ResolvedImage};
use crate::node_protocol::{Desired, InstanceGoal, InstanceSpec};
use crate::router::{Backend, RouteTable, Router, RouterConfig};

/// How long a leaving instance may keep requests in flight; then it is
/// stopped anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// SIGTERM to SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Before trying again to start an instance that could not start.
const START_RETRY: Duration = Duration::from_secs(5);

pub(super) fn load_cached(work_dir: &Path) -> Option<Desired> {
    let text = std::fs::read(work_dir.join("desired.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Written atomically, readable by root only (it holds instances' secrets).
pub(super) fn save_cached(work_dir: &Path, desired: &Desired) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = work_dir.join("desired.json.tmp");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(&serde_json::to_vec(desired).expect("serialisable"))?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, work_dir.join("desired.json")));
    if let Err(e) = written {
        tracing::warn!(error = %e, "could not keep the desired state on disk");
    }
}

/// The short digest of `repo@sha256:…`, as the routers' metrics label.
fn version(image: &str) -> String {
    image
        .split_once('@')
        .map(|(_, d)| d[..d.len().min(19)].to_owned())
        .unwrap_or_default()
}

async fn address(addr: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(addr).await.ok()?.next()
}

pub(super) async fn apply(node: &Arc<Node>) {
    let desired = node.desired.borrow().clone();
    let statuses = node.supervisor.status();
    let healthy: HashSet<&str> = statuses
        .iter()
        .filter(|s| matches!(s.state, InstanceState::Ready | InstanceState::Unhealthy))
        .map(|s| s.id.as_str())
        .collect();
    let ready: HashSet<&str> = statuses
        .iter()
        .filter(|s| matches!(s.state, InstanceState::Ready))
        .map(|s| s.id.as_str())
        .collect();
    let existing: HashSet<&str> = statuses.iter().map(|s| s.id.as_str()).collect();
    let specs: std::collections::HashMap<&str, &InstanceSpec> = desired
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    let running = |name: &str| {
        specs
            .get(name)
            .is_some_and(|s| s.desired == InstanceGoal::Run)
            && healthy.contains(name)
            && !matches!(node.task(name), Some(Task::Stopping))
    };

    // 1. Routers.
    let mut routes_changed = false;
    {
        let mut routers = node.routers.lock().await;
        let wanted: HashSet<String> = desired.routers.iter().map(|r| r.listen.clone()).collect();
        let gone: Vec<String> = routers
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(entry) = routers.remove(&key) {
                tracing::info!(listen = %key, "router removed");
                shutdown(entry.router).await;
            }
        }
        for spec in &desired.routers {
            let key = spec.listen.clone();
            let moved = routers.get(&key).is_some_and(|e| {
                e.preview != spec.preview || e.app != spec.app || e.environment != spec.environment
            });
            if moved {
                if let Some(entry) = routers.remove(&key) {
                    shutdown(entry.router).await;
                }
            }
            if !routers.contains_key(&key) {
                let (Some(listen), Some(preview)) =
                    (address(&spec.listen).await, address(&spec.preview).await)
                else {
                    tracing::warn!(listen = %spec.listen, preview = %spec.preview, "router address does not resolve");
                    continue;
                };
                let mut config = RouterConfig::new(&spec.app, &spec.environment, listen);
                config.preview = Some(preview);
                match Router::start(config).await {
                    Ok(router) => {
                        tracing::info!(app = %spec.app, env = %spec.environment, %listen, %preview, "router listening");
                        routers.insert(
                            key.clone(),
                            RouterEntry {
                                router: Arc::new(router),
                                app: spec.app.clone(),
                                environment: spec.environment.clone(),
                                preview: spec.preview.clone(),
                                table: RouteTable::default(),
                            },
                        );
                    }
                    Err(e) => {
                        tracing::warn!(app = %spec.app, env = %spec.environment, %listen, error = %e, "router cannot listen");
                        continue;
                    }
                }
            }
            let backend = |name: &String| -> Option<Backend> {
                let instance = specs.get(name.as_str())?;
                Some(Backend {
                    id: name.clone(),
                    version: version(&instance.image),
                    netns: Some(node.supervisor.netns(name)?),
                    port: instance.port,
                })
            };
            let routed = |set: &[String]| -> Vec<Backend> {
                routable(set, &running, &ready)
                    .into_iter()
                    .filter_map(backend)
                    .collect()
            };
            let table = RouteTable {
                live: routed(&spec.live),
                preview: routed(&spec.preview_set),
            };
            let entry = routers.get_mut(&key).expect("inserted above");
            if entry.table != table {
                entry.router.set_table(table.clone());
                entry.table = table;
                routes_changed = true;
            }
        }
    }

    // The server waits for the routes the node serves (a blue/green swap is
    // done when the node says so): report them now, not at the heartbeat.
    if routes_changed {
        node.changes.send_modify(|n| *n += 1);
    }

    // 2. Starts.
    for spec in desired
        .instances
        .iter()
        .filter(|i| i.desired == InstanceGoal::Run)
    {
        if existing.contains(spec.name.as_str()) {
            if matches!(
                node.task(&spec.name),
                Some(Task::Starting | Task::Failed { .. })
            ) {
                node.set_task(&spec.name, None);
            }
            continue;
        }
        match node.task(&spec.name) {
            None | Some(Task::Gone) => {}
            Some(Task::Failed { retry_at, .. }) if Instant::now() >= retry_at => {}
            Some(_) => continue,
        }
        node.set_task(&spec.name, Some(Task::Starting));
        let node = node.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            match start(&node, &spec).await {
                Ok(()) => {
                    tracing::info!(instance = %spec.name, image = %spec.image, "instance started");
                    node.set_task(&spec.name, None);
                }
                Err(reason) => {
                    tracing::warn!(instance = %spec.name, %reason, "instance could not start");
                    node.set_task(
                        &spec.name,
                        Some(Task::Failed {
                            reason,
                            retry_at: Instant::now() + START_RETRY,
                        }),
                    );
                }
            }
        });
    }

    // 3. Stops: what the server wants stopped, and what it no longer lists
    // (once it has said so in this run: a lost or old copy on disk never
    // stops anything).
    let heard = node.from_server.load(std::sync::atomic::Ordering::SeqCst);
    let leaving: Vec<String> = statuses
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| match specs.get(id.as_str()) {
            Some(s) => s.desired == InstanceGoal::Stop,
            None => heard,
        })
        .collect();
    for name in leaving {
        if matches!(node.task(&name), Some(Task::Stopping)) {
            continue;
        }
        node.set_task(&name, Some(Task::Stopping));
        let node = node.clone();
        tokio::spawn(async move {
            drain(&node, &name).await;
            match node.supervisor.stop(&name, STOP_GRACE).await {
                Ok(()) => {
                    tracing::info!(instance = %name, "instance stopped and removed");
                    node.set_task(&name, Some(Task::Gone));
                }
                Err(e) => {
                    tracing::warn!(instance = %name, error = %e, "stopping an instance failed; trying again");
                    node.set_task(&name, None);
                }
            }
        });
    }
    // Stop wanted for an instance that is not here (never started, or
    // stopped before a restart of the agent): it is gone.
    for spec in desired
        .instances
        .iter()
        .filter(|i| i.desired == InstanceGoal::Stop)
    {
        if !existing.contains(spec.name.as_str())
            && !matches!(node.task(&spec.name), Some(Task::Stopping | Task::Gone))
        {
            node.set_task(&spec.name, Some(Task::Gone));
        }
    }
    // Forget what the server forgot.
    let forgotten: Vec<String> = node
        .tasks
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, t)| matches!(t, Task::Gone) && !specs.contains_key(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    for name in forgotten {
        node.set_task(&name, None);
    }
}

/// Wait until no router has anything in flight to `name` (it is out of
/// every table already); the deadline's action: stop it anyway.
/// The instances of a route set the router sends requests to: those up
/// whose health check passes. One that fails its checks leaves the table
/// while others of its set pass theirs; when none passes, every one up
/// stays (a maybe-answer beats a certain 503 when the health endpoint
/// itself is what broke).
fn routable<'a>(
    set: &'a [String],
    up: &dyn Fn(&str) -> bool,
    passing: &HashSet<&str>,
) -> Vec<&'a String> {
    let up: Vec<&String> = set.iter().filter(|n| up(n)).collect();
    let healthy: Vec<&String> = up
        .iter()
        .copied()
        .filter(|n| passing.contains(n.as_str()))
        .collect();
    if healthy.is_empty() {
        up
    } else {
        healthy
    }
}

async fn drain(node: &Node, name: &str) {
    let routers: Vec<Arc<Router>> = node
        .routers
        .lock()
        .await
        .values()
        .map(|e| e.router.clone())
        .collect();
    for router in routers {
        if let Err(e) = router.drain(name, DRAIN_DEADLINE).await {
            tracing::warn!(instance = %name, error = %e, "drain deadline passed; stopping anyway");
        }
    }
}

async fn shutdown(router: Arc<Router>) {
    match Arc::try_unwrap(router) {
        Ok(router) => router.shutdown().await,
        Err(_) => tracing::warn!("a router still in use is left to end with its last user"),
    }
}

/// Pull the instance's image by digest and start it.
async fn start(node: &Node, spec: &InstanceSpec) -> Result<(), String> {
    if !spec.image.contains("@sha256:") {
        return Err(format!(
            "{} is not a digest reference: nodes run digests only",
            spec.image
        ));
    }
    let reference = resolve(&spec.image, &node.registry_host).map_err(|e| e.to_string())?;
    let image = obtain(
        &node.registry_client(),
        &reference,
        &RegistryAuth::Bearer(spec.registry_token.clone()),
        &node.cache,
        &node.images,
        PullPolicy::Missing,
    )
    .await
    .map_err(|e| e.to_string())?;
    let supervised = SupervisedSpec {
        id: spec.name.clone(),
        image: ResolvedImage::from(image),
        env: spec.env.clone(),
        port: spec.port,
        health: spec.health.clone(),
        memory_bytes: spec.memory_bytes,
        cpus: spec.cpus,
        pids: None,
        entrypoint: None,
        command: None,
    };
    node.supervisor
        .start(supervised)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::routable;

    #[test]
    fn a_failing_instance_leaves_the_table_unless_none_passes() {
        let set: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let up = |n: &str| n != "c";
        let passing: HashSet<&str> = ["a"].into_iter().collect();
        assert_eq!(routable(&set, &up, &passing), [&set[0]]);
        let none: HashSet<&str> = HashSet::new();
        assert_eq!(routable(&set, &up, &none), [&set[0], &set[1]]);
        let all_down = |_: &str| false;
        assert!(routable(&set, &all_down, &passing).is_empty());
    }
}
