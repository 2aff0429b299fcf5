//! Slow-loris: clients holding connections open with a request head that
//! never ends. The caps (per IP address and in all) keep them from taking
//! every place, so `/healthz` from another address still answers within a
//! second; the header timeout closes them; and long bodies (a slow download,
//! a slow upload) are not cut by it.
//!
//! Bodies that stall are the same attack one step later: a head announcing a
//! body that never comes. The body timeout ends them, and until it does a
//! full server closes them for new connections as it closes idle ones.
//!
//! Attackers connect from other loopback addresses (127.0.2.1, 127.0.3.x):
//! the whole of 127/8 reaches the server on 127.0.0.1.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;

/// The start of a request that is never finished.
const PARTIAL_HEAD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: slipway\r\nX-Slow: ";

/// How soon `/healthz` must answer while the attack is held.
const HEALTHZ_WITHIN: Duration = Duration::from_secs(1);

const MIB: usize = 1024 * 1024;

struct Attacker {
    rt: tokio::runtime::Runtime,
    server: SocketAddr,
}

impl Attacker {
    fn new(server: &TestServer) -> Attacker {
        Attacker {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap(),
            server: server.host_port().parse().unwrap(),
        }
    }

    /// A connection from `source` (a loopback address).
    fn connect_from(&self, source: &str) -> TcpStream {
        self.rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
            let stream = socket.connect(self.server).await.unwrap();
            let stream = stream.into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            stream
        })
    }

    /// `n` connections from `source`, each having sent a partial head.
    fn half_open(&self, source: &str, n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = self.connect_from(source);
                // The server may already have closed a refused one.
                let _ = s.write_all(PARTIAL_HEAD);
                s
            })
            .collect()
    }
}

/// Whether the server still holds this connection open (it has neither
/// closed nor answered it).
fn held(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!((&*stream).read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

fn count_held(streams: &[TcpStream]) -> usize {
    streams.iter().filter(|s| held(s)).count()
}

/// `GET /healthz` on a new connection from `source`, with the time it took.
fn healthz_from(attacker: &Attacker, source: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut s = attacker.connect_from(source);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: slipway\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    (response, started.elapsed())
}

#[test]
fn half_open_connections_beyond_the_caps_do_not_lock_out_healthz() {
    let server = TestServer::start_with_env(&[
        ("SLIPWAY_HTTP__MAX_CONNECTIONS", "64"),
        ("SLIPWAY_HTTP__MAX_CONNECTIONS_PER_IP", "32"),
        // Long enough that nothing below is rescued by the header timeout.
        ("SLIPWAY_HTTP__HEADER_READ_TIMEOUT", "5m"),
    ]);
    let attacker = Attacker::new(&server);

    // One address: the per-IP cap bites.
    let one = attacker.half_open("127.0.2.1", 100);
    wait_for(
        "the server to hold at most 32 connections from one address",
        Duration::from_secs(10),
        || count_held(&one) <= 32,
    );
    // Many addresses, 25 each (under the per-IP cap): the overall cap bites.
    let mut many = Vec::new();
    for i in 1..=8 {
        many.extend(attacker.half_open(&format!("127.0.3.{i}"), 25));
    }
    wait_for(
        "the server to hold at most 64 connections in all",
        Duration::from_secs(10),
        || count_held(&one) + count_held(&many) <= 64,
    );

    // While they are held, /healthz answers from other addresses, again and
    // again (each time on a new connection, taking the place of an idle one).
    for round in 0..5 {
        for source in ["127.0.0.1", "127.0.0.2"] {
            let (response, took) = healthz_from(&attacker, source);
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "round {round}, from {source}: {response:?} after {took:?}"
            );
            assert!(
                took < HEALTHZ_WITHIN,
                "round {round}, from {source}: /healthz took {took:?}"
            );
        }
        let r = server.request(Method::GET, "/healthz", &[], None);
        assert_eq!(r.status, 200);
    }
    assert!(
        count_held(&one) + count_held(&many) <= 64,
        "still at most 64 held"
    );
    // And the server said what happened.
    wait_for(
        "the connection-limit warning",
        Duration::from_secs(15),
        || server.logs().contains("connection limit reached"),
    );
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("connection limit reached"))
        .unwrap();
    assert!(
        line.contains("per-IP limit of 32") && line.contains("refused"),
        "{line}"
    );
}

