//! Shipping one step's output to the server: masked, batched, sent by offset,
//! and kept in memory until acknowledged, so a server that is down or
//! restarting gets every byte later, exactly once.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use super::client::{Client, ClientError};
use super::mask::Masker;

/// Where one step attempt's log goes.
pub struct LogTarget {
    pub client: Client,
    pub job: i64,
    pub position: i64,
    pub attempt: i64,
}

/// Largest batch sent at once.
const BATCH: usize = 256 << 10;
/// How long to keep trying to deliver what is left once the step has ended.
const DRAIN_FOR: Duration = Duration::from_secs(600);

/// Forward `rx` until it closes and everything is delivered. Returns the bytes
/// acknowledged, or the error that made delivery impossible (a stale lease, or
/// the server unreachable for longer than [`DRAIN_FOR`] after the step).
pub async fn ship(
    target: LogTarget,
    mut masker: Masker,
    mut rx: UnboundedReceiver<Vec<u8>>,
) -> Result<u64, ClientError> {
    let mut acked: u64 = 0;
    let mut unsent: Vec<u8> = Vec::new();
    let mut open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut backoff = Duration::from_millis(100);
    let mut ended_at: Option<std::time::Instant> = None;
    loop {
        if open {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(bytes) => {
                        unsent.extend(masker.push(&bytes));
                        if unsent.len() < BATCH {
                            continue;
                        }
                    }
                    None => {
                        open = false;
                        unsent.extend(masker.finish());
                        ended_at = Some(std::time::Instant::now());
                    }
                },
                _ = tick.tick() => {}
            }
        }
        if unsent.is_empty() {
            if open {
                continue;
            }
            return Ok(acked);
        }
        let batch: Vec<u8> = unsent[..unsent.len().min(BATCH)].to_vec();
        match target
            .client
            .log(target.job, target.position, target.attempt, acked, batch)
            .await
        {
            Ok(length) if length >= acked => {
                let taken = ((length - acked) as usize).min(unsent.len());
                unsent.drain(..taken);
                acked = length;
                backoff = Duration::from_millis(100);
            }
            Ok(length) => {
                // The server has less than we thought (it lost an unsynced tail
                // in a crash): nothing to do but resend from there would need
                // bytes we no longer hold; say so and continue from its length.
                tracing::warn!(acked, length, "server log shorter than acknowledged");
                acked = length;
            }
            Err(e) if e.transient() => {
                if ended_at.is_some_and(|t| t.elapsed() > DRAIN_FOR) {
                    return Err(e);
                }
                tracing::warn!(error = %e, buffered = unsent.len(), "log delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
