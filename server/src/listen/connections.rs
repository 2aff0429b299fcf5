//! Who holds which connection: the caps on open connections (in all and per
//! IP address), the deadlines of connections with no request in flight, and
//! the rate-limited warning when a cap bites.
//!
//! A connection is *idle* while it has no request in flight: before its first
//! request (a half-open head, a TLS handshake, an HTTP/2 preface), between
//! keep-alive requests, or with an HTTP/2 stream that never completed its
//! headers. A request is in flight from its head until its response body has
//! been sent, so long downloads, uploads and SSE streams are never idle.
//!
//! A connection whose every request in flight is *waiting for its body* (the
//! handler asked for data and the client has sent none since) is *stalled*:
//! it is not swept (the body's own deadline, `http.body_idle_timeout`, ends
//! such a request), but a full server closes it for a new connection just as
//! it closes an idle one. A head announcing a body that never comes thus
//! holds a place no better than a head that never ends.
//!
//! - A new connection from an address already holding `per_ip` is refused.
//! - A new connection when `total` are open closes an idle one instead: the
//!   (or stalled) one: the one whose address holds the most connections, the
//!   longest idle (or stalled) among those. One address cannot lock others
//!   out, and many addresses holding half-open connections or stalled bodies
//!   lose them to whoever comes next. Only when every connection has a
//!   request in flight that is not waiting for its client is the new one
//!   refused.
//! - An idle connection is closed once it has waited `first_request` for its
//!   first request or `idle` for the next one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How often a warning about the caps may be logged; what happens in between
/// is counted and summed up in the next one.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    pub per_ip: usize,
    pub first_request: Duration,
    pub idle: Duration,
    /// How long a request body may send nothing while the server waits for
    /// it (see [`super::body`]); not enforced here.
    pub body_idle: Duration,
}

pub struct Connections {
    limits: Limits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    open: HashMap<u64, Entry>,
    per_ip: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Since the last warning.
    refused_per_ip: u64,
    refused_total: u64,
    shed: u64,
    timed_out: u64,
    last_warning: Option<Instant>,
}

struct Entry {
    ip: IpAddr,
    in_flight: usize,
    /// Requests in flight waiting for body data from the client.
    waiting_for_body: usize,
    /// When the last request ended (or the connection was accepted).
    idle_since: Instant,
    /// When a request last started waiting for its body.
    waiting_since: Instant,
    served: bool,
    /// Closes the connection when sent or dropped.
    close: Option<oneshot::Sender<()>>,
}

/// Why a connection was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    PerIp,
    Total,
}

impl Connections {
    pub fn new(limits: Limits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admit a connection from `ip`, closing an idle one if all places are
    /// taken. The returned handle's `closed` resolves when the connection
    /// must close; dropping the handle gives its place back.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(Handle, oneshot::Receiver<()>), Refused> {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        if inner.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip {
            inner.refused_per_ip += 1;
            self.maybe_warn(&mut inner, now);
            return Err(Refused::PerIp);
        }
        if inner.open.len() >= self.limits.total {
            let victim = {
                let per_ip = &inner.per_ip;
                inner
                    .open
                    .iter()
                    .filter(|(_, e)| e.sheddable())
                    .max_by_key(|(_, e)| {
                        (
                            per_ip.get(&e.ip).copied().unwrap_or(0),
                            now.duration_since(e.quiet_since()),
                        )
                    })
                    .map(|(id, _)| *id)
            };
            match victim {
                Some(id) => {
                    inner.remove(id);
                    inner.shed += 1;
                    self.maybe_warn(&mut inner, now);
                }
                None => {
                    inner.refused_total += 1;
                    self.maybe_warn(&mut inner, now);
                    return Err(Refused::Total);
                }
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (tx, rx) = oneshot::channel();
        inner.open.insert(
            id,
            Entry {
                ip,
                in_flight: 0,
                waiting_for_body: 0,
                idle_since: now,
                waiting_since: now,
                served: false,
                close: Some(tx),
            },
        );
        *inner.per_ip.entry(ip).or_insert(0) += 1;
        Ok((
            Handle {
                id,
                connections: self.clone(),
            },
            rx,
        ))
    }

    /// Close idle connections past their deadline; log what the caps did if
    /// a warning is due. Called periodically.
    pub fn sweep(&self) {
        let mut inner = self.inner.lock().unwrap();
        let now = Instant::now();
        let expired: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, e)| {
                let limit = if e.served {
                    self.limits.idle
                } else {
                    self.limits.first_request
                };
                e.in_flight == 0 && now.duration_since(e.idle_since) >= limit
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            inner.remove(id);
            inner.timed_out += 1;
        }
        self.maybe_warn(&mut inner, now);
    }

