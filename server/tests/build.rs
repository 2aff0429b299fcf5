//! `slipway build` end to end with the real binary: Containerfiles built with
//! runc, pushed to the server's registry, then run (with `slipway exec` and
//! podman), inspected (skopeo) and compared with what buildah builds.
//!
//! Needs root, runc, podman, buildah and skopeo (scripts/test.sh installs them).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use sha2::Digest as _;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server with busybox in its registry, and a scratch dir the container's
/// root (uid 100000) can traverse.
struct Env {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(prefix: &str) -> Env {
        let server = TestServer::start();
        let dir = scratch_dir(prefix);
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o711),
        )
        .unwrap();
        let env = Env { server, dir };
        let out = env.slipway(&["image", "bootstrap", "busybox"], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        env
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The CLI as admin; `work` is the runner work dir (layers, build cache).
    fn slipway(&self, args: &[&str], work: Option<&Path>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.args(args)
            .env("SLIPWAY_SERVER", self.server.url())
            .env("SLIPWAY_USER", "admin")
            .env("SLIPWAY_PASSWORD", self.server.admin_password())
            .env(
                "SLIPWAY_RUNNER_DIR",
                work.unwrap_or(&self.path().join("work")),
            )
            .env("RUST_BACKTRACE", "0")
            .env_remove("SLIPWAY_TOKEN")
            .env_remove("SOURCE_DATE_EPOCH");
        cmd.output().unwrap()
    }

    /// `slipway build`; panics on failure. Returns (digest, stderr).
    fn build(&self, args: &[&str], work: Option<&Path>) -> (String, String) {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        let out = self.slipway(&all, work);
        let stderr = text(&out.stderr);
        assert!(
            out.status.success(),
            "slipway {all:?} failed\n--- stderr ---\n{stderr}"
        );
        let digest = text(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_owned();
        assert!(
            digest.starts_with("sha256:"),
            "no digest printed: {digest:?}\n{stderr}"
        );
        (digest, stderr)
    }

    /// `slipway build` that must fail; returns its stderr.
    fn build_fails(&self, args: &[&str]) -> String {
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        let out = self.slipway(&all, None);
        assert!(!out.status.success(), "slipway {all:?} succeeded");
        text(&out.stderr)
    }

    /// `slipway exec --image IMAGE -- sh -c SCRIPT`; returns stdout.
    fn exec(&self, image: &str, script: &str) -> String {
        let out = self.slipway(&["exec", "--image", image, "--", "sh", "-c", script], None);
        assert!(
            out.status.success(),
            "exec in {image} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn manifest(&self, repo: &str, reference: &str) -> serde_json::Value {
        let resp = self
            .server
            .get_manifest(repo, reference, &self.server.admin_auth());
        assert_eq!(resp.status, 200, "manifest {repo}:{reference}");
        serde_json::from_slice(&resp.body).unwrap()
    }

    /// The image's filesystem, layers applied in order with their whiteouts:
    /// path -> (type, mode, uid, gid, sha256 of content or link target).
    fn filesystem(&self, repo: &str, reference: &str) -> BTreeMap<String, String> {
        let manifest = self.manifest(repo, reference);
        let mut fs: BTreeMap<String, String> = BTreeMap::new();
        for layer in manifest["layers"].as_array().unwrap() {
            let blob = self.server.get_blob(
                repo,
                layer["digest"].as_str().unwrap(),
                &self.server.admin_auth(),
            );
            apply_layer(&mut fs, &gunzip(&blob));
        }
        fs
    }

    /// Entry names of every layer of an image.
    fn layer_entries(&self, repo: &str, reference: &str) -> Vec<Vec<String>> {
        let manifest = self.manifest(repo, reference);
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|layer| {
                let blob = self.server.get_blob(
                    repo,
                    layer["digest"].as_str().unwrap(),
                    &self.server.admin_auth(),
                );
                let tar = gunzip(&blob);
                let mut archive = tar::Archive::new(&tar[..]);
                archive
                    .entries()
                    .unwrap()
                    .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
                    .collect()
            })
            .collect()
    }
}

fn apply_layer(fs: &mut BTreeMap<String, String>, tar: &[u8]) {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = format!("/{}", path.trim_start_matches("./").trim_end_matches('/'));
        let (dir, name) = path.rsplit_once('/').unwrap();
        if name == ".wh..wh..opq" {
            let prefix = format!("{dir}/");
            fs.retain(|p, _| !p.starts_with(&prefix));
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            let gone = format!("{dir}/{gone}");
            let prefix = format!("{gone}/");
            fs.retain(|p, _| *p != gone && !p.starts_with(&prefix));
            continue;
        }
        let h = entry.header().clone();
        let what = match h.entry_type() {
            tar::EntryType::Directory => "dir".to_owned(),
            tar::EntryType::Symlink => format!(
                "link -> {}",
                entry.link_name().unwrap().unwrap().to_string_lossy()
            ),
            tar::EntryType::Link => format!(
                "hardlink -> /{}",
                entry.link_name().unwrap().unwrap().to_string_lossy()
            ),
            _ => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                format!("file {}", hex::encode(sha2::Sha256::digest(&data)))
            }
        };
        fs.insert(
            path,
            format!(
                "{what} mode {:o} owner {}:{}",
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap()
            ),
        );
    }
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, content) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A tar archive (plain) of `files`.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

