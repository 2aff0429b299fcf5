//! One request through the router, as a pipeline of phases: take the table
//! snapshot, pick an instance (`pick`), take a pooled connection or connect
//! (retrying connection failures on another instance), exchange the request
//! and its response (`exchange`), record (`metrics`). The request head was
//! parsed and filtered already (`head`, by the client's connection).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::client::{linger, Client};
use super::exchange::{exchange, Outcome};
use super::head::Request;
use super::page::Page;
use super::pick::{pick, Tried};
use super::upstream::InFlight;
use super::{upgrade, Shared, Side};

/// How many times a request that found a pooled connection closed before any
/// answer is tried again, beyond one try per instance.
const EXTRA_TRIES: usize = 2;

/// Serve `request` (its head is in `client.up`, filtered for the instance).
/// `closing`: the client's connection closes after this request anyway.
/// Returns whether the client's connection can carry another request.
pub(super) async fn handle(
    shared: &Shared,
    side: Side,
    client: &mut Client,
    request: &Request,
    closing: bool,
) -> bool {
    let started = Instant::now();
    // Phase: the snapshot. This request sees this table and no other.
    let mut table = shared.table.load_full();
    let mut tried = Tried::default();
    let mut tries_left = table.backends(side).len() + EXTRA_TRIES;
    let mut attempted = false;
    let mut reloaded = false;
    // Without a body the client's connection stays usable after a page.
    let open_after_page = request.keep_alive && !closing && !request.framing.has_body();
    loop {
        let backends = table.backends(side);
        if backends.is_empty() {
            shared.metrics.no_instance.fetch_add(1, Ordering::Relaxed);
            return answer(shared, client, Page::NoInstance, open_after_page).await;
        }
        // Phase: pick.
        let Some(index) = pick(backends, &table.next, tried).filter(|_| tries_left > 0) else {
            if !attempted {
                // Every instance of this snapshot is being drained: a newer
                // table (set before the drain began) may have others.
                let current = shared.table.load_full();
                if !reloaded && !Arc::ptr_eq(&current, &table) {
                    reloaded = true;
                    table = current;
                    tried = Tried::default();
                    continue;
                }
                shared.metrics.no_instance.fetch_add(1, Ordering::Relaxed);
                return answer(shared, client, Page::NoInstance, open_after_page).await;
            }
            break;
        };
        tries_left -= 1;
        let upstream = backends[index].clone();
        let in_flight = InFlight::new(upstream.clone());
        if upstream.is_retired() {
            // Drained between the snapshot and the count: take the table
            // again (the drain saw nothing in flight, so this must not go).
            drop(in_flight);
            table = shared.table.load_full();
            tried = Tried::default();
            continue;
        }
        // Phase: a connection.
        attempted = true;
        let (mut conn, reused) = match upstream
            .checkout(
                shared.config.connect_timeout,
                shared.config.upstream_idle_timeout,
            )
            .await
        {
            Ok(conn) => conn,
            Err(e) => {
                upstream.metrics.connect_error();
                tracing::warn!(app = %shared.config.app, env = %shared.config.env, "{e}; trying another instance");
                tried.add(index);
                continue;
            }
        };
        // Phase: the exchange.
        let outcome = exchange(
            &shared.config,
            request,
            client,
            &mut conn,
            reused,
            closing,
            &upstream.metrics,
            started,
        )
        .await;
        let log = |what: &dyn std::fmt::Display| {
            tracing::warn!(app = %shared.config.app, env = %shared.config.env, instance = %upstream.id, "{what}");
        };
        return match outcome {
            Outcome::Answered {
                client_open,
                reusable,
            } => {
                if reusable {
                    // Pool it before the request stops counting, so that a
                    // drain that saw nothing in flight closes it.
                    upstream.give_back(conn);
                }
                drop(in_flight);
                client_open
            }
            Outcome::Retry => continue,
            Outcome::Switched => {
                upgrade::tunnel(client, conn, &upstream.id).await;
                drop(in_flight);
                false
            }
            Outcome::NoAnswer {
                why,
                timed_out,
                client_open,
            } => {
                log(&why);
                drop(in_flight);
                let page = if timed_out {
                    Page::UpstreamTimeout
                } else {
                    Page::UpstreamFailed
                };
                answer(shared, client, page, client_open).await
            }
            Outcome::BadBody(bad) => {
                shared.metrics.bad_request.fetch_add(1, Ordering::Relaxed);
                drop(in_flight);
                answer(shared, client, Page::BadRequest(&bad), false).await
            }
            Outcome::Cut(why) => {
                tracing::debug!(app = %shared.config.app, env = %shared.config.env, instance = %upstream.id, "exchange cut: {why}");
                false
            }
        };
    }
    shared.metrics.all_failed.fetch_add(1, Ordering::Relaxed);
    answer(shared, client, Page::UpstreamFailed, open_after_page).await
}

/// Answer with one of the router's own pages; returns whether the client's
/// connection stays open (if not, it lingers first: `client::linger`).
/// Deadline: the response idle timeout; action: the connection is closed.
async fn answer(shared: &Shared, client: &mut Client, page: Page<'_>, open: bool) -> bool {
    client.down.clear();
    shared.pages.write(page, !open, &mut client.down);
    let written = tokio::time::timeout(
        shared.config.response_idle_timeout,
        client.stream.write_all(&client.down),
    )
    .await;
    client.down.clear();
    if open && matches!(written, Ok(Ok(()))) {
        return true;
    }
    linger(client).await;
    false
}