    /// Close every connection with no request in flight (shutting down).
    pub fn close_idle(&self) {
        let mut inner = self.inner.lock().unwrap();
        let idle: Vec<u64> = inner
            .open
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            inner.remove(id);
        }
    }

    /// Open connections, for the tests of this module.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap().open.len()
    }

    fn maybe_warn(&self, inner: &mut Inner, now: Instant) {
        let refused = inner.refused_per_ip + inner.refused_total;
        if refused + inner.shed == 0 {
            // Timeouts alone are ordinary (clients going away); they are only
            // reported alongside the caps.
            return;
        }
        if inner
            .last_warning
            .is_some_and(|at| now.duration_since(at) < WARN_EVERY)
        {
            return;
        }
        let (busiest, busiest_count) = inner
            .per_ip
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(ip, n)| (ip.to_string(), *n))
            .unwrap_or_default();
        tracing::warn!(
            refused_per_ip = inner.refused_per_ip,
            refused_total = inner.refused_total,
            closed_idle_for_new = inner.shed,
            closed_idle_timeout = inner.timed_out,
            open = inner.open.len(),
            max_connections = self.limits.total,
            max_connections_per_ip = self.limits.per_ip,
            busiest_ip = %busiest,
            busiest_ip_connections = busiest_count,
            "connection limit reached: {} refused ({} over the per-IP limit of {}, {} with all {} connections busy), {} idle connections closed to make room, {} closed after their timeout, since the last report; {} open, {} of them from {busiest}",
            refused,
            inner.refused_per_ip,
            self.limits.per_ip,
            inner.refused_total,
            self.limits.total,
            inner.shed,
            inner.timed_out,
            inner.open.len(),
            busiest_count,
        );
        inner.refused_per_ip = 0;
        inner.refused_total = 0;
        inner.shed = 0;
        inner.timed_out = 0;
        inner.last_warning = Some(now);
    }
}

impl Entry {
    /// Idle, or every request in flight is waiting for its client's body.
    fn sheddable(&self) -> bool {
        self.in_flight == self.waiting_for_body
    }

    /// Since when the client has kept this connection waiting.
    fn quiet_since(&self) -> Instant {
        if self.in_flight == 0 {
            self.idle_since
        } else {
            self.waiting_since
        }
    }
}

impl Inner {
    /// Forget a connection and tell its task to close it.
    fn remove(&mut self, id: u64) {
        if let Some(mut entry) = self.open.remove(&id) {
            if let Some(n) = self.per_ip.get_mut(&entry.ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&entry.ip);
                }
            }
            if let Some(close) = entry.close.take() {
                let _ = close.send(());
            }
        }
    }
}

/// One admitted connection's place; given back on drop.
pub struct Handle {
    id: u64,
    connections: Arc<Connections>,
}

impl Handle {
    pub fn limits(&self) -> Limits {
        self.connections.limits
    }

