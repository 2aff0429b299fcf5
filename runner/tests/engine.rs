//! The engine with real runc: separate output streams, exit codes, timeout,
//! cancellation, isolation basics, Docker's default confinement, CPU limits, host
//! networking, user namespaces, and no leftovers on any path (including a crashed
//! engine's, reaped at the next open).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use slipway_runner::container::{
    host_nofile_hard, runtime_spec, BindMount, Cancel, Engine, EngineError, Limits, Mapping,
    Network, Outcome, RunOptions, RunRequest, Stream,
};

struct World {
    _dir: tempfile::TempDir,
    layer: PathBuf,
    root: PathBuf,
    engine: Engine,
    image: ImageConfiguration,
}

fn runc() -> String {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "runc is needed (scripts/test.sh installs it)"
    );
    path
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is needed");
    std::fs::create_dir_all(layer.join("bin")).unwrap();
    std::fs::copy(busybox, layer.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "ls", "hostname", "nc", "grep", "wc", "id", "stat", "touch",
        "true", "rm", "mv", "chmod", "ln", "mknod", "mount", "umount", "find", "readlink", "head",
        "unshare", "swapon",
    ] {
        std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(layer.join(d)).unwrap();
    }
    let root = dir.path().join("engine");
    let engine = Engine::open(&root, runc()).unwrap();
    let image = ImageConfiguration::from_reader(
        &br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#[..],
    )
    .unwrap();
    World {
        _dir: dir,
        layer,
        root,
        engine,
        image,
    }
}

struct Run {
    outcome: Outcome,
    stdout: String,
    stderr: String,
}

async fn run(w: &World, script: &str, timeout: Option<Duration>, cancel: Cancel) -> Run {
    let r = run_with(w, RunOptions::default(), script, timeout, cancel).await;
    assert_clean(w);
    r
}

/// `script` under `sh -c` with `options` for everything else (no check for
/// leftovers: other containers may be running).
async fn run_with(
    w: &World,
    options: RunOptions,
    script: &str,
    timeout: Option<Duration>,
    cancel: Cancel,
) -> Run {
    try_run_with(w, options, script, timeout, cancel)
        .await
        .unwrap()
}

