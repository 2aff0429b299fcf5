//! `slipway node`: join a cluster once, then make this machine run what the
//! server's deploy controller wants: instances (with `crate::node`'s
//! supervisor) and one router per environment (`crate::router`).
//!
//! - `client.rs`: the node protocol's HTTP calls.
//! - `apply.rs`: the desired state onto the supervisor and the routers:
//!   routers first (an instance leaves its table before anything else
//!   happens to it), then starts, then drain-and-stop of what goes.
//! - `report.rs`: the status the server sees, and instances' logs.
//!
//! The last desired state is kept in `<work dir>/desired.json`: a restarted
//! agent serves its routers again at once, before it reaches the server.
//! Architecture invariant: the agent holds nothing an instance needs; killed,
//! it leaves instances running, and a new agent adopts them.

mod apply;
pub mod client;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::agent::credentials::Credentials;
use crate::container::Mapping;
use crate::image::ImageStore;
use crate::layer::LayerCache;
use crate::node::{Supervisor, SupervisorOptions};
use crate::node_protocol::{Desired, JoinRequest};
use crate::router::Router;

use client::NodeClient;

#[derive(Debug, thiserror::Error)]
pub enum NodeAgentError {
    #[error(transparent)]
    Client(#[from] client::NodeClientError),
    #[error(transparent)]
    Credentials(#[from] crate::agent::credentials::CredentialsError),
    #[error(transparent)]
    Supervisor(#[from] crate::node::NodeError),
    #[error(transparent)]
    Cache(#[from] crate::layer::CacheError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca-cert: not PEM certificates: {0}")]
    CaCert(#[source] reqwest::Error),
    #[error("no node token in {0} and no --token to join a cluster with")]
    NotJoined(PathBuf),
}

pub struct NodeConfig {
    pub server: String,
    /// A cluster's join token; used once, when the node has no token yet.
    pub join_token: Option<String>,
    pub name: String,
    pub work_dir: PathBuf,
    /// The node's token, outside `work_dir`.
    pub credentials_dir: PathBuf,
    pub runtime: PathBuf,
    /// `None` runs instances without a user namespace.
    pub mapping: Option<Mapping>,
    /// Where routers listen, as clients reach them.
    pub router_host: String,
    pub router_ports: (u16, u16),
    pub cache_bytes: u64,
    pub ca_certs: Option<Vec<u8>>,
}

/// What an instance is doing besides what the supervisor knows.
#[derive(Debug, Clone)]
enum Task {
    /// Pulling its image and starting.
    Starting,
    /// Could not start; tried again after `retry_at`.
    Failed { reason: String, retry_at: Instant },
    /// Leaving its router, draining, stopping.
    Stopping,
    /// Stopped and removed: reported as gone until the server forgets it.
    Gone,
}

pub(crate) struct Node {
    client: NodeClient,
    supervisor: Supervisor,
    cache: LayerCache,
    images: ImageStore,
    registry_host: String,
    scheme: String,
    ca_certs: Option<Vec<u8>>,
    desired: tokio::sync::watch::Sender<Desired>,
    /// By listen address: unique on the node (two repositories may both
    /// have an app `web` with an environment `dev`).
    routers: tokio::sync::Mutex<HashMap<String, RouterEntry>>,
    /// A desired state has come from the server in this run (not only the
    /// copy on disk): until then nothing unlisted is stopped.
    from_server: std::sync::atomic::AtomicBool,
    tasks: Mutex<HashMap<String, Task>>,
    /// Bumped when `tasks` changes: the reporter sends a status.
    changes: tokio::sync::watch::Sender<u64>,
    work_dir: PathBuf,
}

struct RouterEntry {
    router: Arc<Router>,
    app: String,
    environment: String,
    preview: String,
    table: crate::router::RouteTable,
}

impl Node {
    fn set_task(&self, name: &str, task: Option<Task>) {
        let mut tasks = self.tasks.lock().unwrap();
        match task {
            Some(t) => tasks.insert(name.to_owned(), t),
            None => tasks.remove(name),
        };
        drop(tasks);
        self.changes.send_modify(|n| *n += 1);
    }

    fn task(&self, name: &str) -> Option<Task> {
        self.tasks.lock().unwrap().get(name).cloned()
    }

    /// A registry client for the server's registry.
    fn registry_client(&self) -> oci_client::Client {
        crate::agent::registry_client(&self.scheme, &self.registry_host, self.ca_certs.as_deref())
    }
}

fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> NodeAgentError {
    let path = path.to_owned();
    move |source| NodeAgentError::Io { what, path, source }
}

/// Join if needed, then follow the desired state until `stop` resolves.
/// Stopping leaves every instance running (the next agent adopts them).
pub async fn run(
    config: NodeConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NodeAgentError> {
    std::fs::create_dir_all(&config.work_dir).map_err(io("creating", &config.work_dir))?;
    let credentials = Credentials::open(&config.credentials_dir, &config.work_dir)?;
    let roots = match &config.ca_certs {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(NodeAgentError::CaCert)?,
        None => Vec::new(),
    };
    let anonymous = NodeClient::new(&config.server, &roots);
    let token = match credentials.token()? {
        Some(t) => t,
        None => {
            let join_token = config
                .join_token
                .clone()
                .ok_or_else(|| NodeAgentError::NotJoined(credentials.token_path()))?;
            let request = JoinRequest {
                join_token,
                name: config.name.clone(),
                router_host: config.router_host.clone(),
                router_ports: config.router_ports,
            };
            let joined = join(&anonymous, &request).await?;
            credentials.store(&joined.token)?;
            tracing::info!(node = joined.node_id, cluster = %joined.cluster, "joined");
            joined.token
        }
    };
    let (registry_host, scheme) = crate::agent::server_address(&config.server);
    let cache = LayerCache::open(config.work_dir.join("layers"), config.cache_bytes)?;
    let supervisor = Supervisor::open(
        &config.work_dir.join("supervisor"),
        &config.runtime,
        cache.clone(),
        SupervisorOptions {
            mapping: config.mapping,
            ..Default::default()
        },
    )
    .await?;
    let cached = apply::load_cached(&config.work_dir);
    let node = Arc::new(Node {
        client: anonymous.with_token(token),
        supervisor,
        cache,
        images: ImageStore::open(config.work_dir.join("images"))
            .map_err(io("opening the image store", &config.work_dir))?,
        registry_host,
        scheme,
        ca_certs: config.ca_certs.clone(),
        desired: tokio::sync::watch::channel(cached.unwrap_or_default()).0,
        routers: Default::default(),
        from_server: std::sync::atomic::AtomicBool::new(false),
        tasks: Default::default(),
        changes: tokio::sync::watch::channel(0).0,
        work_dir: config.work_dir.clone(),
    });
    // Serve what was last wanted at once, then follow the server.
    apply::apply(&node).await;
    println!(
        "slipway node {:?} ready: routers on {} ports {}-{}, {} instance(s) adopted",
        config.name,
        config.router_host,
        config.router_ports.0,
        config.router_ports.1,
        node.supervisor.status().len()
    );
    let poller = tokio::spawn(poll(node.clone()));
    let reporter = tokio::spawn(report::run(node.clone()));
    let logs = tokio::spawn(report::ship_logs(node.clone()));
    let mut desired = node.desired.subscribe();
    let mut observed = node.supervisor.subscribe();
    let mut tasks = node.changes.subscribe();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = desired.changed() => {}
            _ = observed.changed() => {}
            _ = tasks.changed() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = &mut stop => break,
        }
        apply::apply(&node).await;
    }
    poller.abort();
    reporter.abort();
    logs.abort();
    tracing::info!("node agent stopping; instances keep running");
    Ok(())
}

async fn join(
    client: &NodeClient,
    request: &JoinRequest,
) -> Result<crate::node_protocol::JoinResponse, NodeAgentError> {
    // Wait: the server may be starting; action after a minute: fail.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.join(request).await {
            Ok(joined) => return Ok(joined),
            Err(e) if e.transient() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "joining failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Long-poll the desired state; keep it on disk and hand it to the loop.
async fn poll(node: Arc<Node>) {
    let mut revision = 0;
    loop {
        match node.client.desired(revision).await {
            Ok(Some(desired)) => {
                revision = desired.revision;
                apply::save_cached(&node.work_dir, &desired);
                node.from_server
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                node.desired.send_replace(desired);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "asking for the desired state failed; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `slipway node-reset`: stop and remove every instance of the node whose
/// work dir is `work_dir` (the agent must not be running). For taking a
/// machine out of service; returns how many instances were stopped.
pub async fn reset(
    work_dir: &std::path::Path,
    runtime: &std::path::Path,
) -> Result<usize, NodeAgentError> {
    let cache = LayerCache::open(work_dir.join("layers"), 10 << 30)?;
    let supervisor = Supervisor::open(
        &work_dir.join("supervisor"),
        runtime,
        cache,
        SupervisorOptions::default(),
    )
    .await?;
    let ids: Vec<String> = supervisor.status().into_iter().map(|s| s.id).collect();
    for id in &ids {
        supervisor.stop(id, Duration::from_secs(5)).await?;
    }
    let _ = std::fs::remove_file(work_dir.join("desired.json"));
    Ok(ids.len())
}
