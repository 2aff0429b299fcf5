//! Protocol switches (WebSocket): once the instance answered 101, the
//! client's connection and the instance's are joined byte for byte.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::upstream::InFlight;

/// Join both sides once both have switched; the request stays in flight to
/// the instance until either side closes.
pub(super) fn tunnel(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        let (Ok(client), Ok(upstream)) = (client, upstream) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(instance = %in_flight.upstream().id, "upgraded connection ended: {e}");
        }
        drop(in_flight);
    });
}