/// `run_with`, for runs the engine may refuse.
async fn try_run_with(
    w: &World,
    options: RunOptions,
    script: &str,
    timeout: Option<Duration>,
    cancel: Cancel,
) -> Result<Run, EngineError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            command: Some(vec!["-c".into(), script.into()]),
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..options
        },
        timeout,
        grace: Duration::from_millis(500),
        cancel,
        output: tx,
    };
    let outcome = w.engine.run(request).await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Ok((stream, bytes)) = rx.try_recv() {
        match stream {
            Stream::Stdout => stdout.extend(bytes),
            Stream::Stderr => stderr.extend(bytes),
        }
    }
    Ok(Run {
        outcome,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// No container directory, runc container or mount is left.
fn assert_clean(w: &World) {
    assert_eq!(
        std::fs::read_dir(w.engine.containers_dir())
            .unwrap()
            .count(),
        0,
        "container directories left"
    );
    assert!(
        w.engine.runc_containers().is_empty(),
        "runc containers left: {:?}",
        w.engine.runc_containers()
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(w.root.to_str().unwrap()),
        "mounts left under {}",
        w.root.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_exit_codes_and_isolation_basics() {
    let w = world();
    let r = run(
        &w,
        "echo to-out; echo to-err >&2; exit 3",
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!((r.outcome.exit_code, r.outcome.stopped.clone()), (3, None));
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str()),
        ("to-out\n", "to-err\n")
    );

    // Its own processes only: PID 1 is its shell, and few processes are visible.
    let r = run(
        &w,
        "echo $$; ls /proc | grep -c '^[0-9]'",
        None,
        Cancel::default(),
    )
    .await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "1");
    assert!(lines[1].parse::<u32>().unwrap() <= 3, "{}", r.stdout);

    // Its own hostname, not the host's.
    let r = run(&w, "hostname", None, Cancel::default()).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(r.stdout, "slipway\n");
    assert_ne!(r.stdout.trim(), host.trim());

    // No host files: a canary next to the layer is not reachable.
    let canary = w.layer.parent().unwrap().join("canary");
    std::fs::write(&canary, "secret").unwrap();
    let r = run(
        &w,
        &format!("cat {} 2>/dev/null || echo unreachable", canary.display()),
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!(r.stdout, "unreachable\n");

    // --net none: a port listening on the host's loopback cannot be reached:
    // the container's own loopback refuses. (busybox's nc has no -z; a
    // connection that did get through would wait for data until the timeout.)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = run(
        &w,
        &format!("nc -w 1 127.0.0.1 {port} </dev/null && echo connected || echo refused"),
        Some(Duration::from_secs(10)),
        Cancel::default(),
    )
    .await;
    assert_eq!(r.stdout, "refused\n");
    assert!(r.stderr.contains("Connection refused"), "{}", r.stderr);
    assert!(
        listener.accept().is_err(),
        "the host listener saw no connection"
    );

    // Writes land in the container's upper dir, never in the shared layer.
    let r = run(
        &w,
        "echo x > /bin/new-file && echo written",
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!(r.stdout, "written\n");
    assert!(!w.layer.join("bin/new-file").exists());
}

/// Container root runs as an unprivileged host uid (a user namespace, the
/// default): the image's files still belong to it, but host files do not, and
/// what it writes through a bind mount is owned by that uid on the host. The
/// namespace can be turned off per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_root_is_not_host_root_unless_the_call_says_so() {
    let w = world();
    let mapping = Mapping::default();
    let host = w.layer.parent().unwrap();
    // A file only host root may read, and a directory only host root may write.
    let private = host.join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::write(private.join("key"), "host secret").unwrap();
    std::fs::set_permissions(private.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let outbox = host.join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    let mounts = vec![
        BindMount {
            source: private.clone(),
            destination: "/private".into(),
            read_only: true,
        },
        BindMount {
            source: outbox.clone(),
            destination: "/outbox".into(),
            read_only: false,
        },
    ];
    let script = "id -u; cat /proc/self/uid_map; stat -c %u /bin/busybox; \
                  touch /bin/new && echo image-writable; \
                  cat /private/key 2>/dev/null || echo key-denied; \
                  touch /outbox/a 2>/dev/null && echo outbox-writable || echo outbox-denied";
    let options = RunOptions {
        mounts: mounts.clone(),
        ..Default::default()
    };
    let r = run_with(&w, options.clone(), script, None, Cancel::default()).await;
    let lines: Vec<&str> = r.stdout.lines().map(str::trim).collect();
    assert_eq!(lines[0], "0", "root inside: {}", r.stderr);
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", "100000", "65536"]);
    assert_eq!(lines[2], "0", "image files belong to container root");
    assert_eq!(
        &lines[3..],
        ["image-writable", "key-denied", "outbox-denied"],
        "{}",
        r.stderr
    );

    // Given a directory owned by the mapped root, its writes are that uid's.
    std::os::unix::fs::chown(
        &outbox,
        Some(mapping.host_root()),
        Some(mapping.host_root()),
    )
    .unwrap();
    let r = run_with(
        &w,
        options,
        "touch /outbox/b && echo ok",
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!(r.stdout, "ok\n", "{}", r.stderr);
    let meta = std::fs::metadata(outbox.join("b")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000));

    // Switched off for this call: root is host root.
    let r = run_with(
        &w,
        RunOptions {
            mounts,
            user_namespace: None,
            ..Default::default()
        },
        "cat /proc/self/uid_map; cat /private/key",
        None,
        Cancel::default(),
    )
    .await;
    let map: Vec<&str> = r
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "0", "4294967295"]);
    assert!(r.stdout.ends_with("host secret"), "{}", r.stdout);
}

/// A directory bind-mounted read-only can be read but not written, removed,
/// renamed, re-permissioned, linked into, remounted or unmounted, by container
/// root in its user namespace and by real root with the namespace switched
/// off; the host directory is unchanged afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_bind_mount_cannot_be_changed_or_escaped() {
    let w = world();
    let host = w.layer.parent().unwrap().join("given");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("file"), "host data\n").unwrap();
    std::fs::set_permissions(host.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mode(), m.uid(), m.mtime(), m.ino())
    };
    let (dir_before, file_before) = (before(&host), before(&host.join("file")));
    let attempts = [
        "echo x > /given/new",
        "echo changed > /given/file",
        "rm -f /given/file",
        "mv /given/file /given/moved",
        "chmod 777 /given/file",
        "chmod 777 /given",
        "ln -s / /given/escape",
        "ln /given/file /given/hard",
        "mknod /given/null c 1 3",
        "mount -o remount,rw /given",
        "mount -o remount,rw,bind /given",
        "umount /given",
        "umount -l /given",
        "mount -t tmpfs none /given",
    ]
    .join("\n");
    let script = format!(
        "cat /given/file; printf '%s\\n' '{attempts}' | while read -r a; do \
         sh -c \"$a\" 2>/dev/null && echo \"ALLOWED: $a\"; done; \
         cat /given/file; ls -a /given | wc -l"
    );
    for user_namespace in [RunOptions::default().user_namespace, None] {
        let options = RunOptions {
            mounts: vec![BindMount {
                source: host.clone(),
                destination: "/given".into(),
                read_only: true,
            }],
            user_namespace,
            ..Default::default()
        };
        let r = run_with(&w, options, &script, None, Cancel::default()).await;
        assert_eq!(
            r.stdout, "host data\nhost data\n3\n",
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
        assert_eq!(
            std::fs::read_dir(&host)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            ["file"]
        );
        assert_eq!(
            std::fs::read_to_string(host.join("file")).unwrap(),
            "host data\n"
        );
        assert_eq!(before(&host), dir_before);
        assert_eq!(before(&host.join("file")), file_before);
    }
    assert_clean(&w);
}