const FEATURES: &str = r#"# Everything the acceptance list names, in two stages.
ARG BASE=busybox
FROM ${BASE} AS build
ARG NAME=world
ENV GREETING="hello ${NAME}" \
    APP_DIR=/opt/app
WORKDIR $APP_DIR
COPY src/ ./src/
ADD files.tar /opt/unpacked/
RUN echo "$GREETING" > greeting.txt \
 && echo "app:x:1234:1234::/home/app:/bin/sh" >> /etc/passwd
USER app
RUN id -u > /tmp/uid.txt

FROM --platform=linux/amd64 ${BASE}
COPY --from=build /opt/app /srv
COPY --from=build /opt/unpacked /srv/unpacked
COPY --from=build /tmp/uid.txt /
RUN rm /etc/group
USER 1234
RUN touch /tmp/mine
WORKDIR /srv
ENV MODE=prod
LABEL org.example.team="builders"
CMD ["cat", "greeting.txt"]
"#;

fn features_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("features");
    write(
        &ctx,
        &[
            ("Containerfile", FEATURES),
            ("src/main.sh", "echo main\n"),
            ("src/lib/util.sh", "echo util\n"),
            ("src/debug.log", "should be ignored\n"),
            ("secret.txt", "never copied\n"),
            (".dockerignore", "# local noise\n**/*.log\nsecret.txt\n"),
        ],
    );
    std::fs::write(
        ctx.join("files.tar"),
        tar_of(&[("a/one.txt", "one\n"), ("b/two.txt", "two\n")]),
    )
    .unwrap();
    ctx
}

