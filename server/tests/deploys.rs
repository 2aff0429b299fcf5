//! Deploys end to end with the real binary: a git repository whose pipeline
//! builds an image, a `slipway runner`, a `slipway node` running instances
//! with runc behind its routers, and the deploy CLI.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = slipway(server, args);
    assert!(
        out.status.success(),
        "slipway {args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q", "-b", "main"]);
    }
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", message]);
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

/// The deploy example of the README, exactly as written there.
fn readme_deploy_example() -> String {
    let readme = include_str!("../../README.md");
    let marker = "```yaml\njobs:\n  image:";
    let start = readme
        .find(marker)
        .expect("the deploy example in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// A web app for busybox httpd: `/version` says `version`, `/healthz` is ok.
const CONTAINERFILE: &str = "FROM busybox\n\
COPY version /www/version\n\
RUN echo ok > /www/healthz\n\
CMD [\"sh\", \"-c\", \"echo web listening on $PORT; exec httpd -f -p $PORT -h /www\"]\n";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// A node agent; dropped, it stops and its instances are removed (they
/// would outlive it otherwise: that is what they are for).
struct Node {
    process: Option<Process>,
    work: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        drop(self.process.take());
        let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("node-reset")
            .arg("--work-dir")
            .arg(&self.work)
            .output()
            .unwrap();
        assert!(
            out.status.success() || std::thread::panicking(),
            "node-reset: {}",
            text(&out.stderr)
        );
    }
}

/// A server with busybox in its registry, and a scratch directory runc's
/// mapped users may traverse.
fn with_busybox(name: &str) -> (TestServer, tempfile::TempDir) {
    let server = TestServer::start();
    let work = scratch_dir(name);
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    ok(&server, &["image", "bootstrap", "busybox"]);
    (server, work)
}

fn start_runner(server: &TestServer, work: &Path) -> Process {
    let token = ok(server, &["runner-token", "create"]).trim().to_owned();
    Process(
        Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(["runner", "--server", server.url(), "--token", &token])
            .args(["--name", "deploy-runner", "--capacity", "2"])
            .arg("--work-dir")
            .arg(work)
            .env("SLIPWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// A run of `count` free loopback ports (checked by binding each).
fn free_ports(count: u16) -> (u16, u16) {
    for _ in 0..200 {
        let base = 20000 + (rand_u16() % 30000);
        let all_free = (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + count - 1);
        }
    }
    panic!("no run of {count} free ports");
}

fn rand_u16() -> u16 {
    let bytes = random_bytes(2);
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// A node of cluster `local` joined with a fresh join token.
fn start_node(server: &TestServer, work: &Path, ports: (u16, u16)) -> Node {
    let token = ok(server, &["cluster", "add", "local"]).trim().to_owned();
    assert!(token.starts_with("slj_"), "{token}");
    Node {
        process: Some(spawn_node(server, work, Some(&token), ports)),
        work: work.to_owned(),
    }
}

fn spawn_node(server: &TestServer, work: &Path, token: Option<&str>, ports: (u16, u16)) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.args(["node", "--server", server.url(), "--name", "node-1"])
        .arg("--work-dir")
        .arg(work)
        .args(["--router-ports", &format!("{}-{}", ports.0, ports.1)])
        .env("SLIPWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    Process(cmd.spawn().unwrap())
}

fn environments(server: &TestServer, repo: &str) -> Vec<Value> {
    let r = server.get(
        &format!("/api/v1/environments?repo={repo}"),
        &server.admin_auth(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json().as_array().unwrap().clone()
}

fn environment(server: &TestServer, repo: &str, env: &str) -> Value {
    environments(server, repo)
        .into_iter()
        .find(|e| e["name"] == env)
        .unwrap_or_else(|| panic!("no environment {env}"))
}

/// Wait (up to `deadline`) until `env` runs `replicas` ready instances of
/// its current deployment and nothing is in progress; its URL.
fn wait_serving(server: &TestServer, repo: &str, env: &str, deadline: Duration) -> Value {
    let start = Instant::now();
    loop {
        let Some(e) = environments(server, repo)
            .into_iter()
            .find(|e| e["name"] == env)
        else {
            assert!(
                start.elapsed() < deadline,
                "no environment {env} after {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let ready = e["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready" && i["routed"] == "live" && i["goal"] == "run")
            .count();
        let wanted = e["current"]["replicas"].as_u64().unwrap_or(u64::MAX) as usize;
        if e["in_progress"].is_null() && ready == wanted && !e["url"].is_null() {
            return e;
        }
        assert!(
            start.elapsed() < deadline,
            "{env} not serving after {deadline:?}: {e:#}\nserver log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get_text(url: &str) -> (u16, String) {
    let client = http_client();
    match client.get(url).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Acceptance 1: the README's example, from a commit to prod.
#[test]
fn a_commit_is_built_deployed_to_dev_and_promoted_to_prod() {
    let (server, work) = with_busybox("deploys-e2e");
    let spec = readme_deploy_example();
    let repo = work.path().join("repo");
    let sha = commit(
        &repo,
        &[
            (".slipway.yml", spec.as_str()),
            ("Containerfile", CONTAINERFILE),
            ("version", "v1\n"),
        ],
        "v1",
    );
    ok(
        &server,
        &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let ports = free_ports(20);
    let _node = start_node(&server, &work.path().join("node"), ports);

    let out = slipway(&server, &["run", "demo", "--wait"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The pipeline's digest goes to dev by itself, 2 instances.
    let dev = wait_serving(&server, "demo", "dev", Duration::from_secs(120));
    let digest = dev["current"]["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{dev:#}");
    assert_eq!(dev["current"]["commit"], sha.as_str());
    assert_eq!(dev["instances"].as_array().unwrap().len(), 2, "{dev:#}");
    let url = dev["url"].as_str().unwrap();
    assert_eq!(get_text(&format!("{url}/version")), (200, "v1\n".into()));

    // Promotion along the chain, each by its own strategy.
    let out = ok(&server, &["promote", "demo", "--to", "staging", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let out = ok(&server, &["promote", "demo", "--to", "prod", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let prod = wait_serving(&server, "demo", "prod", Duration::from_secs(60));
    assert_eq!(prod["instances"].as_array().unwrap().len(), 3, "{prod:#}");
    let prod_url = prod["url"].as_str().unwrap();
    assert_eq!(
        get_text(&format!("{prod_url}/version")),
        (200, "v1\n".into())
    );

    // `env list` shows the same digest in all three, each with its commit.
    let listed = ok(&server, &["env", "list", "demo"]);
    let short = &digest[..19];
    for env in ["dev", "staging", "prod"] {
        let line = listed
            .lines()
            .find(|l| l.trim_start().starts_with(env))
            .unwrap_or_else(|| panic!("{env} in {listed}"));
        assert!(line.contains(short), "{line}");
        assert!(line.contains(&sha[..12]), "{line}");
    }
    for e in environments(&server, "demo") {
        assert_eq!(e["current"]["digest"], digest.as_str(), "{e:#}");
        assert_eq!(e["current"]["commit"], sha.as_str(), "{e:#}");
    }
    // Each instance's output, through the server.
    let logs = ok(&server, &["env", "logs", "demo", "dev"]);
    for i in dev["instances"].as_array().unwrap() {
        let line = format!("{} | web listening on 8080", i["name"].as_str().unwrap());
        assert!(logs.contains(&line), "{line:?} in {logs}");
    }
    let history = ok(&server, &["deployments", "demo"]);
    assert_eq!(
        history.lines().filter(|l| l.contains("succeeded")).count(),
        3,
        "{history}"
    );
}

// ---------------------------------------------------------------------------
// Rollouts under load.

/// One request's record: when it started and ended, and which version
/// answered (or why it failed).
#[derive(Clone, Debug)]
struct Seen {
    start: Instant,
    end: Instant,
    outcome: Result<String, String>,
}

/// Clients hammering `/version` through a router: `keep_alive` connections
/// reused for every request, plus one stream of new connections.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Seen>>>,
}

/// One HTTP/1.1 GET on `stream`; the body, or why not.
fn get_on(
    stream: &mut std::net::TcpStream,
    reader: &mut std::io::BufReader<std::net::TcpStream>,
    host: &str,
    close: bool,
) -> Result<String, String> {
    use std::io::{BufRead, Read, Write};
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|e| format!("read: {e}"))?;
    if status.is_empty() {
        return Err("connection closed before a response".into());
    }
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status:?}"))?;
    let mut length = None;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0; length.ok_or("no content-length")?];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("read body: {e}"))?;
    let body = String::from_utf8_lossy(&body).trim().to_owned();
    if !(200..300).contains(&code) {
        return Err(format!("status {code}: {body}"));
    }
    Ok(body)
}

impl Load {
    fn start(url: &str, keep_alive: usize) -> Load {
        let addr = url.trim_start_matches("http://").to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..=keep_alive {
            let new_connections = i == keep_alive;
            let (addr, stop) = (addr.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut seen = Vec::new();
                let connect = || -> Result<(std::net::TcpStream, std::io::BufReader<std::net::TcpStream>), String> {
                    let s = std::net::TcpStream::connect(&addr).map_err(|e| format!("connect: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let r = std::io::BufReader::new(s.try_clone().unwrap());
                    Ok((s, r))
                };
                let mut conn = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let start = Instant::now();
                    let outcome = (|| {
                        if conn.is_none() || new_connections {
                            conn = Some(connect()?);
                        }
                        let (s, r) = conn.as_mut().unwrap();
                        get_on(s, r, &addr, new_connections)
                    })();
                    if outcome.is_err() {
                        conn = None;
                    }
                    seen.push(Seen {
                        start,
                        end: Instant::now(),
                        outcome,
                    });
                    if new_connections {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                seen
            }));
        }
        Load { stop, threads }
    }

    fn finish(self) -> Vec<Seen> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all: Vec<Seen> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_by_key(|s| s.start);
        all
    }
}

/// Every request answered 2xx; the failures otherwise.
fn assert_no_failures(seen: &[Seen], what: &str) {
    let failed: Vec<&Seen> = seen.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{what}: {} of {} requests failed, e.g. {:?}",
        failed.len(),
        seen.len(),
        failed
            .iter()
            .take(5)
            .map(|s| &s.outcome)
            .collect::<Vec<_>>()
    );
    assert!(seen.len() > 100, "{what}: only {} requests", seen.len());
}

/// Containers the node runs now (its runc root).
fn node_containers(node_work: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(node_work.join("supervisor/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// Sample the node's container count until stopped; the largest seen.
struct MaxContainers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl MaxContainers {
    fn start(node_work: &Path) -> MaxContainers {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (dir, flag) = (node_work.to_owned(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                max = max.max(node_containers(&dir).len());
                std::thread::sleep(Duration::from_millis(50));
            }
            max
        });
        MaxContainers { stop, thread }
    }

    fn finish(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A world for rollout tests: a server with busybox, a runner, a node, and
/// repository `demo` with one environment `dev` of `strategy` x3.
struct World {
    server: TestServer,
    work: tempfile::TempDir,
    repo: std::path::PathBuf,
    _runner: Process,
    node: Node,
    ports: (u16, u16),
    spec: String,
}

const ROLLOUT_SPEC: &str = "jobs:
  image:
    steps:
      - name: build
        build:
          image: demo/web
deploy:
  app: web
  image: demo/web
  port: 8080
  health: /healthz
  replicas: 3
  deadline: 20s
  environments:
    dev: { strategy: STRATEGY, keep: 2m }
";

impl World {
    fn new(prefix: &str, strategy: &str) -> World {
        World::with_spec(prefix, &ROLLOUT_SPEC.replace("STRATEGY", strategy))
    }

    fn with_spec(prefix: &str, spec: &str) -> World {
        let (server, work) = with_busybox(prefix);
        let spec = spec.to_owned();
        let repo = work.path().join("repo");
        commit(
            &repo,
            &[
                (".slipway.yml", spec.as_str()),
                ("Containerfile", CONTAINERFILE),
                ("version", "v1\n"),
            ],
            "v1",
        );
        ok(
            &server,
            &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
        );
        let runner = start_runner(&server, &work.path().join("runner"));
        let ports = free_ports(20);
        let node = start_node(&server, &work.path().join("node"), ports);
        let world = World {
            server,
            work,
            repo,
            _runner: runner,
            node,
            ports,
            spec,
        };
        world.run_pipeline();
        world.wait_deployment(1, "succeeded", Duration::from_secs(120));
        world
    }

    fn node_work(&self) -> std::path::PathBuf {
        self.work.path().join("node")
    }

    fn run_pipeline(&self) {
        let out = slipway(&self.server, &["run", "demo", "--wait"]);
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// Commit `files` (besides the spec) and run the pipeline: the next
    /// deployment to dev.
    fn push(&self, files: &[(&str, &str)], message: &str) {
        let mut all = vec![(".slipway.yml", self.spec.as_str())];
        all.extend_from_slice(files);
        commit(&self.repo, &all, message);
        self.run_pipeline();
    }

    fn deployment(&self, id: i64) -> Value {
        let r = self.server.get(
            &format!("/api/v1/deployments/{id}"),
            &self.server.admin_auth(),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        r.json()
    }

    /// Wait until deployment `id` is in `state`; fail at once if it ends otherwise.
    fn wait_deployment(&self, id: i64, state: &str, deadline: Duration) -> Value {
        let start = Instant::now();
        loop {
            let r = self.server.get(
                &format!("/api/v1/deployments/{id}"),
                &self.server.admin_auth(),
            );
            if r.status == 200 {
                let d = r.json();
                if d["state"] == state {
                    return d;
                }
                let ended = ["succeeded", "failed", "superseded"]
                    .contains(&d["state"].as_str().unwrap_or(""));
                assert!(
                    !ended,
                    "deployment {id} ended {}, not {state}: {d:#}",
                    d["state"]
                );
            }
            assert!(
                start.elapsed() < deadline,
                "deployment {id} not {state} after {deadline:?}: {}\nserver log:\n{}",
                r.body_text(),
                self.server.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn dev(&self) -> Value {
        environment(&self.server, "demo", "dev")
    }

    fn url(&self) -> String {
        self.dev()["url"].as_str().unwrap().to_owned()
    }
}

/// Acceptance 2: a rolling deploy of 3 instances from v1 to v2 under load
/// (8 keep-alive connections and a stream of new ones): no failed request,
/// never more than 4 instances, and only v2 at the end.
#[test]
fn a_rolling_deploy_under_load_fails_no_request() {
    let world = World::new("deploys-rolling", "rolling");
    let url = world.url();
    assert_eq!(get_text(&format!("{url}/version")).1, "v1\n");
    let load = Load::start(&url, 8);
    let alive = MaxContainers::start(&world.node_work());
    world.push(
        &[("Containerfile", CONTAINERFILE), ("version", "v2\n")],
        "v2",
    );
    world.wait_deployment(2, "succeeded", Duration::from_secs(120));
    // The last old instance leaves after the deployment ends: let it go.
    let start = Instant::now();
    while node_containers(&world.node_work()).len() > 3 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "old instances linger"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let max = alive.finish();
    let seen = load.finish();
    assert_no_failures(&seen, "rolling v1 -> v2");
    assert!(max <= 4, "{max} instances were alive at once");
    let versions: std::collections::BTreeSet<String> =
        seen.iter().filter_map(|s| s.outcome.clone().ok()).collect();
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "{versions:?}"
    );
    for _ in 0..20 {
        assert_eq!(get_text(&format!("{url}/version")).1, "v2\n");
    }
    eprintln!(
        "rolling: {} requests, 0 failed, at most {max} instances",
        seen.len()
    );
}

/// Acceptances 3 and 5: blue/green under the same load. The preview URL
/// answers v2 before the swap; once any request saw v2, none started later
/// sees v1; a rollback inside the window is a swap back in under a second
/// with no new container, again without a failed request.
#[test]
fn blue_green_swaps_atomically_and_rolls_back_warm() {
    let world = World::new("deploys-bluegreen", "blue-green");
    let url = world.url();
    let preview = world.dev()["preview_url"].as_str().unwrap().to_owned();
    let load = Load::start(&url, 8);
    world.push(
        &[("Containerfile", CONTAINERFILE), ("version", "v2\n")],
        "v2",
    );
    // Before the swap the preview address serves the new set: a prober
    // records when it saw what.
    let probing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let prober = {
        let (preview, probing) = (preview.clone(), probing.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while probing.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = get_text(&format!("{preview}/version"));
                seen.push((std::time::SystemTime::now(), status, body));
            }
            seen
        })
    };
    world.wait_deployment(2, "succeeded", Duration::from_secs(120));
    probing.store(false, std::sync::atomic::Ordering::Relaxed);
    let previewed = prober.join().unwrap();
    let swapped_at = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_millis(world.deployment(2)["finished_at"].as_i64().unwrap() as u64);
    assert!(
        previewed
            .iter()
            .any(|(at, status, body)| *at < swapped_at && *status == 200 && body == "v2\n"),
        "the preview URL never answered v2 before the swap"
    );
    // Let the new set serve a while, then roll back.
    std::thread::sleep(Duration::from_secs(2));
    let containers_before: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    assert_eq!(
        containers_before.len(),
        6,
        "3 live + 3 warm: {containers_before:?}"
    );
    let rollback_started = Instant::now();
    ok(&world.server, &["rollback", "demo", "--env", "dev"]);
    world.wait_deployment(3, "succeeded", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let containers_after: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    let seen = load.finish();
    assert_no_failures(&seen, "blue/green v1 -> v2 -> v1");
    assert_eq!(
        containers_before, containers_after,
        "the rollback started or stopped a container"
    );

    // Atomic swap: after the first v2 answer, no request started later got v1.
    let first_v2 = seen
        .iter()
        .filter(|s| s.outcome.as_deref() == Ok("v2") && s.start < rollback_started)
        .map(|s| s.end)
        .min()
        .expect("some request saw v2");
    let late_v1: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.start > first_v2 && s.start < rollback_started && s.outcome.as_deref() == Ok("v1")
        })
        .collect();
    assert!(
        late_v1.is_empty(),
        "{} requests saw v1 after v2 was seen",
        late_v1.len()
    );
    // Rollback: from the command, all traffic on v1 in under a second.
    let last_v2_start = seen
        .iter()
        .filter(|s| s.start >= rollback_started && s.outcome.as_deref() == Ok("v2"))
        .map(|s| s.start)
        .max();
    let back = last_v2_start.map_or(Duration::ZERO, |t| t - rollback_started);
    assert!(
        back < Duration::from_secs(1),
        "v2 still answered {back:?} after the rollback command"
    );
    for _ in 0..20 {
        assert_eq!(get_text(&format!("{url}/version")).1, "v1\n");
    }
    let swap_to_v2 = seen
        .iter()
        .filter(|s| s.outcome.as_deref() == Ok("v2"))
        .map(|s| s.end)
        .min()
        .unwrap();
    let since_swap = std::time::SystemTime::now()
        .duration_since(swapped_at)
        .unwrap_or_default()
        .saturating_sub(Instant::now() - swap_to_v2);
    eprintln!(
        "blue/green: {} requests, 0 failed; swap decision to first v2 response {:?}; rollback to v1 within {back:?}",
        seen.len(),
        since_swap
    );
}

/// What the node holds for its instances: container ids, instance
/// directories, mounts below its work dir, instance cgroups.
fn node_leftovers(node_work: &Path) -> (usize, usize, usize, usize) {
    let containers = node_containers(node_work).len();
    let dirs = std::fs::read_dir(node_work.join("supervisor/instances"))
        .map(|d| d.count())
        .unwrap_or(0);
    let prefix = node_work.to_str().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(prefix)))
        .count();
    // The node's instance cgroups carry a tag of its supervisor root (cgroup
    // v2, or v1's unified hierarchy beside the controllers).
    let root = node_work.join("supervisor");
    let tag = sha256_digest(root.to_str().unwrap().as_bytes())[7..15].to_owned();
    let cgroups = [
        "/sys/fs/cgroup/slipway-instances",
        "/sys/fs/cgroup/unified/slipway-instances",
    ]
    .iter()
    .map(|dir| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.path().is_dir() && e.file_name().to_string_lossy().starts_with(&tag)
                    })
                    .count()
            })
            .unwrap_or(0)
    })
    .sum();
    (containers, dirs, mounts, cgroups)
}

/// Acceptance 4: a version whose /healthz answers 500, one that exits at
/// once and one that never listens each fail at the deadline with a reason,
/// while v1 serves on without a failed request, and leave nothing behind.
#[test]
fn a_bad_version_fails_at_its_deadline_and_v1_serves_on() {
    let world = World::new("deploys-bad", "rolling");
    let url = world.url();
    let healthy = node_leftovers(&world.node_work());
    assert_eq!(healthy.0, 3, "{healthy:?}");
    let load = Load::start(&url, 8);
    let respond500 = "#!/bin/sh\nprintf 'HTTP/1.0 500 Internal Server Error\\r\\nContent-Length: 6\\r\\n\\r\\nbroken'\n";
    let variants = [
        (
            "FROM busybox\nCOPY respond500 /respond500\nRUN chmod +x /respond500\nCMD [\"sh\", \"-c\", \"exec nc -ll -p $PORT -e /respond500\"]\n",
            "/healthz answered 500",
        ),
        (
            "FROM busybox\nCMD [\"sh\", \"-c\", \"echo crashing on purpose; exit 3\"]\n",
            "exited with code 3",
        ),
        (
            "FROM busybox\nCMD [\"sh\", \"-c\", \"echo not listening; exec sleep 3600\"]\n",
            "connection refused",
        ),
    ];
    for (n, (containerfile, reason)) in variants.iter().enumerate() {
        let id = n as i64 + 2;
        world.push(
            &[
                ("Containerfile", containerfile),
                ("respond500", respond500),
                ("version", "bad\n"),
            ],
            &format!("bad {n}"),
        );
        let failed = world.wait_deployment(id, "failed", Duration::from_secs(90));
        let text = failed["reason"].as_str().unwrap();
        assert!(
            text.to_lowercase().contains(reason),
            "deployment {id}: {text}"
        );
        assert!(text.contains("not ready after 20s"), "{text}");
        if n == 1 {
            assert!(
                text.contains("crashing on purpose"),
                "the log lines: {text}"
            );
        }
        // Its instances go; v1's three remain, and nothing else.
        let start = Instant::now();
        loop {
            let now = node_leftovers(&world.node_work());
            if now == healthy {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "after {id}: {now:?}, healthy was {healthy:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let dev = world.dev();
        assert_eq!(dev["current"]["id"], 1, "{dev:#}");
        assert_eq!(get_text(&format!("{url}/version")), (200, "v1\n".into()));
    }
    let seen = load.finish();
    assert_no_failures(&seen, "v1 through three bad versions");
    assert!(seen.iter().all(|s| s.outcome.as_deref() == Ok("v1")));
}

/// Acceptance 6: SIGKILL the server in the middle of a rolling deploy and
/// restart it: the deployment ends and nothing leaks, with no failed
/// request. SIGKILL the node agent: its instances survive, and a new agent
/// adopts the same containers and serves within 2 s of starting.
#[test]
fn killed_server_and_node_agent_leave_no_deploy_half_done() {
    let mut world = World::new("deploys-faults", "rolling");
    let url = world.url();
    let load = Load::start(&url, 8);
    world.push(
        &[("Containerfile", CONTAINERFILE), ("version", "v2\n")],
        "v2",
    );
    // Mid-rollout: some new instance exists, not all are ready.
    world.wait_deployment(2, "progressing", Duration::from_secs(30));
    let start = Instant::now();
    loop {
        let d = world.deployment(2);
        let progress = d["progress"].as_str().unwrap_or("");
        if d["state"] == "progressing" && progress.starts_with("1/3") {
            break;
        }
        assert!(
            d["state"] != "succeeded",
            "the rollout ended before the kill: {d:#}"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "{d:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    world.server.kill_hard();
    std::thread::sleep(Duration::from_secs(2));
    world.server.restart_same_address();
    let start = Instant::now();
    let ended = loop {
        let d = world.deployment(2);
        if ["succeeded", "failed"].contains(&d["state"].as_str().unwrap()) {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{d:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let start = Instant::now();
    while node_leftovers(&world.node_work()).0 != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "{:?}",
            node_leftovers(&world.node_work())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = load.finish();
    assert_no_failures(&seen, "rolling through a killed server");
    let expected = if ended["state"] == "succeeded" {
        "v2\n"
    } else {
        "v1\n"
    };
    assert_eq!(get_text(&format!("{url}/version")), (200, expected.into()));
    let (containers, dirs, _, cgroups) = node_leftovers(&world.node_work());
    assert_eq!((containers, dirs, cgroups), (3, 3, 3));

    // The node agent: SIGKILL, instances live on.
    let before: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    let mut node = world.node.process.take().unwrap();
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    std::mem::forget(node);
    std::thread::sleep(Duration::from_secs(1));
    let survivors: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    assert_eq!(before, survivors, "instances died with their agent");
    let started = Instant::now();
    let node = spawn_node(&world.server, &world.node_work(), None, world.ports);
    let answered = loop {
        if get_text(&format!("{url}/version")).0 == 200 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the router never came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        answered < Duration::from_secs(2),
        "the router answered {answered:?} after the agent started"
    );
    world.node.process = Some(node);
    std::thread::sleep(Duration::from_secs(2));
    let adopted: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    assert_eq!(
        before, adopted,
        "the new agent did not adopt the same containers"
    );
    let dev = world.dev();
    for i in dev["instances"].as_array().unwrap() {
        assert_eq!(i["restarts"], 0, "{dev:#}");
    }
    eprintln!("faults: deployment 2 {} after the server was killed; router back {answered:?} after the agent started", ended["state"]);
}

/// A CGI probe run inside an instance: its uid, whether it holds the
/// secret, whether it reaches TCP ports of the host's loopback, its network
/// interfaces, and whether a 128 MiB allocation survives.
const PROBE: &str = r#"#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "uid=$(id -u)"
echo "secret=${DB_PASSWORD:-absent}"
for port in $(echo "$QUERY_STRING" | tr '&' ' '); do
  if wget -q -T 2 -O /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then echo "port $port reached"; else echo "port $port unreachable"; fi
done
echo "interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null; echo "small=$?"
dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null; echo "large=$?"
"#;

const PROBE_CONTAINERFILE: &str = "FROM busybox\n\
COPY version /www/version\n\
COPY probe /www/cgi-bin/probe\n\
RUN echo ok > /www/healthz && chmod +x /www/cgi-bin/probe\n\
CMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n";

const PROBE_SPEC: &str = "jobs:
  image:
    steps:
      - name: build
        build:
          image: demo/web
deploy:
  app: web
  image: demo/web
  port: 8080
  health: /healthz
  memory: 64M
  environments:
    dev: { strategy: rolling }
    prod: { strategy: rolling, secrets: [DB_PASSWORD] }
";

/// The host uids of the processes in instance `name`'s cgroup.
fn host_uids(name: &str) -> Vec<u32> {
    let mut uids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if !cgroup.contains(&format!("slipway-inst-{name}")) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            uids.extend(
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|u| u.parse::<u32>().ok()),
            );
        }
    }
    uids
}

/// Acceptance 7: from inside an instance, the host's loopback (the Slipway
/// server) and the other environment's router are out of reach, there is no
/// interface but loopback, it runs as an unprivileged host uid, its memory
/// limit holds, and prod's secret is in prod only.
#[test]
fn instances_are_isolated_and_secrets_stay_in_their_environment() {
    let (server, work) = with_busybox("deploys-isolation");
    let repo = work.path().join("repo");
    commit(
        &repo,
        &[
            (".slipway.yml", PROBE_SPEC),
            ("Containerfile", PROBE_CONTAINERFILE),
            ("probe", PROBE),
            ("version", "v1\n"),
        ],
        "v1",
    );
    ok(
        &server,
        &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let _node = start_node(&server, &work.path().join("node"), free_ports(20));
    let out = slipway(&server, &["run", "demo", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dev = wait_serving(&server, "demo", "dev", Duration::from_secs(120));
    // Prod names a secret that is not set yet: the promotion fails before any
    // instance starts, saying which secret and how to set it.
    let early = slipway(&server, &["promote", "demo", "--to", "prod", "--wait"]);
    let said = format!("{}{}", text(&early.stdout), text(&early.stderr));
    assert!(!early.status.success(), "{said}");
    assert!(
        said.contains("DB_PASSWORD") && said.contains("not set") && said.contains("env secret set"),
        "{said}"
    );
    let secret = format!("prod-only-{}", random_hex(8));
    let mut set = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["env", "secret", "set", "demo", "prod", "DB_PASSWORD"])
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), secret.as_bytes()).unwrap();
    drop(set.stdin.take());
    assert!(set.wait().unwrap().success());
    ok(&server, &["promote", "demo", "--to", "prod", "--wait"]);
    let prod = wait_serving(&server, "demo", "prod", Duration::from_secs(60));
    let server_port = server.host_port().rsplit(':').next().unwrap().to_owned();
    let dev_port = dev["url"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let probe = |env: &Value| {
        let url = format!(
            "{}/cgi-bin/probe?{server_port}&{dev_port}",
            env["url"].as_str().unwrap()
        );
        let (status, body) = get_text(&url);
        assert_eq!(status, 200, "{body}");
        body
    };
    let from_prod = probe(&prod);
    let from_dev = probe(&dev);
    for body in [&from_prod, &from_dev] {
        assert!(
            body.contains(&format!("port {server_port} unreachable")),
            "{body}"
        );
        assert!(
            body.contains(&format!("port {dev_port} unreachable")),
            "{body}"
        );
        assert!(
            body.contains("interfaces=lo \n") || body.contains("interfaces=lo\n"),
            "{body}"
        );
        assert!(
            body.contains("uid=0"),
            "root inside its own user namespace: {body}"
        );
        assert!(body.contains("small=0"), "{body}");
        assert!(
            !body.contains("large=0"),
            "the 64M limit let 128M through: {body}"
        );
    }
    assert!(
        from_prod.contains(&format!("secret={secret}")),
        "{from_prod}"
    );
    assert!(from_dev.contains("secret=absent"), "{from_dev}");
    // Unprivileged on the host.
    for env in [&dev, &prod] {
        let name = env["instances"][0]["name"].as_str().unwrap();
        let uids = host_uids(name);
        assert!(!uids.is_empty(), "no process found for {name}");
        assert!(
            uids.iter().all(|u| *u >= 100_000),
            "{name}: host uids {uids:?}"
        );
    }
    // The secret is in no server log and no API answer.
    assert!(!server.logs().contains(&secret));
    let listed = server
        .get("/api/v1/environments?repo=demo", &server.admin_auth())
        .body_text();
    assert!(!listed.contains(&secret));
}

/// Acceptance 5, second half: outside the blue/green window (its old set
/// stopped), a rollback deploys v1 by the environment's strategy: new
/// instances, previewed and swapped, without a failed request.
#[test]
fn a_rollback_after_the_window_deploys_the_old_digest_anew() {
    let spec = ROLLOUT_SPEC
        .replace("STRATEGY", "blue-green")
        .replace("keep: 2m", "keep: 2s");
    let world = World::with_spec("deploys-late-rollback", &spec);
    let url = world.url();
    let load = Load::start(&url, 8);
    world.push(
        &[("Containerfile", CONTAINERFILE), ("version", "v2\n")],
        "v2",
    );
    world.wait_deployment(2, "succeeded", Duration::from_secs(120));
    // The window closes: the old set is drained and stopped.
    let start = Instant::now();
    while node_containers(&world.node_work()).len() != 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the warm set was never stopped"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let before: std::collections::BTreeSet<String> =
        node_containers(&world.node_work()).into_iter().collect();
    ok(
        &world.server,
        &["rollback", "demo", "--env", "dev", "--wait"],
    );
    let d = world.deployment(3);
    assert_eq!(
        (d["kind"].as_str(), d["state"].as_str()),
        (Some("rollback"), Some("succeeded")),
        "{d:#}"
    );
    assert_eq!(d["digest"], world.deployment(1)["digest"], "{d:#}");
    assert_eq!(get_text(&format!("{url}/version")), (200, "v1\n".into()));
    let dev = world.dev();
    let serving: std::collections::BTreeSet<String> = dev["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["routed"] == "live")
        .map(|i| i["container_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serving.len(), 3, "{dev:#}");
    assert!(
        serving.is_disjoint(&before),
        "v1 came back on old containers: {serving:?}"
    );
    let seen = load.finish();
    assert_no_failures(&seen, "rollback after the window");
}

/// Release governance, acceptance 3: a rollback restores the configuration
/// of the deployment it goes back to (replicas, env), not only its image;
/// a digest never verified there is no rollback target.
#[test]
fn a_rollback_restores_the_configuration_it_had() {
    let (server, work) = with_busybox("deploys-config-rollback");
    // The app serves its environment's A at /a.
    let containerfile = "FROM busybox\n\
COPY version /www/version\n\
RUN echo ok > /www/healthz\n\
CMD [\"sh\", \"-c\", \"echo \\\"$A\\\" > /www/a; exec httpd -f -p $PORT -h /www\"]\n";
    let spec = |replicas: u32, a: &str| {
        ROLLOUT_SPEC.replace("STRATEGY", "rolling").replace(
            "replicas: 3",
            &format!("replicas: {replicas}\n  env: {{ A: \"{a}\" }}"),
        )
    };
    let repo = work.path().join("repo");
    let v1_spec = spec(2, "1");
    commit(
        &repo,
        &[
            (".slipway.yml", v1_spec.as_str()),
            ("Containerfile", containerfile),
            ("version", "v1\n"),
        ],
        "v1",
    );
    ok(
        &server,
        &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let _node = start_node(&server, &work.path().join("node"), free_ports(20));
    let run = || {
        let out = slipway(&server, &["run", "demo", "--wait"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let serving = |version: &str, a: &str, replicas: usize| {
        let start = Instant::now();
        loop {
            let dev = wait_serving(&server, "demo", "dev", Duration::from_secs(120));
            let url = dev["url"].as_str().unwrap().to_owned();
            let live = dev["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["routed"] == "live" && i["goal"] == "run")
                .count();
            let got = (
                get_text(&format!("{url}/version")),
                get_text(&format!("{url}/a")),
            );
            if live == replicas && got == ((200, format!("{version}\n")), (200, format!("{a}\n"))) {
                return dev;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "dev not serving {version} A={a} x{replicas}: {live} live, {got:?}: {dev:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    run();
    let v1 = serving("v1", "1", 2)["current"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2_spec = spec(3, "2");
    commit(
        &repo,
        &[(".slipway.yml", v2_spec.as_str()), ("version", "v2\n")],
        "v2",
    );
    run();
    serving("v2", "2", 3);

    let out = ok(
        &server,
        &[
            "rollback",
            "demo",
            "--env",
            "dev",
            "--reason",
            "v2 is slow",
            "--wait",
        ],
    );
    assert!(out.contains("succeeded"), "{out}");
    let dev = serving("v1", "1", 2);
    assert_eq!(dev["current"]["digest"], v1.as_str());
    assert_eq!(dev["current"]["kind"], "rollback");
    assert_eq!(dev["current"]["replicas"], 2);

    let never = format!("sha256:{}", "0".repeat(64));
    let out = slipway(
        &server,
        &["rollback", "demo", "--env", "dev", "--to", &never],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "{never} was never verified in dev: a rollback goes only to a digest verified there before"
        )),
        "{}",
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// A release chain with verification and approvals (release governance,
// acceptance 1), with the real runner, node and verify jobs.

/// dev takes every pipeline's digest; staging is promoted to by itself once
/// dev runs it, soaks, and its verify job reads the version staging serves
/// (through the runner's relay: the job has no other network); prod is
/// promoted to by people, through approvals.
const CHAIN: &str = "\
jobs:
  test:
    steps:
      - name: unit
        image: busybox
        commands: [\"test -s version\"]
  image:
    steps:
      - name: build
        build:
          image: demo/web
deploy:
  app: web
  image: demo/web
  port: 8080
  health: /healthz
  replicas: 1
  environments:
    dev: { strategy: rolling }
    staging:
      strategy: blue-green
      auto: true
      soak: 15s
      on_verify_failure: rollback
      verify:
        steps:
          - name: smoke
            image: busybox
            commands:
              - v=$(wget -qO- $SLIPWAY_ENV_URL/version)
              - echo \"$SLIPWAY_ENVIRONMENT serves $v ($SLIPWAY_DIGEST)\"
              - test -n \"$v\" && test \"$v\" != bad
    prod: { strategy: blue-green }
";

/// `repo`'s deployments, newest first.
fn deployments_of(server: &TestServer, repo: &str) -> Vec<Value> {
    let r = server.get(
        &format!("/api/v1/deployments?repo={repo}"),
        &server.admin_auth(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json().as_array().unwrap().clone()
}

/// Wait (up to `deadline`) for the deployment `matches` picks; it.
fn wait_deployment(
    server: &TestServer,
    repo: &str,
    what: &str,
    deadline: Duration,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let all = deployments_of(server, repo);
        if let Some(d) = all.iter().find(|d| matches(d)) {
            return d.clone();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}: {all:#?}\nserver log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Commit `version` and run the pipeline; the digest dev then runs.
fn ship(server: &TestServer, repo_dir: &Path, version: &str) -> String {
    commit(repo_dir, &[("version", &format!("{version}\n"))], version);
    let out = slipway(server, &["run", "demo", "--wait"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let sha = text(
        &Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo_dir)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_owned();
    let dev = wait_deployment(
        server,
        "demo",
        &format!("dev running {version}"),
        Duration::from_secs(120),
        |d| d["environment"] == "dev" && d["commit"] == sha.as_str() && d["state"] == "succeeded",
    );
    dev["digest"].as_str().unwrap().to_owned()
}

fn as_user(
    server: &TestServer,
    who: &Auth,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> HttpResponse {
    common::deploy_peers::api(server, who, method, path, Some(body), &[])
}

fn add_user(server: &TestServer, name: &str) -> Auth {
    let password = format!("{name}-password-1");
    let r = as_user(
        server,
        &server.admin_auth(),
        reqwest::Method::POST,
        "/api/v1/users",
        serde_json::json!({"username": name, "password": password, "role": "user"}),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    Auth::Basic(name.to_owned(), password)
}

#[test]
fn a_release_chain_promotes_only_verified_and_approved_digests() {
    use reqwest::Method;
    use serde_json::json;
    let (server, work) = with_busybox("deploys-chain");
    let repo = work.path().join("repo");
    commit(
        &repo,
        &[
            (".slipway.yml", CHAIN),
            ("Containerfile", CONTAINERFILE),
            ("version", "v1\n"),
        ],
        "v1",
    );
    ok(
        &server,
        &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let ports = free_ports(20);
    let _node = start_node(&server, &work.path().join("node"), ports);
    let alice = add_user(&server, "alice");
    let bob = add_user(&server, "bob");
    let carol = add_user(&server, "carol");
    let promote = |who: &Auth| {
        as_user(
            &server,
            who,
            Method::POST,
            "/api/v1/deployments/promote",
            json!({"repo": "demo", "to": "prod"}),
        )
    };
    let approve = |who: &Auth, id: i64| {
        as_user(
            &server,
            who,
            Method::POST,
            &format!("/api/v1/deployments/{id}/approve"),
            json!({"comment": null}),
        )
    };
    let protect = || {
        let r = as_user(
            &server,
            &server.admin_auth(),
            Method::PUT,
            "/api/v1/environments/protection",
            json!({"repo": "demo", "env": "prod", "policy": {
                "required_approvals": 2, "approvers": {"role": "user"},
                "approval_ttl_s": 3600,
                "freezes": [{"cron": "0 3 1 1 *", "duration_s": 3600, "timezone": "Europe/Paris"}]
            }}),
        );
        assert_eq!(r.status, 200, "{}", r.describe());
    };

    // v1: built, in dev by itself, then in staging by itself (auto).
    let out = slipway(&server, &["run", "demo", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let soaking = wait_deployment(
        &server,
        "demo",
        "v1 soaking in staging",
        Duration::from_secs(180),
        |d| d["environment"] == "staging" && d["verification"]["state"] == "soaking",
    );
    assert_eq!(soaking["requested_by"], "slipway", "{soaking:#}");
    let v1 = soaking["digest"].as_str().unwrap().to_owned();
    // Not verified yet: prod refuses it, saying why.
    let r = promote(&alice);
    assert_eq!(r.status, 409, "{}", r.describe());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!(
            "demo/web@{} is not verified in staging (soaking until ",
            &v1[..19]
        )),
        "{message}"
    );
    // The verify job reads what staging serves, and passes.
    let staged_id = soaking["id"].as_i64().unwrap();
    let verified = wait_deployment(
        &server,
        "demo",
        "v1 verified in staging",
        Duration::from_secs(180),
        |d| {
            d["id"] == staged_id
                && d["verification"]["state"] != "soaking"
                && d["verification"]["state"] != "verifying"
        },
    );
    assert_eq!(
        verified["verification"]["state"], "verified",
        "{verified:#}"
    );
    let verify_pipeline = verified["verification"]["pipeline_id"].as_i64().unwrap();
    let p = server.get(
        &format!("/api/v1/pipelines/{verify_pipeline}"),
        &server.admin_auth(),
    );
    assert_eq!(p.json()["status"], "success", "{}", p.describe());
    let job = p.json()["jobs"][0]["id"].as_i64().unwrap();
    let log = server.get(
        &format!("/api/v1/jobs/{job}/steps/0/log"),
        &server.admin_auth(),
    );
    assert!(
        text(&log.body).contains(&format!("staging serves v1 ({v1})")),
        "{}",
        log.describe()
    );

    // prod: two approvals of people other than the one who asked.
    protect();
    let r = promote(&alice);
    assert_eq!(r.status, 202, "{}", r.describe());
    let r1 = r.json()["deployment"].clone();
    assert_eq!(r1["state"], "awaiting_approval", "{r1:#}");
    assert_eq!(r1["digest"], v1.as_str());
    let r1_id = r1["id"].as_i64().unwrap();
    assert_eq!(approve(&alice, r1_id).status, 403, "separation of duties");
    let r = approve(&bob, r1_id);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["deployment"]["approvals"],
        json!({"approved_by": ["bob"], "required": 2})
    );

    // v2 fails staging's verify job: staging rolls back to v1 by itself and
    // v2 never reaches prod.
    let v2 = ship(&server, &repo, "bad");
    let failed = wait_deployment(
        &server,
        "demo",
        "v2 failing its verification in staging",
        Duration::from_secs(180),
        |d| {
            d["environment"] == "staging"
                && d["digest"] == v2.as_str()
                && d["verification"]["state"] == "failed"
        },
    );
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("verify job failed: pipeline "),
        "{failed:#}"
    );
    let back = wait_deployment(
        &server,
        "demo",
        "staging rolled back to v1",
        Duration::from_secs(120),
        |d| {
            d["environment"] == "staging"
                && d["kind"] == "rollback"
                && d["digest"] == v1.as_str()
                && d["state"] == "succeeded"
        },
    );
    assert_eq!(back["requested_by"], "slipway", "{back:#}");
    let staging = wait_serving(&server, "demo", "staging", Duration::from_secs(60));
    let staging_url = staging["url"].as_str().unwrap();
    assert_eq!(
        get_text(&format!("{staging_url}/version")),
        (200, "v1\n".into())
    );

    // v3 verifies. An approval of v1 does not count for v3.
    let v3 = ship(&server, &repo, "v3");
    wait_deployment(
        &server,
        "demo",
        "v3 verified in staging",
        Duration::from_secs(180),
        |d| {
            d["environment"] == "staging"
                && d["digest"] == v3.as_str()
                && d["verification"]["state"] == "verified"
        },
    );
    let r = promote(&alice);
    assert_eq!(r.status, 202, "{}", r.describe());
    let r3 = r.json()["deployment"].clone();
    assert_eq!(r3["digest"], v3.as_str());
    assert_eq!(
        r3["approvals"],
        json!({"approved_by": [], "required": 2}),
        "bob approved v1, not v3"
    );
    // An expired approval does not count: Bob approves v3, his approval
    // reaches its end (a day, made to pass here), and Carol's alone is one
    // of two; Bob approves again and prod deploys.
    let r3_id = r3["id"].as_i64().unwrap();
    assert_eq!(approve(&bob, r3_id).status, 200);
    server
        .sql("UPDATE approvals SET expires_at = 1 WHERE username = 'bob'")
        .unwrap();
    let r = approve(&carol, r3_id);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["deployment"]["approvals"],
        json!({"approved_by": ["carol"], "required": 2}),
        "Bob's approval expired"
    );
    assert_eq!(r.json()["deployment"]["state"], "awaiting_approval");
    let r = approve(&bob, r3_id);
    assert_eq!(r.status, 200, "{}", r.describe());
    let done = wait_deployment(
        &server,
        "demo",
        "v3 in prod",
        Duration::from_secs(120),
        |d| {
            d["id"] == r3_id
                && !matches!(
                    d["state"].as_str(),
                    Some("pending" | "progressing" | "awaiting_approval")
                )
        },
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["approved_by"], json!(["bob", "carol"]));
    let prod = wait_serving(&server, "demo", "prod", Duration::from_secs(60));
    let prod_url = prod["url"].as_str().unwrap();
    assert_eq!(
        get_text(&format!("{prod_url}/version")),
        (200, "v3\n".into())
    );
    // Nothing but v3 ever went to prod; v2 never even asked.
    for d in deployments_of(&server, "demo") {
        if d["environment"] == "prod" {
            assert_ne!(d["digest"], v2.as_str(), "{d:#}");
        }
    }
    // Traceability: from a prod instance back to the base images and the
    // test job, through every environment and who approved it.
    let instance = prod["instances"][0]["name"].as_str().unwrap().to_owned();
    let r = server.get(
        &format!("/api/v1/instances/{instance}/trace"),
        &server.admin_auth(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let trace = r.json();
    assert_eq!(trace["digest"], v3.as_str());
    insta::assert_snapshot!(
        "trace_of_a_prod_instance",
        serde_json::to_string_pretty(&redact(&trace)).unwrap()
    );
    let out = ok(&server, &["trace", "--instance", &instance]);
    assert!(out.starts_with(&format!("demo/web@{v3}")), "{out}");
    assert!(out.contains("  base "), "{out}");
    assert!(out.contains("step build: success"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("prod") && l.ends_with("approved by bob, carol")),
        "{out}"
    );
    // The history says who asked, who approved, and how verification went.
    let history = ok(&server, &["deployments", "demo", "--env", "prod"]);
    assert!(
        history
            .lines()
            .any(|l| l.contains("succeeded") && l.contains("by alice, approved by bob, carol")),
        "{history}"
    );
    let staging = ok(&server, &["deployments", "demo", "--env", "staging"]);
    assert!(
        staging.contains("verification failed: verify job failed: pipeline "),
        "{staging}"
    );
    let by_env = ok(&server, &["trace", "demo", "--env", "prod", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&by_env).unwrap(), trace);

    // Each step is in the audit once.
    let audit = server
        .get("/api/v1/audit?repo=demo", &server.admin_auth())
        .json();
    let count = |action: &str, env: &str, digest: &str| {
        audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e["environment"] == env && e["digest"] == digest)
            .count()
    };
    assert_eq!(
        count("verified", "staging", &v1),
        1,
        "a rollback is no verification: {audit:#}"
    );
    assert_eq!(count("verify_failed", "staging", &v2), 1, "{audit:#}");
    assert_eq!(count("rollback", "staging", &v1), 1, "{audit:#}");
    assert_eq!(count("approve", "prod", &v3), 3, "{audit:#}");
}

/// `v` with what differs from run to run replaced by what it is: ids,
/// times, digests, commits, the registry's address.
fn redact(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let redacted = match (k.as_str(), v) {
                        (_, Value::Null) => Value::Null,
                        ("id" | "deployment_id" | "number", _) => Value::from("[id]"),
                        ("created_at" | "finished_at", _) => Value::from("[time]"),
                        _ => redact(v),
                    };
                    (k.clone(), redacted)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        Value::String(s) => Value::from(redact_text(s)),
        other => other.clone(),
    }
}

fn redact_text(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(hex) = rest.strip_prefix("sha256:") {
            if hex.bytes().take_while(u8::is_ascii_hexdigit).count() == 64 {
                out.push_str("sha256:[digest]");
                rest = &hex[64..];
                continue;
            }
        }
        if let Some(port) = rest.strip_prefix("127.0.0.1:") {
            let n = port.bytes().take_while(u8::is_ascii_digit).count();
            out.push_str("[registry]");
            rest = &port[n..];
            continue;
        }
        let n = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
        if n == 40 {
            out.push_str("[commit]");
            rest = &rest[40..];
            continue;
        }
        if n > 0 && out.ends_with("/jobs/") {
            out.push_str("[id]");
            rest = &rest[n..];
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}
