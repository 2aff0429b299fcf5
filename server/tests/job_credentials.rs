//! What a leased job's credentials reach. A job's registry tokens pull only
//! its own repository (and below it) and the repository's pull allowlist
//! (`library/*` by default), so a pipeline cannot read another team's
//! private images; images named in the spec outside the allowlist fail at
//! pipeline creation, naming the image and the setting.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn post(server: &TestServer, auth: &Auth, path: &str, body: Value) -> HttpResponse {
    request_as(
        server.url(),
        auth,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    )
}

/// A git repository under `dir` whose one commit has `spec` as its
/// `.slipway.yml`; its path.
fn repo_with_spec(dir: &Path, spec: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
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
        assert!(out.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".slipway.yml"), spec).unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    dir.to_str().unwrap().to_owned()
}

/// Register `name` at `url` and start a pipeline of it; the pipeline.
fn add_and_run(server: &TestServer, name: &str, url: &str) -> Value {
    let admin = server.admin_auth();
    let r = post(
        server,
        &admin,
        "/api/v1/repos",
        json!({"name": name, "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    run(server, name)
}

fn run(server: &TestServer, name: &str) -> Value {
    let r = post(
        server,
        &server.admin_auth(),
        "/api/v1/pipelines",
        json!({"repo": name}),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    r.json()
}

fn slipway(server: &TestServer, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A step or service image of another repository, not in the allowlist,
/// makes the pipeline an error that names the image and the setting; once
/// an admin allows it (CLI), the same commit runs.
#[test]
fn images_outside_the_pull_allowlist_fail_at_creation() {
    let server = TestServer::start();
    let work = scratch_dir("pull-allow");
    let spec = "jobs:
  test:
    services:
      db:
        image: other/db
    steps:
      - name: ok
        image: busybox
        commands: [true]
      - name: own
        image: team/app/tools:v1
        commands: [true]
      - name: elsewhere
        image: quay.io/someone/tool
        commands: [true]
      - name: private
        image: other/private:v1
        commands: [true]
";
    let url = repo_with_spec(&work.path().join("repo"), spec);
    let p = add_and_run(&server, "team/app", &url);
    assert_eq!(p["status"], "error", "{p}");
    let error = p["error"].as_str().unwrap();
    for wanted in [
        "job \"test\" step \"private\": image other/private:v1",
        "job \"test\" service \"db\": image other/db",
        "pull allowlist: library/*",
        "slipway repo pull-allow team/app",
    ] {
        assert!(error.contains(wanted), "{wanted:?} in {error}");
    }
    for allowed in ["busybox", "team/app/tools", "quay.io"] {
        assert!(!error.contains(allowed), "{allowed:?} is allowed: {error}");
    }
    assert!(p["jobs"].as_array().unwrap().is_empty(), "{p}");

    // Bad patterns are refused, and change nothing.
    let r = post(
        &server,
        &server.admin_auth(),
        "/api/v1/repos/pull-allow",
        json!({"repo": "team/app", "patterns": ["other*"]}),
    );
    assert_eq!(r.status, 400, "{}", r.describe());
    assert!(r.body_text().contains("other*"), "{}", r.body_text());

    let (ok, out) = slipway(
        &server,
        &["repo", "pull-allow", "team/app", "library/*", "other/*"],
    );
    assert!(ok, "{out}");
    let repos = server.get("/api/v1/repos", &server.admin_auth()).json();
    assert_eq!(repos[0]["pull_allow"], json!(["library/*", "other/*"]));
    let p = run(&server, "team/app");
    assert_eq!(p["status"], "pending", "{p}");

    // --none: the repository's own images only; busybox is then refused.
    let (ok, out) = slipway(&server, &["repo", "pull-allow", "team/app", "--none"]);
    assert!(ok, "{out}");
    let p = run(&server, "team/app");
    assert_eq!(p["status"], "error", "{p}");
    assert!(
        p["error"].as_str().unwrap().contains("image busybox"),
        "{p}"
    );
}

/// A runner's lease of `server`'s only queued job.
fn lease(server: &TestServer, runner: &Auth) -> Value {
    let r = post(
        server,
        runner,
        "/api/v1/runner/lease",
        json!({"free": 1, "wait_ms": 10_000}),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

/// The status of `method path` on the registry with `token`.
fn registry(server: &TestServer, token: &str, method: Method, path: &str) -> u16 {
    request_as(
        server.url(),
        &Auth::Bearer(token.to_owned()),
        method,
        path,
        &[],
        None,
    )
    .status
}

/// A job's registry tokens pull its own repository, what is below it and
/// the allowlist (library/* by default), and nothing else: not
/// `other/private`, not a sibling `team/other`. Its push token pushes only
/// where its build step does.
#[test]
fn a_jobs_registry_tokens_pull_only_its_repository_and_allowlist() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("job-token");
    let layout = OciLayout::write(&work.path().join("img"), "v1", &[(Compression::None, 256)]);
    for repo in [
        "library/busybox",
        "team/app",
        "team/app/base",
        "team/other",
        "other/private",
    ] {
        server.push_layout_http(&layout, repo, "v1", &admin);
    }
    let spec = "jobs:
  image:
    steps:
      - name: build
        build:
          image: team/app
";
    let url = repo_with_spec(&work.path().join("repo"), spec);
    add_and_run(&server, "team/app", &url);
    let runner = Auth::Bearer(server.register_runner("r"));
    let lease = lease(&server, &runner);
    let pull = lease["registry_token"].as_str().unwrap().to_owned();
    let push = lease["push_token"].as_str().unwrap().to_owned();
    for token in [&pull, &push] {
        for (repo, want) in [
            ("library/busybox", 200),
            ("team/app", 200),
            ("team/app/base", 200),
            ("team/other", 403),
            ("other/private", 403),
        ] {
            for method in [Method::GET, Method::HEAD] {
                assert_eq!(
                    registry(
                        &server,
                        token,
                        method.clone(),
                        &format!("/v2/{repo}/manifests/v1")
                    ),
                    want,
                    "{method} {repo}"
                );
            }
            let tags = registry(
                &server,
                token,
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
            );
            assert_eq!(tags, want, "tags of {repo}");
        }
    }
    // Pushing: the build's repository with the push token only.
    assert_eq!(
        registry(&server, &push, Method::POST, "/v2/team/app/blobs/uploads/"),
        202
    );
    for (token, repo) in [
        (&pull, "team/app"),
        (&push, "other/private"),
        (&push, "library/busybox"),
    ] {
        assert_eq!(
            registry(
                &server,
                token,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/")
            ),
            403,
            "push to {repo}"
        );
    }
}