#[test]
fn the_header_timeout_closes_slow_heads_but_not_slow_bodies() {
    let server = TestServer::start_with_env(&[("SLIPWAY_HTTP__HEADER_READ_TIMEOUT", "1s")]);
    let attacker = Attacker::new(&server);

    // A head that never ends, and a connection that sends nothing at all.
    let started = Instant::now();
    let slow = attacker.half_open("127.0.0.1", 1);
    let silent = attacker.connect_from("127.0.0.1");
    wait_for(
        "the server to close both connections",
        Duration::from_secs(10),
        || !held(&slow[0]) && !held(&silent),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the 1s timeout"
    );

    // A download read slowly, for several times the header timeout: 32 MiB
    // (more than the socket buffers hold) at about 10 MiB/s.
    let data = random_bytes(32 * MIB);
    let digest = sha256_digest(&data);
    let r = server.request(
        Method::POST,
        &format!("/v2/slow/blobs/uploads/?digest={digest}"),
        &[],
        Some(data.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let started = Instant::now();
    let mut response = server
        .admin_auth()
        .apply(http_client().get(format!("{}/v2/slow/blobs/{digest}", server.url())))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut got = Vec::with_capacity(data.len());
    let mut chunk = vec![0u8; 1024 * 1024];
    loop {
        let n = response.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        let before = got.len();
        got.extend_from_slice(&chunk[..n]);
        if before / MIB != got.len() / MIB {
            // The client's pace (a pause per MiB), not a wait for the server.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the download was not slow"
    );
    assert_eq!(sha256_digest(&got), digest, "the slow download is complete");

    // An upload sent slowly: 4 MiB in 256 KiB pieces, 100 ms apart.
    struct Slow {
        data: Vec<u8>,
        at: usize,
    }
    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            const PIECE: usize = 256 * 1024;
            if self.at > 0 && self.at < self.data.len() && self.at.is_multiple_of(PIECE) {
                // The client's pace.
                std::thread::sleep(Duration::from_millis(100));
            }
            // Never across a piece's end, so every piece starts after a pause.
            let n = buf
                .len()
                .min(PIECE - self.at % PIECE)
                .min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let data = random_bytes(4 * MIB);
    let digest = sha256_digest(&data);
    let started = Instant::now();
    let r = server
        .admin_auth()
        .apply(
            http_client()
                .post(format!(
                    "{}/v2/slow/blobs/uploads/?digest={digest}",
                    server.url()
                ))
                .body(reqwest::blocking::Body::new(Slow { data, at: 0 })),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        started.elapsed() > Duration::from_millis(1500),
        "the upload was not slow"
    );
    let r = server.request(Method::HEAD, &format!("/v2/slow/blobs/{digest}"), &[], None);
    assert_eq!(r.status, 200);
}

/// Heads announcing a large body, on the routes that read their body before
/// any check (no credentials needed), and the first bytes of that body; the
/// rest never comes. The heads ask for `100 Continue`, which the server sends
/// when the handler starts reading the body: the attacker then knows its
/// request is in flight.
const STALLED_BODIES: [(&[u8], &[u8]); 3] = [
    (
        b"POST /signin HTTP/1.1\r\nHost: slipway\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        b"username=",
    ),
    (
        b"POST /api/v1/webhooks/1 HTTP/1.1\r\nHost: slipway\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        b"{",
    ),
    (
        b"POST /api/v1/runner/register HTTP/1.1\r\nHost: slipway\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\nExpect: 100-continue\r\n\r\n",
        b"{",
    ),
];

/// Send `head`, wait for the server's `100 Continue` (its handler is reading
/// the body), then send `first` and stall.
fn stall_body(stream: &mut TcpStream, (head, first): (&[u8], &[u8])) {
    stream.write_all(head).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("the server's 100 Continue");
        assert_eq!(n, 1, "closed before 100 Continue: {got:?}");
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    stream.set_read_timeout(None).unwrap();
    stream.write_all(first).unwrap();
}

/// Whether the server has closed this connection (after answering it or
/// not): the stream reads to its end, or was reset.
fn closed_by_server(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn stalled_bodies_are_cut_by_the_body_timeout_and_do_not_lock_out_healthz() {
    let server = TestServer::start_with_env(&[
        ("SLIPWAY_HTTP__MAX_CONNECTIONS", "64"),
        ("SLIPWAY_HTTP__MAX_CONNECTIONS_PER_IP", "32"),
        // Nothing below may be rescued by the header or idle timeouts.
        ("SLIPWAY_HTTP__HEADER_READ_TIMEOUT", "5m"),
        ("SLIPWAY_HTTP__IDLE_TIMEOUT", "5m"),
        ("SLIPWAY_HTTP__BODY_IDLE_TIMEOUT", "2s"),
    ]);
    let attacker = Attacker::new(&server);
    let stall = |source: &str, n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|i| {
                let mut s = attacker.connect_from(source);
                stall_body(&mut s, STALLED_BODIES[i % STALLED_BODIES.len()]);
                s
            })
            .collect()
    };

    // Four addresses, 16 each: every place is taken by a request whose
    // handler waits for its body (each got its 100 Continue).
    let started = Instant::now();
    let mut stalled = Vec::new();
    for i in 1..=4 {
        stalled.extend(stall(&format!("127.0.4.{i}"), 16));
    }
    assert_eq!(count_held(&stalled), 64, "all 64 stalled requests are held");

    // While they are held, /healthz answers from other addresses: a stalled
    // connection makes room, as an idle one would.
    for round in 0..3 {
        for source in ["127.0.0.1", "127.0.0.2"] {
            let (response, took) = healthz_from(&attacker, source);
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "round {round}, from {source}: {response:?} after {took:?}"
            );
            assert!(
                took < HEALTHZ_WITHIN,
                "round {round}, from {source}: /healthz took {took:?}"
            );
        }
    }
    assert!(count_held(&stalled) <= 64);

    // And the body timeout ends them all: the server closes every one
    // itself, freeing the places, with no new connection asking for them.
    wait_for(
        "the server to close every stalled request's connection",
        Duration::from_secs(15),
        || stalled.iter().all(closed_by_server),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800),
        "closed after {took:?}, before the 2s body timeout"
    );
    // With the places free again, a fresh batch is held as before...
    let again = stall("127.0.4.9", 16);
    assert_eq!(count_held(&again), 16);
    // ...and /healthz still answers.
    let (response, took) = healthz_from(&attacker, "127.0.0.1");
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    assert!(took < HEALTHZ_WITHIN, "/healthz took {took:?}");
}

#[test]
fn a_slow_but_steady_upload_outlasts_the_body_timeout() {
    let server = TestServer::start_with_env(&[("SLIPWAY_HTTP__BODY_IDLE_TIMEOUT", "2s")]);

    // 12 pieces of 64 KiB, 500 ms apart: 5.5 s in all, never 2 s silent.
    struct Steady {
        data: Vec<u8>,
        at: usize,
    }
    impl Read for Steady {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            const PIECE: usize = 64 * 1024;
            if self.at > 0 && self.at < self.data.len() && self.at.is_multiple_of(PIECE) {
                // The client's pace.
                std::thread::sleep(Duration::from_millis(500));
            }
            let n = buf
                .len()
                .min(PIECE - self.at % PIECE)
                .min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }
    let data = random_bytes(12 * 64 * 1024);
    let digest = sha256_digest(&data);
    let started = Instant::now();
    let r = server
        .admin_auth()
        .apply(
            http_client()
                .post(format!(
                    "{}/v2/steady/blobs/uploads/?digest={digest}",
                    server.url()
                ))
                .body(reqwest::blocking::Body::new(Steady { data, at: 0 })),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert!(
        started.elapsed() > Duration::from_secs(5),
        "the upload took {:?}, not longer than twice the body timeout",
        started.elapsed()
    );
    let r = server.request(
        Method::HEAD,
        &format!("/v2/steady/blobs/{digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
}

/// GET /healthz with `pad` bytes of extra headers, on a new connection.
fn healthz_with_head_of(attacker: &Attacker, pad: usize) -> String {
    let mut s = attacker.connect_from("127.0.0.1");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: slipway\r\nConnection: close\r\n".to_vec();
    // In headers of 4 KiB, like a few big cookies and tokens.
    let mut left = pad;
    let mut i = 0;
    while left > 0 {
        let n = left.min(4096);
        head.extend_from_slice(format!("X-Pad-{i}: ").as_bytes());
        head.extend(std::iter::repeat_n(b'a', n));
        head.extend_from_slice(b"\r\n");
        left -= n;
        i += 1;
    }
    head.extend_from_slice(b"\r\n");
    // The server may stop reading an oversized head before its end.
    let _ = s.write_all(&head);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn request_heads_are_bounded_with_room_for_big_tokens() {
    let server = TestServer::start();
    let attacker = Attacker::new(&server);
    // 48 KiB of headers: more than any token and cookies we hand out.
    let fits = healthz_with_head_of(&attacker, 48 * 1024);
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits:?}");
    // 256 KiB: refused, without being buffered whole.
    let too_big = healthz_with_head_of(&attacker, 256 * 1024);
    assert!(too_big.starts_with("HTTP/1.1 431"), "{too_big:?}");
}
