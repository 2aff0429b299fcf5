//! Bad input: each case checks the status, the OCI error code, and that nothing
//! was stored (no blob file, no tag, no repository).

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

fn assert_error(r: &HttpResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.describe());
    let body = r.json();
    assert_eq!(body["errors"][0]["code"], code, "{}", r.describe());
    assert!(
        !body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "error without a message: {}",
        r.describe()
    );
}

/// Blob files on disk under the store.
fn blob_files(server: &TestServer) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| {
                        if e.file_type().unwrap().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&server.data_dir().join("registry/blobs"))
}

fn catalog(server: &TestServer) -> Vec<String> {
    let r = server.request(Method::GET, "/v2/_catalog", &[], None);
    serde_json::from_value(r.json()["repositories"].clone()).unwrap()
}

#[test]
fn digest_mismatch_and_invalid_digests_store_nothing() {
    let server = TestServer::start();
    let content = random_bytes(10_000);
    let wrong = sha256_digest(b"something else");
    let r = server.request(
        Method::POST,
        &format!("/v2/app/blobs/uploads/?digest={wrong}"),
        &[],
        Some(content.clone()),
    );
    assert_error(&r, 400, "DIGEST_INVALID");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&sha256_digest(&content)),
        "names the real digest"
    );

    // Chunked upload finished with the wrong digest.
    let r = server.request(Method::POST, "/v2/app/blobs/uploads/", &[], None);
    let location = r.header("location").unwrap().to_owned();
    server.request(Method::PATCH, &location, &[], Some(content.clone()));
    let r = server.request(
        Method::PUT,
        &format!("{location}?digest={wrong}"),
        &[],
        None,
    );
    assert_error(&r, 400, "DIGEST_INVALID");

    for bad in [
        "sha256:xyz",
        "sha256:",
        "md5:abc",
        "nocolon",
        "sha256:ABCDEF",
    ] {
        let r = server.request(
            Method::POST,
            &format!("/v2/app/blobs/uploads/?digest={bad}"),
            &[],
            Some(content.clone()),
        );
        assert_error(&r, 400, "DIGEST_INVALID");
        let r = server.request(Method::GET, &format!("/v2/app/blobs/{bad}"), &[], None);
        assert_error(&r, 400, "DIGEST_INVALID");
    }
    let r = server.request(
        Method::PUT,
        &format!("/v2/app/blobs/uploads/{}", "a".repeat(32)),
        &[],
        None,
    );
    assert_error(&r, 400, "DIGEST_INVALID"); // missing ?digest
    let r = server.request(
        Method::HEAD,
        &format!("/v2/app/blobs/{}", sha256_digest(&content)),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(blob_files(&server), 0);
}

/// Send a request line exactly as written (HTTP clients normalise `..` away),
/// returning the status code and body.
fn raw_request(server: &TestServer, method: &str, path: &str) -> (u16, String) {
    use base64::Engine;
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.host_port()).unwrap();
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("admin:{}", server.admin_password()));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.host_port()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

#[test]
fn invalid_repository_names_are_refused() {
    let server = TestServer::start();
    let long = format!("{}/x", "a".repeat(300));
    for name in [
        "Upper/Case",
        "a/../b",
        "..",
        "a//b",
        "a/./b",
        "-lead",
        "trail-",
        "a/b/",
        long.as_str(),
    ] {
        let (status, response) =
            raw_request(&server, "POST", &format!("/v2/{name}/blobs/uploads/"));
        assert_eq!(status, 400, "{name}: {response}");
        assert!(response.contains("NAME_INVALID"), "{name}: {response}");
        let (status, response) = raw_request(&server, "GET", &format!("/v2/{name}/tags/list"));
        assert_eq!(status, 400, "{name}: {response}");
    }
    assert!(catalog(&server).is_empty());
    assert_eq!(blob_files(&server), 0);
}

