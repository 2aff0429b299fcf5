//! skopeo <-> slipway registry: push and pull multi-layer images in OCI and
//! Docker v2s2 format, with the admin password and with API tokens, and
//! check every digest round-trips bit-identical.
//!
//! Needs `skopeo` on PATH (`apt-get install -y skopeo`).

mod common;

use common::*;
use serde_json::Value;

/// OCI image with 4 gzip layers, pushed with `--format oci` and the admin
/// password. skopeo has nothing to convert, so the manifest bytes it pushes
/// are the layout's own: the registry must serve them unchanged, and pulling
/// back to `oci:` and `dir:` must give the same digest and blobs.
#[test]
fn skopeo_oci_format_round_trip_with_admin_password() {
    let server = TestServer::start();
    let work = scratch_dir("skopeo-oci-");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let layout = OciLayout::write(
        &work.path().join("src"),
        "v1",
        &[
            (Compression::Gzip, 300 * 1024),
            (Compression::Gzip, 64 * 1024),
            (Compression::Gzip, 2 * 1024 * 1024),
            (Compression::Gzip, 1024),
        ],
    );
    let repo = "interop/skopeo-oci";
    let image = format!("docker://{}/{repo}:v1", server.host_port());
    let creds = server.admin_creds();
    let auth = server.admin_auth();

    // Push.
    let digest_file = work.path().join("pushed.digest");
    timed("skopeo copy oci: -> registry (--format oci)", || {
        skopeo(&scratch)
            .args([
                "copy",
                "--format",
                "oci",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(layout.transport_ref())
            .arg(&image)
            .run()
    });
    let pushed = read_digest_file(&digest_file);
    assert_eq!(
        pushed, layout.manifest_digest,
        "skopeo should push the layout's manifest unchanged (no conversion needed)"
    );

    // What the registry serves, by tag and by digest.
    let served = server.assert_manifest_served(repo, "v1", &pushed, &auth);
    assert_eq!(
        served, layout.manifest_bytes,
        "served manifest bytes differ from the pushed ones"
    );
    server.assert_manifest_served(repo, &pushed, &pushed, &auth);
    let blobs = server.assert_manifest_blobs_served(repo, &served, &auth);
    assert_bytes_eq(
        blob(&blobs, &layout.config_digest, "registry"),
        &layout.config_bytes,
        "config",
    );
    for l in &layout.layers {
        assert_bytes_eq(
            blob(&blobs, &l.digest, "registry"),
            &l.data,
            &format!("layer {}", l.digest),
        );
    }

    // Pull back into an OCI layout.
    let pulled_oci = work.path().join("pulled-oci");
    timed("skopeo copy registry -> oci:", || {
        skopeo(&scratch)
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(&image)
            .arg(format!("oci:{}:v1", pulled_oci.display()))
            .run()
    });
    let (oci_digest, oci_manifest) = read_oci_layout(&pulled_oci, Some("v1"));
    assert_eq!(
        oci_digest, pushed,
        "oci: pull-back has another manifest digest"
    );
    assert_eq!(oci_manifest, layout.manifest_bytes);
    for l in &layout.layers {
        let data = std::fs::read(pulled_oci.join("blobs/sha256").join(digest_hex(&l.digest)))
            .unwrap_or_else(|e| panic!("layer {} missing from oci: pull-back: {e}", l.digest));
        assert_bytes_eq(
            &data,
            &l.data,
            &format!("layer {} in oci: pull-back", l.digest),
        );
    }

    // Pull back by digest into a `dir:`.
    let pulled_dir = work.path().join("pulled-dir");
    timed("skopeo copy registry@digest -> dir:", || {
        skopeo(&scratch)
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{}/{repo}@{pushed}", server.host_port()))
            .arg(format!("dir:{}", pulled_dir.display()))
            .run()
    });
    let (dir_manifest, dir_blobs) = read_dir_transport(&pulled_dir);
    assert_eq!(
        sha256_digest(&dir_manifest),
        pushed,
        "dir: pull-back has another manifest digest"
    );
    assert_bytes_eq(
        blob(&dir_blobs, &layout.config_digest, "dir: pull-back"),
        &layout.config_bytes,
        "config",
    );
    for l in &layout.layers {
        assert_bytes_eq(
            blob(&dir_blobs, &l.digest, "dir: pull-back"),
            &l.data,
            &format!("layer {} in dir: pull-back", l.digest),
        );
    }

    // inspect --raw and list-tags agree.
    let raw = skopeo(&scratch)
        .args(["inspect", "--raw", "--tls-verify=false", "--creds", &creds])
        .arg(&image)
        .run();
    assert_eq!(
        sha256_digest(raw.as_bytes()),
        pushed,
        "skopeo inspect --raw digest"
    );
    let tags: Value = serde_json::from_str(
        &skopeo(&scratch)
            .args(["list-tags", "--tls-verify=false", "--creds", &creds])
            .arg(format!("docker://{}/{repo}", server.host_port()))
            .run(),
    )
    .unwrap();
    assert_eq!(
        tags["Tags"],
        serde_json::json!(["v1"]),
        "skopeo list-tags: {tags}"
    );
}

/// The same kind of image converted to Docker v2s2 on push, authenticated
/// with an API token as the password. One layer is an uncompressed tar:
/// skopeo gzips it for the registry, so we check its diff_id instead.
#[test]
fn skopeo_docker_v2s2_round_trip_with_api_token() {
    let server = TestServer::start();
    let token = server.create_token(&["pull", "push"], "interop/*");
    let work = scratch_dir("skopeo-v2s2-");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let layout = OciLayout::write(
        &work.path().join("src"),
        "v1",
        &[
            (Compression::Gzip, 128 * 1024),
            (Compression::None, 256 * 1024),
            (Compression::Gzip, 1024 * 1024),
        ],
    );
    let repo = "interop/skopeo-docker";
    let image = format!("docker://{}/{repo}:v1", server.host_port());
    let creds = format!("ci:{token}");
    let auth = Auth::Basic("ci".into(), token.clone());

    let digest_file = work.path().join("pushed.digest");
    timed("skopeo copy oci: -> registry (--format v2s2)", || {
        skopeo(&scratch)
            .args([
                "copy",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
                "--dest-creds",
                &creds,
            ])
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(layout.transport_ref())
            .arg(&image)
            .run()
    });
    let pushed = read_digest_file(&digest_file);

    let served = server.assert_manifest_served(repo, "v1", &pushed, &auth);
    let manifest: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(
        manifest["mediaType"], DOCKER_MANIFEST,
        "served manifest: {manifest}"
    );
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    let blobs = server.assert_manifest_blobs_served(repo, &served, &auth);

    // Layers: same order; gzip ones unchanged, the tar one now compressed
    // but with the same uncompressed content.
    let served_layers = manifest["layers"].as_array().unwrap();
    assert_eq!(served_layers.len(), layout.layers.len());
    for (src, dst) in layout.layers.iter().zip(served_layers) {
        let digest = dst["digest"].as_str().unwrap();
        let media_type = dst["mediaType"].as_str().unwrap();
        if src.media_type == OCI_LAYER_GZIP {
            assert_eq!(digest, src.digest, "gzip layer was re-encoded");
            assert_eq!(media_type, DOCKER_LAYER_GZIP);
        }
        let tar = uncompressed_layer(media_type, &blobs[digest]);
        assert_eq!(
            sha256_digest(&tar),
            src.diff_id,
            "layer {digest}: uncompressed content differs"
        );
    }
    let config: Value =
        serde_json::from_slice(&blobs[manifest["config"]["digest"].as_str().unwrap()]).unwrap();
    let diff_ids: Vec<String> = layout.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));

    // Pull back with the token: `dir:` keeps the manifest bytes as served.
    let pulled_dir = work.path().join("pulled-dir");
    timed("skopeo copy registry -> dir:", || {
        skopeo(&scratch)
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(&image)
            .arg(format!("dir:{}", pulled_dir.display()))
            .run()
    });
    let (dir_manifest, dir_blobs) = read_dir_transport(&pulled_dir);
    assert_eq!(
        dir_manifest, served,
        "dir: pull-back manifest differs from the served one"
    );
    assert_eq!(sha256_digest(&dir_manifest), pushed);
    for (digest, data) in &blobs {
        assert_bytes_eq(
            blob(&dir_blobs, digest, "dir: pull-back"),
            data,
            &format!("blob {digest} in dir: pull-back"),
        );
    }

    // `oci:` cannot hold a Docker manifest, so skopeo converts; the layer
    // blobs must still be the registry's.
    let pulled_oci = work.path().join("pulled-oci");
    timed("skopeo copy registry@digest -> oci:", || {
        skopeo(&scratch)
            .args(["copy", "--src-tls-verify=false", "--src-creds", &creds])
            .arg(format!("docker://{}/{repo}@{pushed}", server.host_port()))
            .arg(format!("oci:{}:v1", pulled_oci.display()))
            .run()
    });
    let (_, oci_manifest) = read_oci_layout(&pulled_oci, Some("v1"));
    let oci_manifest: Value = serde_json::from_slice(&oci_manifest).unwrap();
    assert_eq!(layer_digests(&oci_manifest), layer_digests(&manifest));
    for digest in layer_digests(&manifest) {
        let data =
            std::fs::read(pulled_oci.join("blobs/sha256").join(digest_hex(&digest))).unwrap();
        assert_bytes_eq(
            &data,
            blob(&blobs, &digest, "registry"),
            &format!("layer {digest} in oci: pull-back"),
        );
    }
}

