//! `slipway image bootstrap busybox`, `slipway image import` and `slipway exec`
//! against the real server and runc: the reference without a host resolves to
//! Slipway's registry, output and exit codes come through, limits and timeouts
//! apply, and nothing is left behind.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Run the CLI with `--server` placed before any `--` (what follows `--` is the
/// container's command).
fn slipway(server: &TestServer, args: &[&str]) -> std::process::Output {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(&args[..split])
        .args(["--server", server.url()])
        .args(&args[split..])
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn bootstrap_then_exec_and_import() {
    let server = TestServer::start();
    let work = scratch_dir("exec");
    let work_dir = work.path().join("runner");
    let work_arg = work_dir.to_str().unwrap();

    let out = slipway(&server, &["image", "bootstrap", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/library/busybox:latest@sha256:"),
        "{}",
        text(&out.stdout)
    );

    // `busybox` means Slipway's own library/busybox:latest.
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"));

    // A read-only mount and an environment variable reach the container.
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("input"), "from the host\n").unwrap();
    let mount = format!("{}:/input:ro", shared.display());
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--mount",
            &mount,
            "--env",
            "GREETING=hi",
            "--",
            "sh",
            "-c",
            "echo $GREETING; cat /input/input; touch /input/x 2>/dev/null || echo read-only",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\nfrom the host\nread-only\n");

    // The timeout ends the container and says so.
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--timeout",
            "1s",
            "--",
            "sleep",
            "100",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("timed out after 1s"),
        "{}",
        text(&out.stderr)
    );

    // A pids limit stops a fork bomb, and the host is fine afterwards.
    let started = std::time::Instant::now();
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--pids",
            "20",
            "--timeout",
            "3s",
            "--",
            "sh",
            "-c",
            "while true; do sleep 100 & done",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("fork"),
        "forks were refused by the pids limit: {}",
        &stderr[..stderr.len().min(500)]
    );
    // busybox sh gives up when a fork fails; either way the container ends.
    assert!(!out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        Command::new("true").status().unwrap().success(),
        "the host still starts processes"
    );

    // Over the memory limit: killed, and the message says why.
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--memory",
            "32m",
            "--",
            "sh",
            "-c",
            "a=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
        ],
    );
    assert_eq!(out.status.code(), Some(137));
    assert!(
        text(&out.stderr).contains("killed: memory limit 32 MiB exceeded"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains("survived"));

    // Bad flags get clear errors before anything runs.
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--memory",
            "lots",
            "--",
            "true",
        ],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("not a number"),
        "{}",
        text(&out.stderr)
    );
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "no/such-image",
            "--work-dir",
            work_arg,
            "--",
            "true",
        ],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("no/such-image"),
        "{}",
        text(&out.stderr)
    );

    // image import: a directory becomes a one-layer image.
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::write(rootfs.join("data/hello.txt"), "imported").unwrap();
    let out = slipway(
        &server,
        &[
            "image",
            "import",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--tag",
            "team/files:v1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = server
        .get("/v2/team/files/tags/list", &server.admin_auth())
        .json();
    assert_eq!(listed["tags"], serde_json::json!(["v1"]));

    // Nothing is left in the engine's container directory.
    assert_eq!(
        std::fs::read_dir(work_dir.join("engine/containers"))
            .unwrap()
            .count(),
        0
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(work_arg));
}

/// A one-layer image of the host's busybox-static with `/marker` holding
/// `content`, imported as `team/app:v1`.
fn import_app(server: &TestServer, root: &std::path::Path, content: &str) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/cat")).unwrap();
    std::fs::write(root.join("marker"), content).unwrap();
    let out = slipway(
        server,
        &[
            "image",
            "import",
            "--rootfs",
            root.to_str().unwrap(),
            "--tag",
            "team/app:v1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Docker's and podman's default: an image stored locally (record and layers)
/// starts without the registry; `--pull always` re-resolves the tag; `--pull
/// never` refuses an image that is not stored.
#[test]
fn stored_images_start_offline_and_the_pull_policy_is_honoured() {
    let mut server = TestServer::start();
    let work = scratch_dir("exec-pull");
    let work_arg = work.path().join("runner");
    let work_arg = work_arg.to_str().unwrap();
    let rootfs = work.path().join("rootfs");
    let marker = |server: &TestServer, pull: &str| {
        slipway(
            server,
            &[
                "exec",
                "--image",
                "team/app:v1",
                "--pull",
                pull,
                "--work-dir",
                work_arg,
                "--",
                "cat",
                "/marker",
            ],
        )
    };

    import_app(&server, &rootfs, "one");
    let out = marker(&server, "missing");
    assert_eq!(text(&out.stdout), "one", "{}", text(&out.stderr));

    // The tag moves; the stored image is still used until a pull is asked for.
    import_app(&server, &rootfs, "two");
    assert_eq!(text(&marker(&server, "missing").stdout), "one");
    assert_eq!(text(&marker(&server, "always").stdout), "two");
    assert_eq!(text(&marker(&server, "missing").stdout), "two");

    // With the server gone, the stored image still starts; a pull cannot.
    server.kill_hard();
    let out = marker(&server, "missing");
    assert_eq!(text(&out.stdout), "two", "{}", text(&out.stderr));
    let out = marker(&server, "always");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("team/app:v1"),
        "{}",
        text(&out.stderr)
    );
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "team/other:v1",
            "--pull",
            "never",
            "--work-dir",
            work_arg,
            "--",
            "true",
        ],
    );
    assert!(
        !out.status.success() && text(&out.stderr).contains("is not in the local image store"),
        "{}",
        text(&out.stderr)
    );
    // Container root is host uid 100000 unless --userns host says otherwise.
    for (userns, map) in [("private", "0 100000 65536"), ("host", "0 0 4294967295")] {
        let out = slipway(
            &server,
            &[
                "exec",
                "--image",
                "team/app:v1",
                "--userns",
                userns,
                "--work-dir",
                work_arg,
                "--",
                "cat",
                "/proc/self/uid_map",
            ],
        );
        let got: Vec<String> = text(&out.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(got.join(" "), map, "{}", text(&out.stderr));
    }
    let out = marker(&server, "sometimes");
    assert!(
        !out.status.success() && text(&out.stderr).contains("always, missing or never"),
        "{}",
        text(&out.stderr)
    );
}

/// Is `pid` a live process (not a zombie)?
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// A `slipway exec` killed with SIGKILL leaves its container running; the next
/// `slipway exec` on the same work dir reaps it: process, runc state, mounts,
/// directory and cgroup.
#[test]
fn a_killed_exec_is_reaped_by_the_next_one() {
    let server = TestServer::start();
    let work = scratch_dir("exec-killed");
    let work_dir = work.path().join("runner");
    let work_arg = work_dir.to_str().unwrap();
    let out = slipway(&server, &["image", "bootstrap", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut victim = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args([
            "exec",
            "--server",
            server.url(),
            "--image",
            "busybox",
            "--memory",
            "64m",
        ])
        .args(["--work-dir", work_arg, "--", "sleep", "1000"])
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for runc's state file: the container is running then.
    let runc_root = work_dir.join("engine/runc");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (id, init_pid) = loop {
        let state = std::fs::read_dir(&runc_root).ok().and_then(|entries| {
            entries.flatten().find_map(|e| {
                let json = std::fs::read_to_string(e.path().join("state.json")).ok()?;
                let value: serde_json::Value = serde_json::from_str(&json).ok()?;
                let pid = value["init_process_pid"].as_u64()?;
                Some((e.file_name().into_string().unwrap(), pid as u32))
            })
        });
        if let Some(found) = state {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let cgroup = std::path::Path::new("/sys/fs/cgroup/memory/slipway").join(&id);
    assert!(cgroup.exists());
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert!(
        alive(init_pid),
        "the container should outlive its killed engine"
    );

    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            "busybox",
            "--work-dir",
            work_arg,
            "--",
            "true",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !alive(init_pid),
        "the orphaned container process is still running"
    );
    assert!(!runc_root.join(&id).exists(), "runc state left");
    assert_eq!(
        std::fs::read_dir(work_dir.join("engine/containers"))
            .unwrap()
            .count(),
        0
    );
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(work_arg));
    assert!(!cgroup.exists(), "memory cgroup left");
}

/// One tar entry: its name (written as given: the tar crate's own setters
/// refuse `..`, which a hostile tar may hold), type, mode, owner, and content
/// (a symlink's target).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    mode: u32,
    owner: u64,
    data: &'a [u8],
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(e.mode);
        header.set_uid(e.owner);
        header.set_gid(e.owner);
        header.set_mtime(0);
        let data = if e.kind == tar::EntryType::Symlink {
            header
                .set_link_name(std::str::from_utf8(e.data).unwrap())
                .unwrap();
            &[][..]
        } else {
            e.data
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A root filesystem tar: the host's busybox-static with `sh`, `cat` and
/// `stat` linked to it, then `extra`.
fn rootfs_tar(extra: &[Entry]) -> Vec<u8> {
    use tar::EntryType::{Directory, Regular, Symlink};
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let entry = |name, kind, mode, data| Entry {
        name,
        kind,
        mode,
        owner: 0,
        data,
    };
    let mut entries = vec![
        entry("bin/", Directory, 0o755, b""),
        entry("bin/busybox", Regular, 0o755, &busybox),
        entry("bin/sh", Symlink, 0o777, b"busybox"),
        entry("bin/cat", Symlink, 0o777, b"busybox"),
        entry("bin/stat", Symlink, 0o777, b"busybox"),
    ];
    entries.extend(extra.iter().map(|e| Entry { ..*e }));
    tar_of(&entries)
}

/// `slipway image import --tar FILE`: the tar becomes a one-layer image whose
/// files keep their content, mode and owner in `slipway exec`; a file that is
/// not there, a tar with an entry that climbs out of the root (`../escape`) and
/// a file that is no tar are refused at import with an error that names them.
#[test]
fn an_imported_tar_runs_with_its_files_intact() {
    use tar::EntryType::{Directory, Regular};
    let server = TestServer::start();
    let work = scratch_dir("exec-tar");
    let work_dir = work.path().join("runner");
    let work_arg = work_dir.to_str().unwrap();
    let import = |tar: &std::path::Path, tag: &str| {
        slipway(
            &server,
            &[
                "image",
                "import",
                "--tar",
                tar.to_str().unwrap(),
                "--tag",
                tag,
            ],
        )
    };
    let exec = |image: &str, script: &str| {
        slipway(
            &server,
            &[
                "exec",
                "--image",
                image,
                "--work-dir",
                work_arg,
                "--",
                "sh",
                "-c",
                script,
            ],
        )
    };

    let file = work.path().join("rootfs.tar");
    let tar = rootfs_tar(&[
        Entry {
            name: "data/",
            kind: Directory,
            mode: 0o750,
            owner: 0,
            data: b"",
        },
        Entry {
            name: "data/greeting",
            kind: Regular,
            mode: 0o640,
            owner: 1000,
            data: b"hello from a tar\n",
        },
        Entry {
            name: "data/run.sh",
            kind: Regular,
            mode: 0o4755,
            owner: 0,
            data: b"#!/bin/sh\necho script ran\n",
        },
    ]);
    std::fs::write(&file, &tar).unwrap();
    let out = import(&file, "team/tarred:v1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/team/tarred:v1@sha256:"),
        "{}",
        text(&out.stdout)
    );
    let out = exec(
        "team/tarred:v1",
        "cat /data/greeting; stat -c '%n %a %u:%g' /data /data/greeting /data/run.sh; \
         /data/run.sh",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "hello from a tar\n/data 750 0:0\n/data/greeting 640 1000:1000\n\
         /data/run.sh 4755 0:0\nscript ran\n"
    );

    // A tar that is not there.
    let missing = work.path().join("missing.tar");
    let out = import(&missing, "team/missing:v1");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("{}: No such file or directory", missing.display())),
        "{}",
        text(&out.stderr)
    );

    // A tar with an entry outside its root: refused at import with an error
    // that names the entry; nothing is pushed or written outside the layer.
    let hostile = work.path().join("hostile.tar");
    let tar = rootfs_tar(&[Entry {
        name: "../escape",
        kind: Regular,
        mode: 0o644,
        owner: 0,
        data: b"escaped\n",
    }]);
    std::fs::write(&hostile, &tar).unwrap();
    let refused = import(&hostile, "team/hostile:v1");
    assert!(!refused.status.success(), "{}", text(&refused.stdout));
    assert!(
        text(&refused.stderr).contains(&format!(
            "{}: entry \"../escape\": `..` would leave the layer",
            hostile.display()
        )),
        "{}",
        text(&refused.stderr)
    );
    let tags = server.get("/v2/team/hostile/tags/list", &server.admin_auth());
    assert_eq!(tags.status, 404, "nothing was pushed");
    // Not a tar at all.
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, "not a tar\n").unwrap();
    let refused = import(&junk, "team/junk:v1");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("junk.tar: not a tar archive"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(files_named(work.path(), "escape"), Vec::<PathBuf>::new());
}

/// Every file called `name` below `dir`.
fn files_named(dir: &std::path::Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_named(&path, name));
        } else if entry.file_name() == name {
            found.push(path);
        }
    }
    found
}

