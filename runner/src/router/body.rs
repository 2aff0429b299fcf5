//! The response body the client gets: an instance's body streamed through
//! (holding the request in flight until it ends, then pooling the
//! connection), or one of the router's own pages.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::{InFlight, Sender};

pub(crate) enum ProxyBody {
    Upstream {
        body: Incoming,
        /// Until the body has ended: the request's in-flight count and its
        /// connection (given back to the pool at the end).
        exchange: Option<Exchange>,
        /// How long the instance may leave the body without a frame.
        idle_timeout: Duration,
        /// Armed while waiting for a frame (made only when one is not ready).
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
    },
    Page(Option<Bytes>),
    Empty,
}

pub(super) struct Exchange {
    pub in_flight: InFlight,
    /// `None` for an upgraded connection (never pooled).
    pub sender: Option<Sender>,
}

impl Exchange {
    /// The exchange is complete: pool the connection, then stop counting.
    pub fn complete(self) {
        if let Some(sender) = self.sender {
            self.in_flight.upstream().give_back(sender);
        }
    }
}

impl ProxyBody {
    /// An instance's body; an empty one completes the exchange at once.
    pub(super) fn upstream(
        body: Incoming,
        exchange: Exchange,
        idle_timeout: Duration,
    ) -> ProxyBody {
        if body.is_end_stream() {
            exchange.complete();
            return ProxyBody::Empty;
        }
        ProxyBody::Upstream {
            body,
            exchange: Some(exchange),
            idle_timeout,
            idle: None,
        }
    }
}

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the instance's response body broke off: {0}")]
    Upstream(#[from] hyper::Error),
    #[error("the instance sent nothing of its response body for {0:?}")]
    Idle(Duration),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ProxyBody::Upstream {
                body,
                exchange,
                idle_timeout,
                idle,
            } => {
                let frame = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        *idle = None;
                        frame
                    }
                    Poll::Pending => {
                        // Deadline: the response idle timeout; action: the
                        // body fails (the client's connection is closed) and
                        // the instance's connection is dropped.
                        let timer =
                            idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(*idle_timeout)));
                        if timer.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        drop(exchange.take());
                        return Poll::Ready(Some(Err(BodyError::Idle(*idle_timeout))));
                    }
                };
                let frame = frame.map(|f| f.map_err(BodyError::from));
                match &frame {
                    Some(Ok(_)) if !body.is_end_stream() => {}
                    Some(Ok(_)) | None => {
                        if let Some(exchange) = exchange.take() {
                            exchange.complete();
                        }
                    }
                    // A broken body: the connection is not reused (dropped).
                    Some(Err(_)) => drop(exchange.take()),
                }
                Poll::Ready(frame)
            }
            ProxyBody::Page(page) => Poll::Ready(page.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Page(page) => page.is_none(),
            ProxyBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Page(Some(page)) => SizeHint::with_exact(page.len() as u64),
            ProxyBody::Page(None) | ProxyBody::Empty => SizeHint::with_exact(0),
        }
    }
}
