//! A verify job reaching the environment it verifies. The job's network
//! namespace has loopback only, so the runner listens on `127.0.0.1:PORT`
//! inside it and relays each connection to the environment's router: the one
//! `host:port` the server named, nothing else on the host or beyond.
//!
//! Waits: connecting to the router has [`CONNECT_TIMEOUT`] (action: the job's
//! connection is closed, as a refused one would be); a relayed connection
//! lasts until either side closes it, and at most [`MAX_RELAYED`] are open
//! at once (more wait for one to end). Everything stops with the job.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::api::Reach;
use crate::container::netns;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_RELAYED: usize = 256;

/// The relay of one job; dropping it stops the listener and every relayed
/// connection.
pub struct Relay {
    listener: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Listen on `127.0.0.1:{reach.port}` inside the namespace at `netns` and
/// relay to `reach.target`.
pub async fn open(netns_path: &Path, reach: &Reach) -> std::io::Result<Relay> {
    let socket = netns::socket_in(netns_path).await?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, reach.port)))?;
    let listener = socket.listen(64)?;
    let target = reach.target.clone();
    let slots = Arc::new(Semaphore::new(MAX_RELAYED));
    let listener = tokio::spawn(async move {
        // Relayed connections end with the listener (they are its children).
        let mut relayed = tokio::task::JoinSet::new();
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            relayed.spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await {
                    Ok(Ok(mut outbound)) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%target, error = %e, "verify job: the environment's router refused"),
                    Err(_) => tracing::warn!(%target, "verify job: the environment's router did not answer within {CONNECT_TIMEOUT:?}"),
                }
            });
            // Forget the ones that ended.
            while relayed.try_join_next().is_some() {}
        }
    });
    Ok(Relay { listener })
}
