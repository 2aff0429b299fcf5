//! The deploy router against real upstreams, each in its own network
//! namespace (a pod of the real engine), reached the way instances are.
//! Root is needed (namespaces).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use slipway_runner::container::{netns, Engine, Pod};
use slipway_runner::router::{Backend, RouteTable, Router, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Every wait in these tests gives up after this, failing the test.
const DEADLINE: Duration = Duration::from_secs(20);

struct World {
    _dir: tempfile::TempDir,
    engine: Engine,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    // Pods need no runc; the engine only makes and removes namespaces here.
    let engine = Engine::open(dir.path().join("engine"), "runc").unwrap();
    World { _dir: dir, engine }
}

/// A small HTTP server listening on loopback inside a pod's namespace.
struct Upstream {
    port: u16,
    state: Arc<UpstreamState>,
}

#[derive(Default)]
struct UpstreamState {
    version: String,
    open: AtomicUsize,
    changed: Notify,
    slow_started: AtomicUsize,
    release: Notify,
    released: AtomicBool,
    /// Every request target it was asked for, in order.
    seen: std::sync::Mutex<Vec<String>>,
}

impl UpstreamState {
    /// Wait (with the test deadline) until `check` holds; woken by changes.
    async fn until(&self, what: &str, check: impl Fn(&UpstreamState) -> bool) {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if check(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "upstream {}: waited {DEADLINE:?} for {what}",
            self.version
        );
    }
}

async fn upstream(pod: &Pod, version: &str) -> Upstream {
    let socket = netns::socket_in(pod.netns_path()).await.unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1024).unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(UpstreamState {
        version: version.to_owned(),
        ..Default::default()
    });
    let serving = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let state = serving.clone();
            state.open.fetch_add(1, Ordering::SeqCst);
            state.changed.notify_waiters();
            tokio::spawn(async move {
                let service_state = state.clone();
                let service = hyper::service::service_fn(move |request| {
                    let state = service_state.clone();
                    async move { Ok::<_, Infallible>(answer(&state, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                state.open.fetch_sub(1, Ordering::SeqCst);
                state.changed.notify_waiters();
            });
        }
    });
    Upstream { port, state }
}

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|e| match e {}).boxed()
}

async fn answer(state: &Arc<UpstreamState>, mut request: Request<Incoming>) -> Response<Body> {
    let version = state.version.clone();
    state.seen.lock().unwrap().push(request.uri().to_string());
    match request.uri().path() {
        "/slow" => {
            let release = state.release.notified();
            tokio::pin!(release);
            release.as_mut().enable();
            state.slow_started.fetch_add(1, Ordering::SeqCst);
            state.changed.notify_waiters();
            if !state.released.load(Ordering::SeqCst) {
                release.await;
            }
            Response::new(full(version))
        }
        "/fail" => {
            let mut response = Response::new(full("failing on purpose"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        "/headers" => {
            let h = request.headers();
            let get = |name: &str| {
                h.get(name)
                    .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned())
            };
            let text = format!(
                "for={}\nproto={}\nhost={}\nfwd-host={}\nhop={}\nconnection={}\n",
                get("x-forwarded-for"),
                get("x-forwarded-proto"),
                get("host"),
                get("x-forwarded-host"),
                get("x-hop"),
                get("connection"),
            );
            Response::new(full(text))
        }
        "/echo" => Response::new(request.into_body().boxed()),
        "/first-chunk" => {
            // Answers with the request body's first chunk, without waiting
            // for the rest of it.
            let first = request.into_body().frame().await;
            let first = first.and_then(|f| f.ok()).and_then(|f| f.into_data().ok());
            Response::new(full(first.unwrap_or_default()))
        }
        "/stream" => {
            // "first", then "second" only once released.
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(Ok(hyper::body::Frame::data(Bytes::from("first"))))
                .await
                .unwrap();
            let state = state.clone();
            tokio::spawn(async move {
                let release = state.release.notified();
                tokio::pin!(release);
                release.as_mut().enable();
                if !state.released.load(Ordering::SeqCst) {
                    release.await;
                }
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from("second"))))
                    .await;
            });
            Response::new(http_body_util::StreamBody::new(tokio_stream(rx)).boxed())
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut reply = version.as_bytes().to_vec();
                            reply.push(b':');
                            reply.extend_from_slice(&buf[..n]);
                            if io.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "upgrade")
                .body(full(""))
                .unwrap()
        }
        _ => Response::new(full(version)),
    }
}

