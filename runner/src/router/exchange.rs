//! One request and its response between a client's connection and an
//! instance's, inside the client connection's task: the request (head,
//! then its body as it arrives) goes out while the response head is
//! awaited and its body streamed back, both at once, so an instance may
//! answer before it has read the whole request. No task, channel or lock
//! between the two sides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Buf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::{relay, BadBody, Decoder, RelayError, READ_SIZE};
use super::client::Client;
use super::head::{self, BadResponse, Framing, Request};
use super::metrics::UpstreamMetrics;
use super::upstream::Conn;
use super::RouterConfig;

/// After a complete response, how long the rest of its request body may
/// take to arrive.
const REST_OF_BODY: Duration = Duration::from_secs(5);

/// How an exchange ended.
pub(super) enum Outcome {
    /// The response reached the client.
    Answered {
        /// The client's connection can carry another request.
        client_open: bool,
        /// The instance's connection can carry another request.
        reusable: bool,
    },
    /// A pooled connection was closed by the instance before any answer,
    /// and the request may go again.
    Retry,
    /// The instance switched protocols; the client has its `101`.
    Switched,
    /// No response head came: the client gets a 502 or 504 page.
    NoAnswer {
        why: NoHead,
        timed_out: bool,
        client_open: bool,
    },
    /// The request body is malformed and nothing was answered yet: 400.
    BadBody(BadBody),
    /// Either side broke off after the response began, or the client went
    /// away: both connections close.
    Cut(String),
}

/// Why no response head came.
#[derive(Debug, thiserror::Error)]
pub(super) enum NoHead {
    #[error("the instance closed the connection without answering")]
    Closed,
    #[error("reading the instance's answer: {0}")]
    Io(std::io::Error),
    #[error("the instance's answer is not valid HTTP: {0}")]
    Bad(BadResponse),
    #[error("no response head within {0:?}")]
    Timeout(Duration),
}