/// Acceptance 1 and 4: multi-stage, COPY --from, ARG/ENV expansion,
/// USER/WORKDIR, a whiteout, .dockerignore and ADD of a tar; the image runs
/// in the engine and in podman, and skopeo shows its config.
#[test]
fn a_multi_stage_build_runs_with_its_files_and_config() {
    let env = Env::new("build-features-");
    let ctx = features_context(env.path());
    let ctx_arg = ctx.to_str().unwrap();
    let (digest, progress) = env.build(
        &[
            "-t",
            "demo/features:v1",
            "--build-arg",
            "NAME=builder",
            ctx_arg,
        ],
        None,
    );
    assert!(
        progress.contains("[build 5/9] COPY src/ ./src/  run"),
        "{progress}"
    );

    let seen = env.exec(
        "demo/features:v1",
        "id -u; pwd; cat greeting.txt; echo \"mode=$MODE greeting=${GREETING:-unset}\"; \
         find /srv/src -type f | sort; cat /srv/unpacked/a/one.txt /srv/unpacked/b/two.txt; \
         cat /uid.txt; ls -n /tmp/mine | awk '{print $3}'; \
         test -e /etc/group && echo group-present || echo group-deleted; \
         ls /srv/secret.txt 2>&1 || true",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "1234", "USER: {seen}");
    assert_eq!(lines[1], "/srv", "WORKDIR: {seen}");
    assert_eq!(
        lines[2], "hello builder",
        "ARG via --build-arg into ENV: {seen}"
    );
    assert_eq!(
        lines[3], "mode=prod greeting=unset",
        "ENV per stage: {seen}"
    );
    assert_eq!(
        &lines[4..6],
        ["/srv/src/lib/util.sh", "/srv/src/main.sh"],
        ".dockerignore keeps debug.log out: {seen}"
    );
    assert_eq!(&lines[6..8], ["one", "two"], "ADD unpacked the tar: {seen}");
    assert_eq!(lines[8], "1234", "RUN as USER app: {seen}");
    assert_eq!(lines[9], "1234", "files RUN made as app are app's: {seen}");
    assert_eq!(lines[10], "group-deleted", "{seen}");
    assert!(lines[11].contains("No such file"), "{seen}");

    // The deletion is an OCI whiteout in the RUN's layer.
    let layers = env.layer_entries("demo/features", "v1");
    assert!(
        layers
            .iter()
            .any(|l| l.iter().any(|e| e == "etc/.wh.group")),
        "no whiteout for /etc/group in {layers:?}"
    );

    // skopeo sees the config.
    let scratch = env.path().join("skopeo");
    let inspect = skopeo(&scratch)
        .args(["inspect", "--config", "--tls-verify=false", "--creds"])
        .arg(env.server.admin_creds())
        .arg(format!(
            "docker://{}/demo/features@{digest}",
            env.server.host_port()
        ))
        .run();
    let config: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "1234");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["Cmd"], serde_json::json!(["cat", "greeting.txt"]));
    assert!(
        c["Env"].as_array().unwrap().contains(&"MODE=prod".into()),
        "{c}"
    );
    assert_eq!(c["Labels"]["org.example.team"], "builders");
    let base_digest = env
        .server
        .head_manifest("library/busybox", "latest", &env.server.admin_auth())
        .headers["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        c["Labels"]["org.opencontainers.image.base.digest"],
        base_digest
    );
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert!(
        config["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["created_by"] == "RUN rm /etc/group"),
        "{}",
        config["history"]
    );

    // podman pulls and runs it (runc, overlay).
    let store = env.path().join("podman");
    let podman = || {
        Tool::new("podman", &store)
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("runroot"))
            .arg("--tmpdir")
            .arg(store.join("tmp"))
            .args(["--storage-driver", "overlay", "--runtime", "runc"])
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"])
    };
    let image = format!("{}/demo/features:v1", env.server.host_port());
    podman()
        .args(["pull", "--tls-verify=false", "--creds"])
        .arg(env.server.admin_creds())
        .arg(&image)
        .run();
    let out = podman()
        .args(["run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=4096:4096",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg(&image)
        .run();
    assert_eq!(out.trim(), "hello builder");
    let _ = podman().args(["system", "reset", "--force"]).output_lossy();
}

/// Acceptance 2: two clean builds, in two different work dirs, give the
/// same digest.
#[test]
fn clean_builds_in_different_cache_dirs_give_the_same_digest() {
    let env = Env::new("build-repro-");
    let ctx = features_context(env.path());
    let ctx_arg = ctx.to_str().unwrap();
    let a = env.path().join("cache-a");
    let b = env.path().join("cache-b");
    let (first, _) = env.build(&["--no-cache", "-t", "demo/repro:a", ctx_arg], Some(&a));
    let (second, _) = env.build(&["--no-cache", "-t", "demo/repro:b", ctx_arg], Some(&b));
    assert_eq!(first, second);
    // A different SOURCE_DATE_EPOCH is a different image.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    let out = cmd
        .args(["build", "--no-cache", "-t", "demo/repro:c", ctx_arg])
        .env("SLIPWAY_SERVER", env.server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", env.server.admin_password())
        .env("SLIPWAY_RUNNER_DIR", &a)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(text(&out.stdout).trim(), first);
}

/// Acceptance 3: an unchanged rebuild runs nothing; changing a file the last
/// COPY reads rebuilds only from that instruction on.
#[test]
fn the_cache_reruns_only_what_changed() {
    let env = Env::new("build-cache-");
    let ctx = env.path().join("ctx");
    write(
        &ctx,
        &[
            (
                "Containerfile",
                "FROM busybox\nRUN echo one > /one\nCOPY base/ /base/\nRUN echo two > /two\nCOPY app/ /app/\nRUN cat /app/* > /all\n",
            ),
            ("base/x", "x\n"),
            ("app/a.txt", "a\n"),
            ("app/b.txt", "b\n"),
        ],
    );
    let ctx_arg = ctx.to_str().unwrap();
    let (first, cold) = env.build(&["-t", "demo/cache:v1", ctx_arg], None);
    assert_eq!(cold.matches("  run ").count(), 5, "{cold}");

    let (again, warm) = env.build(&["-t", "demo/cache:v1", ctx_arg], None);
    assert_eq!(again, first);
    assert!(
        !warm.contains("  run "),
        "an unchanged rebuild ran something:\n{warm}"
    );
    assert!(warm.contains("(0 run, 5 cached)"), "{warm}");

    std::fs::write(ctx.join("app/b.txt"), "b changed\n").unwrap();
    let (changed, edit) = env.build(&["-t", "demo/cache:v2", ctx_arg], None);
    assert_ne!(changed, first);
    let ran: Vec<&str> = edit.lines().filter(|l| l.contains("  run ")).collect();
    assert_eq!(ran.len(), 2, "{edit}");
    assert!(ran[0].contains("COPY app/ /app/"), "{edit}");
    assert!(ran[1].contains("RUN cat /app/* > /all"), "{edit}");
    assert_eq!(env.exec("demo/cache:v2", "cat /all"), "a\nb changed\n");
}

/// Acceptance 4: a fixture buildah builds gives the same filesystem when
/// Slipway builds it.
#[test]
fn buildah_and_slipway_build_the_same_filesystem() {
    let env = Env::new("build-compat-");
    let ctx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build/compat");
    let base = format!("{}/library/busybox:latest", env.server.host_port());
    env.build(
        &[
            "-t",
            "compat/slipway:v1",
            "--build-arg",
            &format!("BASE={base}"),
            ctx.to_str().unwrap(),
        ],
        None,
    );
    let storage = env.path().join("buildah");
    buildah(&storage)
        .args(["bud", "--layers", "--tls-verify=false", "--creds"])
        .arg(env.server.admin_creds())
        .arg("--build-arg")
        .arg(format!("BASE={base}"))
        .args(["-t", "localhost/compat:v1"])
        .arg(&ctx)
        .run();
    buildah(&storage)
        .args(["push", "--tls-verify=false", "--creds"])
        .arg(env.server.admin_creds())
        .arg("localhost/compat:v1")
        .arg(format!(
            "docker://{}/compat/buildah:v1",
            env.server.host_port()
        ))
        .run();
    let ours = env.filesystem("compat/slipway", "v1");
    let mut theirs = env.filesystem("compat/buildah", "v1");
    // buildah leaves the mount points of its RUN containers behind as empty
    // files and directories; they are not part of what the Containerfile
    // builds.
    for stub in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/run"] {
        if !ours.contains_key(stub) {
            let removed = theirs.remove(stub);
            assert!(
                removed.as_deref().is_none_or(|e| e.starts_with("dir ")
                    || e.starts_with(&format!("file {}", hex::encode(sha2::Sha256::digest(b""))))),
                "{stub} in buildah's image is not an empty stub: {removed:?}"
            );
        }
    }
    let differences: Vec<String> = ours
        .keys()
        .chain(theirs.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| ours.get(*p) != theirs.get(*p))
        .map(|p| {
            format!(
                "{p}\n  slipway: {}\n  buildah: {}",
                ours.get(p).map_or("-", String::as_str),
                theirs.get(p).map_or("-", String::as_str)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    assert!(ours.contains_key("/out/artifact"), "{ours:?}");
}

/// Acceptance 5: bad input gets an error that says what and where.
#[test]
fn bad_input_is_refused_with_line_and_reason() {
    let env = Env::new("build-bad-");
    let ctx = env.path().join("ctx");
    write(&ctx, &[("ok.txt", "ok\n")]);
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("escape")).unwrap();
    std::fs::write(env.path().join("outside.txt"), "outside\n").unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "unknown-instruction",
            "FROM busybox\nCOPPY ok.txt /ok.txt\n",
        ),
        ("stage-without-name", "FROM busybox AS\nRUN true\n"),
        ("bad-variable", "FROM busybox\nENV A=${B\n"),
        ("copy-parent", "FROM busybox\nCOPY ../outside.txt /x\n"),
        ("symlink-escape", "FROM busybox\nCOPY escape /x\n"),
        (
            "missing-stage",
            "FROM busybox AS one\nRUN true\nFROM busybox\nCOPY --from=nothere /x /x\n",
        ),
        ("missing-base", "FROM nosuch/image:1.0\nRUN true\n"),
        (
            "failing-run",
            "FROM busybox\nRUN echo about to fail; exit 3\n",
        ),
        (
            "other-platform",
            "FROM --platform=linux/arm64 busybox\nRUN true\n",
        ),
        (
            "add-url",
            "FROM busybox\nADD https://example.com/x.tar.gz /x\n",
        ),
        (
            "many-sources-one-file",
            "FROM busybox\nCOPY ok.txt ok.txt /one\n",
        ),
    ];
    let port = env.server.host_port().to_owned();
    for (name, containerfile) in cases {
        let file = ctx.join(format!("{name}.Containerfile"));
        std::fs::write(&file, containerfile).unwrap();
        let stderr = env.build_fails(&[
            "-f",
            file.to_str().unwrap(),
            "-t",
            "bad/image:v1",
            ctx.to_str().unwrap(),
        ]);
        // Progress lines and RUN output vary; the error is the last line.
        let error = stderr
            .lines()
            .filter(|l| !l.starts_with('['))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(&port, "[registry]");
        insta::assert_snapshot!(format!("build_{name}"), error);
    }
}

/// A build secret reaches RUN and is recorded nowhere: not in any layer, the
/// config, the history or the provenance; changing it does not rebuild.
#[test]
fn build_secrets_reach_run_and_are_recorded_nowhere() {
    let env = Env::new("build-secret-");
    let ctx = env.path().join("ctx");
    let secret = format!("tok-{}", random_hex(12));
    // RUN checks the value against its hash, so the value itself is in no
    // instruction.
    let expected = hex::encode(sha2::Sha256::digest(format!("{secret}\n")));
    write(
        &ctx,
        &[(
            "Containerfile",
            &format!("FROM busybox\nRUN echo \"$API_TOKEN\" | sha256sum | grep -q {expected} && echo checked > /checked\n"),
        )],
    );
    let build = |value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(["build", "--secret", "API_TOKEN"])
            .args(["-t", "demo/secret:v1", ctx.to_str().unwrap()])
            .env("SLIPWAY_SERVER", env.server.url())
            .env("SLIPWAY_USER", "admin")
            .env("SLIPWAY_PASSWORD", env.server.admin_password())
            .env("SLIPWAY_RUNNER_DIR", env.path().join("work"))
            .env("API_TOKEN", value)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    // A wrong value fails the RUN: the secret really is what RUN sees.
    let (ok, _, stderr) = build("wrong");
    assert!(!ok, "{stderr}");
    let (ok, stdout, stderr) = build(&secret);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains(&secret), "{stderr}");
    let digest = stdout.trim().lines().last().unwrap().to_owned();
    assert_eq!(env.exec("demo/secret:v1", "cat /checked"), "checked\n");

    // Every blob of the image and of its referrers, searched for the value.
    let admin = env.server.admin_auth();
    let manifest = env.manifest("demo/secret", &digest);
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    for l in manifest["layers"].as_array().unwrap() {
        blobs.push(l["digest"].as_str().unwrap().to_owned());
    }
    let referrers = env
        .server
        .get(&format!("/v2/demo/secret/referrers/{digest}"), &admin)
        .json();
    for r in referrers["manifests"].as_array().unwrap() {
        let m = env.manifest("demo/secret", r["digest"].as_str().unwrap());
        for l in m["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_owned());
        }
    }
    assert!(blobs.len() >= 4, "{blobs:?}");
    for blob in &blobs {
        let bytes = env.server.get_blob("demo/secret", blob, &admin);
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            gunzip(&bytes)
        } else {
            bytes
        };
        assert!(
            !plain.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in blob {blob}"
        );
    }
    // The cache keys on the secret's name only: a new value reuses the layer.
    let other = format!("tok-{}", random_hex(12));
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["build", "--secret", "API_TOKEN"])
        .args(["-t", "demo/secret:v2", ctx.to_str().unwrap()])
        .env("SLIPWAY_SERVER", env.server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", env.server.admin_password())
        .env("SLIPWAY_RUNNER_DIR", env.path().join("work"))
        .env("API_TOKEN", &other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("(0 run, 1 cached)"),
        "{}",
        text(&out.stderr)
    );
}

