//! The accept loop: every connection the server takes, over plain TCP or TLS,
//! served by hyper (HTTP/1.1 and HTTP/2) under the caps and deadlines of
//! [`connections`], and drained on shutdown.
//!
//! Architecture invariant: a client that sends nothing, or a request head
//! byte by byte, holds one place for at most `http.header_read_timeout`, and
//! never more than `http.max_connections_per_ip` places; `/healthz` from
//! another address still gets one. A request body that stalls holds its
//! place for at most `http.body_idle_timeout` after its last data ([`body`]).
//! Otherwise bodies (uploads, downloads, SSE) have no deadline here: only
//! pauses count, not their length.
//!
//! Per connection, memory is bounded too: an HTTP/1 head fits in
//! [`MAX_HEAD`] (else 431), an HTTP/2 connection runs at most
//! [`H2_MAX_STREAMS`] requests at once, each head within [`MAX_HEAD`].

pub mod body;
pub mod connections;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tower::ServiceExt;

use connections::{Connections, Handle, Limits};

/// How often idle connections are checked against their deadlines.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Descriptors kept free for everything but connections: the database, blob
/// and log files, git, child processes.
const FD_RESERVE: u64 = 256;
/// After a failed `accept` (out of descriptors, say), wait this long before
/// the next one rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// HTTP/2 pings an idle peer this often and drops it if no answer comes
/// within `H2_PING_TIMEOUT`.
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest request head (request line and headers) read. Our own largest
/// legitimate heads are a few KiB: a registry bearer token (a JWT whose
/// `access` list grows with a job's pull allowlist), a session and a login
/// cookie, an API token. 64 KiB leaves room for proxies' headers and big
/// allowlists; a bigger HTTP/1 head gets 431. hyper's HTTP/1 buffer cannot
/// be set below 8 KiB.
const MAX_HEAD: usize = 64 * 1024;
/// Requests in progress at once on one HTTP/2 connection (hyper's default is
/// 200). Streams are not counted against the connection caps, so this bounds
/// what one connection can hold: with `MAX_HEAD` and the 1 MiB flow-control
/// window, each stream's buffers stay small, and a stalled body on any of
/// them still ends after `http.body_idle_timeout`.
const H2_MAX_STREAMS: u32 = 64;

/// Raise the soft open-file limit to the hard one and return the connection
/// cap that fits in it: `wanted`, or the limit less [`FD_RESERVE`] if lower.
pub fn fit_to_fd_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let room = soft.saturating_sub(FD_RESERVE).max(16);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serve `router` on `listener` until `shutdown` resolves; then stop
/// accepting, close idle connections, let requests in flight finish, and
/// return once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    connections: Arc<Connections>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = connections.limits();
    let builder = Arc::new(hyper_builder(limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` ends when all are gone.
    let (alive_tx, mut alive_rx) = mpsc::channel::<Infallible>(1);
    let sweeper = tokio::spawn({
        let connections = connections.clone();
        async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tick.tick().await;
                connections.sweep();
            }
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Refused: closed at once (the caps log why, rate-limited).
        let Ok((handle, closed)) = connections.admit(peer.ip()) else {
            continue;
        };
        // No Nagle: a response written as headers then body would otherwise
        // wait for the client's delayed ACK (~40 ms) before the body leaves.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            tls.clone(),
            builder.clone(),
            router.clone(),
            handle,
            closed,
            stop_rx.clone(),
            alive_tx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    connections.close_idle();
    drop(alive_tx);
    let _ = alive_rx.recv().await;
    sweeper.abort();
}

fn hyper_builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Runs from the first byte of a head... and while waiting for the
        // next request on a kept-alive connection.
        .header_read_timeout(limits.first_request)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_EVERY)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD as u32);
    builder
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: axum::Router,
    handle: Handle,
    closed: oneshot::Receiver<()>,
    mut stop: watch::Receiver<bool>,
    _alive: mpsc::Sender<Infallible>,
) {
    let handle = Arc::new(handle);
    let serve = async {
        match tls {
            None => serve_io(tcp, &builder, router, handle.clone(), &mut stop).await,
            Some(acceptor) => match acceptor.accept(tcp).await {
                Ok(stream) => serve_io(stream, &builder, router, handle.clone(), &mut stop).await,
                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
            },
        }
    };
    // `closed` fires when the caps or a deadline close this (idle)
    // connection: dropping `serve` closes the socket.
    tokio::select! {
        () = serve => {}
        _ = closed => {}
    }
}

async fn serve_io<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    router: axum::Router,
    handle: Arc<Handle>,
    stop: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_idle = handle.limits().body_idle;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        // In flight from the head until the response body is dropped, which
        // hyper does once it has sent the body (or the client went away).
        let in_flight = Arc::new(handle.request());
        let router = router.clone();
        // A body that stalls fails after `body_idle`: the handler answers
        // with an error and the request stops holding this connection.
        let request = request
            .map(|incoming| body::IdleTimeout::new(incoming, body_idle, Some(in_flight.clone())));
        async move {
            let response = match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &in_flight;
                    frame
                }))
            }))
        }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