#[test]
fn manifests_must_be_valid_and_complete() {
    let server = TestServer::start();
    let scratch = scratch_dir("badmanifest");
    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::None, 512)],
    );
    // Missing blobs: nothing was uploaded.
    let r = server.request(
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        Some(layout.manifest_bytes.clone()),
    );
    assert_error(&r, 400, "MANIFEST_BLOB_UNKNOWN");
    assert!(r.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains(&layout.config_digest));

    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{\"schemaVersion\": 2,".to_vec()),
        ("schema 1", br#"{"schemaVersion":1,"name":"x"}"#.to_vec()),
        (
            "no config",
            json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,"layers":[]})
                .to_string()
                .into_bytes(),
        ),
        (
            "bad layer digest",
            json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
                   "config":{"mediaType":OCI_CONFIG,"digest":layout.config_digest,"size":2},
                   "layers":[{"mediaType":OCI_LAYER_TAR,"digest":"sha256:nothex","size":1}]})
            .to_string()
            .into_bytes(),
        ),
        (
            "media type mismatch",
            json!({"schemaVersion":2,"mediaType":OCI_INDEX,"manifests":[]})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (what, body) in malformed {
        let r = server.request(
            Method::PUT,
            "/v2/app/manifests/v1",
            &[("Content-Type", OCI_MANIFEST)],
            Some(body),
        );
        assert_eq!(r.status, 400, "{what}: {}", r.describe());
        assert_eq!(
            r.json()["errors"][0]["code"],
            "MANIFEST_INVALID",
            "{what}: {}",
            r.describe()
        );
    }
    let r = server.request(
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("Content-Type", "text/plain")],
        Some(layout.manifest_bytes.clone()),
    );
    assert_error(&r, 400, "MANIFEST_INVALID");

    // Oversized: a valid-looking manifest padded past the 4 MiB limit.
    let mut big = json!({"schemaVersion":2,"mediaType":OCI_MANIFEST,
        "config":{"mediaType":OCI_CONFIG,"digest":layout.config_digest,"size":2},"layers":[]});
    big["annotations"] = json!({"pad": "x".repeat(5 * 1024 * 1024)});
    let r = server.request(
        Method::PUT,
        "/v2/app/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        Some(big.to_string().into_bytes()),
    );
    assert_error(&r, 413, "SIZE_INVALID");

    // A manifest pushed by a digest that is not its own.
    let r = server.request(
        Method::PUT,
        &format!("/v2/app/manifests/{}", sha256_digest(b"other")),
        &[("Content-Type", OCI_MANIFEST)],
        Some(layout.manifest_bytes.clone()),
    );
    assert!(r.status == 400, "{}", r.describe());

    let r = server.request(Method::GET, "/v2/app/manifests/v1", &[], None);
    assert_error(&r, 404, "MANIFEST_UNKNOWN");
    let r = server.request(Method::GET, "/v2/app/tags/list", &[], None);
    assert_error(&r, 404, "NAME_UNKNOWN");
    assert_eq!(blob_files(&server), 0);
    assert!(
        catalog(&server).is_empty(),
        "a refused manifest must not create the repository"
    );
}