/// A cache exported to the registry lets a build on another machine (here:
/// another work dir) reuse every layer without running anything.
#[test]
fn the_cache_travels_through_the_registry() {
    let env = Env::new("build-remote-cache-");
    let ctx = env.path().join("ctx");
    write(
        &ctx,
        &[
            (
                "Containerfile",
                "FROM busybox\nRUN echo one > /one\nCOPY app/ /app/\nRUN cat /app/* > /all\n",
            ),
            ("app/a.txt", "a\n"),
        ],
    );
    let ctx_arg = ctx.to_str().unwrap();
    // Nothing exported yet: --cache-from finds an empty cache and builds.
    let (first, cold) = env.build(
        &[
            "-t",
            "demo/cached:v1",
            "--cache-from",
            "demo/cached:buildcache",
            "--cache-to",
            "demo/cached:buildcache",
            ctx_arg,
        ],
        Some(&env.path().join("runner-a")),
    );
    assert!(
        cold.contains("cache from demo/cached:buildcache: 0 instructions"),
        "{cold}"
    );
    assert!(
        cold.contains("cache to demo/cached:buildcache: 3 instructions"),
        "{cold}"
    );
    let manifest = env.manifest("demo/cached", "buildcache");
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.slipway.buildcache.v1+json"
    );

    let (second, warm) = env.build(
        &[
            "-t",
            "demo/cached:v2",
            "--cache-from",
            "demo/cached:buildcache",
            ctx_arg,
        ],
        Some(&env.path().join("runner-b")),
    );
    assert_eq!(second, first);
    assert!(warm.contains("(0 run, 3 cached)"), "{warm}");
    assert_eq!(env.exec("demo/cached:v2", "cat /one /all"), "one\na\n");
}

