//! The request body's inactivity deadline: a body that delivers nothing for
//! `http.body_idle_timeout` while the server waits for it fails, so the
//! handler gets a body error, answers, and the request stops holding its
//! connection's place. Without it a client could send a head announcing a
//! large body and then nothing, and keep its connection busy (never swept,
//! never shed) for as long as it liked.
//!
//! The clock runs only while the handler waits for the next frame: time the
//! handler spends on a frame it already has (writing a blob chunk to disk,
//! say) is the server's, not the client's. A slow but steady upload never
//! trips it; only a pause longer than the timeout does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use super::connections::InFlight;

/// A body error: the client sent nothing for the whole timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent no data for {0:?} (http.body_idle_timeout)")]
pub struct BodyIdle(pub Duration);

/// `inner` with the inactivity deadline.
pub struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Armed when a poll finds no frame ready; disarmed by the next frame.
    waiting: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    /// Told while the body keeps its handler waiting, so that a full server
    /// may close the connection for a new one.
    in_flight: Option<Arc<InFlight>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration, in_flight: Option<Arc<InFlight>>) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            timeout,
            waiting: None,
            timed_out: false,
            in_flight,
        }
    }

    fn set_waiting(&mut self, waiting: Option<Pin<Box<Sleep>>>) {
        if self.waiting.is_some() != waiting.is_some() {
            if let Some(in_flight) = &self.in_flight {
                in_flight.waiting_for_body(waiting.is_some());
            }
        }
        self.waiting = waiting;
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Some(Err(BodyIdle(this.timeout).into())));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.set_waiting(None);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        if this.waiting.is_none() {
            this.set_waiting(Some(Box::pin(tokio::time::sleep(timeout))));
        }
        let sleep = this.waiting.as_mut().expect("armed above");
        ready!(sleep.as_mut().poll(cx));
        this.set_waiting(None);
        this.timed_out = true;
        Poll::Ready(Some(Err(BodyIdle(timeout).into())))
    }

    fn is_end_stream(&self) -> bool {
        // After a timeout the error is what the reader must see.
        !self.timed_out && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    type Item = Result<Frame<Bytes>, std::io::Error>;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn channel_body() -> (
        mpsc::Sender<Item>,
        impl Body<Data = Bytes, Error = axum::BoxError>,
    ) {
        let (tx, rx) = mpsc::channel::<Item>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            tx,
            IdleTimeout::new(StreamBody::new(Box::pin(stream)), TIMEOUT, None),
        )
    }

    fn data(b: &'static [u8]) -> Item {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    #[tokio::test]
    async fn a_stalled_body_fails_after_the_timeout() {
        let (tx, body) = channel_body();
        let mut body = std::pin::pin!(body);
        tx.send(data(b"a")).await.unwrap();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyIdle>(), "{err}");
        assert!(started.elapsed() >= TIMEOUT);
        // And it stays failed, even if data comes later.
        tx.send(data(b"late")).await.unwrap();
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn steady_data_slower_in_total_than_the_timeout_passes() {
        let (tx, body) = channel_body();
        let mut body = std::pin::pin!(body);
        tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(TIMEOUT / 2).await;
                tx.send(data(b"x")).await.unwrap();
            }
        });
        let started = tokio::time::Instant::now();
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().unwrap().len();
        }
        assert_eq!(got, 6);
        assert!(started.elapsed() > TIMEOUT * 2, "the body was not slow");
    }

    #[tokio::test]
    async fn time_spent_by_the_reader_does_not_count() {
        let (tx, body) = channel_body();
        let mut body = std::pin::pin!(body);
        tx.send(data(b"x")).await.unwrap();
        tx.send(data(b"y")).await.unwrap();
        drop(tx);
        body.frame().await.unwrap().unwrap();
        // The handler is busy for longer than the timeout; the next frame
        // was there all along.
        tokio::time::sleep(TIMEOUT * 2).await;
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());
    }
}
