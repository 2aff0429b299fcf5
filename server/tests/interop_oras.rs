//! oras-py (Python `oras` package) <-> slipway registry: push artifacts
//! whose `subject` is an image pushed before, then list them through the
//! referrers API, with and without the `artifactType` filter.
//!
//! Runs `tests/fixtures/oras_push_referrer.py`; needs `python3` with
//! `pip install oras`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const SBOM_TYPE: &str = "application/vnd.slipway.test.sbom.v1+json";
const SIG_CONFIG_TYPE: &str = "application/vnd.slipway.test.signature.config.v1+json";
const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oras_push_referrer.py")
}

fn oras_available(scratch: &Path) {
    require_tool("python3");
    let out = Tool::new("python3", scratch)
        .args([
            "-c",
            "import oras.provider, oras.oci; print(oras.__version__)",
        ])
        .output_lossy();
    assert!(
        out.0,
        "the Python `oras` package is not importable; install it with `pip install oras`\n{}",
        out.1
    );
}

/// Run the python script and parse the JSON object on its last stdout line.
fn run_script(
    server: &TestServer,
    scratch: &Path,
    repo: &str,
    user: &str,
    password: &str,
    args: &[String],
) -> Value {
    let stdout = Tool::new("python3", scratch)
        .arg(script())
        .args([
            "--registry",
            server.host_port(),
            "--repository",
            repo,
            "--user",
            user,
            "--password",
            password,
        ])
        .args(args)
        .env("HOME", scratch)
        .run();
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}):\n{stdout}"))
}

