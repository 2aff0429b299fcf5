//! Slow-loris: clients holding connections open with a request head that
//! never ends. The caps (per IP address and in all) keep them from taking
//! every place, so `/healthz` from another address still answers within a
//! second; the header timeout closes them; and long bodies (a slow download,
//! a slow upload) are not cut by it.
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