/// A pod: containers share one network namespace (a service on localhost,
/// even on a privileged port under a user namespace), which is neither the
/// host's nor a `none` container's, and goes away with the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_in_a_pod_share_localhost_and_nothing_else() {
    let w = world();
    let pod = w.engine.create_pod().unwrap();
    let in_pod = || RunOptions {
        network: pod.network(),
        ..Default::default()
    };
    let service = run_with(
        &w,
        in_pod(),
        "echo pong | nc -l -p 80",
        Some(Duration::from_secs(20)),
        Cancel::default(),
    );
    let client = run_with(
        &w,
        in_pod(),
        "for i in $(seq 100); do nc -w 2 127.0.0.1 80 </dev/null 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
        Some(Duration::from_secs(20)),
        Cancel::default(),
    );
    let (service, client) = tokio::join!(service, client);
    assert_eq!(service.outcome.exit_code, 0, "service: {}", service.stderr);
    assert_eq!(client.outcome.exit_code, 0, "client: {}", client.stderr);
    assert_eq!(client.stdout, "pong\n");

    // The pod's namespace is its own: not the host's, not a `none` container's.
    let ns = |r: &Run| r.stdout.trim().to_owned();
    let in_pod_ns = run_with(
        &w,
        in_pod(),
        "readlink /proc/self/ns/net",
        None,
        Cancel::default(),
    )
    .await;
    let none_ns = run_with(
        &w,
        RunOptions::default(),
        "readlink /proc/self/ns/net",
        None,
        Cancel::default(),
    )
    .await;
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(ns(&in_pod_ns).starts_with("net:["), "{}", in_pod_ns.stderr);
    assert_ne!(ns(&in_pod_ns), host_ns.to_string_lossy());
    assert_ne!(ns(&in_pod_ns), ns(&none_ns));
    let second = run_with(
        &w,
        in_pod(),
        "readlink /proc/self/ns/net",
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!(ns(&in_pod_ns), ns(&second));

    drop(pod);
    assert_clean(&w);
    assert_eq!(std::fs::read_dir(w.root.join("pods")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancel_stop_the_container() {
    let w = world();
    let r = run(
        &w,
        "sleep 1000",
        Some(Duration::from_secs(2)),
        Cancel::default(),
    )
    .await;
    assert_eq!(r.outcome.stopped.as_deref(), Some("timed out after 2s"));
    assert!(
        r.outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        r.outcome.elapsed
    );
    assert_ne!(r.outcome.exit_code, 0);

    // Cancel from another task once the container says it is ready.
    let cancel = Cancel::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let trigger = cancel.clone();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            entrypoint: Some(vec!["/bin/sh".into()]),
            command: Some(vec!["-c".into(), "echo ready; sleep 1000".into()]),
            ..Default::default()
        },
        timeout: None,
        grace: Duration::from_millis(500),
        cancel,
        output: tx,
    };
    let watcher = tokio::spawn(async move {
        while let Some((_, bytes)) = rx.recv().await {
            if String::from_utf8_lossy(&bytes).contains("ready") {
                trigger.cancel();
                break;
            }
        }
    });
    let outcome = tokio::time::timeout(Duration::from_secs(20), w.engine.run(request))
        .await
        .expect("cancel ends the run")
        .unwrap();
    watcher.await.unwrap();
    assert_eq!(outcome.stopped.as_deref(), Some("cancelled"));
    assert_clean(&w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_and_a_crashed_engine_leave_nothing() {
    let w = world();
    // Dropping the future mid-run (a caller that gave up) cleans up too.
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            entrypoint: Some(vec!["/bin/sleep".into()]),
            command: Some(vec!["1000".into()]),
            ..Default::default()
        },
        timeout: None,
        grace: Duration::from_millis(500),
        cancel: Cancel::default(),
        output: tx,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), w.engine.run(request)).await;
    assert_clean(&w);

    // A crashed engine: a container directory with a mounted overlay left behind
    // by a process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let leftover = w
        .engine
        .containers_dir()
        .join(format!("slipway-{}-0-0", gone.id()));
    let rootfs = leftover.join("bundle/rootfs");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(leftover.join(d)).unwrap();
    }
    std::fs::create_dir_all(&rootfs).unwrap();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        w.layer.display(),
        leftover.join("upper").display(),
        leftover.join("work").display()
    );
    let status = std::process::Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &data])
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(rootfs.to_str().unwrap()));
    // And a pod of that process, its network namespace still mounted.
    let pod = w.engine.create_pod().unwrap();
    let pod_dir = pod.netns_path().parent().unwrap().to_owned();
    std::mem::forget(pod);
    let dead_pod = w
        .root
        .join("pods")
        .join(format!("slipway-{}-0-pod0", gone.id()));
    std::fs::rename(&pod_dir, &dead_pod).unwrap();
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(dead_pod.to_str().unwrap()));
    let reopened = Engine::open(&w.root, runc()).unwrap();
    assert_eq!(std::fs::read_dir(w.root.join("pods")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(reopened.containers_dir())
            .unwrap()
            .count(),
        0
    );
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(w.root.to_str().unwrap()));
}

