//! The listeners: accept, serve HTTP/1.1 with keep-alive, hand each request
//! to the proxy pipeline; on shutdown stop accepting and let connections
//! finish their requests within the grace period.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{proxy, Shared, Side};

/// After a failed accept (out of descriptors, say), wait this long before
/// the next, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    side: Side,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(serve(stream, peer.ip(), shared, side, shutdown));
                }
                Err(e) => {
                    tracing::warn!(app = %shared.config.app, env = %shared.config.env, "accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => break,
        }
    }
    drop(listener);
    // Deadline: the shutdown grace; action: the connections still open are
    // cut.
    let grace = shared.config.shutdown_grace;
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(app = %shared.config.app, env = %shared.config.env, open = connections.len(), "connections still open after {grace:?}: closing them");
        connections.shutdown().await;
    }
}

async fn serve(
    stream: TcpStream,
    peer: std::net::IpAddr,
    shared: Arc<Shared>,
    side: Side,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let client = Arc::new(
        HeaderValue::from_str(&peer.to_string()).expect("an IP address is a header value"),
    );
    let header_read_timeout = shared.config.header_read_timeout;
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let client = client.clone();
        async move { Ok::<_, Infallible>(proxy::handle(&shared, side, &client, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