    /// A request has started on this connection; it counts as in flight
    /// until the returned guard is dropped (after the response body).
    pub fn request(&self) -> InFlight {
        let mut inner = self.connections.inner.lock().unwrap();
        if let Some(entry) = inner.open.get_mut(&self.id) {
            entry.in_flight += 1;
            entry.served = true;
        }
        InFlight {
            id: self.id,
            connections: self.connections.clone(),
            waiting: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.connections.inner.lock().unwrap().remove(self.id);
    }
}

pub struct InFlight {
    id: u64,
    connections: Arc<Connections>,
    waiting: std::sync::atomic::AtomicBool,
}

impl InFlight {
    /// Whether this request's handler is waiting for body data the client
    /// has not sent (see [`super::body`]).
    pub fn waiting_for_body(&self, waiting: bool) {
        use std::sync::atomic::Ordering;
        if self.waiting.swap(waiting, Ordering::Relaxed) == waiting {
            return;
        }
        let mut inner = self.connections.inner.lock().unwrap();
        if let Some(entry) = inner.open.get_mut(&self.id) {
            if waiting {
                entry.waiting_for_body += 1;
                entry.waiting_since = Instant::now();
            } else {
                entry.waiting_for_body -= 1;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let waiting = *self.waiting.get_mut();
        let mut inner = self.connections.inner.lock().unwrap();
        if let Some(entry) = inner.open.get_mut(&self.id) {
            if waiting {
                entry.waiting_for_body -= 1;
            }
            entry.in_flight -= 1;
            if entry.in_flight == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> Limits {
        Limits {
            total,
            per_ip,
            first_request: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            body_idle: Duration::from_secs(60),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_refuses_only_that_address() {
        let c = Connections::new(limits(10, 2));
        let _a = c.admit(ip("10.0.0.1")).unwrap();
        let _b = c.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(c.admit(ip("10.0.0.1")).err(), Some(Refused::PerIp));
        assert!(c.admit(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn a_full_server_closes_an_idle_connection_of_the_busiest_address() {
        let c = Connections::new(limits(3, 3));
        let (a1, mut a1_closed) = c.admit(ip("10.0.0.1")).unwrap();
        let (_a2, mut a2_closed) = c.admit(ip("10.0.0.1")).unwrap();
        let (b, mut b_closed) = c.admit(ip("10.0.0.2")).unwrap();
        let _busy = a1.request();
        // Full: 10.0.0.1 holds two, one of them busy; its idle one goes.
        let (c1, _) = c.admit(ip("10.0.0.3")).unwrap();
        assert!(a2_closed.try_recv().is_ok());
        assert!(a1_closed.try_recv().is_err());
        assert!(b_closed.try_recv().is_err());
        assert_eq!(c.open(), 3);
        // All busy: refused.
        let _b_busy = b.request();
        let _c_busy = c1.request();
        assert_eq!(c.admit(ip("10.0.0.4")).err(), Some(Refused::Total));
    }

    #[test]
    fn a_full_server_closes_a_connection_stalled_on_its_body() {
        let c = Connections::new(limits(2, 2));
        let (a, mut a_closed) = c.admit(ip("10.0.0.1")).unwrap();
        let (b, mut b_closed) = c.admit(ip("10.0.0.2")).unwrap();
        let a_req = a.request();
        let b_req = b.request();
        // Both busy: refused.
        assert_eq!(c.admit(ip("10.0.0.3")).err(), Some(Refused::Total));
        // b's handler waits for a body that does not come: b goes.
        b_req.waiting_for_body(true);
        let (c3, _) = c.admit(ip("10.0.0.3")).unwrap();
        let _c3_req = c3.request();
        assert!(b_closed.try_recv().is_ok());
        assert!(a_closed.try_recv().is_err());
        // a's body arrived after a pause: busy again, not sheddable.
        a_req.waiting_for_body(true);
        a_req.waiting_for_body(false);
        assert_eq!(c.admit(ip("10.0.0.4")).err(), Some(Refused::Total));
        // Nor is it swept while its request waits.
        a_req.waiting_for_body(true);
        c.sweep();
        assert!(a_closed.try_recv().is_err());
        drop(a_req);
        drop(b_req);
    }

    #[test]
    fn idle_connections_time_out_and_busy_ones_do_not() {
        let c = Connections::new(Limits {
            total: 10,
            per_ip: 10,
            first_request: Duration::ZERO,
            idle: Duration::from_secs(3600),
            body_idle: Duration::from_secs(3600),
        });
        let (fresh, mut fresh_closed) = c.admit(ip("10.0.0.1")).unwrap();
        let (served, mut served_closed) = c.admit(ip("10.0.0.1")).unwrap();
        let (busy, mut busy_closed) = c.admit(ip("10.0.0.1")).unwrap();
        drop(served.request());
        let _in_flight = busy.request();
        c.sweep();
        assert!(fresh_closed.try_recv().is_ok(), "no first request in time");
        assert!(
            served_closed.try_recv().is_err(),
            "idle, within its timeout"
        );
        assert!(busy_closed.try_recv().is_err(), "a request in flight");
        drop(fresh);
        assert_eq!(c.open(), 2);
    }
}