fn backend(id: &str, pod: &Pod, upstream: &Upstream) -> Backend {
    Backend {
        id: id.to_owned(),
        version: upstream.state.version.clone(),
        netns: Some(pod.netns_path().to_owned()),
        port: upstream.port,
    }
}

fn live(backends: Vec<Backend>) -> RouteTable {
    RouteTable {
        live: backends,
        preview: Vec::new(),
    }
}

async fn router() -> Router {
    router_on_threads(0).await
}

/// A router on `threads` threads of its own (0: the test's runtime).
async fn router_on_threads(threads: usize) -> Router {
    let mut config = RouterConfig::new("web", "dev", "127.0.0.1:0".parse().unwrap());
    config.preview = Some("127.0.0.1:0".parse().unwrap());
    config.threads = threads;
    Router::start(config).await.unwrap()
}

/// A keep-alive HTTP/1.1 client connection.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Body>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(Client { sender })
    }

    async fn send(&mut self, request: Request<Body>) -> Result<(StatusCode, String), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        self.send(get_request(path)).await
    }
}

fn get_request(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "app.test")
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap()
}

/// One request on a new connection.
async fn get_once(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let mut client = Client::connect(addr).await.map_err(|e| e.to_string())?;
    client.get(path).await
}

/// Continuous load: keep-alive clients plus a stream of new connections,
/// recording every failure and checking the swap's atomicity.
struct Load {
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct LoadStats {
    /// Tickets: a request takes one before it is sent.
    ticket: AtomicU64,
    /// The ticket counter's value when a response first showed `v2`.
    first_v2_ticket: AtomicU64,
    first_v2_at: std::sync::Mutex<Option<Instant>>,
    v1: AtomicU64,
    v2: AtomicU64,
    errors: AtomicU64,
    non_2xx: AtomicU64,
    /// Responses showing v1 to a request that started after v2 was seen.
    late_v1: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
    progress: Notify,
}

impl LoadStats {
    fn record(&self, ticket: u64, result: Result<(StatusCode, String), String>) {
        match result {
            Err(e) => {
                self.errors.fetch_add(1, Ordering::SeqCst);
                self.failures.lock().unwrap().push(e);
            }
            Ok((status, body)) if !status.is_success() => {
                self.non_2xx.fetch_add(1, Ordering::SeqCst);
                self.failures
                    .lock()
                    .unwrap()
                    .push(format!("{status}: {body}"));
            }
            Ok((_, body)) if body == "v2" => {
                let now = self.ticket.load(Ordering::SeqCst);
                if self.first_v2_ticket.fetch_min(now, Ordering::SeqCst) == u64::MAX {
                    self.first_v2_at
                        .lock()
                        .unwrap()
                        .get_or_insert(Instant::now());
                }
                self.v2.fetch_add(1, Ordering::SeqCst);
            }
            Ok((_, body)) => {
                assert_eq!(body, "v1", "unexpected body");
                if ticket >= self.first_v2_ticket.load(Ordering::SeqCst) {
                    self.late_v1.fetch_add(1, Ordering::SeqCst);
                }
                self.v1.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.progress.notify_waiters();
    }

    /// Wait (with the test deadline) until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&LoadStats) -> bool) {
        let waited = tokio::time::timeout(DEADLINE, async {
            loop {
                let progress = self.progress.notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if check(self) {
                    return;
                }
                progress.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "load: waited {DEADLINE:?} for {what}");
    }
}

impl Load {
    fn start(addr: SocketAddr, keep_alive_clients: usize, new_connection_streams: usize) -> Load {
        let stats = Arc::new(LoadStats {
            first_v2_ticket: AtomicU64::new(u64::MAX),
            ..Default::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..keep_alive_clients {
            let (stats, stop) = (stats.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = match Client::connect(addr).await {
                    Ok(client) => client,
                    Err(e) => return stats.record(0, Err(e.to_string())),
                };
                while !stop.load(Ordering::SeqCst) {
                    let ticket = stats.ticket.fetch_add(1, Ordering::SeqCst);
                    let result = client.get("/").await;
                    let failed = result.is_err();
                    stats.record(ticket, result);
                    if failed {
                        return;
                    }
                }
            }));
        }
        for _ in 0..new_connection_streams {
            let (stats, stop) = (stats.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let ticket = stats.ticket.fetch_add(1, Ordering::SeqCst);
                    stats.record(ticket, get_once(addr, "/").await);
                }
            }));
        }
        Load { stats, stop, tasks }
    }