#[test]
fn oras_push_with_subject_is_listed_by_referrers_api() {
    let server = TestServer::start();
    let work = scratch_dir("oras-");
    let scratch = work.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    oras_available(&scratch);

    let token = server.create_token(&["pull", "push"], "interop/*");
    let token_auth = Auth::Bearer(token.clone());
    let repo = "interop/oras";

    // The subject: a small image pushed with plain HTTP.
    let image = OciLayout::write(
        &work.path().join("image"),
        "v1",
        &[(Compression::Gzip, 4096)],
    );
    server.push_layout_http(&image, repo, "v1", &Auth::Basic("ci".into(), token.clone()));
    let subject = image.manifest_digest.clone();
    let subject_args = vec![
        "--subject-digest".to_string(),
        subject.clone(),
        "--subject-size".to_string(),
        image.manifest_bytes.len().to_string(),
        "--subject-media-type".to_string(),
        OCI_MANIFEST.to_string(),
    ];

    // Artifact 1: `artifactType` set in the manifest, empty config (the
    // image-spec 1.1 way).
    let sbom_path = work.path().join("sbom.spdx.json");
    let sbom = format!(r#"{{"spdxVersion":"SPDX-2.3","name":"{}"}}"#, random_hex(8));
    std::fs::write(&sbom_path, &sbom).unwrap();
    let mut args = vec![
        "push".to_string(),
        "--tag".into(),
        "sbom".into(),
        "--file".into(),
        sbom_path.display().to_string(),
        "--file-media-type".into(),
        "application/spdx+json".into(),
        "--artifact-type".into(),
        SBOM_TYPE.into(),
        "--config-media-type".into(),
        EMPTY_CONFIG.into(),
        "--annotation".into(),
        "org.example.kind=sbom".into(),
    ];
    args.extend(subject_args.clone());
    let sbom_push = timed("oras push sbom (artifactType + subject)", || {
        run_script(&server, &scratch, repo, "ci", &token, &args)
    });
    let sbom_digest = sbom_push["digest"].as_str().unwrap().to_string();
    check_push_response(&sbom_push, &subject);

    // Artifact 2: no `artifactType`; the config media type stands for it
    // (the pre-1.1 ORAS way), pushed with the admin password.
    let sig_path = work.path().join("signature.bin");
    let sig = random_bytes(512);
    std::fs::write(&sig_path, &sig).unwrap();
    let sig_config = work.path().join("sig-config.json");
    std::fs::write(&sig_config, br#"{"signer":"slipway-interop"}"#).unwrap();
    let mut args = vec![
        "push".to_string(),
        "--tag".into(),
        "sig".into(),
        "--file".into(),
        sig_path.display().to_string(),
        "--file-media-type".into(),
        "application/octet-stream".into(),
        "--config-media-type".into(),
        SIG_CONFIG_TYPE.into(),
        "--config-file".into(),
        sig_config.display().to_string(),
    ];
    args.extend(subject_args);
    let sig_push = timed("oras push signature (config mediaType + subject)", || {
        run_script(
            &server,
            &scratch,
            repo,
            "admin",
            server.admin_password(),
            &args,
        )
    });
    let sig_digest = sig_push["digest"].as_str().unwrap().to_string();
    check_push_response(&sig_push, &subject);

    // The manifests are stored as pushed.
    for (tag, push) in [("sbom", &sbom_push), ("sig", &sig_push)] {
        let digest = push["digest"].as_str().unwrap();
        let served = server.assert_manifest_served(repo, tag, digest, &token_auth);
        assert_eq!(served, push["manifest"].as_str().unwrap().as_bytes());
        server.assert_manifest_blobs_served(repo, &served, &token_auth);
    }

    // Referrers, unfiltered: both artifacts.
    let path = format!("/v2/{repo}/referrers/{subject}");
    let r = server.get(&path, &token_auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.header("content-type"),
        Some(OCI_INDEX),
        "{}",
        r.describe()
    );
    let index = r.json();
    assert_eq!(index["schemaVersion"], 2, "{index}");
    assert_eq!(index["mediaType"], OCI_INDEX, "{index}");
    let manifests = index["manifests"].as_array().expect("no manifests array");
    assert_eq!(manifests.len(), 2, "expected 2 referrers: {index}");
    let sbom_desc = find_desc(manifests, &sbom_digest);
    assert_eq!(sbom_desc["artifactType"], SBOM_TYPE, "{sbom_desc}");
    assert_eq!(sbom_desc["mediaType"], OCI_MANIFEST, "{sbom_desc}");
    assert_eq!(sbom_desc["size"], sbom_push["size"], "{sbom_desc}");
    assert_eq!(
        sbom_desc["annotations"]["org.example.kind"], "sbom",
        "referrer descriptors must carry the manifest's annotations: {sbom_desc}"
    );
    let sig_desc = find_desc(manifests, &sig_digest);
    assert_eq!(
        sig_desc["artifactType"], SIG_CONFIG_TYPE,
        "without artifactType the config mediaType must be used: {sig_desc}"
    );
    assert_eq!(sig_desc["size"], sig_push["size"], "{sig_desc}");

    // Filtered by artifactType.
    let r = server.get(
        &format!("{path}?artifactType={}", urlencode(SBOM_TYPE)),
        &token_auth,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.header("oci-filters-applied"),
        Some("artifactType"),
        "{}",
        r.describe()
    );
    let filtered = r.json();
    let listed: Vec<&str> = filtered["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        vec![sbom_digest.as_str()],
        "filtered referrers: {filtered}"
    );

    let r = server.get(
        &format!("{path}?artifactType={}", urlencode(SIG_CONFIG_TYPE)),
        &token_auth,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let listed: Vec<String> = r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        vec![sig_digest.clone()],
        "filtered referrers: {}",
        r.body_text()
    );

    let r = server.get(
        &format!("{path}?artifactType=application%2Fvnd.nothing"),
        &token_auth,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["manifests"],
        serde_json::json!([]),
        "{}",
        r.describe()
    );

    // A digest nothing refers to: 200 with an empty index, never 404.
    let unknown = sha256_digest(b"no such manifest");
    let r = server.get(&format!("/v2/{repo}/referrers/{unknown}"), &token_auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["manifests"],
        serde_json::json!([]),
        "{}",
        r.describe()
    );

    // The referrers API needs pull access like any other read.
    let r = server.get(&path, &Auth::None);
    assert_eq!(r.status, 401, "{}", r.describe());

    // oras pulls the artifacts back by digest, with the token.
    let out = work.path().join("pulled");
    std::fs::create_dir_all(&out).unwrap();
    for (digest, name, content) in [
        (&sbom_digest, "sbom.spdx.json", sbom.as_bytes()),
        (&sig_digest, "signature.bin", sig.as_slice()),
    ] {
        let args = vec![
            "pull".to_string(),
            "--digest".into(),
            digest.to_string(),
            "--outdir".into(),
            out.display().to_string(),
        ];
        run_script(&server, &scratch, repo, "ci", &token, &args);
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            content,
            "{name} pulled by oras"
        );
    }
}

fn check_push_response(push: &Value, subject: &str) {
    assert_eq!(push["status"], 201, "manifest PUT: {push}");
    assert_eq!(
        push["docker_content_digest"], push["digest"],
        "manifest PUT: Docker-Content-Digest differs from sha256 of the body: {push}"
    );
    assert_eq!(
        push["oci_subject"].as_str(),
        Some(subject),
        "manifest PUT with a subject must answer `OCI-Subject: <subject digest>`: {push}"
    );
}

fn find_desc<'a>(manifests: &'a [Value], digest: &str) -> &'a Value {
    manifests
        .iter()
        .find(|d| d["digest"] == digest)
        .unwrap_or_else(|| panic!("{digest} not among referrers {manifests:?}"))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
