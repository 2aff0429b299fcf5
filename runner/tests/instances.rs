//! The node's instance supervisor with real runc and a busybox-static image
//! serving files and CGI scripts with busybox `httpd`: readiness through the
//! instance's own network namespace, health failures with their reasons,
//! restarts with backoff, nothing left after stop, adoption by a new
//! supervisor (same container, not restarted), and isolation checked from
//! inside an instance.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use slipway_runner::layer::LayerCache;
use slipway_runner::node::{
    container_id, InstanceSpec, InstanceState, InstanceStatus, ResolvedImage, Supervisor,
    SupervisorOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PORT: u16 = 8080;
/// Deadline for anything a test waits on; the action: fail the test.
const WAIT: Duration = Duration::from_secs(30);

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    cache: LayerCache,
    digest: String,
    runc: PathBuf,
}

fn runc() -> PathBuf {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "runc is needed (scripts/test.sh installs it)"
    );
    PathBuf::from(path)
}

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;

/// A CGI script answering with a raw HTTP response (busybox httpd passes
/// output that starts with `HTTP/` through as is).
fn cgi(body: &str) -> String {
    format!(
        "#!/bin/sh\nprintf 'HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\n'\n{body}\n"
    )
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    // Container root (an unprivileged host uid) must reach the root fs.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let rootfs = dir.path().join("rootfs");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is needed (scripts/test.sh installs it)");
    slipway_runner::image::busybox_rootfs(Path::new(busybox), &rootfs).unwrap();
    let www = rootfs.join("www");
    std::fs::create_dir_all(www.join("cgi-bin")).unwrap();
    std::fs::write(www.join("healthz"), "ok\n").unwrap();
    let scripts = [
        (
            "fail",
            "#!/bin/sh\nprintf 'HTTP/1.0 500 Internal Server Error\\r\\n\\r\\nbroken\\n'\n"
                .to_owned(),
        ),
        (
            // GET /cgi-bin/reach?PORT: what 127.0.0.1:PORT answers, from inside.
            "reach",
            cgi("printf 'GET /version HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 \"$QUERY_STRING\" 2>&1 || echo unreachable"),
        ),
        (
            // GET /cgi-bin/alloc?SIZE: allocate and touch SIZE bytes.
            "alloc",
            cgi("dd if=/dev/zero of=/dev/null bs=\"$QUERY_STRING\" count=1 2>/dev/null\necho \"dd exit $?\""),
        ),
    ];
    for (name, text) in scripts {
        let path = www.join("cgi-bin").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let layer = slipway_runner::image::layer_from_dir(&rootfs).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&layer.gzip)));
    let cache = LayerCache::open(dir.path().join("cache"), 1 << 30).unwrap();
    let gzip = layer.gzip.clone();
    drop(
        cache
            .get(&digest, move || Ok(std::io::Cursor::new(gzip)))
            .await
            .unwrap(),
    );
    World {
        root: dir.path().join("node"),
        _dir: dir,
        cache,
        digest,
        runc: runc(),
    }
}

use sha2::Digest as _;

impl World {
    async fn supervisor(&self) -> Supervisor {
        Supervisor::open(
            &self.root,
            &self.runc,
            self.cache.clone(),
            SupervisorOptions::default(),
        )
        .await
        .unwrap()
    }

    fn spec(&self, id: &str, script: &str) -> InstanceSpec {
        InstanceSpec {
            id: id.to_owned(),
            image: ResolvedImage {
                reference: "test/web@sha256:test".to_owned(),
                config: CONFIG.to_owned(),
                layers: vec![self.cache.cached(&self.digest).unwrap()],
            },
            env: vec![("VERSION".to_owned(), "v1".to_owned())],
            port: PORT,
            health: "/healthz".to_owned(),
            memory_bytes: None,
            cpus: None,
            pids: None,
            entrypoint: Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]),
            command: Some(vec![script.to_owned()]),
        }
    }

    /// Nothing of instance `id` is left: no mount under the root, runc
    /// container, cgroup, directory.
    fn assert_clean(&self, id: &str) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.root.to_string_lossy();
        let mounts: Vec<&str> = info.lines().filter(|l| l.contains(&*root)).collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:#?}");
        let list = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(self.root.join("runc"))
            .args(["list", "-q"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "");
        assert!(!self.root.join("instances").join(id).exists());
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let cgroup = hierarchy
                .path()
                .join("slipway-instances")
                .join(container_id(id));
            assert!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
        }
    }
}