/// Stages that do not depend on each other build at the same time: each
/// RUN records when it started and ended, and the two intervals overlap.
#[test]
fn independent_stages_build_in_parallel() {
    let env = Env::new("build-parallel-");
    let ctx = env.path().join("ctx");
    let run =
        "RUN cut -d' ' -f1 /proc/uptime > /start && sleep 1 && cut -d' ' -f1 /proc/uptime > /end";
    write(
        &ctx,
        &[(
            "Containerfile",
            &format!(
                "FROM busybox AS a\n{run}\nFROM busybox AS b\n{run}\nFROM busybox\nCOPY --from=a /start /a.start\nCOPY --from=a /end /a.end\nCOPY --from=b /start /b.start\nCOPY --from=b /end /b.end\n"
            ),
        )],
    );
    env.build(&["-t", "demo/parallel:v1", ctx.to_str().unwrap()], None);
    let times = env.exec("demo/parallel:v1", "cat /a.start /a.end /b.start /b.end");
    let t: Vec<f64> = times.lines().map(|l| l.trim().parse().unwrap()).collect();
    let (a_start, a_end, b_start, b_end) = (t[0], t[1], t[2], t[3]);
    assert!(
        a_start < b_end && b_start < a_end,
        "the stages ran one after the other: a {a_start}-{a_end}, b {b_start}-{b_end}"
    );
}