    async fn stop(self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            task.await.unwrap();
        }
        self.stats
    }
}

fn assert_no_failures(stats: &LoadStats) {
    let failures = stats.failures.lock().unwrap();
    assert_eq!(
        (
            stats.errors.load(Ordering::SeqCst),
            stats.non_2xx.load(Ordering::SeqCst)
        ),
        (0, 0),
        "failed requests, first few: {:?}",
        &failures[..failures.len().min(5)]
    );
}

/// Blue/green: one swap from the v1 set to the v2 set under load, then the
/// old set drained. Nothing fails, and once a response showed v2, no request
/// started later sees v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blue_green_swap_under_load_is_atomic_and_loses_nothing() {
    let w = world();
    let (blue, green) = (
        w.engine.create_pod().unwrap(),
        w.engine.create_pod().unwrap(),
    );
    let (b1, b2) = (upstream(&blue, "v1").await, upstream(&blue, "v1").await);
    let (g1, g2) = (upstream(&green, "v2").await, upstream(&green, "v2").await);
    let router = router().await;
    router.set_table(live(vec![
        backend("b1", &blue, &b1),
        backend("b2", &blue, &b2),
    ]));

    let load = Load::start(router.local_addr(), 8, 2);
    load.stats
        .until("300 v1 responses", |s| s.v1.load(Ordering::SeqCst) >= 300)
        .await;
    let swapped = Instant::now();
    router.set_table(live(vec![
        backend("g1", &green, &g1),
        backend("g2", &green, &g2),
    ]));
    load.stats
        .until("300 v2 responses", |s| s.v2.load(Ordering::SeqCst) >= 300)
        .await;
    for id in ["b1", "b2"] {
        router.drain(id, DEADLINE).await.unwrap();
        assert_eq!(router.in_flight(id), 0);
    }
    // The drained set's pooled connections are closed.
    b1.state
        .until("no connection open", |s| s.open.load(Ordering::SeqCst) == 0)
        .await;
    b2.state
        .until("no connection open", |s| s.open.load(Ordering::SeqCst) == 0)
        .await;
    let stats = load.stop().await;

    assert_no_failures(&stats);
    assert_eq!(
        stats.late_v1.load(Ordering::SeqCst),
        0,
        "requests started after v2 was seen got v1"
    );
    let first_v2 = stats.first_v2_at.lock().unwrap().unwrap();
    eprintln!(
        "swap: {} v1, {} v2 responses; first v2 response {:?} after the swap",
        stats.v1.load(Ordering::SeqCst),
        stats.v2.load(Ordering::SeqCst),
        first_v2.duration_since(swapped)
    );
    router.shutdown().await;
}

