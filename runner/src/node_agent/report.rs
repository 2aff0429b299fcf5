//! What the server sees of this node: a status on every change (and every
//! few seconds, as a heartbeat), and each instance's output shipped by
//! offset.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::{Node, Task};
use crate::node::InstanceState as Observed;
use crate::node_protocol::{InstanceState, InstanceStatus, NodeStatus};

/// A status at least this often, changed or not.
const HEARTBEAT: Duration = Duration::from_secs(5);
const TAIL_LINES: usize = 10;
/// Lines of a new instance's output shipped when its follower starts.
const START_LINES: usize = 500;

async fn status(node: &Node) -> NodeStatus {
    let revision = node.desired.borrow().revision;
    let tasks: HashMap<String, Task> = node.tasks.lock().unwrap().clone();
    let mut in_flight: HashMap<String, u64> = HashMap::new();
    let (routers, routes): (Vec<_>, HashMap<String, &'static str>) = {
        let entries = node.routers.lock().await;
        let mut routes = HashMap::new();
        for e in entries.values() {
            for b in &e.table.preview {
                routes.insert(b.id.clone(), "preview");
            }
            for b in &e.table.live {
                routes.insert(b.id.clone(), "live");
            }
        }
        (entries.values().map(|e| e.router.clone()).collect(), routes)
    };
    let mut instances = Vec::new();
    let mut seen = HashSet::new();
    for s in node.supervisor.status() {
        let flying = routers.iter().map(|r| r.in_flight(&s.id)).sum();
        in_flight.insert(s.id.clone(), flying);
        let state = match (&s.state, tasks.get(&s.id)) {
            (_, Some(Task::Stopping)) | (Observed::Stopping, _) => InstanceState::Stopping,
            (Observed::Starting, _) => InstanceState::Starting,
            (Observed::Ready, _) => InstanceState::Ready,
            (Observed::Unhealthy, _) => InstanceState::Unhealthy,
            (Observed::Crashed { .. }, _) => InstanceState::Crashed,
        };
        let health = match &s.state {
            Observed::Crashed {
                exit_code: Some(code),
            } => Some(format!("exited with code {code}")),
            Observed::Crashed { exit_code: None } => Some("exited".to_owned()),
            _ => s.last_health.as_ref().map(|h| h.text.clone()),
        };
        seen.insert(s.id.clone());
        instances.push(InstanceStatus {
            name: s.id.clone(),
            state,
            container_id: Some(s.container_id.clone()),
            restarts: s.restarts,
            health,
            log_tail: node.supervisor.log_tail(&s.id, TAIL_LINES),
            in_flight: flying,
            route: routes.get(&s.id).copied().unwrap_or("none").to_owned(),
        });
    }
    for (name, task) in tasks {
        if seen.contains(&name) {
            continue;
        }
        let (state, health) = match task {
            Task::Starting => (InstanceState::Starting, Some("pulling the image".into())),
            Task::Failed { reason, .. } => (InstanceState::Failed, Some(reason)),
            Task::Stopping => (InstanceState::Stopping, None),
            Task::Gone => (InstanceState::Gone, None),
        };
        instances.push(InstanceStatus {
            name,
            state,
            container_id: None,
            restarts: 0,
            health,
            log_tail: Vec::new(),
            in_flight: 0,
            route: "none".to_owned(),
        });
    }
    NodeStatus {
        revision,
        instances,
    }
}

/// Send a status whenever something changed, and at least every [`HEARTBEAT`].
pub(super) async fn run(node: Arc<Node>) {
    let mut observed = node.supervisor.subscribe();
    let mut tasks = node.changes.subscribe();
    let mut desired = node.desired.subscribe();
    loop {
        let report = status(&node).await;
        if let Err(e) = node.client.status(&report).await {
            tracing::warn!(error = %e, "reporting status failed; trying again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::select! {
            _ = observed.changed() => {}
            _ = tasks.changed() => {}
            _ = desired.changed() => {}
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        // Let a burst of changes settle into one report.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One shipper per running instance: its new output, by offset.
pub(super) async fn ship_logs(node: Arc<Node>) {
    let mut shipping: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let ids: HashSet<String> = node.supervisor.status().into_iter().map(|s| s.id).collect();
        shipping.retain(|id, task| {
            let keep = ids.contains(id) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for id in ids {
            if shipping.contains_key(&id) {
                continue;
            }
            let Some(mut follow) = node.supervisor.follow_log(&id) else {
                continue;
            };
            let node = node.clone();
            let name = id.clone();
            shipping.insert(
                id,
                tokio::spawn(async move {
                    // Where the server's copy ends: an empty append past it says.
                    let mut offset = match node.client.log(&name, u64::MAX, Vec::new()).await {
                        Ok(length) => length,
                        Err(_) => 0,
                    };
                    // A new instance: what it wrote before the follower
                    // started (the follower was made first, so a line may
                    // come twice, never not at all).
                    if offset == 0 {
                        let mut start: Vec<u8> = node
                            .supervisor
                            .log_tail(&name, START_LINES)
                            .join("\n")
                            .into_bytes();
                        if !start.is_empty() {
                            start.push(b'\n');
                            if let Ok(length) = node.client.log(&name, 0, start).await {
                                offset = length;
                            }
                        }
                    }
                    while let Some(bytes) = follow.next().await {
                        loop {
                            match node.client.log(&name, offset, bytes.clone()).await {
                                Ok(length) => {
                                    offset = length;
                                    break;
                                }
                                Err(e) if e.transient() => {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                                Err(_) => return,
                            }
                        }
                    }
                }),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
