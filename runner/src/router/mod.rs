//! The router of one (app, environment): an HTTP/1.1 listener (and a preview
//! listener) in front of the environment's instances, each reached inside its
//! own network namespace.
//!
//! HTTP/1.1 is spoken by the router itself (`head`, `body`: `httparse` for
//! the heads): a client connection's task (`client`) reads a request head,
//! writes it again for the instance (`headers`: hop-by-hop out,
//! `X-Forwarded-*` in), and hands it to the pipeline (`proxy`): one snapshot
//! of the route table, pick an instance (`pick`), a pooled or new connection
//! (`upstream`), then the exchange (`exchange`: the request body out and the
//! response back, streamed, both at once), switching protocols when asked
//! (`upgrade`). `metrics` counts per instance. The table is an immutable
//! value swapped atomically (`arc-swap`); no lock is held across a request.

mod body;
mod client;
mod exchange;
mod head;
mod headers;
mod listen;
mod metrics;
mod page;
mod pick;
mod proxy;
mod table;
mod upgrade;
mod upstream;
mod workers;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use table::{Backend, RouteTable};

use metrics::RouterMetrics;
use page::Pages;
use table::Table;
use upstream::Upstream;

/// Where a router listens and how long it waits.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Metrics label `app`, and named on the router's own pages.
    pub app: String,
    /// Metrics label `env`.
    pub env: String,
    /// The main listener: routes to the live set.
    pub listen: SocketAddr,
    /// The preview listener: routes to the preview set (blue/green's next set).
    pub preview: Option<SocketAddr>,
    /// Connecting to an instance; past it the request goes to another one.
    pub connect_timeout: Duration,
    /// A pooled connection idle longer than this is closed rather than
    /// reused: shorter than common servers' keep-alive timeouts (Node 5 s,
    /// gunicorn 2 s), so the router is not sending on a connection the
    /// instance is closing at that moment.
    pub upstream_idle_timeout: Duration,
    /// From the request sent to the response head; past it, 504.
    pub response_head_timeout: Duration,
    /// A body that moves nothing for this long fails (each read and each
    /// write of a request or response body, and of the router's own pages):
    /// both connections are closed and the request leaves the in-flight
    /// count.
    pub response_idle_timeout: Duration,
    /// A client's request head must arrive within this (after connecting or
    /// between keep-alive requests), else the connection is closed.
    pub header_read_timeout: Duration,
    /// `shutdown` lets open requests finish this long, then cuts them.
    pub shutdown_grace: Duration,
    /// 0: serve on the caller's runtime. N: on N threads of the router's
    /// own, each with its own listeners and upstream pools (a busy
    /// environment; the benchmark runs one per core).
    pub threads: usize,
}

impl RouterConfig {
    pub fn new(app: impl Into<String>, env: impl Into<String>, listen: SocketAddr) -> Self {
        RouterConfig {
            app: app.into(),
            env: env.into(),
            listen,
            preview: None,
            connect_timeout: Duration::from_secs(5),
            upstream_idle_timeout: Duration::from_secs(1),
            response_head_timeout: Duration::from_secs(60),
            response_idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            threads: 0,
        }
    }
}

/// `drain` waited past its deadline with requests still in flight.
#[derive(Debug, thiserror::Error)]
#[error("instance {instance} still had {in_flight} request(s) in flight after {deadline:?}")]
pub struct DrainTimedOut {
    pub instance: String,
    pub in_flight: u64,
    pub deadline: Duration,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    Live,
    Preview,
}

/// What every request reads.
pub(crate) struct Shared {
    config: RouterConfig,
    table: ArcSwap<Table>,
    /// Every instance seen in a table and not drained since, by id. Only
    /// `set_table`, `drain` and `render_metrics` take this lock.
    known: Mutex<HashMap<String, Arc<Upstream>>>,
    pages: Pages,
    metrics: RouterMetrics,
}

impl Table {
    fn backends(&self, side: Side) -> &[Arc<Upstream>] {
        match side {
            Side::Live => &self.live,
            Side::Preview => &self.preview,
        }
    }
}

