//! `slipway runner`: register with the server once, then lease jobs over HTTP
//! long-polls and run them with the execution engine, up to `capacity` at a
//! time. The runner keeps no state the server needs: a job it loses (crash,
//! network) comes back to the queue when its lease runs out.
//!
//! - `client.rs`: the HTTP calls (`crate::api` wire types), with retries.
//! - `job.rs`: one job: source, services, steps, heartbeat, reports.
//! - `artifacts.rs`: a job's artifacts packed by descriptor, never through a
//!   symlink.
//! - `logship.rs`: a step's output to the server, by offset, buffered while the
//!   server is unreachable.
//! - `mask.rs`: secrets hidden in output, even split across chunks.
//! - `guard.rs`: the process that removes a killed runner's containers.
//! - `credentials.rs`: the runner's token, outside the work dir.

pub mod artifacts;
mod build;
mod client;
pub mod credentials;
pub mod guard;
mod job;
mod logship;
mod mask;
mod reach;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{Client, ClientError};
pub use mask::Masker;

use crate::api::RegisterRequest;
use crate::container::{Engine, EngineError, Mapping};
use crate::image::ImageStore;
use crate::layer::{CacheError, LayerCache};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    #[error("--ca-cert: not PEM certificates: {0}")]
    CaCert(#[source] reqwest::Error),
    #[error("no runner token in {0} and no --registration-token to register with")]
    NotRegistered(PathBuf),
}

pub struct AgentConfig {
    /// The server's URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    /// Used once, when the runner has no token in `credentials_dir` yet.
    pub registration_token: Option<String>,
    pub name: String,
    pub labels: Vec<String>,
    pub capacity: u32,
    pub work_dir: PathBuf,
    /// The runner's token: outside `work_dir` (see `credentials.rs`).
    pub credentials_dir: PathBuf,
    pub runtime: PathBuf,
    /// `None` runs steps without a user namespace.
    pub mapping: Option<Mapping>,
    pub cache_bytes: u64,
    /// PEM certificates trusted besides the system's (`--ca-cert`), for the
    /// server and its registry.
    pub ca_certs: Option<Vec<u8>>,
}

/// What every job of this runner shares.
pub struct Agent {
    client: Client,
    engine: Arc<Engine>,
    cache: LayerCache,
    images: ImageStore,
    /// `host:port` of the server's registry (image references without a host).
    registry_host: String,
    /// `http` or `https`: how the server (and its registry) is reached.
    scheme: String,
    work_dir: PathBuf,
    mapping: Option<Mapping>,
    /// `--ca-cert`, for registry clients.
    ca_certs: Option<Vec<u8>>,
}

impl Agent {
    /// A registry client for one job's credentials. oci-client keeps the
    /// first credentials it is given per registry, so one shared client
    /// would go on using the first lease's token after it expires.
    fn registry_client(&self) -> oci_client::Client {
        registry_client(&self.scheme, &self.registry_host, self.ca_certs.as_deref())
    }
}

/// A registry client for the server's registry at `host` (`host:port`),
/// reached over `scheme` as the server is, trusting `ca_certs` (PEM) besides
/// the system's. Shared by the runner and the node agent.
pub fn registry_client(scheme: &str, host: &str, ca_certs: Option<&[u8]>) -> oci_client::Client {
    let protocol = if scheme == "https" {
        oci_client::client::ClientProtocol::Https
    } else {
        oci_client::client::ClientProtocol::HttpsExcept(vec![host.to_owned()])
    };
    let extra_root_certificates = ca_certs
        .iter()
        .map(|pem| oci_client::client::Certificate {
            encoding: oci_client::client::CertificateEncoding::Pem,
            data: pem.to_vec(),
        })
        .collect();
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol,
        extra_root_certificates,
        ..Default::default()
    })
}

/// The `host:port` and the scheme of a server URL (`https://ci.example:8443/`).
pub fn server_address(server: &str) -> (String, String) {
    let host = server
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(server)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let scheme = server.split("://").next().unwrap_or("http").to_owned();
    (host, scheme)
}

fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_owned();
    move |source| AgentError::Io { what, path, source }
}

/// Register if needed, then run jobs until `stop` resolves; jobs in progress
/// are finished first.
pub async fn run(
    config: AgentConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.work_dir).map_err(io("creating", &config.work_dir))?;
    let credentials = credentials::Credentials::open(&config.credentials_dir, &config.work_dir)?;
    let roots = match &config.ca_certs {
        Some(pem) => reqwest::Certificate::from_pem_bundle(pem).map_err(AgentError::CaCert)?,
        None => Vec::new(),
    };
    let anonymous = Client::new(&config.server, &roots);
    let token = match credentials.token()? {
        Some(t) => t,
        None => {
            let registration_token = config
                .registration_token
                .clone()
                .ok_or_else(|| AgentError::NotRegistered(credentials.token_path()))?;
            let request = RegisterRequest {
                registration_token,
                name: config.name.clone(),
                labels: config.labels.clone(),
                capacity: config.capacity,
            };
            let registered =
                client::retry(Duration::from_secs(60), || anonymous.register(&request)).await?;
            credentials.store(&registered.token)?;
            tracing::info!(runner = registered.runner_id, "registered");
            registered.token
        }
    };
    let (registry_host, scheme) = server_address(&config.server);
    let agent = Arc::new(Agent {
        client: anonymous.with_token(token),
        engine: Arc::new(Engine::open(
            config.work_dir.join("engine"),
            &config.runtime,
        )?),
        cache: LayerCache::open(config.work_dir.join("layers"), config.cache_bytes)?,
        images: ImageStore::open(config.work_dir.join("images"))
            .map_err(io("opening the image store", &config.work_dir))?,
        registry_host,
        scheme,
        work_dir: config.work_dir.clone(),
        mapping: config.mapping,
        ca_certs: config.ca_certs.clone(),
    });
    let _ = std::fs::remove_dir_all(config.work_dir.join("jobs"));
    println!(
        "slipway runner {:?} ready: labels [{}], capacity {}",
        config.name,
        config.labels.join(", "),
        config.capacity
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(config.capacity as usize));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            () = &mut stop => break,
        };
        let free = slots.available_permits() as u32 + 1;
        let leased = tokio::select! {
            l = agent.client.lease(free, Duration::from_secs(25)) => l,
            () = &mut stop => break,
        };
        match leased {
            Ok(Some(lease)) => {
                tracing::info!(job = lease.job_id, attempt = lease.attempt, name = %lease.context.job, "running a job");
                let agent = agent.clone();
                tokio::spawn(async move {
                    job::run(agent, lease).await;
                    drop(permit);
                });
            }
            Ok(None) => drop(permit),
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "asking for work failed; trying again shortly");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // Let jobs in progress finish.
    let _ = slots.acquire_many(config.capacity).await;
    Ok(())
}