/// Credentials are enforced: a wrong password, a pull-only token pushing,
/// and a token for another repository pattern are all refused, while the
/// pull-only token can pull.
#[test]
fn skopeo_credentials_and_token_scopes_are_enforced() {
    let server = TestServer::start();
    let work = scratch_dir("skopeo-auth-");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let layout = OciLayout::write(&work.path().join("src"), "v1", &[(Compression::Gzip, 4096)]);
    let repo = "interop/skopeo-auth";
    let image = format!("docker://{}/{repo}:v1", server.host_port());

    skopeo(&scratch)
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "admin:not-the-password",
        ])
        .arg(layout.transport_ref())
        .arg(&image)
        .run_expect_failure();

    let pull_only = server.create_token(&["pull"], "interop/*");
    skopeo(&scratch)
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &format!("ci:{pull_only}"),
        ])
        .arg(layout.transport_ref())
        .arg(&image)
        .run_expect_failure();

    let digest_file = work.path().join("pushed.digest");
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
        .arg(&image)
        .run();
    let pushed = read_digest_file(&digest_file);

    // Anonymous pull is off by default.
    skopeo(&scratch)
        .args(["copy", "--src-tls-verify=false", "--src-no-creds"])
        .arg(&image)
        .arg(format!("dir:{}", work.path().join("anon").display()))
        .run_expect_failure();

    let other_repos = server.create_token(&["pull", "push"], "team/*");
    skopeo(&scratch)
        .args([
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("ci:{other_repos}"),
        ])
        .arg(&image)
        .arg(format!("dir:{}", work.path().join("other").display()))
        .run_expect_failure();

    let pulled = work.path().join("pulled");
    skopeo(&scratch)
        .args([
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("ci:{pull_only}"),
        ])
        .arg(&image)
        .arg(format!("dir:{}", pulled.display()))
        .run();
    let (manifest, _) = read_dir_transport(&pulled);
    assert_eq!(sha256_digest(&manifest), pushed);
}