/// Rolling: instances replaced one at a time (new one in, old one out and
/// drained) under load; nothing fails and at the end only v2 answers. The
/// router runs on two threads of its own (one pool each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_replacement_under_load_loses_nothing() {
    let w = world();
    let pods: Vec<Pod> = (0..4).map(|_| w.engine.create_pod().unwrap()).collect();
    let old = [
        upstream(&pods[0], "v1").await,
        upstream(&pods[1], "v1").await,
    ];
    let new = [
        upstream(&pods[2], "v2").await,
        upstream(&pods[3], "v2").await,
    ];
    let old_b = [
        backend("old0", &pods[0], &old[0]),
        backend("old1", &pods[1], &old[1]),
    ];
    let new_b = [
        backend("new0", &pods[2], &new[0]),
        backend("new1", &pods[3], &new[1]),
    ];
    let router = router_on_threads(2).await;
    router.set_table(live(old_b.to_vec()));
    let load = Load::start(router.local_addr(), 8, 2);
    let mut seen = 0;
    let mut wait_more = |load: &Load| {
        seen += 200;
        let target = seen;
        let stats = load.stats.clone();
        async move {
            stats
                .until("more responses", |s| {
                    s.v1.load(Ordering::SeqCst) + s.v2.load(Ordering::SeqCst) >= target
                })
                .await
        }
    };
    wait_more(&load).await;
    router.set_table(live(vec![old_b[1].clone(), new_b[0].clone()]));
    router.drain("old0", DEADLINE).await.unwrap();
    wait_more(&load).await;
    router.set_table(live(new_b.to_vec()));
    router.drain("old1", DEADLINE).await.unwrap();
    let v2_before = load.stats.v2.load(Ordering::SeqCst);
    load.stats
        .until("200 more v2 responses", |s| {
            s.v2.load(Ordering::SeqCst) >= v2_before + 200
        })
        .await;
    let v1_at_end = load.stats.v1.load(Ordering::SeqCst);
    load.stats
        .until("100 more responses", |s| {
            s.v2.load(Ordering::SeqCst) >= v2_before + 300
        })
        .await;
    let stats = load.stop().await;
    assert_no_failures(&stats);
    assert_eq!(
        stats.v1.load(Ordering::SeqCst),
        v1_at_end,
        "v1 answered after its drain"
    );
    for old in &old {
        old.state
            .until("no connection open", |s| s.open.load(Ordering::SeqCst) == 0)
            .await;
    }
    router.shutdown().await;
}

/// Drain waits for a slow request in flight (timing out while it runs), then
/// closes the pooled connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_in_flight_then_closes_the_pool() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let (slow, other) = (upstream(&pod, "v1").await, upstream(&pod, "v2").await);
    let router = router().await;
    router.set_table(live(vec![backend("slow", &pod, &slow)]));
    let addr = router.local_addr();
    // Two pooled connections: two concurrent requests, both complete.
    let (a, b) = tokio::join!(get_once(addr, "/"), get_once(addr, "/"));
    assert_eq!(a.unwrap().1, "v1");
    assert_eq!(b.unwrap().1, "v1");
    assert!(slow.state.open.load(Ordering::SeqCst) >= 1);

    let in_flight = tokio::spawn(get_once(addr, "/slow"));
    slow.state
        .until("the slow request", |s| {
            s.slow_started.load(Ordering::SeqCst) == 1
        })
        .await;
    router.set_table(live(vec![backend("other", &pod, &other)]));
    assert_eq!(router.in_flight("slow"), 1);
    assert_eq!(get_once(addr, "/").await.unwrap().1, "v2");

    let timed_out = router
        .drain("slow", Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(timed_out.in_flight, 1);
    assert!(timed_out
        .to_string()
        .contains("instance slow still had 1 request(s) in flight"));

    {
        let drain = router.drain("slow", DEADLINE);
        tokio::pin!(drain);
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut drain)
                .await
                .is_err(),
            "drain returned with a request in flight"
        );
        slow.state.released.store(true, Ordering::SeqCst);
        slow.state.release.notify_waiters();
        drain.await.unwrap();
    }
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert_eq!(router.in_flight("slow"), 0);
    slow.state
        .until("every pooled connection closed", |s| {
            s.open.load(Ordering::SeqCst) == 0
        })
        .await;
    // The other instance keeps its pool.
    assert!(other.state.open.load(Ordering::SeqCst) >= 1);
    router.shutdown().await;
}