pub struct Router {
    shared: Arc<Shared>,
    local: SocketAddr,
    preview: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    running: workers::Running,
}

impl Router {
    /// Bind the listeners and start serving, with an empty table (503).
    pub async fn start(config: RouterConfig) -> io::Result<Router> {
        let copies = config.threads.max(1);
        let live = workers::bind(config.listen, copies)?;
        let preview = match config.preview {
            Some(addr) => workers::bind(addr, copies)?,
            None => Vec::new(),
        };
        let local = live[0].local_addr()?;
        let preview_addr = preview.first().map(|l| l.local_addr()).transpose()?;
        let threads = config.threads;
        let shared = Arc::new(Shared {
            pages: Pages::new(&config.app, &config.env),
            config,
            table: ArcSwap::from_pointee(Table::empty()),
            known: Mutex::new(HashMap::new()),
            metrics: RouterMetrics::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let running = workers::start(&shared, threads, live, preview, &stopped)?;
        Ok(Router {
            shared,
            local,
            preview: preview_addr,
            stop,
            running,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn preview_addr(&self) -> Option<SocketAddr> {
        self.preview
    }

    /// Route to `table` from now on: one atomic swap. A request already
    /// routed keeps its instance; instances left out finish their requests.
    pub fn set_table(&self, table: RouteTable) {
        let mut known = self.shared.known.lock().unwrap_or_else(|e| e.into_inner());
        let pools = self.shared.config.threads.max(1);
        let resolved = Table::resolve(table, &mut known, pools);
        self.shared.table.store(Arc::new(resolved));
    }

    /// Requests in flight to an instance (0 for one the router does not know).
    pub fn in_flight(&self, backend_id: &str) -> u64 {
        self.upstream(backend_id).map_or(0, |u| u.in_flight())
    }

    /// Take an instance out of service, once it has left the table: no new
    /// request goes to it (even from an older snapshot), then wait until
    /// nothing is in flight to it and close its pooled keep-alive
    /// connections. Deadline: `deadline`; action: `DrainTimedOut` (the caller
    /// decides; requests still running are not cut). Putting it back in a
    /// table serves it again. An instance the router does not know is
    /// drained already.
    pub async fn drain(&self, backend_id: &str, deadline: Duration) -> Result<(), DrainTimedOut> {
        let Some(upstream) = self.upstream(backend_id) else {
            return Ok(());
        };
        upstream.retire();
        if tokio::time::timeout(deadline, upstream.until_idle())
            .await
            .is_err()
        {
            return Err(DrainTimedOut {
                instance: backend_id.to_owned(),
                in_flight: upstream.in_flight(),
                deadline,
            });
        }
        upstream.close_idle();
        let mut known = self.shared.known.lock().unwrap_or_else(|e| e.into_inner());
        let table = self.shared.table.load();
        if !table.contains(backend_id)
            && known
                .get(backend_id)
                .is_some_and(|u| Arc::ptr_eq(u, &upstream))
        {
            // Forget it: its namespace descriptor is closed with it.
            known.remove(backend_id);
        }
        Ok(())
    }

    /// Prometheus text: per instance (labels app, env, instance, version)
    /// requests, 5xx, connect errors, in flight and the latency histogram;
    /// and the requests the router answered itself.
    pub fn render_metrics(&self, out: &mut String) {
        let mut upstreams: Vec<Arc<Upstream>> = self
            .shared
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        upstreams.sort_by(|a, b| a.id.cmp(&b.id));
        let series: Vec<metrics::Series> = upstreams
            .iter()
            .map(|u| metrics::Series {
                instance: &u.id,
                version: &u.version,
                in_flight: u.in_flight(),
                metrics: &u.metrics,
            })
            .collect();
        let config = &self.shared.config;
        metrics::render(out, &config.app, &config.env, &series, &self.shared.metrics);
    }

    /// Stop accepting, let open requests finish within the shutdown grace,
    /// close every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.running.join().await;
        self.shared.table.store(Arc::new(Table::empty()));
        for upstream in self
            .shared
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            upstream.1.retire();
        }
    }

    fn upstream(&self, id: &str) -> Option<Arc<Upstream>> {
        self.shared
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}