/// With SLIPWAY_REGISTRY__ANONYMOUS_PULL=true an image can be pulled with
/// no credentials, pushing anonymously still fails, and pushing with
/// credentials still works.
#[test]
fn skopeo_anonymous_pull_when_enabled() {
    let server = TestServer::start_with_env(&[("SLIPWAY_REGISTRY__ANONYMOUS_PULL", "true")]);
    let work = scratch_dir("skopeo-anon-");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let layout = OciLayout::write(
        &work.path().join("src"),
        "v1",
        &[
            (Compression::Gzip, 8192),
            (Compression::Gzip, 8192),
            (Compression::Gzip, 8192),
        ],
    );
    let repo = "interop/public";
    let image = format!("docker://{}/{repo}:v1", server.host_port());

    // Seed the image with plain HTTP + basic auth, then pull it anonymously.
    server.push_layout_http(&layout, repo, "v1", &server.admin_auth());
    server.assert_manifest_served(repo, "v1", &layout.manifest_digest, &Auth::None);
    let pulled = work.path().join("pulled");
    skopeo(&scratch)
        .args(["copy", "--src-tls-verify=false", "--src-no-creds"])
        .arg(&image)
        .arg(format!("dir:{}", pulled.display()))
        .run();
    let (manifest, blobs) = read_dir_transport(&pulled);
    assert_eq!(sha256_digest(&manifest), layout.manifest_digest);
    for l in &layout.layers {
        assert_bytes_eq(
            blob(&blobs, &l.digest, "dir: pull-back"),
            &l.data,
            &format!("layer {}", l.digest),
        );
    }

    skopeo(&scratch)
        .args(["copy", "--dest-tls-verify=false", "--dest-no-creds"])
        .arg(layout.transport_ref())
        .arg(format!("docker://{}/{repo}:anon", server.host_port()))
        .run_expect_failure();

    // Credentials must still work for pushing. Clients discover whether to
    // authenticate from `GET /v2/`: it must keep answering 401 + challenge
    // to anonymous requests even though anonymous pulls are allowed.
    let ping = server.get("/v2/", &Auth::None);
    assert_eq!(
        ping.status,
        401,
        "anonymous GET /v2/ with anonymous pull enabled; clients take a 200 here \
         to mean no auth is needed and then cannot push: {}",
        ping.describe()
    );
    let digest_file = work.path().join("pushed.digest");
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
        .arg(format!("docker://{}/{repo}:v2", server.host_port()))
        .run();
    let pushed = read_digest_file(&digest_file);
    assert_eq!(pushed, layout.manifest_digest);
    server.assert_manifest_served(repo, "v2", &pushed, &Auth::None);
}
