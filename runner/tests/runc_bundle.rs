//! The generated runtime spec, run by real runc on a static-busybox rootfs: the
//! image's config merged with the caller's, an own hostname, PID 1, loopback-only
//! network, a read-only bind mount that refuses writes, a clamped `nofile`, and
//! the exit code.

use std::path::Path;
use std::process::Command;

use oci_spec::image::ImageConfiguration;
use slipway_runner::container::{
    host_nofile_hard, runtime_spec, BindMount, BundleError, Network, RunOptions,
};

fn image(json: &str) -> ImageConfiguration {
    ImageConfiguration::from_reader(json.as_bytes()).unwrap()
}

const IMAGE: &str = r#"{"architecture":"amd64","os":"linux",
  "config":{"Env":["PATH=/bin","FOO=image","KEEP=yes"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo from image"],"WorkingDir":"/tmp"},
  "rootfs":{"type":"layers","diff_ids":[]}}"#;

fn busybox_rootfs(dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is needed for this test (scripts/test.sh installs it)");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "hostname", "ls", "cat", "id"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "tmp", "etc", "data"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

#[test]
fn image_config_and_caller_settings_merge_like_docker() {
    let img = image(IMAGE);
    let spec = runtime_spec(&img, "rootfs", &RunOptions::default(), 20_000).unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(
        process.args().as_ref().unwrap(),
        &["/bin/sh", "-c", "echo from image"]
    );
    assert_eq!(process.cwd(), Path::new("/tmp"));
    // A command replaces Cmd; an entrypoint replaces Entrypoint and drops Cmd.
    let opts = RunOptions {
        command: Some(vec!["echo hi".into()]),
        ..Default::default()
    };
    let spec = runtime_spec(&img, "rootfs", &opts, 20_000).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/sh", "-c", "echo hi"]
    );
    let opts = RunOptions {
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let spec = runtime_spec(&img, "rootfs", &opts, 20_000).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/true"]
    );
    // Env: the caller's win, the image's others stay, PATH is always there.
    let opts = RunOptions {
        env: vec![("FOO".into(), "caller".into())],
        ..Default::default()
    };
    let spec = runtime_spec(&img, "rootfs", &opts, 20_000).unwrap();
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(
        env.contains(&"FOO=caller".into())
            && env.contains(&"KEEP=yes".into())
            && !env.contains(&"FOO=image".into())
    );
    let bare = image(
        r#"{"architecture":"amd64","os":"linux","config":{"Cmd":["x"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let env = runtime_spec(&bare, "rootfs", &RunOptions::default(), 20_000)
        .unwrap()
        .process()
        .clone()
        .unwrap()
        .env()
        .clone()
        .unwrap();
    assert!(env[0].starts_with("PATH="));
    // nofile never exceeds the host's hard limit.
    let rlimits = runtime_spec(&img, "rootfs", &RunOptions::default(), 20_000)
        .unwrap()
        .process()
        .clone()
        .unwrap()
        .rlimits()
        .clone()
        .unwrap();
    assert_eq!((rlimits[0].hard(), rlimits[0].soft()), (20_000, 20_000));
    // Clear errors for what cannot run.
    let empty = image(
        r#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    assert!(matches!(
        runtime_spec(&empty, "rootfs", &RunOptions::default(), 1),
        Err(BundleError::NoCommand)
    ));
    let opts = RunOptions {
        user: Some("nobody".into()),
        ..Default::default()
    };
    assert!(matches!(
        runtime_spec(&img, "rootfs", &opts, 1),
        Err(BundleError::User(_))
    ));
    let opts = RunOptions {
        mounts: vec![BindMount {
            source: "/tmp".into(),
            destination: "/a/../etc".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    assert!(matches!(
        runtime_spec(&img, "rootfs", &opts, 1),
        Err(BundleError::MountDestination(_))
    ));
    let opts = RunOptions {
        limits: slipway_runner::container::Limits {
            memory_bytes: Some(1024),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(matches!(
        runtime_spec(&img, "rootfs", &opts, 1),
        Err(BundleError::Limit(_))
    ));
}

#[test]
fn runc_runs_the_generated_bundle_isolated() {
    let runc = which_runc();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    busybox_rootfs(&bundle.join("rootfs"));
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("canary"), "host canary").unwrap();

    let script = "echo $FOO; hostname; ls /sys/class/net; echo pid=$$; cat /data/canary; echo; \
                  (echo x > /data/new) 2>/dev/null || echo ro-refused; ulimit -n; id -u; exit 7";
    let opts = RunOptions {
        command: Some(vec![script.into()]),
        env: vec![("FOO".into(), "caller".into())],
        hostname: "box-under-test".into(),
        network: Network::None,
        mounts: vec![BindMount {
            source: shared.clone(),
            destination: "/data".into(),
            read_only: true,
        }],
        ..Default::default()
    };
    let spec = runtime_spec(&image(IMAGE), "rootfs", &opts, host_nofile_hard()).unwrap();
    spec.save(bundle.join("config.json")).unwrap();
    let id = format!("slipway-test-{}", std::process::id());
    let out = Command::new(&runc)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected_nofile = host_nofile_hard().min(1 << 20).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "caller",
            "box-under-test",
            "lo",
            "pid=1",
            "host canary",
            "ro-refused",
            expected_nofile.as_str(),
            "0"
        ]
    );
    assert!(
        !shared.join("new").exists(),
        "the read-only mount was not written"
    );
    // runc removed the container on exit.
    let list = Command::new(&runc).arg("list").output().unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&id));
}

fn which_runc() -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v runc"])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "runc is needed for this test (scripts/test.sh installs it)"
    );
    path
}