/// No instance: a 503 page at once, on the main and the preview listener;
/// the preview listener routes to the preview set only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_answers_503_quickly_and_preview_routes_apart() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let (v1, v2) = (upstream(&pod, "v1").await, upstream(&pod, "v2").await);
    let router = router().await;
    let preview = router.preview_addr().unwrap();
    for addr in [router.local_addr(), preview] {
        let started = Instant::now();
        let (status, body) = get_once(addr, "/").await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.contains("No instance of web (dev) is ready to answer"),
            "{body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    router.set_table(RouteTable {
        live: vec![backend("a", &pod, &v1)],
        preview: vec![backend("b", &pod, &v2)],
    });
    assert_eq!(get_once(router.local_addr(), "/").await.unwrap().1, "v1");
    assert_eq!(get_once(preview, "/").await.unwrap().1, "v2");
    // A drained instance is out of service even while still listed: 503;
    // listed again by a new table, it serves again.
    router.drain("a", DEADLINE).await.unwrap();
    let (status, _) = get_once(router.local_addr(), "/").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    router.set_table(RouteTable {
        live: vec![backend("a", &pod, &v1)],
        preview: vec![backend("b", &pod, &v2)],
    });
    assert_eq!(get_once(router.local_addr(), "/").await.unwrap().1, "v1");
    let mut metrics = String::new();
    router.render_metrics(&mut metrics);
    assert!(
        metrics.contains("slipway_router_unrouted_total{app=\"web\",env=\"dev\",status=\"503\"} 3"),
        "{metrics}"
    );
    router.shutdown().await;
}

/// A WebSocket upgrade reaches the instance and bytes flow both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let mut stream = TcpStream::connect(router.local_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_until(&mut stream, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert_eq!(router.in_flight("a"), 1, "an open tunnel is in flight");
    for message in ["hello", "again"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let expected = format!("v1:{message}");
        let echoed = read_until(&mut stream, expected.as_bytes()).await;
        assert_eq!(String::from_utf8_lossy(&echoed), expected);
    }
    drop(stream);
    tokio::time::timeout(DEADLINE, router.drain("a", DEADLINE))
        .await
        .unwrap()
        .unwrap();
    router.shutdown().await;
}

async fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(end) {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("the router stopped answering")
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// X-Forwarded-For is appended to, -Proto and -Host set; hop-by-hop headers
/// (and those `Connection` names) stay behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_and_hop_headers_dropped() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let mut client = Client::connect(router.local_addr()).await.unwrap();
    let request = Request::get("/headers")
        .header("host", "shop.example.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .body(Empty::new().map_err(|e| match e {}).boxed())
        .unwrap();
    let (status, body) = client.send(request).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        "for=203.0.113.7, 127.0.0.1\nproto=http\nhost=shop.example.test\n\
         fwd-host=shop.example.test\nhop=-\nconnection=-\n"
    );
}

