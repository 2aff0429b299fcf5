//! One instance as the router sees it: how to reach it, what is in flight to
//! it, and its pool of idle keep-alive connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Notify;

use super::body::READ_SIZE;
use super::metrics::UpstreamMetrics;
use super::table::Backend;
use crate::container::netns::Namespace;

/// A connection to an instance, ready for one request, with what was read
/// from it and not used yet (nothing, between exchanges).
pub(super) struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection can carry a request: the instance has not
    /// closed it and has sent nothing unasked. Costs no system call unless
    /// the reactor saw it readable.
    fn still_open(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Idle connections, the most recently returned last, with when.
type Pool = Mutex<Vec<(Conn, Instant)>>;

/// Idle connections kept per instance; more are closed when returned.
const MAX_IDLE: usize = 1024;

/// How an instance is reached.
enum Reach {
    Host,
    Namespace(Namespace),
    /// Its namespace could not be opened when it entered the table.
    Unreachable(String),
}

pub(super) struct Upstream {
    pub id: String,
    pub version: String,
    backend: Backend,
    reach: Reach,
    in_flight: AtomicU64,
    /// Woken when `in_flight` drops to zero.
    idle: Notify,
    /// Set by `drain`: no new request picks it, no connection returns to the pool.
    retired: AtomicBool,
    /// Idle connections per router thread (`workers::current`).
    pools: Box<[Pool]>,
    pub metrics: UpstreamMetrics,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("connecting to instance {id} (port {port}): {source}")]
    Io {
        id: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("connecting to instance {id} (port {port}): no answer within {timeout:?}")]
    TimedOut {
        id: String,
        port: u16,
        timeout: Duration,
    },
    #[error("instance {id}: opening its network namespace failed: {reason}")]
    Unreachable { id: String, reason: String },
}

impl Upstream {
    pub fn new(backend: Backend, pools: usize) -> Upstream {
        let reach = match &backend.netns {
            None => Reach::Host,
            Some(path) => match Namespace::open(path) {
                Ok(namespace) => Reach::Namespace(namespace),
                Err(e) => Reach::Unreachable(format!("{}: {e}", path.display())),
            },
        };
        Upstream {
            id: backend.id.clone(),
            version: backend.version.clone(),
            backend,
            reach,
            in_flight: AtomicU64::new(0),
            idle: Notify::new(),
            retired: AtomicBool::new(false),
            pools: (0..pools.max(1)).map(|_| Mutex::default()).collect(),
            metrics: UpstreamMetrics::default(),
        }
    }

    /// Whether this state stands for `backend` (same id, same address).
    pub fn serves(&self, backend: &Backend) -> bool {
        self.backend == *backend
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Back in a table after a drain: serve again.
    pub fn reinstate(&self) {
        self.retired.store(false, Ordering::SeqCst);
    }

    /// Out of service: pooled connections closed, none kept from now on.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        self.close_idle();
    }

    pub fn close_idle(&self) {
        for pool in &self.pools {
            let idle = std::mem::take(&mut *pool.lock().unwrap_or_else(|e| e.into_inner()));
            drop(idle);
        }
    }

    /// Resolves once nothing is in flight to this instance.
    pub async fn until_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A connection ready for a request, and whether it was pooled: the most
    /// recently used idle one that is still open and was idle for less than
    /// `idle_timeout`, else a new one.
    pub async fn checkout(
        &self,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<(Conn, bool), ConnectError> {
        loop {
            let idle = {
                let mut pool = self.pool().lock().unwrap_or_else(|e| e.into_inner());
                match pool.pop() {
                    // The instance may be closing it; the ones below are older.
                    Some((_, since)) if since.elapsed() > idle_timeout => {
                        pool.clear();
                        None
                    }
                    idle => idle,
                }
            };
            let Some((conn, _)) = idle else { break };
            if conn.still_open() {
                return Ok((conn, true));
            }
        }
        Ok((self.connect(connect_timeout).await?, false))
    }

    /// This thread's pool.
    fn pool(&self) -> &Pool {
        &self.pools[super::workers::current() % self.pools.len()]
    }

    /// Keep `conn` for a later request (it carried a complete exchange and
    /// holds nothing unread).
    pub fn give_back(&self, conn: Conn) {
        if self.is_retired() {
            return;
        }
        let mut pool = self.pool().lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < MAX_IDLE {
            pool.push((conn, Instant::now()));
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<Conn, ConnectError> {
        let port = self.backend.port;
        let io_error = |source| ConnectError::Io {
            id: self.id.clone(),
            port,
            source,
        };
        let namespace = match &self.reach {
            Reach::Host => None,
            Reach::Namespace(namespace) => Some(namespace),
            Reach::Unreachable(reason) => {
                return Err(ConnectError::Unreachable {
                    id: self.id.clone(),
                    reason: reason.clone(),
                })
            }
        };
        let stream = async {
            let socket = match namespace {
                None => TcpSocket::new_v4()?,
                Some(namespace) => namespace.socket().await?,
            };
            socket
                .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
        };
        // Deadline: the connect timeout; action: this attempt fails and the
        // request is tried on another instance.
        let stream: TcpStream = tokio::time::timeout(timeout, stream)
            .await
            .map_err(|_| ConnectError::TimedOut {
                id: self.id.clone(),
                port,
                timeout,
            })?
            .map_err(io_error)?;
        stream.set_nodelay(true).map_err(io_error)?;
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
        })
    }
}

/// Counts one request in flight to an upstream for as long as it lives (the
/// response body, or an upgraded connection, holds it).
pub(super) struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn new(upstream: Arc<Upstream>) -> InFlight {
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(upstream)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