impl Drop for World {
    /// After a failed test: remove its containers and mounts before the temp
    /// dir is deleted (a passing test has left none).
    fn drop(&mut self) {
        let runc = |args: &[&str]| {
            std::process::Command::new(&self.runc)
                .arg("--root")
                .arg(self.root.join("runc"))
                .args(args)
                .output()
        };
        if let Ok(list) = runc(&["list", "-q"]) {
            for id in String::from_utf8_lossy(&list.stdout).lines() {
                let _ = runc(&["delete", "--force", id]);
            }
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(&self.root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for mount in mounts {
            let _ = std::process::Command::new("umount")
                .args(["-l", mount])
                .status();
        }
    }
}

/// Serve `/www` on $PORT after writing $VERSION into it.
const HTTPD: &str = "echo \"$VERSION\" > /www/version; echo \"listening on $PORT\"; exec httpd -f -p \"$PORT\" -h /www";

fn status_of(sup: &Supervisor, id: &str) -> Option<InstanceStatus> {
    sup.status().into_iter().find(|s| s.id == id)
}

/// Wait (on the supervisor's change notifications) until `pred` holds;
/// every state seen on the way goes to `seen`.
async fn wait_until(
    sup: &Supervisor,
    id: &str,
    seen: &mut Vec<InstanceState>,
    pred: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let mut changes = sup.subscribe();
    let deadline = Instant::now() + WAIT;
    loop {
        let status = status_of(sup, id).expect("the instance exists");
        if seen.last() != Some(&status.state) {
            seen.push(status.state.clone());
        }
        if pred(&status) {
            return status;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            tokio::time::timeout(left, changes.changed()).await.is_ok(),
            "instance {id} did not get there within {WAIT:?}; now {status:?}; log: {:?}",
            sup.log_tail(id, 10)
        );
    }
}

/// `GET path` on the instance's port inside its network namespace: status
/// code and body.
async fn get(sup: &Supervisor, id: &str, path: &str) -> (u16, String) {
    let netns = sup.netns(id).unwrap();
    let mut stream = slipway_runner::container::netns::connect(&netns, PORT)
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn becomes_ready_answers_in_its_namespace_and_stop_leaves_nothing() {
    let w = world().await;
    let sup = w.supervisor().await;
    let id = "ready-1";
    let started = Instant::now();
    sup.start(w.spec(id, HTTPD)).await.unwrap();
    let running = started.elapsed();
    let mut seen = Vec::new();
    let ready = wait_until(&sup, id, &mut seen, |s| s.state == InstanceState::Ready).await;
    eprintln!(
        "start returned after {running:?}, ready after {:?}",
        started.elapsed()
    );
    assert_eq!(seen.first(), Some(&InstanceState::Starting));
    assert!(ready.ready_since.is_some());
    assert_eq!(ready.container_id, "slipway-inst-ready-1");
    assert_eq!(
        ready.last_health.as_ref().unwrap().text,
        "/healthz answered 200"
    );
    assert_eq!(get(&sup, id, "/version").await, (200, "v1\n".to_owned()));
    assert!(sup
        .log_tail(id, 10)
        .contains(&"listening on 8080".to_owned()));
    // A second start of the same id is refused.
    assert!(matches!(
        sup.start(w.spec(id, HTTPD)).await,
        Err(slipway_runner::node::NodeError::Exists(_))
    ));

    let pid = ready.pid.unwrap();
    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    assert!(status_of(&sup, id).is_none());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    w.assert_clean(id);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_500_is_never_ready_and_says_so() {
    let w = world().await;
    let sup = w.supervisor().await;
    let id = "fails-1";
    let mut spec = w.spec(id, HTTPD);
    spec.health = "/cgi-bin/fail".to_owned();
    sup.start(spec).await.unwrap();
    let mut seen = Vec::new();
    let first = wait_until(&sup, id, &mut seen, |s| s.last_health.is_some()).await;
    let text = |s: &InstanceStatus| s.last_health.as_ref().unwrap().text.clone();
    // The server may not listen yet at the very first check.
    let mut checks = vec![text(&first)];
    let mut last_at = first.last_health.unwrap().at;
    let deadline = Instant::now() + WAIT;
    while checks.iter().filter(|t| t.contains("500")).count() < 5 {
        assert!(Instant::now() < deadline, "checks: {checks:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = status_of(&sup, id).unwrap();
        assert_ne!(now.state, InstanceState::Ready);
        let health = now.last_health.clone().unwrap();
        if health.at != last_at {
            last_at = health.at;
            checks.push(health.text);
        }
    }
    assert_eq!(checks.last().unwrap(), "/cgi-bin/fail answered 500");
    assert_eq!(status_of(&sup, id).unwrap().state, InstanceState::Starting);
    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    w.assert_clean(id);
}

#[tokio::test(flavor = "multi_thread")]
async fn never_listening_is_not_ready_connection_refused() {
    let w = world().await;
    let sup = w.supervisor().await;
    let id = "silent-1";
    // `sleep` as pid 1 ignores SIGTERM: the stop needs its SIGKILL.
    sup.start(w.spec(id, "exec sleep 1000")).await.unwrap();
    let mut seen = Vec::new();
    let status = wait_until(&sup, id, &mut seen, |s| {
        s.last_health.as_ref().is_some_and(|h| {
            h.text.contains("Connection refused") || h.text.contains("connection refused")
        })
    })
    .await;
    assert_eq!(status.state, InstanceState::Starting);
    assert_eq!(seen, vec![InstanceState::Starting]);
    let started = Instant::now();
    sup.stop(id, Duration::from_millis(300)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    w.assert_clean(id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashing_instance_restarts_with_backoff() {
    let w = world().await;
    let sup = w.supervisor().await;
    let id = "crash-1";
    sup.start(w.spec(id, "echo boom; exit 3")).await.unwrap();
    let mut seen = Vec::new();
    let mut restarted_at = Vec::new();
    let mut restarts = 0;
    while restarts < 3 {
        let s = wait_until(&sup, id, &mut seen, |s| s.restarts > restarts).await;
        restarts = s.restarts;
        restarted_at.push(Instant::now());
    }
    assert!(
        seen.contains(&InstanceState::Crashed { exit_code: Some(3) }),
        "states: {seen:?}"
    );
    assert!(!seen.contains(&InstanceState::Ready));
    // Backoff 1 s, 2 s, 4 s: the gaps between restarts grow.
    let gap1 = restarted_at[1] - restarted_at[0];
    let gap2 = restarted_at[2] - restarted_at[1];
    assert!(gap1 >= Duration::from_millis(1800), "gap {gap1:?}");
    assert!(gap2 >= Duration::from_millis(3800), "gap {gap2:?}");
    assert!(sup.log_tail(id, 10).iter().filter(|l| *l == "boom").count() >= 3);
    sup.stop(id, Duration::from_millis(300)).await.unwrap();
    w.assert_clean(id);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_supervisor_adopts_running_instances() {
    let w = world().await;
    let sup = w.supervisor().await;
    let id = "adopt-1";
    sup.start(w.spec(id, HTTPD)).await.unwrap();
    let before = wait_until(&sup, id, &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;
    // A second supervisor on the same root is refused while this one runs.
    assert!(Supervisor::open(
        &w.root,
        &w.runc,
        w.cache.clone(),
        SupervisorOptions::default()
    )
    .await
    .is_err());
    sup.detach();
    assert_eq!(
        std::fs::read_dir(w.root.join("instances")).unwrap().count(),
        1
    );

    let opened = Instant::now();
    let sup = w.supervisor().await;
    let after = wait_until(&sup, id, &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;
    let took = opened.elapsed();
    eprintln!("adopted and ready {took:?} after open");
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.pid, before.pid, "the same container, not restarted");
    assert_eq!(after.restarts, 0);
    assert!(took < Duration::from_secs(2), "ready again after {took:?}");
    assert_eq!(get(&sup, id, "/version").await, (200, "v1\n".to_owned()));
    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    w.assert_clean(id);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_isolated_from_the_host() {
    let w = world().await;
    // Something on the host's loopback that would answer if reached.
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in host.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n");
        }
    });
    let sup = w.supervisor().await;
    let id = "isolated-1";
    let mut spec = w.spec(id, HTTPD);
    spec.memory_bytes = Some(64 << 20);
    sup.start(spec).await.unwrap();
    let ready = wait_until(&sup, id, &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;

    // Its own loopback works; the host's does not exist for it.
    let (_, own) = get(&sup, id, &format!("/cgi-bin/reach?{PORT}")).await;
    assert!(own.ends_with("\r\n\r\nv1\n"), "{own:?}");
    let (_, reached) = get(&sup, id, &format!("/cgi-bin/reach?{host_port}")).await;
    assert!(!reached.contains("host-secret"), "{reached:?}");
    assert!(reached.contains("unreachable"), "{reached:?}");

    // An unprivileged host uid.
    let status = std::fs::read_to_string(format!("/proc/{}/status", ready.pid.unwrap())).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<u32> = uids
        .split_whitespace()
        .skip(1)
        .map(|u| u.parse().unwrap())
        .collect();
    assert_eq!(uids, vec![100_000; 4]);

    // The memory limit holds: 8 MiB is fine, 128 MiB is killed.
    let (_, small) = get(&sup, id, "/cgi-bin/alloc?8M").await;
    assert_eq!(small, "dd exit 0\n");
    let (_, big) = get(&sup, id, "/cgi-bin/alloc?128M").await;
    assert_eq!(big, "dd exit 137\n");

    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    w.assert_clean(id);
}

/// The "agent" of [`instances_survive_a_killed_agent`]: run as a child
/// process by that test, never on its own (it waits to be killed).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a child process of instances_survive_a_killed_agent"]
async fn agent_process() {
    let root = PathBuf::from(std::env::var("SLIPWAY_TEST_NODE_ROOT").unwrap());
    let cache = LayerCache::open(root.join("../cache"), 1 << 30).unwrap();
    let w = World {
        _dir: tempfile::tempdir().unwrap(),
        root: root.clone(),
        cache,
        digest: std::env::var("SLIPWAY_TEST_LAYER").unwrap(),
        runc: runc(),
    };
    let sup = w.supervisor().await;
    sup.start(w.spec("survivor-1", HTTPD)).await.unwrap();
    wait_until(&sup, "survivor-1", &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;
    println!("READY");
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_survive_a_killed_agent() {
    let w = world().await;
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "agent_process", "--ignored", "--nocapture"])
        .env("SLIPWAY_TEST_NODE_ROOT", &w.root)
        .env("SLIPWAY_TEST_LAYER", &w.digest)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = agent.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("READY"))
    });
    let ready = tokio::time::timeout(WAIT, ready).await;
    let _ = agent.kill(); // SIGKILL
    let _ = agent.wait();
    assert!(
        matches!(ready, Ok(Ok(true))),
        "the agent process never got ready"
    );

    // With no agent, the shim's lock still keeps the instance's layer from
    // eviction, even by a cache that wants it gone (cap 0).
    let layer_dir = w
        .root
        .join("../cache/layers")
        .join(w.digest.trim_start_matches("sha256:"));
    let evicting = LayerCache::open(w.root.join("../cache"), 0).unwrap();
    drop(evicting.cached(&w.digest));
    assert!(
        layer_dir.is_dir(),
        "the running instance's layer was evicted"
    );

    let opened = Instant::now();
    let sup = w.supervisor().await;
    let id = "survivor-1";
    let adopted = status_of(&sup, id).expect("adopted");
    let pid = adopted.pid.unwrap();
    let after = wait_until(&sup, id, &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;
    assert!(opened.elapsed() < Duration::from_secs(2));
    assert_eq!(after.pid, Some(pid));
    assert_eq!(after.restarts, 0);
    assert_eq!(get(&sup, id, "/version").await, (200, "v1\n".to_owned()));
    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    w.assert_clean(id);
    // Once the instance is gone, the same eviction removes the layer.
    drop(sup);
    drop(evicting.cached(&w.digest));
    assert!(!layer_dir.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_and_a_failed_start_leave_nothing() {
    let w = world().await;
    let sup = w.supervisor().await;
    for bad in ["../x", "", "A", "-x", "a/b", &"x".repeat(64)] {
        let err = sup.start(w.spec(bad, HTTPD)).await.unwrap_err();
        assert!(err.to_string().contains("is invalid"), "{bad:?}: {err}");
    }
    let mut spec = w.spec("bad-health", HTTPD);
    spec.health = "/x HTTP/1.1\r\nHost: evil".to_owned();
    let err = sup.start(spec).await.unwrap_err();
    assert!(err.to_string().contains("health path"), "{err}");

    // runc cannot run a command that does not exist: the start fails with
    // runc's reason, and everything made for it is gone.
    let id = "nocmd-1";
    let mut spec = w.spec(id, "");
    spec.entrypoint = Some(vec!["/no/such/program".to_owned()]);
    spec.command = Some(Vec::new());
    let err = sup.start(spec).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    assert!(status_of(&sup, id).is_none());
    w.assert_clean(id);
    assert!(sup.status().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_capped() {
    let w = world().await;
    let options = SupervisorOptions {
        log_cap_bytes: 4096,
        ..Default::default()
    };
    let sup = Supervisor::open(&w.root, &w.runc, w.cache.clone(), options)
        .await
        .unwrap();
    let id = "chatty-1";
    let script = format!(
        "i=0; while [ $i -lt 1000 ]; do echo \"line $i of the noisy start\"; i=$((i+1)); done; {HTTPD}"
    );
    sup.start(w.spec(id, &script)).await.unwrap();
    wait_until(&sup, id, &mut Vec::new(), |s| {
        s.state == InstanceState::Ready
    })
    .await;
    let deadline = Instant::now() + WAIT;
    while !sup
        .log_tail(id, 1)
        .contains(&"listening on 8080".to_owned())
    {
        assert!(Instant::now() < deadline, "{:?}", sup.log_tail(id, 3));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tail = sup.log_tail(id, 2);
    assert_eq!(
        tail,
        vec!["line 999 of the noisy start", "listening on 8080"]
    );
    let dir = w.root.join("instances").join(id);
    let size = |f: &str| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
    // About 27 KB were written; at most two caps (plus one read) are kept.
    let kept = size("log") + size("log.1");
    assert!(kept <= 2 * (4096 + 16384), "{kept} bytes kept");
    assert!(size("log.1") > 0);
    let all = sup.log_tail(id, 10_000);
    assert!(!all.iter().any(|l| l == "line 0 of the noisy start"));
    sup.stop(id, Duration::from_millis(500)).await.unwrap();
    w.assert_clean(id);
}
