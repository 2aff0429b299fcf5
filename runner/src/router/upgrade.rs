//! Protocol switches (WebSocket): once the instance answered 101 (and the
//! client has it), the client's connection and the instance's are joined
//! byte for byte until either side closes.

use tokio::io::AsyncWriteExt;

use super::client::Client;
use super::upstream::Conn;

/// Join both sides, in the client connection's task; the request stays in
/// flight to the instance (the caller holds its count) until either side
/// closes. What the client sent after its request head goes first.
pub(super) async fn tunnel(client: &mut Client, mut conn: Conn, instance: &str) {
    let early = client.buf.split();
    let joined = async {
        conn.stream.write_all(&early).await?;
        tokio::io::copy_bidirectional(&mut client.stream, &mut conn.stream).await
    };
    if let Err(e) = joined.await {
        tracing::debug!(%instance, "upgraded connection ended: {e}");
    }
}
