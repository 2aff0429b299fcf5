//! Garbage collection under load: pushes, deletes and GC passes run at the same
//! time. No blob a surviving manifest references is ever lost; blobs nothing
//! references are collected once the grace period has passed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

/// Upload a blob unless the repository already has it (as real clients do).
fn ensure_blob(url: &str, auth: &Auth, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    if request_as(
        url,
        auth,
        Method::HEAD,
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        None,
    )
    .status
        == 200
    {
        return digest;
    }
    let r = request_as(
        url,
        auth,
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[],
        Some(data.to_vec()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    digest
}

struct Pushed {
    repo: String,
    digest: String,
    blobs: Vec<String>,
}

fn push_image(url: &str, auth: &Auth, repo: &str, tag: &str, shared: &[u8]) -> Pushed {
    let config = format!("{{\"tag\":\"{tag}\"}}").into_bytes();
    let unique = random_bytes(20_000);
    let c = ensure_blob(url, auth, repo, &config);
    let s = ensure_blob(url, auth, repo, shared);
    let u = ensure_blob(url, auth, repo, &unique);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": c, "size": config.len()},
        "layers": [
            {"mediaType": OCI_LAYER_TAR, "digest": s, "size": shared.len()},
            {"mediaType": OCI_LAYER_TAR, "digest": u, "size": unique.len()},
        ]
    }))
    .unwrap();
    let r = request_as(
        url,
        auth,
        Method::PUT,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", OCI_MANIFEST)],
        Some(manifest.clone()),
    );
    assert_eq!(r.status, 201, "push {repo}:{tag}: {}", r.describe());
    Pushed {
        repo: repo.into(),
        digest: sha256_digest(&manifest),
        blobs: vec![c, s, u],
    }
}

fn blob_files(server: &TestServer) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let root = server.data_dir().join("registry/blobs/sha256");
    for shard in std::fs::read_dir(root).unwrap().flatten() {
        for f in std::fs::read_dir(shard.path()).unwrap().flatten() {
            out.insert(format!("sha256:{}", f.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn concurrent_push_delete_and_gc_lose_nothing_referenced() {
    let server = TestServer::start_with_env(&[
        ("SLIPWAY_REGISTRY__GC__GRACE_PERIOD", "2s"),
        ("SLIPWAY_REGISTRY__GC__INTERVAL", "100ms"),
        ("SLIPWAY_LOG", "warn"),
    ]);
    let url = server.url().to_owned();
    let auth = server.admin_auth();
    let shared = Arc::new(random_bytes(50_000));
    let kept = Arc::new(Mutex::new(Vec::<Pushed>::new()));
    let deleted = Arc::new(Mutex::new(Vec::<Pushed>::new()));
    let abandoned = Arc::new(Mutex::new(Vec::<String>::new()));
    let pushing = Arc::new(AtomicBool::new(true));
    let gc_passes = Arc::new(AtomicU64::new(0));

    // Explicit GC passes as fast as they go, beside the 100 ms background loop.
    let gc = {
        let (url, auth, pushing, passes) = (
            url.clone(),
            auth.clone(),
            pushing.clone(),
            gc_passes.clone(),
        );
        std::thread::spawn(move || {
            while pushing.load(Ordering::SeqCst) {
                let r = request_as(&url, &auth, Method::POST, "/api/v1/registry/gc", &[], None);
                assert_eq!(r.status, 200, "{}", r.describe());
                passes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let pushers: Vec<_> = (0..2)
        .map(|p| {
            let (url, auth, shared, kept, deleted, abandoned) = (
                url.clone(),
                auth.clone(),
                shared.clone(),
                kept.clone(),
                deleted.clone(),
                abandoned.clone(),
            );
            std::thread::spawn(move || {
                let repo = format!("gc/repo{p}");
                for i in 0..20 {
                    let image = push_image(&url, &auth, &repo, &format!("t{i}"), &shared);
                    // A blob uploaded and never referenced.
                    abandoned.lock().unwrap().push(ensure_blob(
                        &url,
                        &auth,
                        &repo,
                        &random_bytes(3000),
                    ));
                    if i % 2 == 1 {
                        let r = request_as(
                            &url,
                            &auth,
                            Method::DELETE,
                            &format!("/v2/{repo}/manifests/{}", image.digest),
                            &[],
                            None,
                        );
                        assert_eq!(r.status, 202, "{}", r.describe());
                        deleted.lock().unwrap().push(image);
                    } else {
                        kept.lock().unwrap().push(image);
                    }
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    pushing.store(false, Ordering::SeqCst);
    gc.join().unwrap();
    assert!(
        gc_passes.load(Ordering::SeqCst) > 5,
        "GC ran during the pushes"
    );

    // Wait out the grace period (2 s from the last touch), then collect.
    let kept = kept.lock().unwrap();
    let referenced: BTreeSet<String> = kept.iter().flat_map(|p| p.blobs.iter().cloned()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = request_as(&url, &auth, Method::POST, "/api/v1/registry/gc", &[], None);
        assert_eq!(r.status, 200);
        if blob_files(&server) == referenced || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Nothing referenced was lost: every kept image pulls with verified digests.
    for image in kept.iter() {
        server.assert_manifest_served(&image.repo, &image.digest, &image.digest, &auth);
        for blob in &image.blobs {
            server.get_blob(&image.repo, blob, &auth);
        }
    }
    // Everything unreferenced is gone: abandoned blobs and deleted images' own layers.
    assert_eq!(
        blob_files(&server),
        referenced,
        "blob files on disk are exactly the referenced ones"
    );
    for digest in abandoned
        .lock()
        .unwrap()
        .iter()
        .chain(deleted.lock().unwrap().iter().map(|p| &p.blobs[2]))
    {
        assert!(!referenced.contains(digest));
    }
    let r = request_as(&url, &auth, Method::GET, "/metrics", &[], None);
    let text = String::from_utf8_lossy(&r.body).into_owned();
    let rows = text
        .lines()
        .find_map(|l| l.strip_prefix("slipway_registry_blobs "))
        .unwrap_or("missing")
        .to_owned();
    assert_eq!(
        rows,
        referenced.len().to_string(),
        "database blob rows vs referenced blobs"
    );
}

#[test]
fn gc_cli_dry_run_then_collect() {
    let server = TestServer::start_with_env(&[
        ("SLIPWAY_REGISTRY__GC__GRACE_PERIOD", "0s"),
        ("SLIPWAY_REGISTRY__GC__ENABLED", "false"),
    ]);
    let auth = server.admin_auth();
    let blob = random_bytes(1234);
    ensure_blob(server.url(), &auth, "cli/app", &blob);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(args)
            .args(["--server", server.url()])
            .env("SLIPWAY_USER", "admin")
            .env("SLIPWAY_PASSWORD", server.admin_password())
            .env_remove("SLIPWAY_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slipway {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["registry", "gc", "--dry-run"]).trim(), "would remove 1 blobs (1234 bytes), 0 untagged manifests, 0 expired uploads, 0 orphan files");
    assert_eq!(blob_files(&server).len(), 1, "a dry run removes nothing");
    assert_eq!(
        cli(&["registry", "gc"]).trim(),
        "removed 1 blobs (1234 bytes), 0 untagged manifests, 0 expired uploads, 0 orphan files"
    );
    assert!(blob_files(&server).is_empty());
    // A pull-only token may not run GC, and the CLI says so.
    let token = server.create_token(&["pull"], "*");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args([
            "registry",
            "gc",
            "--server",
            server.url(),
            "--token",
            &token,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