/// Two processes may share an engine root (two `slipway exec` at once): opening
/// an engine reaps only what dead processes left, never a running container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_engine_leaves_running_containers_of_live_processes_alone() {
    let w = world();
    let running = run(&w, "sleep 1; echo survived", None, Cancel::default());
    let reopen = async {
        // Wait until the container exists (bounded), then open a second engine.
        let containers = w.engine.containers_dir();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&containers).unwrap().count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the container never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 1);
        Engine::open(&w.root, runc()).unwrap()
    };
    let (finished, _second) = tokio::join!(running, reopen);
    assert_eq!(finished.outcome.exit_code, 0, "{}", finished.stderr);
    assert_eq!(finished.stdout, "survived\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_memory_limit_is_reported_as_such() {
    let w = world();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            entrypoint: Some(vec!["/bin/sh".into()]),
            // The shell buffers 200 MB of output in memory.
            command: Some(vec![
                "-c".into(),
                "a=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived".into(),
            ]),
            limits: slipway_runner::container::Limits {
                memory_bytes: Some(32 << 20),
                ..Default::default()
            },
            ..Default::default()
        },
        timeout: Some(Duration::from_secs(60)),
        grace: Duration::from_millis(500),
        cancel: Cancel::default(),
        output: tx,
    };
    let outcome = w.engine.run(request).await.unwrap();
    let mut stdout = Vec::new();
    while let Ok((Stream::Stdout, bytes)) = rx.try_recv() {
        stdout.extend(bytes);
    }
    assert_eq!(
        outcome.stopped.as_deref(),
        Some("killed: memory limit 32 MiB exceeded"),
        "{outcome:?}"
    );
    assert_ne!(outcome.exit_code, 0);
    assert!(!String::from_utf8_lossy(&stdout).contains("survived"));
    assert_clean(&w);
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_leak_nothing() {
    let w = world();
    // Warm up once so lazily created runtime state is not counted as a leak.
    run(&w, "true", None, Cancel::default()).await;
    let fds = open_fds();
    for i in 0..200 {
        let r = run(&w, &format!("exit {}", i % 3), None, Cancel::default()).await;
        assert_eq!(r.outcome.exit_code, i % 3);
    }
    // `run` checked after each one: no container directory, runc container or mount.
    assert!(
        open_fds() <= fds + 2,
        "file descriptors grew from {fds} to {}",
        open_fds()
    );
    // No cgroup of ours either: runc's own (at the hierarchy root when the
    // engine sets no parent) or the engine's (under slipway/).
    let prefix = w.engine.id_prefix().to_owned();
    let left: Vec<String> = [
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/pids/slipway",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/memory/slipway",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flat_map(|d| {
        d.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
    })
    .filter(|name| name.starts_with(&prefix))
    .collect();
    assert!(left.is_empty(), "cgroups left: {left:?}");
}

/// A user namespace needs an engine root that others can search; a private one
/// is refused with a message that says what to do, and works without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_engine_root_is_refused_clearly_for_user_namespaces() {
    let w = world();
    let parent = w.root.parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            entrypoint: Some(vec!["/bin/true".into()]),
            ..Default::default()
        },
        timeout: None,
        grace: Duration::from_millis(500),
        cancel: Cancel::default(),
        output: tx,
    };
    let err = w.engine.run(request).await.unwrap_err().to_string();
    assert!(
        err.contains(parent.to_str().unwrap()) && err.contains("mode 700") && err.contains("a+x"),
        "{err}"
    );
    assert_clean(&w);
    let r = run_with(
        &w,
        RunOptions {
            user_namespace: None,
            ..Default::default()
        },
        "echo fine",
        None,
        Cancel::default(),
    )
    .await;
    assert_eq!(r.stdout, "fine\n");
}