/// zstd layers, on request: the image runs, and its layers say zstd.
#[test]
fn zstd_layers_build_and_run() {
    let env = Env::new("build-zstd-");
    let ctx = env.path().join("ctx");
    write(
        &ctx,
        &[
            (
                "Containerfile",
                "FROM busybox\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copy.txt\n",
            ),
            ("hello.txt", "hello zstd\n"),
        ],
    );
    env.build(
        &[
            "--compression",
            "zstd",
            "-t",
            "demo/zstd:v1",
            ctx.to_str().unwrap(),
        ],
        None,
    );
    let manifest = env.manifest("demo/zstd", "v1");
    let types: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        &types[1..],
        [
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar+zstd"
        ],
        "{types:?}"
    );
    assert_eq!(env.exec("demo/zstd:v1", "cat /copy.txt"), "hello zstd\n");
    let out = env.slipway(
        &[
            "build",
            "--compression",
            "lz4",
            "-t",
            "demo/zstd:v2",
            ctx.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("compression must be gzip or zstd"),
        "{}",
        text(&out.stderr)
    );
}

/// Beside the server, layers are hard-linked into the registry's store (the
/// registry checks their digest) instead of being sent over HTTP; a file
/// whose digest is not the one named is refused and removed.
#[test]
fn beside_the_server_layers_are_linked_into_the_store() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new("build-local-");
    let ctx = env.path().join("ctx");
    write(
        &ctx,
        &[
            ("Containerfile", "FROM busybox\nCOPY big.txt /big.txt\n"),
            ("big.txt", &"local upload\n".repeat(100_000)),
        ],
    );
    let work = env.path().join("work");
    let (digest, progress) =
        env.build(&["-t", "demo/local:v1", ctx.to_str().unwrap()], Some(&work));
    assert!(
        progress.contains(
            "(layers: 0 uploaded, 1 linked into the local registry, 1 mounted, 0 already there)"
        ),
        "{progress}"
    );
    let manifest = env.manifest("demo/local", &digest);
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let hex = &layer[7..];
    let in_store = env
        .server
        .data_dir()
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(hex);
    let in_cache = work.join("build/blobs").join(hex);
    assert_eq!(
        std::fs::metadata(&in_store).unwrap().ino(),
        std::fs::metadata(&in_cache).unwrap().ino(),
        "the store's blob is the builder's file"
    );
    assert_eq!(
        env.exec("demo/local:v1", "wc -l < /big.txt").trim(),
        "100000"
    );

    // The registry adopts only what matches the digest it is told.
    let incoming = env.server.data_dir().join("registry/incoming");
    let name = "not-what-it-says-0001";
    std::fs::write(incoming.join(name), b"some other bytes").unwrap();
    let url = format!(
        "{}/v2/demo/local/blobs/uploads/?digest={layer}&local={name}",
        env.server.url()
    );
    let admin = env.server.admin_auth();
    let r = HttpResponse::send("POST", &url, admin.apply(http_client().post(&url)));
    assert_eq!(r.status, 400, "{}", r.body_text());
    assert!(
        r.body_text().contains("DIGEST_INVALID"),
        "{}",
        r.body_text()
    );
    assert!(!incoming.join(name).exists(), "a refused file is removed");
    // A symlink there is not followed.
    std::os::unix::fs::symlink(&in_cache, incoming.join("a-symlink-to-a-blob")).unwrap();
    let url = format!(
        "{}/v2/demo/local/blobs/uploads/?digest={layer}&local=a-symlink-to-a-blob",
        env.server.url()
    );
    let r = HttpResponse::send("POST", &url, admin.apply(http_client().post(&url)));
    assert_eq!(r.status, 400, "{}", r.body_text());
    // Names are plain file names.
    let url = format!(
        "{}/v2/demo/local/blobs/uploads/?digest={layer}&local=..%2F..%2Fetc%2Fpasswd",
        env.server.url()
    );
    let r = HttpResponse::send("POST", &url, admin.apply(http_client().post(&url)));
    assert_eq!(r.status, 400, "{}", r.body_text());
    // Without push rights nothing is adopted.
    let url = format!(
        "{}/v2/demo/local/blobs/uploads/?digest={layer}&local=whatever-name-0001",
        env.server.url()
    );
    let r = HttpResponse::send("POST", &url, http_client().post(&url));
    assert_eq!(r.status, 401);
}

