//! The node protocol: JSON bodies between the server's deploy controller and
//! `slipway node`, kept apart from both sides' domain types. All under
//! `/api/v1/node/`, authenticated with the node's token
//! (`Authorization: Bearer sln_…`), except `join`, which takes the cluster's
//! join token (`slj_…`).
//!
//! - `POST join` [`JoinRequest`] → [`JoinResponse`]
//! - `GET  desired?after=R` → 200 [`Desired`] once the node's revision is
//!   above `R` (at once when it already is), or 204 after the long-poll wait
//! - `POST status` [`NodeStatus`] → 204: what runs, as the node sees it
//! - `POST instances/{name}/log?offset=B` raw bytes of the instance's output
//!   → [`LogAck`]: appended by offset, so a resend never duplicates
//!
//! The server decides, the node does: the desired state lists every instance
//! the node must run or stop and every router with its route table. The node
//! applies a router's table before it stops an instance that left it, and
//! stops an instance only once its router has nothing in flight to it.

use serde::{Deserialize, Serialize};

/// How long `desired` waits for a change before answering 204.
pub const LONG_POLL_SECS: u64 = 25;

#[derive(Serialize, Deserialize)]
pub struct JoinRequest {
    pub join_token: String,
    /// Unique in the cluster; a node joining again under its name replaces
    /// its old token.
    pub name: String,
    /// The host the node's routers listen on, as clients reach them
    /// (`127.0.0.1`, `10.0.0.7`, `node1.example.com`).
    pub router_host: String,
    /// Ports the server may give routers, inclusive.
    pub router_ports: (u16, u16),
}

#[derive(Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: i64,
    pub cluster: String,
    pub token: String,
}

/// Fields a newer server adds are ignored, and fields an older one lacks
/// take their defaults, so an agent reads the desired state it kept on disk
/// across an upgrade.
#[derive(Serialize, Deserialize, Clone, Default)]
#[serde(default)]
pub struct Desired {
    /// Bumped by the server on every change for this node.
    pub revision: i64,
    pub instances: Vec<InstanceSpec>,
    pub routers: Vec<RouterSpec>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct InstanceSpec {
    /// Unique on the node, `[a-z0-9-]`: used in paths and container ids.
    pub name: String,
    pub app: String,
    pub environment: String,
    /// `repository@sha256:…` on the server's registry; never a tag.
    pub image: String,
    pub port: u16,
    pub health: String,
    /// Variables besides `PORT`, secrets included.
    pub env: Vec<(String, String)>,
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    /// `run`, or `stop`: leave the router, drain, stop, remove.
    pub desired: InstanceGoal,
    /// A pull-only registry token for `image`'s repository.
    pub registry_token: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum InstanceGoal {
    Run,
    Stop,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct RouterSpec {
    pub app: String,
    pub environment: String,
    /// Where the router listens (`host:port`).
    pub listen: String,
    /// Where the preview set answers (blue/green's new set before the swap).
    pub preview: String,
    /// Instance names taking traffic.
    pub live: Vec<String>,
    /// Instance names on the preview address.
    pub preview_set: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Default, Debug)]
pub struct NodeStatus {
    /// The desired revision this status reflects.
    pub revision: i64,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub state: InstanceState,
    pub container_id: Option<String>,
    pub restarts: u32,
    /// The last health check: `200`, `answered 500`, `connection refused`.
    pub health: Option<String>,
    /// The last lines of the instance's output, for reasons a person can act on.
    pub log_tail: Vec<String>,
    /// Requests its router has in flight to it.
    pub in_flight: u64,
    /// Where its router's current table puts it: `live`, `preview` or `none`.
    #[serde(default = "no_route")]
    pub route: String,
}

fn no_route() -> String {
    "none".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Pulling its image or starting.
    Starting,
    Ready,
    /// Was ready, fails its health checks now.
    Unhealthy,
    /// Exited; restarted with backoff while its goal is `run`.
    Crashed,
    /// Leaving: draining or stopping.
    Stopping,
    /// Stopped and removed (reported once, then dropped from the status).
    Gone,
    /// Could not be started at all (image pull, bad spec); `health` says why.
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Unhealthy => "unhealthy",
            InstanceState::Crashed => "crashed",
            InstanceState::Stopping => "stopping",
            InstanceState::Gone => "gone",
            InstanceState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<InstanceState> {
        Some(match s {
            "starting" => InstanceState::Starting,
            "ready" => InstanceState::Ready,
            "unhealthy" => InstanceState::Unhealthy,
            "crashed" => InstanceState::Crashed,
            "stopping" => InstanceState::Stopping,
            "gone" => InstanceState::Gone,
            "failed" => InstanceState::Failed,
            _ => return None,
        })
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct LogAck {
    /// Bytes of the instance's log the server holds.
    pub length: u64,
}

/// A secret in a `Debug` form: whether it is set, never what it is.
fn redacted(value: &str) -> &'static str {
    if value.is_empty() {
        "\"\""
    } else {
        "<redacted>"
    }
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("join_token", &redacted(&self.join_token))
            .field("name", &self.name)
            .field("router_host", &self.router_host)
            .field("router_ports", &self.router_ports)
            .finish()
    }
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("node_id", &self.node_id)
            .field("cluster", &self.cluster)
            .field("token", &redacted(&self.token))
            .finish()
    }
}

impl std::fmt::Debug for Desired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desired")
            .field("revision", &self.revision)
            .field("instances", &self.instances)
            .field("routers", &self.routers)
            .finish()
    }
}

/// Variables show their names only: any of them may be a secret.
impl std::fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("InstanceSpec")
            .field("name", &self.name)
            .field("app", &self.app)
            .field("environment", &self.environment)
            .field("image", &self.image)
            .field("port", &self.port)
            .field("health", &self.health)
            .field("env", &env)
            .field("memory_bytes", &self.memory_bytes)
            .field("cpus", &self.cpus)
            .field("desired", &self.desired)
            .field("registry_token", &redacted(&self.registry_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let spec = InstanceSpec {
            name: "web-dev-1".into(),
            app: "web".into(),
            environment: "dev".into(),
            image: "demo/web@sha256:00".into(),
            port: 8080,
            health: "/healthz".into(),
            env: vec![("DB_PASSWORD".into(), "hunter2-secret".into())],
            memory_bytes: None,
            cpus: None,
            desired: InstanceGoal::Run,
            registry_token: "eyJ-registry-token".into(),
        };
        let text = format!(
            "{:?}",
            Desired {
                revision: 1,
                instances: vec![spec],
                routers: vec![]
            }
        );
        assert!(text.contains("DB_PASSWORD"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("eyJ"), "{text}");
        let join = JoinRequest {
            join_token: "slj_abc".into(),
            name: "n1".into(),
            router_host: "127.0.0.1".into(),
            router_ports: (1, 2),
        };
        assert!(!format!("{join:?}").contains("slj_abc"));
    }
}