/// Capability numbers as in `linux/capability.h`: the name at index N is
/// capability N.
const KERNEL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capability set (moby's `oci/caps/defaults.go`).
const DOCKER_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug)]
struct MountLine {
    point: String,
    options: Vec<String>,
    fstype: String,
}

impl MountLine {
    fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }
}

fn mount_table(mountinfo: &str) -> Vec<MountLine> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            let fields: Vec<&str> = fields.split(' ').collect();
            Some(MountLine {
                point: fields.get(4)?.to_string(),
                options: fields.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: fs.split(' ').next()?.to_owned(),
            })
        })
        .collect()
}

/// The mount visible at `point`: the last one mounted there.
fn mounted_at<'a>(table: &'a [MountLine], point: &str) -> &'a MountLine {
    table
        .iter()
        .rev()
        .find(|m| m.point == point)
        .unwrap_or_else(|| panic!("nothing is mounted at {point}: {table:#?}"))
}

/// The soft and hard `Max open files` in a `/proc/<pid>/limits` text.
fn nofile_limits(limits: &str) -> (u64, u64) {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap_or_else(|| panic!("no open files limit in {limits}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

/// The seccomp filter: new namespaces (`unshare`, `clone` with a namespace
/// flag), mounts and swap are refused, also to real root with the user
/// namespace off, while ordinary forks and threads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_calls_outside_a_containers_business_are_refused() {
    let w = world();
    let script = "grep Seccomp: /proc/self/status; \
                  for ns in -U -n -m -p; do unshare $ns true 2>/dev/null && echo \"unshare $ns allowed\"; done; \
                  swapon /dev/null 2>/dev/null && echo swapon allowed; \
                  mount -t tmpfs none /tmp 2>/dev/null && echo mount allowed; \
                  (echo from a fork); echo end";
    for user_namespace in [RunOptions::default().user_namespace, None] {
        let options = RunOptions {
            user_namespace,
            ..Default::default()
        };
        let r = run_with(&w, options, script, None, Cancel::default()).await;
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(
            lines,
            ["Seccomp:\t2", "from a fork", "end"],
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
    }
    // The names in the filter are what runc passes to libseccomp.
    let spec =
        slipway_runner::container::runtime_spec(&w.image, "rootfs", &RunOptions::default(), 20_000)
            .unwrap();
    let seccomp = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    let refused = &seccomp.syscalls().as_ref().unwrap()[0];
    for name in ["unshare", "setns", "mount", "keyctl", "bpf", "userfaultfd"] {
        assert!(refused.names().iter().any(|n| n == name), "{name}");
    }
    assert_clean(&w);
}

/// With default options a container is confined as Docker confines one: exactly
/// the engine's (Docker's) capability set and no new privileges, a read-only
/// /sys, the masked paths hidden and the read-only paths unwritable (even for
/// real root with the user namespace off), only the standard devices in /dev,
/// and an open-files limit within the host's hard limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_container_is_confined_like_dockers() {
    let w = world();
    let spec = runtime_spec(
        &w.image,
        "rootfs",
        &RunOptions::default(),
        host_nofile_hard(),
    )
    .unwrap();
    let linux = spec.linux().as_ref().unwrap();

    // Capabilities: the engine's set as the kernel's bitmask, in every set but
    // the inheritable and ambient ones, which are empty.
    let caps = spec.process().as_ref().unwrap().capabilities();
    let effective = caps.as_ref().unwrap().effective().as_ref().unwrap();
    let mut names: Vec<String> = effective.iter().map(ToString::to_string).collect();
    names.sort();
    let mut docker = DOCKER_CAPABILITIES.map(str::to_owned).to_vec();
    docker.sort();
    assert_eq!(names, docker, "the default capabilities are Docker's");
    let expected = names.iter().fold(0u64, |mask, name| {
        let number = KERNEL_CAPABILITIES
            .iter()
            .position(|k| k == name)
            .unwrap_or_else(|| panic!("unknown capability {name}"));
        mask | 1 << number
    });
    let r = run(
        &w,
        "grep -E '^(Cap[A-Za-z]+|NoNewPrivs):' /proc/self/status",
        None,
        Cancel::default(),
    )
    .await;
    let status: std::collections::HashMap<&str, &str> = r
        .stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(key, value)| (key, value.trim()))
        .collect();
    let mask = |key: &str| {
        let hex = status
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {}{}", r.stdout, r.stderr));
        u64::from_str_radix(hex, 16).unwrap()
    };
    for key in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            mask(key),
            expected,
            "{key} {:#018x}, want {expected:#018x}",
            mask(key)
        );
    }
    assert_eq!((mask("CapInh"), mask("CapAmb")), (0, 0));
    assert_eq!(status.get("NoNewPrivs"), Some(&"1"), "{}", r.stdout);

    // /sys, the read-only paths and the masked directories are read-only
    // mounts; the masked files are /dev/null, the masked directories empty.
    // Only paths this kernel has are masked (runc skips the others).
    let existing = |paths: &Option<Vec<String>>| -> Vec<String> {
        let paths = paths.clone().unwrap_or_default();
        paths
            .into_iter()
            .filter(|p| Path::new(p).exists())
            .collect()
    };
    // The list is the engine's; these are the ones that matter most.
    let listed = |paths: &Option<Vec<String>>, must: &[&str]| {
        let paths = paths.clone().unwrap_or_default();
        for path in must {
            assert!(
                paths.iter().any(|p| p == path),
                "{path} is not in {paths:?}"
            );
        }
    };
    listed(
        linux.masked_paths(),
        &["/proc/kcore", "/proc/keys", "/sys/firmware"],
    );
    listed(
        linux.readonly_paths(),
        &["/proc/sys", "/proc/sysrq-trigger"],
    );
    let read_only = existing(linux.readonly_paths());
    let (masked_dirs, masked_files): (Vec<String>, Vec<String>) = existing(linux.masked_paths())
        .into_iter()
        .partition(|p| Path::new(p).is_dir());
    assert!(
        !read_only.is_empty() && !masked_dirs.is_empty() && !masked_files.is_empty(),
        "this kernel has none of some kind of path to check: {read_only:?} {masked_dirs:?} \
         {masked_files:?}"
    );
    let mut script = String::from("cat /proc/self/mountinfo; echo '--';");
    for file in &masked_files {
        script +=
            &format!("echo \"{file} $(stat -c '%F %t:%T' {file}) $(head -c 64 {file} | wc -c)\";");
    }
    for dir in &masked_dirs {
        script += &format!("echo \"{dir} $(ls -A {dir} | wc -l)\";");
    }
    let r = run(&w, &script, None, Cancel::default()).await;
    let (mountinfo, checks) = r.stdout.split_once("--\n").unwrap();
    let mounts = mount_table(mountinfo);
    for point in std::iter::once(&"/sys".to_owned())
        .chain(&read_only)
        .chain(&masked_dirs)
    {
        assert!(
            mounted_at(&mounts, point).read_only(),
            "{point}: {:?}",
            mounted_at(&mounts, point)
        );
    }
    for dir in &masked_dirs {
        assert_eq!(mounted_at(&mounts, dir).fstype, "tmpfs", "{dir}");
    }
    let want: Vec<String> = masked_files
        .iter()
        .map(|f| format!("{f} character special file 1:3 0"))
        .chain(masked_dirs.iter().map(|d| format!("{d} 0")))
        .collect();
    assert_eq!(checks.lines().collect::<Vec<_>>(), want, "{}", r.stderr);

    // Writes to /sys and /proc/sys fail for being read-only (not merely for
    // want of permission), even for real root with the user namespace off.
    // (Only harmless writes: had they worked, a new name in /sys and the
    // container's own hostname.)
    for user_namespace in [RunOptions::default().user_namespace, None] {
        let options = RunOptions {
            user_namespace,
            ..Default::default()
        };
        let r = run_with(
            &w,
            options,
            "touch /sys/probe; echo changed > /proc/sys/kernel/hostname; hostname",
            None,
            Cancel::default(),
        )
        .await;
        assert_eq!(r.stdout, "slipway\n", "namespace {user_namespace:?}");
        let refusals: Vec<&str> = r.stderr.lines().collect();
        assert_eq!(
            refusals.len(),
            2,
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
        assert!(
            refusals
                .iter()
                .all(|l| l.ends_with("Read-only file system")),
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
    }
    assert_clean(&w);

    // /dev: runc's standard character devices and nothing else (devpts has its
    // own ptmx), with /dev/pts, /dev/shm and /dev/mqueue mounted.
    let r = run(
        &w,
        "find /dev | while read -r f; do stat -c '%n|%F|%t:%T' \"$f\"; done; \
         echo '--'; cat /proc/self/mountinfo",
        None,
        Cancel::default(),
    )
    .await;
    let (listing, mountinfo) = r.stdout.split_once("--\n").unwrap();
    let mut devices: Vec<(String, u32, u32)> = listing
        .lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .filter(|f| f[1].ends_with("special file") && !f[0].starts_with("/dev/pts/"))
        .map(|f| {
            let (major, minor) = f[2].split_once(':').unwrap();
            assert_eq!(f[1], "character special file", "{f:?}");
            let hex = |n: &str| u32::from_str_radix(n, 16).unwrap();
            (f[0].to_owned(), hex(major), hex(minor))
        })
        .collect();
    let standard = [
        ("/dev/full", 1, 7),
        ("/dev/null", 1, 3),
        ("/dev/random", 1, 8),
        ("/dev/tty", 5, 0),
        ("/dev/urandom", 1, 9),
        ("/dev/zero", 1, 5),
    ]
    .map(|(name, major, minor)| (name.to_owned(), major, minor));
    devices.sort();
    assert_eq!(devices, standard, "{listing}");
    let mounts = mount_table(mountinfo);
    for (point, fstype) in [
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
    ] {
        assert_eq!(mounted_at(&mounts, point).fstype, fstype, "{point}");
    }

    // Open files: as many as asked (the default), but never above the host's
    // hard limit.
    let (_, host_hard) = nofile_limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
    let r = run(&w, "cat /proc/self/limits", None, Cancel::default()).await;
    let want = RunOptions::default().nofile.min(host_hard);
    assert_eq!(
        nofile_limits(&r.stdout),
        (want, want),
        "host hard limit {host_hard}"
    );
}

/// The CFS quota and period of the running container's cgroup as the host sees
/// it, found from the init process runc records under `runc_root`: `None` for no
/// quota. cgroup v1's `cpu` controller where there is one, else v2's `cpu.max`.
fn host_cpu_quota(runc_root: &Path) -> (Option<u64>, u64) {
    let state = std::fs::read_dir(runc_root)
        .unwrap()
        .flatten()
        .find_map(|e| std::fs::read_to_string(e.path().join("state.json")).ok())
        .expect("runc's state of the running container");
    let pid: String = state
        .split("\"init_process_pid\":")
        .nth(1)
        .expect("the container's init pid")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':').skip(1);
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers.split(',').any(|c| c == "cpu").then_some(path)
    });
    let text = match v1 {
        Some(path) => {
            let dir = Path::new("/sys/fs/cgroup/cpu").join(path.trim_start_matches('/'));
            let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
            format!("{} {}", read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
        }
        None => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
            std::fs::read_to_string(dir.join("cpu.max")).unwrap()
        }
    };
    cfs_quota(&text)
}

