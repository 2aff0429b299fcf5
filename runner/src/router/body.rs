//! The response body the client gets: an instance's body streamed through
//! (holding the request in flight until it ends, then pooling the
//! connection), or one of the router's own pages.

use std::pin::Pin;
use std::task::{Context, Poll};

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
    pub(super) fn upstream(body: Incoming, exchange: Exchange) -> ProxyBody {
        if body.is_end_stream() {
            exchange.complete();
            return ProxyBody::Empty;
        }
        ProxyBody::Upstream {
            body,
            exchange: Some(exchange),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, exchange } => {
                let frame = std::task::ready!(Pin::new(&mut *body).poll_frame(cx));
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