/// A tar with a symlink `d` to `target` and then entries below `d`: a file
/// `d/x`, and a hard link `shadow` to `d/secret`.
fn tar_through_a_symlink(target: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    b.append_link(&mut link, "d", target).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(6);
    file.set_mode(0o644);
    b.append_data(&mut file, "d/x", &b"pwned\n"[..]).unwrap();
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    hard.set_mode(0o644);
    b.append_link(&mut hard, "shadow", "d/secret").unwrap();
    b.into_inner().unwrap()
}

/// The reviewed attack on unpacking a COPY/ADD layer (it is unpacked as root
/// on the runner when a RUN follows): an archive whose symlink points at a
/// host directory, then a file and a hard link through it. Neither writes
/// to the host directory nor links its file into the image; and a context
/// that replaces a directory by a symlink does not write below the link.
#[test]
fn copied_layers_never_reach_the_host_through_their_symlinks() {
    let env = Env::new("build-unpack-");
    let host = env.path().join("host-dir");
    std::fs::create_dir(&host).unwrap();
    let canary = format!("CANARY-{}", random_hex(8));
    std::fs::write(host.join("secret"), &canary).unwrap();

    let ctx = env.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("evil.tar"), tar_through_a_symlink(&host)).unwrap();
    // Two sources to one destination: a directory holding s/x, then one
    // whose `s` is a symlink (its target lexically inside the context).
    write(&ctx, &[("one/s/x", "through the link\n")]);
    std::fs::create_dir_all(ctx.join("two")).unwrap();
    let up = "../".repeat(host.components().count() + 2);
    std::os::unix::fs::symlink(
        format!("{up}{}", host.to_str().unwrap().trim_start_matches('/')),
        ctx.join("two/s"),
    )
    .unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM busybox\nADD evil.tar /dst/\nCOPY one/ two/ /both/\nRUN cat /dst/shadow /dst/d/x /both/s/x 2>&1; true\n",
    )
    .unwrap();
    let out = env.slipway(
        &["build", "-t", "evil/unpack:v1", ctx.to_str().unwrap()],
        None,
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));

    let mut left: Vec<String> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["secret"],
        "the build wrote into the host directory\n{all}"
    );
    assert_eq!(
        std::fs::read_to_string(host.join("secret")).unwrap(),
        canary
    );
    assert_eq!(
        std::fs::metadata(host.join("secret"))
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m))
            .unwrap(),
        1,
        "the host file was hard-linked somewhere"
    );
    assert!(
        !all.contains(&canary),
        "the host file reached the build: {all}"
    );
    if out.status.success() {
        // Whatever the image holds, it is not the host's file.
        let listing = env.exec(
            "evil/unpack:v1",
            "cat /dst/shadow /dst/d/x /both/s/x 2>&1; true",
        );
        assert!(!listing.contains(&canary), "{listing}");
    }
}
