//! Every REST API route, called anonymously, as a viewer (read-only role) and
//! as an admin: anonymous gets 401, a viewer reads but cannot change anything
//! (403), an admin may do everything. The runner protocol refuses user
//! credentials, and webhooks need the repository's signature.

mod common;

use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::json;

fn call(
    server: &TestServer,
    auth: &Auth,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> u16 {
    let headers: &[(&str, &str)] = &[("content-type", "application/json")];
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    request_as(server.url(), auth, method, path, headers, body).status
}

#[test]
fn every_api_route_checks_who_is_calling() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let r = request_as(
        server.url(),
        &admin,
        Method::POST,
        "/api/v1/users",
        &[("content-type", "application/json")],
        Some(
            serde_json::to_vec(
                &json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"}),
            )
            .unwrap(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let viewer = Auth::Basic("vera".into(), "viewer-password-1".into());
    let anonymous = Auth::None;

    // A repository with one pipeline to read, cancel and take logs from.
    let work = scratch_dir("authz");
    let repo_dir = work.path().join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(&repo_dir)
            .env("GIT_AUTHOR_NAME", "d")
            .env("GIT_AUTHOR_EMAIL", "d@e")
            .env("GIT_COMMITTER_NAME", "d")
            .env("GIT_COMMITTER_EMAIL", "d@e")
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        repo_dir.join(".slipway.yml"),
        "jobs:\n  a:\n    steps:\n      - image: busybox\n        commands: [true]\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    let url = repo_dir.to_str().unwrap();

    // (method, path, body, viewer's status, admin's status), in an order where
    // the admin's calls set up what later rows need.
    let second_repo_dir = work.path().join("second");
    std::fs::create_dir_all(&second_repo_dir).unwrap();
    let routes: Vec<(Method, String, Option<serde_json::Value>, u16, u16)> = vec![
        (Method::GET, "/api/v1/whoami".into(), None, 200, 200),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"username": "x1", "password": "password-123"})),
            403,
            201,
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "t", "scopes": ["push"]})),
            403,
            201,
        ),
        (
            Method::POST,
            "/api/v1/registry/gc?dry_run=true".into(),
            None,
            403,
            200,
        ),
        (
            Method::POST,
            "/api/v1/repos".into(),
            Some(json!({"name": "team/app", "url": url})),
            403,
            201,
        ),
        (Method::GET, "/api/v1/repos".into(), None, 200, 200),
        (
            Method::GET,
            "/api/v1/pipelines?limit=5".into(),
            None,
            200,
            200,
        ),
        (
            Method::POST,
            "/api/v1/repos/forge".into(),
            Some(
                json!({"repo": "team/app", "kind": "github", "api_url": "http://127.0.0.1:9/", "repository": "team/app"}),
            ),
            403,
            204,
        ),
        (
            Method::POST,
            "/api/v1/repos/notify".into(),
            Some(json!({"repo": "team/app", "url": null})),
            403,
            204,
        ),
        (
            Method::POST,
            "/api/v1/secrets".into(),
            Some(json!({"repo": "team/app", "name": "TOKEN", "value": "v"})),
            403,
            204,
        ),
        (
            Method::GET,
            "/api/v1/secrets?repo=team/app".into(),
            None,
            200,
            200,
        ),
        (
            Method::DELETE,
            "/api/v1/secrets?repo=team/app&name=TOKEN".into(),
            None,
            403,
            204,
        ),
        (
            Method::POST,
            "/api/v1/pipelines".into(),
            Some(json!({"repo": "team/app"})),
            403,
            201,
        ),
        (Method::GET, "/api/v1/pipelines/1".into(), None, 200, 200),
        (
            Method::GET,
            "/api/v1/jobs/1/steps/0/log".into(),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            "/api/v1/jobs/1/steps/0/log/search?q=x".into(),
            None,
            200,
            200,
        ),
        (
            Method::POST,
            "/api/v1/pipelines/1/cancel".into(),
            None,
            403,
            200,
        ),
        (
            Method::POST,
            "/api/v1/pipelines/1/rerun".into(),
            None,
            403,
            201,
        ),
        (Method::POST, "/api/v1/runner-tokens".into(), None, 403, 201),
        (Method::GET, "/api/v1/queue".into(), None, 200, 200),
        (Method::GET, "/api/v1/runners".into(), None, 200, 200),
    ];
    for (method, path, body, as_viewer, as_admin) in &routes {
        assert_eq!(
            call(&server, &anonymous, method.clone(), path, body.clone()),
            401,
            "anonymous {method} {path}"
        );
        assert_eq!(
            call(&server, &viewer, method.clone(), path, body.clone()),
            *as_viewer,
            "viewer {method} {path}"
        );
        assert_eq!(
            call(&server, &admin, method.clone(), path, body.clone()),
            *as_admin,
            "admin {method} {path}"
        );
    }
    // A viewer's own token cannot reach beyond the role either.
    let r = request_as(
        server.url(),
        &viewer,
        Method::POST,
        "/api/v1/tokens",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&json!({"name": "ro", "scopes": ["pull"]})).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let viewer_token = Auth::Bearer(token);
    assert_eq!(
        call(
            &server,
            &viewer_token,
            Method::GET,
            "/api/v1/pipelines/1",
            None
        ),
        200
    );
    assert_eq!(
        call(
            &server,
            &viewer_token,
            Method::POST,
            "/api/v1/pipelines",
            Some(json!({"repo": "team/app"}))
        ),
        403
    );

    // The runner protocol takes runner tokens only: users, even admins, are refused.
    let runner_routes = [
        (
            Method::POST,
            "/api/v1/runner/lease",
            Some(json!({"free": 1, "wait_ms": 0})),
        ),
        (
            Method::POST,
            "/api/v1/runner/jobs/1/heartbeat",
            Some(json!({"attempt": 1})),
        ),
        (Method::GET, "/api/v1/runner/jobs/1/source?attempt=1", None),
        (
            Method::POST,
            "/api/v1/runner/jobs/1/steps/0",
            Some(json!({"attempt": 1, "status": "running", "exit_code": null})),
        ),
        (
            Method::POST,
            "/api/v1/runner/jobs/1/steps/0/log?attempt=1&offset=0",
            None,
        ),
        (
            Method::POST,
            "/api/v1/runner/jobs/1/images",
            Some(
                json!({"attempt": 1, "step": 0, "repository": "demo", "tags": [], "digest": format!("sha256:{}", "a".repeat(64))}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/runner/jobs/1/finish",
            Some(json!({"attempt": 1, "status": "success", "reason": null})),
        ),
    ];
    for (method, path, body) in &runner_routes {
        for auth in [&anonymous, &viewer, &admin] {
            assert_eq!(
                call(&server, auth, method.clone(), path, body.clone()),
                401,
                "{method} {path}"
            );
        }
    }
    // Registering needs a registration token, not a user.
    let register =
        json!({"registration_token": "srt_nope", "name": "r", "labels": [], "capacity": 1});
    for auth in [&anonymous, &viewer, &admin] {
        assert_eq!(
            call(
                &server,
                auth,
                Method::POST,
                "/api/v1/runner/register",
                Some(register.clone())
            ),
            401
        );
    }
    // Webhooks authenticate by signature: credentials alone are not enough.
    for auth in [&anonymous, &viewer, &admin] {
        let r = request_as(
            server.url(),
            auth,
            Method::POST,
            "/api/v1/webhooks/1",
            &[
                ("x-github-event", "push"),
                ("content-type", "application/json"),
            ],
            Some(b"{}".to_vec()),
        );
        assert_eq!(r.status, 401);
    }
}

/// The OpenAPI document the server serves lists every route tested above, and
/// every path it documents answers (as a real route: 401 anonymously, not 404).
#[test]
fn the_openapi_document_matches_the_routes() {
    let server = TestServer::start();
    let doc = request_as(
        server.url(),
        &Auth::None,
        Method::GET,
        "/api/v1/openapi.json",
        &[],
        None,
    );
    assert_eq!(doc.status, 200, "the document needs no credentials");
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api_authz.rs"))
            .unwrap();
    // Every API path this file calls is documented.
    let templated = |p: &str| -> String {
        p.split('?')
            .next()
            .unwrap()
            .split('/')
            .map(|seg| {
                if seg.chars().all(|c| c.is_ascii_digit()) && !seg.is_empty() {
                    "{}"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let documented: Vec<String> = paths
        .keys()
        .map(|p| {
            let mut out = String::new();
            let mut in_param = false;
            for c in p.chars() {
                match c {
                    '{' => {
                        in_param = true;
                        out.push_str("{}");
                    }
                    '}' => in_param = false,
                    _ if !in_param => out.push(c),
                    _ => {}
                }
            }
            out
        })
        .collect();
    for quoted in source
        .split('"')
        .filter(|s| s.len() > "/api/v1/".len() && s.starts_with("/api/v1/") && !s.contains("..."))
    {
        let path = templated(quoted.trim_start_matches("/api/v1"));
        assert!(
            documented.contains(&path),
            "{quoted} is not in openapi.json"
        );
    }
    // Every documented path is routed.
    for (path, methods) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{job}", "1")
            .replace("{position}", "0")
            .replace("{from}", "2")
            .replace("{repo}", "1");
        for method in methods.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = request_as(
                server.url(),
                &Auth::None,
                method.clone(),
                &format!("/api/v1{concrete}"),
                &[("content-type", "application/json")],
                None,
            );
            // An unrouted path is a bare 404 or 405; handlers answer with a body.
            let routed = !(r.status == 405 || (r.status == 404 && r.body.is_empty()));
            assert!(
                routed,
                "{method} {path} is documented but not routed ({})",
                r.status
            );
        }
    }
}