/// What the response side ended with.
enum Received {
    Complete {
        /// The instance's connection can carry another request (as far as
        /// the response goes).
        reusable: bool,
        client_close: bool,
    },
    Switched,
    NoHead {
        why: NoHead,
        any_byte: bool,
    },
    /// Broken after the head went to the client, or the client is gone.
    Cut(String),
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn exchange(
    config: &RouterConfig,
    request: &Request,
    client: &mut Client,
    conn: &mut Conn,
    reused: bool,
    closing: bool,
    metrics: &UpstreamMetrics,
    started: Instant,
) -> Outcome {
    let idle = config.response_idle_timeout;
    let Client {
        stream,
        buf,
        up,
        down,
        ..
    } = client;
    let (mut client_read, mut client_write) = stream.split();
    let (mut up_read, mut up_write) = conn.stream.split();
    let up_buf = &mut conn.buf;
    // Set once anything of the response went to the client.
    let responded = AtomicBool::new(false);

    // The request side: the head, then the body as the client sends it.
    // Returns whether all of it reached the instance. Deadline: the
    // response idle timeout for each read and write.
    let send = async {
        if !request.framing.has_body() {
            // The head stays in `up`: a retry sends it again.
            return match tokio::time::timeout(idle, up_write.write_all(up)).await {
                Ok(result) => Ok(result.is_ok()),
                Err(_) => Err(RelayError::Idle(idle)),
            };
        }
        let mut decoder = Decoder::new(request.framing);
        let chunked = request.framing == Framing::Chunked;
        relay(
            &mut decoder,
            &mut client_read,
            buf,
            &mut up_write,
            up,
            chunked,
            true,
            idle,
        )
        .await
    };

    // The response side.
    let recv = async {
        let mut any_byte = false;
        // Phase: the response head (after any interim 1xx heads). Deadline:
        // the response head timeout; action: 504.
        let head = tokio::time::timeout(config.response_head_timeout, async {
            loop {
                if !up_buf.is_empty() {
                    match head::response(up_buf, request, closing || !request.keep_alive, down) {
                        Ok(Some(response)) => {
                            up_buf.advance(response.len);
                            if !response.interim {
                                return Ok(response);
                            }
                            // 100 Continue and friends: an HTTP/1.1 client
                            // gets them; the final head follows.
                            if !request.http10 {
                                responded.store(true, Ordering::Relaxed);
                                if client_write.write_all(down).await.is_err() {
                                    return Err(None);
                                }
                            }
                            down.clear();
                            continue;
                        }
                        Ok(None) => {}
                        Err(bad) => return Err(Some(NoHead::Bad(bad))),
                    }
                }
                up_buf.reserve(READ_SIZE);
                match up_read.read_buf(up_buf).await {
                    Ok(0) => return Err(Some(NoHead::Closed)),
                    Ok(_) => any_byte = true,
                    Err(e) => return Err(Some(NoHead::Io(e))),
                }
            }
        })
        .await;
        let response = match head {
            Ok(Ok(response)) => response,
            Ok(Err(Some(why))) => return Received::NoHead { why, any_byte },
            Ok(Err(None)) => return Received::Cut("the client went away".into()),
            Err(_) => {
                let why = NoHead::Timeout(config.response_head_timeout);
                return Received::NoHead { why, any_byte };
            }
        };
        metrics.record(response.status, started.elapsed());
        responded.store(true, Ordering::Relaxed);
        if response.status == 101 {
            // What the instance sent after its head is the new protocol's.
            down.extend_from_slice(up_buf);
            up_buf.clear();
            let written = tokio::time::timeout(idle, client_write.write_all(down)).await;
            down.clear();
            return match written {
                Ok(Ok(())) => Received::Switched,
                _ => Received::Cut("the client went away".into()),
            };
        }
        // Phase: the response body, head first.
        let mut decoder = Decoder::new(response.framing);
        match relay(
            &mut decoder,
            &mut up_read,
            up_buf,
            &mut client_write,
            down,
            response.chunked_out,
            false,
            idle,
        )
        .await
        {
            Ok(true) => Received::Complete {
                // Bytes after the response's end: nothing asked for them.
                reusable: !response.upstream_close && up_buf.is_empty(),
                client_close: response.client_close,
            },
            Ok(false) => Received::Cut("the client went away".into()),
            Err(e) => Received::Cut(format!("the response broke off: {e}")),
        }
    };

    tokio::pin!(send, recv);
    // The send side first: until the head is out there is nothing to read.
    let mut sent: Option<bool> = None;
    let received = loop {
        tokio::select! {
            biased;
            result = &mut send, if sent.is_none() => match result {
                Ok(delivered) => sent = Some(delivered),
                Err(RelayError::Body(bad)) if !responded.load(Ordering::Relaxed) => return Outcome::BadBody(bad),
                Err(e) => return Outcome::Cut(format!("the request broke off: {e}")),
            },
            received = &mut recv => break received,
        }
    };
    // The rest of the request body: the instance answered before reading it
    // all. `send` reads the client's body to its end (dropping what the
    // instance no longer takes), so that the connection can carry the next
    // request. Deadline: `REST_OF_BODY`; action: the client's connection
    // closes instead (a client may wait for a 100 Continue that never came).
    let sent = match sent {
        Some(delivered) => Some(delivered),
        None if matches!(received, Received::Complete { .. } | Received::Switched) => {
            match tokio::time::timeout(REST_OF_BODY, send).await {
                Ok(Ok(delivered)) => Some(delivered),
                Ok(Err(e)) => return Outcome::Cut(format!("the request broke off: {e}")),
                Err(_) => None,
            }
        }
        None => None,
    };
    match received {
        Received::Complete {
            reusable,
            client_close,
        } => Outcome::Answered {
            client_open: !client_close && sent.is_some(),
            reusable: reusable && sent == Some(true),
        },
        Received::Switched if sent.is_some() => Outcome::Switched,
        Received::Switched => Outcome::Cut("the request body did not end before the switch".into()),
        Received::NoHead { why, any_byte } => {
            let closed = matches!(why, NoHead::Closed | NoHead::Io(_));
            if reused && closed && !any_byte && request.replayable {
                return Outcome::Retry;
            }
            let timed_out = matches!(why, NoHead::Timeout(_));
            metrics.record(if timed_out { 504 } else { 502 }, started.elapsed());
            Outcome::NoAnswer {
                why,
                timed_out,
                client_open: sent.is_some()
                    && !closing
                    && request.keep_alive
                    && !responded.load(Ordering::Relaxed),
            }
        }
        Received::Cut(why) => Outcome::Cut(why),
    }
}
