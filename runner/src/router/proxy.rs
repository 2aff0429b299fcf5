//! One request through the router, as a pipeline of phases: take the table
//! snapshot, pick an instance (`pick`), filter the request (`headers`),
//! connect or reuse a pooled connection and send (retrying connection
//! failures on another instance), filter the response, record (`metrics`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{Exchange, ProxyBody};
use super::pick::{pick, Tried};
use super::upstream::InFlight;
use super::{headers, upgrade, Shared, Side};

/// How many times a request that found a pooled connection closed before any
/// byte went out is tried again, beyond one try per instance.
const EXTRA_TRIES: usize = 2;

pub(super) async fn handle(
    shared: &Shared,
    side: Side,
    client: &HeaderValue,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // Phase: the snapshot. This request sees this table and no other.
    let mut table = shared.table.load_full();
    let upgrade = headers::wants_upgrade(request.headers());
    headers::request(&mut request, client, upgrade);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let mut tried = Tried::default();
    let mut tries_left = table.backends(side).len() + EXTRA_TRIES;
    let mut attempted = false;
    let mut reloaded = false;
    loop {
        let backends = table.backends(side);
        if backends.is_empty() {
            shared.metrics.no_instance.fetch_add(1, Ordering::Relaxed);
            return shared.pages.no_instance();
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
                return shared.pages.no_instance();
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
        let mut sender = match upstream
            .checkout(
                shared.config.connect_timeout,
                shared.config.upstream_idle_timeout,
            )
            .await
        {
            Ok(sender) => sender,
            Err(e) => {
                upstream.metrics.connect_error();
                tracing::warn!(app = %shared.config.app, env = %shared.config.env, "{e}; trying another instance");
                tried.add(index);
                continue;
            }
        };
        // Phase: send, wait for the response head. Deadline: the response
        // head timeout; action: 504 (the connection is dropped).
        let sent = tokio::time::timeout(
            shared.config.response_head_timeout,
            sender.try_send_request(request),
        )
        .await;
        let response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(mut failed)) => match failed.take_message() {
                Some(unsent) => {
                    // The pooled connection was closed before any byte went
                    // out: the request is intact, try again.
                    request = unsent;
                    continue;
                }
                None => {
                    tracing::warn!(app = %shared.config.app, env = %shared.config.env, instance = %upstream.id, "the instance failed to answer: {}", failed.error());
                    upstream
                        .metrics
                        .record(StatusCode::BAD_GATEWAY.as_u16(), started.elapsed());
                    return shared.pages.upstream_failed();
                }
            },
            Err(_) => {
                tracing::warn!(app = %shared.config.app, env = %shared.config.env, instance = %upstream.id, "no response head within {:?}", shared.config.response_head_timeout);
                upstream
                    .metrics
                    .record(StatusCode::GATEWAY_TIMEOUT.as_u16(), started.elapsed());
                return shared.pages.upstream_timeout();
            }
        };
        // Phase: the response.
        upstream
            .metrics
            .record(response.status().as_u16(), started.elapsed());
        let (mut parts, body) = response.into_parts();
        if parts.status == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                headers::response(&mut parts.headers, true);
                let mut upstream_response = Response::from_parts(parts, body);
                let upstream_upgrade = hyper::upgrade::on(&mut upstream_response);
                upgrade::tunnel(client_upgrade, upstream_upgrade, in_flight);
                let (parts, _) = upstream_response.into_parts();
                return Response::from_parts(parts, ProxyBody::Empty);
            }
        }
        headers::response(&mut parts.headers, false);
        let exchange = Exchange {
            in_flight,
            sender: (!upgrade).then_some(sender),
        };
        let body = ProxyBody::upstream(body, exchange, shared.config.response_idle_timeout);
        return Response::from_parts(parts, body);
    }
    shared.metrics.all_failed.fetch_add(1, Ordering::Relaxed);
    shared.pages.upstream_failed()
}