/// Request and response bodies stream: 8 MiB goes out and comes back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, hyper::Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream(rx)).boxed();
    let mut client = Client::connect(router.local_addr()).await.unwrap();
    let request = Request::post("/echo")
        .header("host", "app.test")
        .body(body)
        .unwrap();
    let sender = {
        let payload = payload.clone();
        tokio::spawn(async move {
            for chunk in payload.chunks(64 * 1024) {
                tx.send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(chunk))))
                    .await
                    .unwrap();
            }
        })
    };
    let (status, echoed) = client.send(request).await.unwrap();
    sender.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(echoed.as_bytes() == payload.as_slice(), "the echo differs");

    // The response head and first chunk arrive while the request body is
    // still open: the request streams.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, hyper::Error>>(1);
    tx.send(Ok(hyper::body::Frame::data(Bytes::from("early"))))
        .await
        .unwrap();
    let request = Request::post("/first-chunk")
        .header("host", "app.test")
        .body(http_body_util::StreamBody::new(tokio_stream(rx)).boxed())
        .unwrap();
    let mut other = Client::connect(router.local_addr()).await.unwrap();
    other.sender.ready().await.unwrap();
    let response = tokio::time::timeout(DEADLINE, other.sender.send_request(request))
        .await
        .expect("no response while the request body was open")
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "early");
    drop(tx);

    // The first chunk of a response arrives before the instance has sent
    // the rest: the response streams.
    let response = client
        .sender
        .send_request(get_request("/stream"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first");
    v1.state.released.store(true, Ordering::SeqCst);
    v1.state.release.notify_waiters();
    let rest = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .unwrap();
    assert_eq!(rest.unwrap().to_bytes(), "second");
}

fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Per-instance counters in Prometheus text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_5xx_and_latency_per_instance() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("inst-1", &pod, &v1)]));
    let mut client = Client::connect(router.local_addr()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(client.get("/").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        client.get("/fail").await.unwrap().0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // A request stops counting once the router has written its last byte,
    // which the client may read first: wait (with a deadline) for the gauge.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while router.in_flight("inst-1") != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "inst-1 still has {} request(s) in flight after {DEADLINE:?}",
            router.in_flight("inst-1")
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut text = String::new();
    router.render_metrics(&mut text);
    let labels = r#"app="web",env="dev",instance="inst-1",version="v1""#;
    for line in [
        format!("slipway_router_requests_total{{{labels}}} 4"),
        format!("slipway_router_responses_5xx_total{{{labels}}} 1"),
        format!("slipway_router_in_flight{{{labels}}} 0"),
        format!("slipway_router_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 4"),
        format!("slipway_router_request_duration_seconds_count{{{labels}}} 4"),
        "# TYPE slipway_router_request_duration_seconds histogram".to_owned(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

/// An instance that refuses connections is skipped: every request is
/// answered by the other, and the refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_retried_on_another() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    // A port nothing listens on in that namespace.
    let dead_port = {
        let socket = netns::socket_in(pod.netns_path()).await.unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.local_addr().unwrap().port()
    };
    // What health checks use: a connection inside the namespace, refused
    // where nothing listens.
    let refused = netns::connect(pod.netns_path(), dead_port)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    netns::connect(pod.netns_path(), v1.port).await.unwrap();
    let router = router().await;
    let dead = Backend {
        id: "dead".into(),
        version: "v0".into(),
        netns: Some(pod.netns_path().to_owned()),
        port: dead_port,
    };
    router.set_table(live(vec![dead, backend("alive", &pod, &v1)]));
    for _ in 0..20 {
        let (status, body) = get_once(router.local_addr(), "/").await.unwrap();
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    }
    let mut text = String::new();
    router.render_metrics(&mut text);
    let refused = text
        .lines()
        .find(|l| {
            l.starts_with("slipway_router_connect_errors_total{") && l.contains("instance=\"dead\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(refused > 0, "the dead instance was never tried:\n{text}");
    // Only dead instances: 502, at once.
    router.set_table(live(vec![Backend {
        id: "dead".into(),
        version: "v0".into(),
        netns: Some(pod.netns_path().to_owned()),
        port: dead_port,
    }]));
    let (status, body) = get_once(router.local_addr(), "/").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

/// A namespace that cannot be opened is an instance that cannot be reached:
/// a 502 naming nothing secret, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_a_502() {
    let router = router().await;
    router.set_table(live(vec![Backend {
        id: "gone".into(),
        version: "v0".into(),
        netns: Some(Path::new("/nonexistent/netns").to_owned()),
        port: 80,
    }]));
    let (status, _) = get_once(router.local_addr(), "/").await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

/// A response body that stops delivering fails at the response idle
/// deadline: the client sees the body break, the request leaves the
/// in-flight count (a drain is not held up forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_response_body_fails_at_its_deadline() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let mut config = RouterConfig::new("web", "dev", "127.0.0.1:0".parse().unwrap());
    config.response_idle_timeout = Duration::from_millis(300);
    let router = Router::start(config).await.unwrap();
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let mut client = Client::connect(router.local_addr()).await.unwrap();
    // "/stream" sends "first", then waits for a release that never comes.
    let response = client
        .sender
        .send_request(get_request("/stream"))
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(DEADLINE, body.frame()).await.unwrap();
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first");
    let started = Instant::now();
    let rest = tokio::time::timeout(DEADLINE, body.collect())
        .await
        .unwrap();
    assert!(rest.is_err(), "the stalled body ended normally");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    tokio::time::timeout(DEADLINE, router.drain("a", DEADLINE))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(router.in_flight("a"), 0);
}

/// Send `bytes` on a new connection and read until the router closes it
/// (deadline: the test's).
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut got))
        .await
        .expect("the router neither answered nor closed")
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// The value of one Prometheus series line starting with `prefix`.
fn series(router: &Router, prefix: &str) -> u64 {
    let mut text = String::new();
    router.render_metrics(&mut text);
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
}

/// Requests whose framing two servers could read differently (both
/// Content-Length and Transfer-Encoding, Content-Lengths that disagree, a
/// coding other than `chunked`, chunked in HTTP/1.0, a length that is not a
/// number) are refused with a 400 that says why, the connection closes, and
/// nothing reaches the instance: not the request, not the one hidden in
/// its body. Two equal Content-Lengths are one length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_request_framing_is_refused_and_smuggles_nothing() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let cases = [
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n{hidden}"),
            "both Content-Length and Transfer-Encoding",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}", hidden.len()),
            "Content-Length headers that disagree",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{hidden}"),
            "Transfer-Encoding is not `chunked`",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
            "Transfer-Encoding is not `chunked`",
        ),
        (
            format!("POST /echo HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
            "HTTP/1.0 request cannot have a Transfer-Encoding",
        ),
        (
            format!("POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: +4\r\n\r\n{hidden}"),
            "Content-Length is not a number",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n{hidden}"),
            "more than one Host header",
        ),
    ];
    for (request, why) in &cases {
        let answer = raw_exchange(router.local_addr(), request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{request:?}: {answer}");
        assert!(answer.contains(why), "{request:?}: {answer}");
        assert!(
            answer.to_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    let answer = raw_exchange(
        router.local_addr(),
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");
    assert_eq!(*v1.state.seen.lock().unwrap(), ["/echo"]);
    assert_eq!(
        series(
            &router,
            "slipway_router_unrouted_total{app=\"web\",env=\"dev\",status=\"400\"}"
        ),
        cases.len() as u64
    );
}

/// Heads that are not HTTP/1.1 as written (an obsolete folded header line,
/// a control byte in a value, a space in a field name, a bare CR, a head
/// over 64 KiB) get a 400 and a closed connection, and reach no instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_heads_are_refused() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: [(&[u8], &str); 6] = [
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Folded: one\r\n two\r\n\r\n",
            "malformed",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Bad: a\x01b\r\n\r\n",
            "malformed",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX Bad: value\r\n\r\n",
            "malformed",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Bad: a\rb\r\n\r\n",
            "malformed",
        ),
        (b"GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n", "malformed"),
        (huge.as_bytes(), "larger than 64 KiB"),
    ];
    for (request, why) in cases {
        let shown = String::from_utf8_lossy(&request[..request.len().min(80)]).into_owned();
        let answer = raw_exchange(router.local_addr(), request).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{shown:?}: {answer}");
        assert!(answer.contains(why), "{shown:?}: {answer}");
    }
    assert!(v1.state.seen.lock().unwrap().is_empty());
    // The router still serves.
    assert_eq!(get_once(router.local_addr(), "/").await.unwrap().1, "v1");
}

/// A chunked request body with a bad chunk size (not hex, longer than 64
/// bits, no CRLF after the data) gets a 400 and a closed connection, not a
/// hang; the instance's connection is dropped with the body unfinished, so
/// nothing the client wrote after the bad chunk can pass for a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_is_refused() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let head = "POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (body, why) in [
        (
            "zz\r\nhello\r\n0\r\n\r\n",
            "chunk size is not a hexadecimal number",
        ),
        (
            "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            "larger than 2^64",
        ),
        ("5\r\nhelloXX0\r\n\r\n", "does not end with CRLF"),
        (
            "-5\r\nhello\r\n0\r\n\r\n",
            "chunk size is not a hexadecimal number",
        ),
    ] {
        let answer = raw_exchange(router.local_addr(), format!("{head}{body}").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{body:?}: {answer}");
        assert!(answer.contains(why), "{body:?}: {answer}");
    }
    // The instance saw at most the head (the body cut where it broke).
    assert!(v1.state.seen.lock().unwrap().iter().all(|t| t == "/echo"));
    // A good chunked body, with an extension and a trailer, arrives whole.
    let answer = raw_exchange(
        router.local_addr(),
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // Echoed back chunk by chunk.
    assert!(answer.contains("\r\nhello\r\n"), "{answer}");
    assert!(answer.contains("\r\n world\r\n"), "{answer}");
}

/// An instance that answers with fixed bytes per request target, lies
/// included; `close` targets end the connection after their answer.
async fn raw_upstream(pod: &Pod, answers: &'static [(&'static str, &'static str, bool)]) -> u16 {
    let socket = netns::socket_in(pod.netns_path()).await.unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&got[..end]).into_owned();
                    got.drain(..end + 4);
                    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let Some((_, answer, close)) = answers.iter().find(|a| a.0 == target) else {
                        return;
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() || *close {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Responses that lie about their length or framing: a body shorter than
/// its Content-Length ends the client's connection (never a hang); bytes
/// beyond it never reach the client, not even as the answer to its next
/// request; a head with both Content-Length and Transfer-Encoding, with
/// Content-Lengths that disagree, or that is not HTTP at all, is a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_lie_about_their_length_are_contained() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let port = raw_upstream(
        &pod,
        &[
            ("/short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", true),
            (
                "/long",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
                false,
            ),
            ("/plain", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain", false),
            (
                "/both",
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                false,
            ),
            ("/conflict", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", false),
            ("/garbage", "SSH-2.0-OpenSSH_9.2\r\n\r\n", false),
            ("/bad-chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", false),
        ],
    )
    .await;
    let router = router().await;
    router.set_table(live(vec![Backend {
        id: "liar".into(),
        version: "v1".into(),
        netns: Some(pod.netns_path().to_owned()),
        port,
    }]));
    let addr = router.local_addr();

    let answer = raw_exchange(addr, b"GET /short HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\nabc"), "{answer}");

    // Keep-alive: the surplus after "ok" is dropped with its connection.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /long HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let first = read_until(&mut stream, b"\r\n\r\nok").await;
    assert!(first.starts_with(b"HTTP/1.1 200 "));
    stream
        .write_all(b"GET /plain HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.starts_with("HTTP/1.1 200 "), "{rest}");
    assert!(rest.ends_with("\r\n\r\nplain"), "{rest}");
    assert!(!rest.contains("smuggled"), "{rest}");

    for target in ["/both", "/conflict", "/garbage"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 502 "), "{target}: {answer}");
    }
    // A broken chunked body after the head: the client's connection ends.
    let answer = raw_exchange(addr, b"GET /bad-chunk HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(!answer.contains("abc"), "{answer}");
    assert_eq!(
        series(
            &router,
            "slipway_router_responses_5xx_total{app=\"web\",env=\"dev\",instance=\"liar\""
        ),
        3
    );
    assert_eq!(router.in_flight("liar"), 0);
}

/// Requests pipelined in one write are answered in order on the one
/// connection; an HTTP/1.0 client gets its answer and the end of the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_and_http10_requests() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let v1 = upstream(&pod, "v1").await;
    let router = router().await;
    router.set_table(live(vec![backend("a", &pod, &v1)]));
    let answer = raw_exchange(
        router.local_addr(),
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 3, "{answer}");
    let hello = answer.find("hello").expect(&answer);
    assert!(
        answer[..hello].matches("HTTP/1.1 200 ").count() == 2,
        "{answer}"
    );
    assert_eq!(*v1.state.seen.lock().unwrap(), ["/one", "/echo", "/three"]);
    let answer = raw_exchange(router.local_addr(), b"GET /x HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\nv1"), "{answer}");
}
