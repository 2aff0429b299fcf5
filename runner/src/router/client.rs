//! One client connection: read a request head (deadline: the header read
//! timeout), refuse a malformed one with a 400, hand a good one to the
//! proxy pipeline, and go round again while both sides keep the connection
//! alive. On shutdown, a connection waiting for its next request closes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::READ_SIZE;
use super::head::{self, BadRequest, Request};
use super::page::Page;
use super::{proxy, Shared, Side};

/// After refusing a request, how long the router reads (and drops) what
/// the client still sends before closing, so that the refusal is not lost
/// to a reset; and how much it reads at most.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// A client's connection and its buffers (reused for every request).
pub(super) struct Client {
    pub stream: TcpStream,
    /// Read from the client, not used yet (a pipelined request, say).
    pub buf: BytesMut,
    /// To the instance: the request head, then body bytes.
    pub up: Vec<u8>,
    /// To the client: response heads and body bytes.
    pub down: Vec<u8>,
    /// The client's address, for `X-Forwarded-For`.
    addr: String,
}

pub(super) async fn serve(
    stream: TcpStream,
    peer: std::net::IpAddr,
    shared: Arc<Shared>,
    side: Side,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut client = Client {
        stream,
        buf: BytesMut::with_capacity(READ_SIZE),
        up: Vec::with_capacity(1024),
        down: Vec::with_capacity(1024),
        addr: peer.to_string(),
    };
    loop {
        client.up.clear();
        client.down.clear();
        let request = match next_request(&mut client, &shared, &mut shutdown).await {
            Ok(Some(request)) => request,
            Ok(None) => return,
            Err(bad) => {
                shared
                    .metrics
                    .bad_request
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(app = %shared.config.app, env = %shared.config.env, "refused a request: {bad}");
                shared
                    .pages
                    .write(Page::BadRequest(&bad), true, &mut client.down);
                let _ = tokio::time::timeout(
                    shared.config.response_idle_timeout,
                    client.stream.write_all(&client.down),
                )
                .await;
                linger(&mut client).await;
                return;
            }
        };
        client.buf.advance(request.len);
        let closing = *shutdown.borrow();
        if !proxy::handle(&shared, side, &mut client, &request, closing).await || closing {
            return;
        }
    }
}

/// The next request head: `Ok(None)` when the client closes, says nothing
/// for the header read timeout, or the router shuts down before a request
/// began. Deadline: the header read timeout, from when the router starts
/// waiting; action: the connection closes.
async fn next_request(
    client: &mut Client,
    shared: &Shared,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Request>, BadRequest> {
    let deadline = tokio::time::Instant::now() + shared.config.header_read_timeout;
    loop {
        if !client.buf.is_empty() {
            if let Some(request) =
                head::request(&client.buf, client.addr.as_bytes(), &mut client.up)?
            {
                return Ok(Some(request));
            }
        }
        client.buf.reserve(READ_SIZE);
        let waiting = client.buf.is_empty();
        tokio::select! {
            read = tokio::time::timeout_at(deadline, client.stream.read_buf(&mut client.buf)) => match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
                Err(_) => {
                    tracing::debug!(app = %shared.config.app, env = %shared.config.env, "no request head within {:?}: closing", shared.config.header_read_timeout);
                    return Ok(None);
                }
            },
            _ = shutdown.wait_for(|stop| *stop), if waiting => return Ok(None),
        }
    }
}

/// Close after a refusal: no more writes, then read and drop what the
/// client still sends until it closes. Deadline: `LINGER` (or
/// `LINGER_BYTES` read); action: the connection closes anyway.
pub(super) async fn linger(client: &mut Client) {
    let _ = client.stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut read = 0;
        while read < LINGER_BYTES {
            // The connection's own buffer: the task's future stays small.
            client.buf.clear();
            client.buf.reserve(READ_SIZE);
            match client.stream.read_buf(&mut client.buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
