//! Distribution-spec behaviour over plain HTTP: chunked and streamed uploads,
//! mounts, ranges, pagination, referrers, deletes and immutable tags.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn push_blob(server: &TestServer, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let r = server.request(
        Method::POST,
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[],
        Some(data.to_vec()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    digest
}

fn image_manifest(
    config: &str,
    config_len: usize,
    layers: &[(&str, usize)],
    extra: Value,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config, "size": config_len},
        "layers": layers.iter().map(|(d, n)| json!({"mediaType": OCI_LAYER_TAR, "digest": d, "size": n})).collect::<Vec<_>>(),
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(extra.clone());
    }
    serde_json::to_vec(&m).unwrap()
}

fn push_manifest(
    server: &TestServer,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> HttpResponse {
    server.request(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        Some(body.to_vec()),
    )
}

/// A tiny image in `repo`; returns (manifest digest, manifest bytes).
fn small_image(server: &TestServer, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let config = format!("{{\"n\":\"{}\"}}", rand_suffix()).into_bytes();
    let layer = random_bytes(100);
    let c = push_blob(server, repo, &config);
    let l = push_blob(server, repo, &layer);
    let body = image_manifest(&c, config.len(), &[(&l, layer.len())], json!({}));
    let r = push_manifest(server, repo, tag, OCI_MANIFEST, &body);
    assert_eq!(r.status, 201, "{}", r.describe());
    (sha256_digest(&body), body)
}

#[test]
fn chunked_streamed_and_ranged() {
    let server = TestServer::start();
    let data = random_bytes(5 * 1024 * 1024 + 17);
    let digest = sha256_digest(&data);
    let r = server.request(Method::POST, "/v2/app/blobs/uploads/", &[], None);
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), Some("0-0"));
    assert!(r.header("docker-upload-uuid").is_some());
    let location = r.header("location").unwrap().to_owned();
    let mut offset = 0;
    for chunk in data.chunks(2 * 1024 * 1024) {
        let range = format!("{}-{}", offset, offset + chunk.len() - 1);
        let r = server.request(
            Method::PATCH,
            &location,
            &[("Content-Range", &range)],
            Some(chunk.to_vec()),
        );
        assert_eq!(r.status, 202, "{}", r.describe());
        offset += chunk.len();
        assert_eq!(r.header("range").unwrap(), format!("0-{}", offset - 1));
        let s = server.request(Method::GET, &location, &[], None);
        assert_eq!(s.status, 204);
        assert_eq!(s.header("range").unwrap(), format!("0-{}", offset - 1));
    }
    let r = server.request(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(
        r.header("location").unwrap(),
        format!("/v2/app/blobs/{digest}")
    );
    assert_eq!(server.get_blob("app", &digest, &server.admin_auth()), data);

    // Streamed: one PATCH without Content-Range, the last bytes in the PUT.
    let r = server.request(Method::POST, "/v2/streamed/blobs/uploads/", &[], None);
    let location = r.header("location").unwrap().to_owned();
    let r = server.request(
        Method::PATCH,
        &location,
        &[],
        Some(data[..4_000_000].to_vec()),
    );
    assert_eq!(r.status, 202);
    let r = server.request(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        Some(data[4_000_000..].to_vec()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());

    // Ranges.
    let r = server.request(
        Method::GET,
        &format!("/v2/app/blobs/{digest}"),
        &[("Range", "bytes=100-199")],
        None,
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[100..200]);
    assert_eq!(
        r.header("content-range").unwrap(),
        format!("bytes 100-199/{}", data.len())
    );
    let r = server.request(
        Method::GET,
        &format!("/v2/app/blobs/{digest}"),
        &[("Range", "bytes=-10")],
        None,
    );
    assert_eq!(r.body, &data[data.len() - 10..]);
    let r = server.request(Method::HEAD, &format!("/v2/app/blobs/{digest}"), &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").unwrap(), data.len().to_string());

    // Deduplicated: both repositories share one file.
    let files = std::fs::read_dir(
        server
            .data_dir()
            .join("registry/blobs/sha256")
            .join(&digest_hex(&digest)[..2]),
    )
    .unwrap()
    .count();
    assert_eq!(files, 1);
}

#[test]
fn mounts_with_and_without_from() {
    let server = TestServer::start();
    let data = random_bytes(1000);
    let digest = push_blob(&server, "source/app", &data);
    let r = server.request(
        Method::POST,
        &format!("/v2/target/app/blobs/uploads/?mount={digest}&from=source/app"),
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(
        server.get_blob("target/app", &digest, &server.admin_auth()),
        data
    );
    // Automatic mount: no `from`, found in a repository the caller can pull.
    let r = server.request(
        Method::POST,
        &format!("/v2/third/blobs/uploads/?mount={digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    // Unknown blob: an ordinary upload session instead.
    let r = server.request(
        Method::POST,
        &format!(
            "/v2/third/blobs/uploads/?mount={}&from=source/app",
            sha256_digest(b"none")
        ),
        &[],
        None,
    );
    assert_eq!(r.status, 202);
    // Blobs are per repository: a repository that never had it cannot serve it.
    let r = server.request(
        Method::HEAD,
        &format!("/v2/fourth/blobs/{digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn tag_and_catalog_pagination() {
    let server = TestServer::start();
    let (_, body) = small_image(&server, "pages", "t00");
    for i in 1..7 {
        assert_eq!(
            push_manifest(&server, "pages", &format!("t{i:02}"), OCI_MANIFEST, &body).status,
            201
        );
    }
    let r = server.request(Method::GET, "/v2/pages/tags/list?n=3", &[], None);
    assert_eq!(
        r.json(),
        json!({"name": "pages", "tags": ["t00", "t01", "t02"]})
    );
    assert_eq!(
        r.header("link").unwrap(),
        "</v2/pages/tags/list?n=3&last=t02>; rel=\"next\""
    );
    let r = server.request(Method::GET, "/v2/pages/tags/list?n=3&last=t05", &[], None);
    assert_eq!(r.json()["tags"], json!(["t06"]));
    assert!(r.header("link").is_none());
    let r = server.request(Method::GET, "/v2/pages/tags/list?n=0", &[], None);
    assert_eq!(r.json()["tags"], json!([]));
    let r = server.request(Method::GET, "/v2/pages/tags/list?n=-1", &[], None);
    assert_eq!(r.status, 400);

    for name in ["a", "b/c", "d"] {
        small_image(&server, name, "x");
    }
    let r = server.request(Method::GET, "/v2/_catalog?n=2", &[], None);
    assert_eq!(r.json()["repositories"], json!(["a", "b/c"]));
    assert!(r.header("link").unwrap().contains("last=b/c"));
    let r = server.request(Method::GET, "/v2/_catalog?n=10&last=b/c", &[], None);
    assert_eq!(r.json()["repositories"], json!(["d", "pages"]));
}

#[test]
fn index_docker_list_and_referrers() {
    let server = TestServer::start();
    let (child, child_body) = small_image(&server, "multi", "amd64");
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_body.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    let r = push_manifest(&server, "multi", "latest", OCI_INDEX, &index);
    assert_eq!(r.status, 201, "{}", r.describe());
    server.assert_manifest_served(
        "multi",
        "latest",
        &sha256_digest(&index),
        &server.admin_auth(),
    );
    // A Docker manifest list naming a child the repository does not have.
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256_digest(b"absent"), "size": 10}]
    }))
    .unwrap();
    let r = push_manifest(&server, "multi", "list", DOCKER_MANIFEST_LIST, &list);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
    // The child cannot be deleted while the index lists it.
    let r = server.request(
        Method::DELETE,
        &format!("/v2/multi/manifests/{child}"),
        &[],
        None,
    );
    assert_eq!(r.status, 409, "{}", r.describe());

    // Two referrers of the child with different artifact types.
    let empty = push_blob(&server, "multi", b"{}");
    let sig = random_bytes(64);
    let sig_digest = push_blob(&server, "multi", &sig);
    let subject =
        json!({"subject": {"mediaType": OCI_MANIFEST, "digest": child, "size": child_body.len()}});
    let mut referrer_digests = Vec::new();
    for artifact_type in [
        "application/vnd.example.signature",
        "application/vnd.example.sbom",
    ] {
        let mut extra = subject.clone();
        extra["artifactType"] = json!(artifact_type);
        extra["annotations"] = json!({"kind": artifact_type});
        let body = image_manifest(&empty, 2, &[(&sig_digest, sig.len())], extra);
        let r = push_manifest(&server, "multi", &sha256_digest(&body), OCI_MANIFEST, &body);
        assert_eq!(r.status, 201, "{}", r.describe());
        assert_eq!(r.header("oci-subject"), Some(child.as_str()));
        referrer_digests.push(sha256_digest(&body));
    }
    let r = server.request(
        Method::GET,
        &format!("/v2/multi/referrers/{child}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let listed = r.json();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 2);
    assert!(r.header("oci-filters-applied").is_none());
    let r = server.request(
        Method::GET,
        &format!("/v2/multi/referrers/{child}?artifactType=application/vnd.example.sbom"),
        &[],
        None,
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let only = &r.json()["manifests"];
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["digest"], json!(referrer_digests[1]));
    assert_eq!(
        only[0]["artifactType"],
        json!("application/vnd.example.sbom")
    );
    assert_eq!(
        only[0]["annotations"]["kind"],
        json!("application/vnd.example.sbom")
    );
    // Unknown subject: an empty index, not an error.
    let r = server.request(
        Method::GET,
        &format!("/v2/multi/referrers/{}", sha256_digest(b"nothing")),
        &[],
        None,
    );
    assert_eq!(r.json()["manifests"], json!([]));
}

#[test]
fn deletes_and_immutable_commit_tags() {
    let server = TestServer::start();
    let sha_tag = "0123456789abcdef0123456789abcdef01234567";
    let (first, first_body) = small_image(&server, "app", sha_tag);
    // Re-pushing the identical manifest is fine.
    assert_eq!(
        push_manifest(&server, "app", sha_tag, OCI_MANIFEST, &first_body).status,
        201
    );
    // A different manifest is refused with a message that says why.
    let (_, other_body) = small_image(&server, "app", "other");
    let r = push_manifest(&server, "app", sha_tag, OCI_MANIFEST, &other_body);
    assert_eq!(r.status, 403, "{}", r.describe());
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("immutable") && message.contains(&first),
        "{message}"
    );
    server.assert_manifest_served("app", sha_tag, &first, &server.admin_auth());
    assert_eq!(
        server
            .request(
                Method::DELETE,
                &format!("/v2/app/manifests/{sha_tag}"),
                &[],
                None
            )
            .status,
        403
    );
    assert_eq!(
        server
            .request(
                Method::DELETE,
                &format!("/v2/app/manifests/{first}"),
                &[],
                None
            )
            .status,
        403
    );

    // Mutable tags move, and delete by tag or by digest.
    let (second, _) = small_image(&server, "app", "latest");
    let r = server.request(Method::DELETE, "/v2/app/manifests/latest", &[], None);
    assert_eq!(r.status, 202);
    assert_eq!(
        server
            .request(Method::GET, "/v2/app/manifests/latest", &[], None)
            .status,
        404
    );
    assert_eq!(
        server
            .request(
                Method::GET,
                &format!("/v2/app/manifests/{second}"),
                &[],
                None
            )
            .status,
        200
    );
    assert_eq!(
        server
            .request(
                Method::DELETE,
                &format!("/v2/app/manifests/{second}"),
                &[],
                None
            )
            .status,
        202
    );
    assert_eq!(
        server
            .request(
                Method::GET,
                &format!("/v2/app/manifests/{second}"),
                &[],
                None
            )
            .status,
        404
    );
    // An unreferenced blob can be deleted from a repository.
    let loose = push_blob(&server, "app", b"loose");
    assert_eq!(
        server
            .request(Method::DELETE, &format!("/v2/app/blobs/{loose}"), &[], None)
            .status,
        202
    );
    assert_eq!(
        server
            .request(Method::HEAD, &format!("/v2/app/blobs/{loose}"), &[], None)
            .status,
        404
    );
    let r = server.request(Method::PATCH, "/v2/app/manifests/x", &[], None);
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["errors"][0]["code"], "UNSUPPORTED");
}

#[test]
fn health_and_metrics() {
    let server = TestServer::start();
    small_image(&server, "m", "v1");
    let r = server.request(Method::GET, "/readyz", &[], None);
    assert_eq!(r.json(), json!({"database": "ok", "storage": "ok"}));
    let text = String::from_utf8(server.request(Method::GET, "/metrics", &[], None).body).unwrap();
    for needle in [
        "slipway_http_requests_total{route=\"/v2/{name}/manifests/{reference}\",method=\"PUT\",status=\"201\"} 1",
        "slipway_http_request_duration_seconds_bucket{",
        "slipway_registry_blobs 2",
        "slipway_registry_uploads_in_progress 0",
        "slipway_registry_received_bytes_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
}