/// Issue 11, item 11: `slipway exec --image IMG` with no command runs the
/// image as `podman run IMG` does: its ENTRYPOINT and CMD; a command after
/// `--` replaces the CMD and keeps the ENTRYPOINT; an image with neither is
/// a clear error.
#[test]
fn exec_without_a_command_runs_the_image_as_built() {
    let server = TestServer::start();
    let work = scratch_dir("exec-cmd");
    let work_arg = work.path().join("runner");
    let work_arg = work_arg.to_str().unwrap();
    let out = slipway(&server, &["image", "bootstrap", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let build = |tag: &str, containerfile: &str| {
        let ctx = work.path().join(tag.replace([':', '/'], "-"));
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Containerfile"), containerfile).unwrap();
        std::fs::write(ctx.join("marker"), "a file\n").unwrap();
        let out = slipway(
            &server,
            &[
                "build",
                "-t",
                tag,
                "--work-dir",
                work_arg,
                ctx.to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    build(
        "team/cmd:v1",
        "FROM busybox\nCMD [\"sh\", \"-c\", \"echo from the cmd; exit 3\"]\n",
    );
    build(
        "team/entry:v1",
        "FROM busybox\nENTRYPOINT [\"echo\", \"entry:\"]\nCMD [\"default\", \"args\"]\n",
    );
    build("team/nothing:v1", "FROM scratch\nCOPY marker /marker\n");

    let exec = |image: &str, command: &[&str]| {
        let mut args = vec!["exec", "--image", image, "--work-dir", work_arg];
        if !command.is_empty() {
            args.push("--");
            args.extend_from_slice(command);
        }
        slipway(&server, &args)
    };
    // CMD alone, with its exit code.
    let out = exec("team/cmd:v1", &[]);
    assert_eq!(text(&out.stdout), "from the cmd\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // ENTRYPOINT + CMD; a command replaces only the CMD.
    let out = exec("team/entry:v1", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "entry: default args\n");
    let out = exec("team/entry:v1", &["given"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "entry: given\n");
    // Neither: a clear error naming the image, before any container.
    let out = exec("team/nothing:v1", &[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("team/nothing:v1 has no ENTRYPOINT or CMD: give the command after --"),
        "{stderr}"
    );
    assert!(text(&out.stdout).is_empty());
}
