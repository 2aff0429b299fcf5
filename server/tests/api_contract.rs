//! The REST API keeps its contract: every rejection, the framework's too
//! (a bad path or query parameter, a missing or wrong content type,
//! malformed JSON, an unknown field, a body too large, an unknown route or
//! method), is the one JSON error envelope naming where the problem is;
//! `src/api` reads its input only through its own extractors, so routes
//! added later do too; schemathesis, run against the real server as admin,
//! viewer, runner, node and anonymously with every check, finds the OpenAPI
//! document true; and a repository added without a default branch records
//! the remote's HEAD.

mod common;

use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let headers: Vec<(&str, &str)> = content_type
        .map(|c| ("content-type", c))
        .into_iter()
        .collect();
    request_as(
        server.url(),
        &server.admin_auth(),
        method,
        path,
        &headers,
        Some(body.to_vec()),
    )
}

/// The response is the envelope with this status, code and place.
fn assert_envelope(
    r: &HttpResponse,
    status: u16,
    code: &str,
    place: Option<(&str, Option<&str>)>,
) -> Value {
    let what = format!("{} {}", r.method, r.url);
    assert_eq!(r.status, status, "{what}: {}", r.body_text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}: {}",
        r.header("content-type"),
        r.body_text()
    );
    let body = r.json();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{what}: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    match place {
        Some((part, field)) => {
            assert_eq!(error["in"], part, "{what}: {body}");
            assert_eq!(error["field"].as_str(), field, "{what}: {body}");
        }
        None => assert!(error.get("in").is_none(), "{what}: {body}"),
    }
    body
}

