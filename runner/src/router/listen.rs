//! The listeners: accept, one task per client connection (`client`); on
//! shutdown stop accepting and let connections finish their requests within
//! the grace period.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{client, Shared, Side};

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
                    connections.spawn(client::serve(stream, peer.ip(), shared, side, shutdown));
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