/// `QUOTA PERIOD` (v2's `cpu.max`, or v1's two files joined); `-1` or `max`
/// for no quota.
fn cfs_quota(text: &str) -> (Option<u64>, u64) {
    let fields: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(fields.len(), 2, "{text:?}");
    (fields[0].parse().ok(), fields[1].parse().unwrap())
}

/// A CPU limit (`--cpus 1.5`) is a CFS quota of 1.5 periods of 100 ms on the
/// container's cgroup, seen from the host while it runs and from inside;
/// without a limit there is no quota; a limit that is not a positive number is
/// refused before anything runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limit_is_the_containers_cfs_quota() {
    let w = world();
    let own_quota = "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us \
                     2>/dev/null || cat /sys/fs/cgroup/cpu.max";
    let r = run(&w, own_quota, None, Cancel::default()).await;
    assert_eq!(cfs_quota(&r.stdout), (None, 100_000), "{}", r.stderr);

    let cancel = Cancel::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest {
        image: &w.image,
        layers: vec![&w.layer],
        options: RunOptions {
            entrypoint: Some(vec!["/bin/sh".into()]),
            command: Some(vec![
                "-c".into(),
                format!("{own_quota}; echo ready; sleep 1000"),
            ]),
            limits: Limits {
                cpus: Some(1.5),
                ..Default::default()
            },
            ..Default::default()
        },
        timeout: Some(Duration::from_secs(60)),
        grace: Duration::from_millis(500),
        cancel: cancel.clone(),
        output: tx,
    };
    let look = async {
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while let Some((stream, bytes)) = rx.recv().await {
            let text = String::from_utf8_lossy(&bytes);
            match stream {
                Stream::Stdout => stdout.push_str(&text),
                Stream::Stderr => stderr.push_str(&text),
            }
            if stdout.ends_with("ready\n") {
                break;
            }
        }
        let inside = stdout
            .strip_suffix("ready\n")
            .unwrap_or_else(|| panic!("the container never got ready: {stdout}{stderr}"));
        let seen = (cfs_quota(inside), host_cpu_quota(&w.root.join("runc")));
        cancel.cancel();
        seen
    };
    let (outcome, (inside, host)) = tokio::join!(w.engine.run(request), look);
    assert_eq!(outcome.unwrap().stopped.as_deref(), Some("cancelled"));
    assert_eq!(host, (Some(150_000), 100_000), "seen from the host");
    assert_eq!(inside, (Some(150_000), 100_000), "seen from inside");
    assert_clean(&w);

    // Not a positive number, below the kernel's 1 ms quota, or more CPUs than
    // the host has.
    let available = std::thread::available_parallelism().unwrap().get();
    let positive = "must be a positive number".to_owned();
    let range = format!("is out of range: from 0.01 to {available} (the CPUs this host has)");
    let cases = [
        (0.0, &positive),
        (-1.0, &positive),
        (f64::NAN, &positive),
        (f64::INFINITY, &positive),
        (0.005, &range),
        (available as f64 + 1.0, &range),
    ];
    for (cpus, why) in cases {
        let options = RunOptions {
            limits: Limits {
                cpus: Some(cpus),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = try_run_with(&w, options, "true", None, Cancel::default())
            .await
            .err()
            .unwrap_or_else(|| panic!("cpus {cpus} was accepted"))
            .to_string();
        assert_eq!(err, format!("invalid limit: cpus {cpus} {why}"));
    }
    assert_clean(&w);
}

/// `Network::Host`: the container is in the host's network namespace and
/// reaches a listener on the host's loopback, with or without a user namespace
/// (no combination is refused). A user namespace cannot mount a sysfs for a
/// network namespace it does not own, so there /sys is a bind of the host's:
/// still read-only, still with /sys/firmware masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_networking_shares_the_hosts_network_namespace() {
    let w = world();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for user_namespace in [RunOptions::default().user_namespace, None] {
        // Greets one connection; blocks (and the run times out) if none comes.
        let greeter = listener.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let (mut conn, _) = greeter.accept().unwrap();
            conn.write_all(b"hello from the host\n").unwrap();
        });
        let options = RunOptions {
            network: Network::Host,
            user_namespace,
            ..Default::default()
        };
        let script = format!(
            "readlink /proc/self/ns/net; nc -w 1 127.0.0.1 {port} </dev/null; \
             touch /sys/probe 2>&1; ls -A /sys/firmware | wc -l; cat /proc/self/mountinfo"
        );
        let timeout = Some(Duration::from_secs(20));
        let r = run_with(&w, options, &script, timeout, Cancel::default()).await;
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert!(
            lines.len() > 4,
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
        assert_eq!(
            lines[..4],
            [
                host_ns.to_str().unwrap(),
                "hello from the host",
                "touch: /sys/probe: Read-only file system",
                "0"
            ],
            "namespace {user_namespace:?}: {}",
            r.stderr
        );
        let mounts = mount_table(&lines[4..].join("\n"));
        assert!(mounted_at(&mounts, "/sys").read_only());
        let firmware = mounted_at(&mounts, "/sys/firmware");
        assert!(firmware.read_only() && firmware.fstype == "tmpfs");
        // Nothing of the host's below /sys is writable either (a recursive
        // bind brings its submounts: cgroups, debugfs, securityfs, bpf). The
        // tmpfs runc puts at /sys/fs/cgroup for the cgroup v1 mounts is the
        // container's own.
        let writable: Vec<&String> = mounts
            .iter()
            .filter(|m| m.point.starts_with("/sys/") && !m.read_only() && m.fstype != "tmpfs")
            .map(|m| &m.point)
            .collect();
        assert!(
            writable.is_empty(),
            "namespace {user_namespace:?}: writable: {writable:?}"
        );
    }
    assert_clean(&w);
}