#[test]
fn every_framework_rejection_is_the_json_envelope_saying_where() {
    let server = TestServer::start();
    let json = Some("application/json");
    let get = |path: &str| send(&server, Method::GET, path, None, b"");
    let post =
        |path: &str, ct: Option<&str>, body: &[u8]| send(&server, Method::POST, path, ct, body);

    // Path parameters.
    assert_envelope(
        &get("/api/v1/pipelines/abc"),
        400,
        "bad_parameter",
        Some(("path", Some("id"))),
    );
    let body = assert_envelope(
        &get("/api/v1/jobs/1/steps/99999999999999999999/log"),
        400,
        "bad_parameter",
        Some(("path", Some("position"))),
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("9223372036854775807"),
        "{body}"
    );
    assert_envelope(
        &post("/api/v1/webhooks/x", json, b"{}"),
        400,
        "bad_parameter",
        Some(("path", Some("repo"))),
    );
    // Query parameters: not a number, unknown, missing, out of range.
    assert_envelope(
        &get("/api/v1/pipelines?limit=x"),
        400,
        "bad_parameter",
        Some(("query", Some("limit"))),
    );
    assert_envelope(
        &get("/api/v1/pipelines?lmit=3"),
        400,
        "bad_parameter",
        Some(("query", Some("lmit"))),
    );
    assert_envelope(
        &get("/api/v1/secrets"),
        400,
        "bad_parameter",
        Some(("query", Some("repo"))),
    );
    assert_envelope(
        &get("/api/v1/pipelines?limit=201"),
        400,
        "bad_request",
        Some(("query", Some("limit"))),
    );
    assert_envelope(
        &get("/api/v1/pipelines?limit=0"),
        400,
        "bad_request",
        Some(("query", Some("limit"))),
    );
    assert_envelope(
        &get("/api/v1/jobs/1/steps/0/log/search?q=x&limit=-1"),
        400,
        "bad_parameter",
        Some(("query", Some("limit"))),
    );
    // Content type: missing, or not JSON.
    let limits = br#"{"repo": "nope", "max_concurrent": 3}"#;
    let missing = assert_envelope(
        &post("/api/v1/repos/limits", None, limits),
        415,
        "unsupported_media_type",
        Some(("header", Some("content-type"))),
    );
    assert!(missing["error"]["message"]
        .as_str()
        .unwrap()
        .contains("application/json"));
    assert_envelope(
        &post("/api/v1/repos/limits", Some("text/plain"), limits),
        415,
        "unsupported_media_type",
        Some(("header", Some("content-type"))),
    );
    // The right content type reaches the handler (no such repository).
    assert_envelope(
        &post("/api/v1/repos/limits", json, limits),
        404,
        "not_found",
        None,
    );
    assert_envelope(
        &post(
            "/api/v1/repos/limits",
            Some("application/json; charset=utf-8"),
            limits,
        ),
        404,
        "not_found",
        None,
    );
    // Malformed JSON, trailing text, and JSON that is not an object.
    assert_envelope(
        &post("/api/v1/repos/limits", json, br#"{"repo": "#),
        400,
        "malformed_json",
        Some(("body", None)),
    );
    assert_envelope(
        &post("/api/v1/repos/limits", json, br#"{} {}"#),
        400,
        "malformed_json",
        Some(("body", None)),
    );
    assert_envelope(
        &post("/api/v1/repos/limits", json, b"[]"),
        422,
        "invalid_body",
        Some(("body", None)),
    );
    // `[]` is not an empty object, even where the body is optional.
    assert_envelope(
        &post("/api/v1/pipelines/1/rerun", json, b"[]"),
        422,
        "invalid_body",
        Some(("body", None)),
    );
    assert_envelope(
        &post("/api/v1/runner-tokens", json, b"[]"),
        422,
        "invalid_body",
        Some(("body", None)),
    );
    // Unknown, missing and mistyped fields, named by their path.
    assert_envelope(
        &post(
            "/api/v1/repos/limits",
            json,
            br#"{"repo": "a", "max_concurent": 3}"#,
        ),
        422,
        "invalid_body",
        Some(("body", Some("max_concurent"))),
    );
    assert_envelope(
        &post("/api/v1/repos/limits", json, br#"{"max_concurrent": 3}"#),
        422,
        "invalid_body",
        Some(("body", Some("repo"))),
    );
    assert_envelope(
        &post(
            "/api/v1/repos/pull-allow",
            json,
            br#"{"repo": "a", "patterns": ["x", 3]}"#,
        ),
        422,
        "invalid_body",
        Some(("body", Some("patterns[1]"))),
    );
    assert_envelope(
        &post(
            "/api/v1/runner-tokens",
            json,
            br#"{"repositories": "team/*"}"#,
        ),
        422,
        "invalid_body",
        Some(("body", Some("repositories"))),
    );
    // A number without a fraction is an integer, as JSON Schema has it.
    assert_envelope(
        &post(
            "/api/v1/repos/limits",
            json,
            br#"{"repo": "nope", "max_concurrent": 3.0}"#,
        ),
        404,
        "not_found",
        None,
    );
    // A value the handler refuses names its field too.
    assert_envelope(
        &post(
            "/api/v1/pipelines",
            json,
            &serde_json::to_vec(&json!({"repo": "a", "ref": "x".repeat(5000)})).unwrap(),
        ),
        400,
        "bad_request",
        Some(("body", Some("ref"))),
    );
    assert_envelope(
        &post(
            "/api/v1/pipelines",
            json,
            br#"{"repo": "a", "ref": "a..b"}"#,
        ),
        400,
        "bad_request",
        Some(("body", Some("ref"))),
    );
    // A body past the route's limit (2 MiB).
    let big = serde_json::to_vec(&json!({"repo": "a", "url": "x".repeat(3 << 20)})).unwrap();
    assert_envelope(
        &post("/api/v1/repos/notify", json, &big),
        413,
        "too_large",
        Some(("body", None)),
    );
    // Unknown routes and methods.
    assert_envelope(&get("/api/v1/no-such-route"), 404, "not_found", None);
    let r = send(&server, Method::PUT, "/api/v1/pipelines/1", None, b"");
    assert_envelope(&r, 405, "method_not_allowed", None);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );
    let r = send(&server, Method::GET, "/api/v1/runner/lease", None, b"");
    assert_envelope(&r, 405, "method_not_allowed", None);
    // Webhooks refuse in the same envelope.
    assert_envelope(
        &post("/api/v1/webhooks/1", json, b"{}"),
        404,
        "not_found",
        None,
    );
    // Unauthenticated callers too.
    let r = request_as(
        server.url(),
        &Auth::None,
        Method::GET,
        "/api/v1/pipelines/abc",
        &[],
        None,
    );
    assert_envelope(&r, 401, "unauthenticated", None);
}

/// `src/api` takes no input through axum's own extractors, whose refusals
/// are plain text: a handler written with them fails here.
#[test]
fn the_api_reads_input_only_through_its_own_extractors() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") || path.ends_with("extract.rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for (n, line) in source.lines().enumerate() {
            let uses_axum_extractor = [
                "axum::Json",
                "axum::extract::Path",
                "axum::extract::Query",
                "axum::body::Bytes",
                "use axum::{Json",
            ]
            .iter()
            .any(|s| line.contains(s))
                || (line.contains("use axum::extract::{")
                    && ["Path", "Query", "Json"]
                        .iter()
                        .any(|x| line.split(['{', '}', ',', ' ']).any(|w| w == *x)));
            if uses_axum_extractor {
                offenders.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "use api::extract's Path, Query, Json, OptionalJson and Bytes instead:\n{}",
        offenders.join("\n")
    );
}

/// A git repository whose only branch is `branch`, with a one-step spec.
fn repo_on(dir: &std::path::Path, branch: &str) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "d")
            .env("GIT_AUTHOR_EMAIL", "d@e")
            .env("GIT_COMMITTER_NAME", "d")
            .env("GIT_COMMITTER_EMAIL", "d@e")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", branch]);
    std::fs::write(
        dir.join(".slipway.yml"),
        "jobs:\n  a:\n    steps:\n      - image: busybox\n        commands: [true]\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    dir.to_str().unwrap().to_owned()
}

fn post_json(server: &TestServer, path: &str, body: Value) -> HttpResponse {
    send(
        server,
        Method::POST,
        path,
        Some("application/json"),
        &serde_json::to_vec(&body).unwrap(),
    )
}

#[test]
fn a_repository_added_without_a_branch_records_the_remotes_head() {
    let server = TestServer::start();
    let work = scratch_dir("head");
    let master = work.path().join("master");
    std::fs::create_dir_all(&master).unwrap();
    let url = repo_on(&master, "master");

    // No default_branch: the remote's HEAD names master.
    let r = post_json(
        &server,
        "/api/v1/repos",
        json!({"name": "team/old", "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    assert_eq!(r.json()["default_branch"], "master");
    let r = post_json(&server, "/api/v1/pipelines", json!({"repo": "team/old"}));
    assert_eq!(r.status, 201, "{}", r.body_text());
    assert_eq!(r.json()["ref"], "refs/heads/master");

    // A default branch given that the repository lacks: the error says so.
    let r = post_json(
        &server,
        "/api/v1/repos",
        json!({"name": "team/said-main", "url": url, "default_branch": "main"}),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    assert_eq!(r.json()["default_branch"], "main");
    let r = post_json(
        &server,
        "/api/v1/pipelines",
        json!({"repo": "team/said-main"}),
    );
    let body = assert_envelope(&r, 404, "not_found", None);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("default branch \"main\"")
            && message.contains("master")
            && message.contains("--ref"),
        "{message}"
    );
    // An invalid branch name is refused where it is.
    let r = post_json(
        &server,
        "/api/v1/repos",
        json!({"name": "team/bad", "url": url, "default_branch": "a..b"}),
    );
    assert_envelope(
        &r,
        400,
        "bad_request",
        Some(("body", Some("default_branch"))),
    );
}

/// schemathesis (installed by scripts/test.sh; `SLIPWAY_SCHEMATHESIS` names
/// it) against the real server with every check, as admin, viewer, runner,
/// node and anonymously, `SLIPWAY_SCHEMATHESIS_EXAMPLES` examples an operation
/// (default 4, to stay within a few minutes). Any finding fails the test.
#[test]
fn schemathesis_finds_the_openapi_document_true() {
    let st = std::env::var("SLIPWAY_SCHEMATHESIS").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        let cache = std::env::var("XDG_CACHE_HOME").unwrap_or(format!("{home}/.cache"));
        format!("{cache}/slipway/schemathesis-4.32.5/bin/st")
    });
    assert!(
        std::path::Path::new(&st).exists(),
        "schemathesis is not at {st}: scripts/test.sh installs it (or set SLIPWAY_SCHEMATHESIS)"
    );
    let examples = std::env::var("SLIPWAY_SCHEMATHESIS_EXAMPLES").unwrap_or("4".into());
    let server = TestServer::start();
    // Something to find: a viewer, a runner, a repository with a pipeline.
    let r = post_json(
        &server,
        "/api/v1/users",
        json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"}),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let runner = server.register_runner("fuzz");
    let node = common::deploy_peers::join_local_node(&server, "fuzz");
    let work = scratch_dir("contract");
    let url = repo_on(work.path(), "main");
    let r = post_json(
        &server,
        "/api/v1/repos",
        json!({"name": "demo", "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let r = post_json(&server, "/api/v1/pipelines", json!({"repo": "demo"}));
    assert_eq!(r.status, 201, "{}", r.body_text());

    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schemathesis.toml"
    );
    let admin = format!("admin:{}", server.admin_password());
    let runner_header = format!("Authorization: Bearer {runner}");
    let node_header = format!("Authorization: Bearer {node}");
    let roles: [(&str, Vec<&str>); 5] = [
        ("admin", vec!["--auth", &admin]),
        ("viewer", vec!["--auth", "vera:viewer-password-1"]),
        // The lease long-polls up to 30 s when nothing is queued: the
        // runner protocol tests cover it.
        (
            "runner",
            vec!["-H", &runner_header, "--exclude-path", "/runner/lease"],
        ),
        // The node's long-poll waits up to 25 s when nothing changed: the
        // authorization and deploy API tests cover it.
        (
            "node",
            vec!["-H", &node_header, "--exclude-path", "/node/desired"],
        ),
        ("anonymous", vec![]),
    ];
    let mut failed = Vec::new();
    for (who, auth) in roles {
        let started = std::time::Instant::now();
        let out = Command::new(&st)
            .arg("--config-file")
            .arg(config)
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", server.url()))
            .arg("--url")
            .arg(format!("{}/api/v1", server.url()))
            .args([
                "--checks",
                "all",
                "--max-examples",
                &examples,
                "--workers",
                "2",
            ])
            .args(["--no-color", "--generation-database", "none", "--seed", "1"])
            .args(&auth)
            .current_dir(work.path())
            .output()
            .expect("running schemathesis");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: Vec<&str> = stdout
            .lines()
            .filter(|l| l.contains("generated") || l.contains("Tested:") || l.contains(" in "))
            .collect();
        eprintln!("schemathesis as {who}: {:?} {summary:?}", started.elapsed());
        if !out.status.success() {
            failed.push(format!(
                "as {who}:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "schemathesis found problems:\n{}",
        failed.join("\n")
    );
}