/// A manifest reference that is neither a valid tag nor a digest names nothing:
/// GET and HEAD answer 404 MANIFEST_UNKNOWN, as distribution does (the OCI
/// conformance suite pulls `.INVALID_MANIFEST_NAME` and expects 404). PUT still
/// refuses the reference with 400 (TAG_INVALID or DIGEST_INVALID); DELETE, as
/// distribution: a malformed digest is 400 DIGEST_INVALID, an invalid tag 404.
#[test]
fn invalid_manifest_references() {
    let server = TestServer::start();
    let scratch = scratch_dir("badref");
    let layout = OciLayout::write(
        &scratch.path().join("img"),
        "v1",
        &[(Compression::None, 64)],
    );
    server.push_layout_http(&layout, "app", "v1", &server.admin_auth());
    let not_a_reference = [
        ".INVALID_NAME",
        "-dash",
        &"t".repeat(129),
        "sha256:1234",
        "sha256:zz",
        "md5:abc",
        "a:b",
    ];
    for reference in not_a_reference {
        for method in [Method::GET, Method::HEAD] {
            let r = server.request(
                method.clone(),
                &format!("/v2/app/manifests/{reference}"),
                &[],
                None,
            );
            assert_eq!(r.status, 404, "{method} {reference}: {}", r.describe());
            if method == Method::GET {
                assert_error(&r, 404, "MANIFEST_UNKNOWN");
            }
        }
        let r = server.request(
            Method::PUT,
            &format!("/v2/app/manifests/{reference}"),
            &[("Content-Type", OCI_MANIFEST)],
            Some(layout.manifest_bytes.clone()),
        );
        let code = if reference.contains(':') {
            "DIGEST_INVALID"
        } else {
            "TAG_INVALID"
        };
        assert_error(&r, 400, code);
        let r = server.request(
            Method::DELETE,
            &format!("/v2/app/manifests/{reference}"),
            &[],
            None,
        );
        if reference.contains(':') {
            assert_error(&r, 400, "DIGEST_INVALID");
        } else {
            assert_error(&r, 404, "MANIFEST_UNKNOWN");
        }
    }
    // Anonymous callers are still asked to authenticate first.
    let r = request_as(
        server.url(),
        &Auth::None,
        Method::GET,
        "/v2/app/manifests/.INVALID_NAME",
        &[],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    // Nothing was changed: the image is still served under its tag.
    let r = server.request(Method::GET, "/v2/app/manifests/v1", &[], None);
    assert_eq!(r.status, 200, "{}", r.describe());
}

#[test]
fn bad_ranges_and_out_of_order_chunks() {
    let server = TestServer::start();
    let data = random_bytes(3000);
    let digest = sha256_digest(&data);
    let r = server.request(Method::POST, "/v2/app/blobs/uploads/", &[], None);
    assert_eq!(r.status, 202);
    let location = r.header("location").unwrap().to_owned();

    let r = server.request(
        Method::PATCH,
        &location,
        &[("Content-Range", "0-999")],
        Some(data[..1000].to_vec()),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    assert_eq!(r.header("range"), Some("0-999"));
    // Out of order: skipping ahead, and repeating the first chunk.
    for range in ["2000-2999", "0-999", "500-1499"] {
        let (a, b): (usize, usize) = {
            let (a, b) = range.split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        };
        let r = server.request(
            Method::PATCH,
            &location,
            &[("Content-Range", range)],
            Some(data[a..=b].to_vec()),
        );
        assert_error(&r, 416, "RANGE_INVALID");
        assert_eq!(
            r.header("range"),
            Some("0-999"),
            "416 tells where to resume"
        );
    }
    // Malformed Content-Range values.
    for bad in ["abc", "5-2", "1000-", "-5"] {
        let r = server.request(
            Method::PATCH,
            &location,
            &[("Content-Range", bad)],
            Some(vec![1, 2, 3]),
        );
        assert_error(&r, 416, "RANGE_INVALID");
    }
    // A chunk whose length does not match its Content-Range.
    let r = server.request(
        Method::PATCH,
        &location,
        &[("Content-Range", "1000-1999")],
        Some(data[1000..1500].to_vec()),
    );
    assert_error(&r, 400, "BLOB_UPLOAD_INVALID");
    // None of that changed the session: it still resumes at 1000.
    let r = server.request(Method::GET, &location, &[], None);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("range"), Some("0-999"));
    let r = server.request(
        Method::PATCH,
        &location,
        &[("Content-Range", "1000-2999")],
        Some(data[1000..].to_vec()),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let r = server.request(
        Method::PUT,
        &format!("{location}?digest={digest}"),
        &[],
        None,
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(server.get_blob("app", &digest, &server.admin_auth()), data);

    // Bad Range requests on a blob GET.
    for bad in [
        "bytes=5000-",
        "bytes=10-5",
        "bytes=a-b",
        "items=0-1",
        "bytes=0-1,5-6",
    ] {
        let r = server.request(
            Method::GET,
            &format!("/v2/app/blobs/{digest}"),
            &[("Range", bad)],
            None,
        );
        assert_error(&r, 416, "RANGE_INVALID");
        assert_eq!(r.header("content-range"), Some("bytes */3000"), "{bad}");
    }
    // Unknown and path-like upload ids.
    for id in ["0123456789abcdef0123456789abcdef", "nothex", "..."] {
        let r = server.request(
            Method::GET,
            &format!("/v2/app/blobs/uploads/{id}"),
            &[],
            None,
        );
        assert_error(&r, 404, "BLOB_UPLOAD_UNKNOWN");
    }
    let r = server.request(
        Method::PATCH,
        "/v2/app/blobs/uploads/..%2F..%2Fslipway.db",
        &[],
        Some(b"x".to_vec()),
    );
    assert_eq!(r.status, 404, "{}", r.describe());
    assert!(
        server
            .data_dir()
            .join("slipway.db")
            .metadata()
            .unwrap()
            .len()
            > 0
    );
    assert_eq!(
        blob_files(&server),
        1,
        "only the one completed blob is stored"
    );
}
