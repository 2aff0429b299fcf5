//! buildah and podman <-> slipway registry (pull/push only, no containers
//! are run). Each test uses private container storage (`--root/--runroot`
//! in a temp dir, vfs driver) so tests share no state.
//!
//! Needs `buildah`, `podman` and `skopeo` on PATH
//! (`apt-get install -y skopeo buildah podman`).

mod common;

use common::*;
use serde_json::Value;

/// `buildah from scratch` + `buildah copy` + `buildah commit`, then
/// `buildah push --digestfile` in OCI format (admin password) and in Docker
/// format (API token). The digest buildah reports must be the one the
/// registry serves, and the layer must contain the copied file.
#[test]
fn buildah_push_digest_matches_registry() {
    let server = TestServer::start();
    let token = server.create_token(&["pull", "push"], "interop/*");
    let work = scratch_dir("buildah-");
    let storage = work.path().join("storage");
    std::fs::create_dir_all(&storage).unwrap();

    let content = format!("hello from buildah {}\n", random_hex(16));
    let blob = random_bytes(200 * 1024);
    std::fs::write(work.path().join("hello.txt"), &content).unwrap();
    std::fs::write(work.path().join("blob.bin"), &blob).unwrap();

    let cid = timed("buildah from scratch", || {
        buildah(&storage)
            .args(["from", "scratch"])
            .run()
            .trim()
            .to_string()
    });
    assert!(
        !cid.is_empty(),
        "buildah from scratch printed no container name"
    );
    buildah(&storage)
        .args(["copy", &cid])
        .arg(work.path().join("hello.txt"))
        .arg("/hello.txt")
        .run();
    buildah(&storage)
        .args(["copy", &cid])
        .arg(work.path().join("blob.bin"))
        .arg("/data/blob.bin")
        .run();
    buildah(&storage)
        .args([
            "config",
            "--cmd",
            "/hello.txt",
            "--label",
            "org.example.test=slipway",
            &cid,
        ])
        .run();
    let local = "localhost/interop-buildah:latest";
    timed("buildah commit", || {
        buildah(&storage)
            .args(["commit", "--format", "oci", &cid, local])
            .run()
    });

    // OCI format, admin password.
    let repo = "interop/buildah";
    let digest_file = work.path().join("oci.digest");
    timed("buildah push (oci)", || {
        buildah(&storage)
            .args([
                "push",
                "--tls-verify=false",
                "--format",
                "oci",
                "--creds",
                &server.admin_creds(),
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(local)
            .arg(format!("docker://{}/{repo}:v1", server.host_port()))
            .run()
    });
    let pushed = read_digest_file(&digest_file);
    let auth = server.admin_auth();
    let served = server.assert_manifest_served(repo, "v1", &pushed, &auth);
    let manifest: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(manifest["mediaType"], OCI_MANIFEST, "{manifest}");
    let blobs = server.assert_manifest_blobs_served(repo, &served, &auth);
    assert_copied_files(&manifest, &blobs, &content, &blob);
    server.assert_manifest_served(repo, &pushed, &pushed, &auth);

    // Docker v2s2 format, API token.
    let digest_file = work.path().join("docker.digest");
    timed("buildah push (v2s2)", || {
        buildah(&storage)
            .args([
                "push",
                "--tls-verify=false",
                "--format",
                "v2s2",
                "--creds",
                &format!("ci:{token}"),
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(local)
            .arg(format!("docker://{}/{repo}:v1-docker", server.host_port()))
            .run()
    });
    let pushed_docker = read_digest_file(&digest_file);
    assert_ne!(
        pushed_docker, pushed,
        "a Docker manifest cannot have the OCI manifest's digest"
    );
    let token_auth = Auth::Basic("ci".into(), token.clone());
    let served = server.assert_manifest_served(repo, "v1-docker", &pushed_docker, &token_auth);
    let manifest: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST, "{manifest}");
    let blobs = server.assert_manifest_blobs_served(repo, &served, &token_auth);
    assert_copied_files(&manifest, &blobs, &content, &blob);

    let tags = server.get(&format!("/v2/{repo}/tags/list"), &token_auth);
    assert_eq!(tags.status, 200, "{}", tags.describe());
    let mut listed: Vec<String> = serde_json::from_value(tags.json()["tags"].clone()).unwrap();
    listed.sort();
    assert_eq!(listed, vec!["v1".to_string(), "v1-docker".to_string()]);
}

/// The files `buildah copy` put in the image are in its layers.
fn assert_copied_files(
    manifest: &Value,
    blobs: &std::collections::BTreeMap<String, Vec<u8>>,
    hello: &str,
    data: &[u8],
) {
    let mut files = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let layer_blob = &blobs[layer["digest"].as_str().unwrap()];
        files.extend(tar_files(&uncompressed_layer(
            layer["mediaType"].as_str().unwrap(),
            layer_blob,
        )));
    }
    assert_eq!(
        files.get("hello.txt").map(|v| v.as_slice()),
        Some(hello.as_bytes()),
        "hello.txt in layers (files: {:?})",
        files.keys().collect::<Vec<_>>()
    );
    assert_bytes_eq(
        blob(&files, "data/blob.bin", "image layers"),
        data,
        "data/blob.bin in layers",
    );
}

/// An image pushed with skopeo is pulled by podman (with a pull-only API
/// token), and `podman image inspect` reports the pushed digest; podman then
/// pushes it to another repository and its `--digestfile` matches the
/// registry.
#[test]
fn podman_pulls_image_pushed_by_skopeo() {
    let server = TestServer::start();
    let work = scratch_dir("podman-");
    let storage = work.path().join("storage");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    let layout = OciLayout::write(
        &work.path().join("src"),
        "v1",
        &[
            (Compression::Gzip, 100 * 1024),
            (Compression::Gzip, 500 * 1024),
            (Compression::Gzip, 10 * 1024),
        ],
    );
    let repo = "interop/podman";
    let reference = format!("{}/{repo}:v1", server.host_port());

    let digest_file = work.path().join("skopeo.digest");
    timed("skopeo copy oci: -> registry", || {
        skopeo(&scratch)
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                &server.admin_creds(),
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(layout.transport_ref())
            .arg(format!("docker://{reference}"))
            .run()
    });
    let pushed = read_digest_file(&digest_file);
    assert_eq!(pushed, layout.manifest_digest);
    server.assert_manifest_served(repo, "v1", &pushed, &server.admin_auth());

    let pull_token = server.create_token(&["pull"], "interop/podman");
    timed("podman pull", || {
        podman(&storage)
            .args([
                "pull",
                "--tls-verify=false",
                "--creds",
                &format!("ci:{pull_token}"),
                &reference,
            ])
            .run()
    });
    let digest = podman(&storage)
        .args(["image", "inspect", "--format", "{{.Digest}}", &reference])
        .run();
    assert_eq!(digest.trim(), pushed, "podman image inspect .Digest");
    let repo_digests: Vec<String> = serde_json::from_str(
        podman(&storage)
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                &reference,
            ])
            .run()
            .trim(),
    )
    .unwrap();
    let expected = format!("{}/{repo}@{pushed}", server.host_port());
    assert!(
        repo_digests.contains(&expected),
        "RepoDigests {repo_digests:?} lacks {expected}"
    );

    // Pull by digest too (already present locally, but the manifest is fetched).
    podman(&storage)
        .args([
            "pull",
            "--tls-verify=false",
            "--creds",
            &format!("ci:{pull_token}"),
            &expected,
        ])
        .run();

    // podman pushes it elsewhere; the layers are unchanged (gzip, OCI) so the
    // registry must serve exactly the digest podman reports.
    let push_token = server.create_token(&["pull", "push"], "interop/*");
    let copy_ref = format!("{}/interop/podman-copy:v2", server.host_port());
    let digest_file = work.path().join("podman.digest");
    timed("podman push", || {
        podman(&storage)
            .args([
                "push",
                "--tls-verify=false",
                "--creds",
                &format!("ci:{push_token}"),
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(&reference)
            .arg(format!("docker://{copy_ref}"))
            .run()
    });
    let podman_pushed = read_digest_file(&digest_file);
    let auth = Auth::Basic("ci".into(), push_token);
    let served = server.assert_manifest_served("interop/podman-copy", "v2", &podman_pushed, &auth);
    let blobs = server.assert_manifest_blobs_served("interop/podman-copy", &served, &auth);
    let manifest: Value = serde_json::from_slice(&served).unwrap();
    let served_layers = manifest["layers"].as_array().unwrap();
    assert_eq!(served_layers.len(), layout.layers.len());
    for (src, dst) in layout.layers.iter().zip(served_layers) {
        let digest = dst["digest"].as_str().unwrap();
        let tar = uncompressed_layer(dst["mediaType"].as_str().unwrap(), &blobs[digest]);
        assert_eq!(
            sha256_digest(&tar),
            src.diff_id,
            "layer content changed through podman"
        );
    }
}
