//! What a leased job's credentials reach, and who gets them.
//!
//! - A job's registry tokens pull only its own repository (and below it) and
//!   the repository's pull allowlist (`library/*` by default), so a pipeline
//!   cannot read another team's private images; images named in the spec
//!   outside the allowlist fail at pipeline creation, naming the image and
//!   the setting.
//! - A lease carries no secret and no registry token: they come from
//!   `jobs/{job}/credentials` with the lease's own token, which only the
//!   leasing connection got. A runner token alone (another runner's, or this
//!   runner's leaked) gets nothing of a leased job, and a stale attempt is
//!   refused.
//! - A runner registered with a token limited to repositories leases only
//!   their jobs.

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
    let git = |args: &[&str]| git(dir, args);
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

/// A runner's lease of a queued job (the raw response: its JSON text is
/// checked too).
fn lease(server: &TestServer, runner: &Auth) -> HttpResponse {
    let r = post(
        server,
        runner,
        "/api/v1/runner/lease",
        json!({"free": 1, "wait_ms": 10_000}),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r
}

/// `GET jobs/{job}/credentials?attempt=N` as `runner`, with `lease_token`
/// in `X-Slipway-Lease` if given.
fn credentials(
    server: &TestServer,
    runner: &Auth,
    job: i64,
    attempt: i64,
    lease_token: Option<&str>,
) -> HttpResponse {
    let headers: Vec<(&str, &str)> = lease_token
        .map(|t| vec![("x-slipway-lease", t)])
        .unwrap_or_default();
    request_as(
        server.url(),
        runner,
        Method::GET,
        &format!("/api/v1/runner/jobs/{job}/credentials?attempt={attempt}"),
        &headers,
        None,
    )
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
    let lease = lease(&server, &runner).json();
    let c = credentials(
        &server,
        &runner,
        lease["job_id"].as_i64().unwrap(),
        lease["attempt"].as_i64().unwrap(),
        lease["lease_token"].as_str(),
    );
    assert_eq!(c.status, 200, "{}", c.describe());
    let c = c.json();
    let pull = c["registry_token"].as_str().unwrap().to_owned();
    let push = c["push_token"].as_str().unwrap().to_owned();
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

const SECRET: &str = "other-team-deploy-key-3f9a";

/// The attack: with a runner's token alone (a second runner's, or the
/// leasing runner's own, leaked from a job), ask for a leased job's secrets.
/// The lease itself holds no secret; its credentials need the lease's own
/// token and the current attempt, from the runner that holds the lease.
#[test]
fn a_runner_token_alone_gets_no_jobs_secrets() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("lease-binding");
    let spec = "jobs:
  deploy:
    steps:
      - name: ship
        image: busybox
        secrets: [DEPLOY_KEY]
        commands: [true]
";
    let url = repo_with_spec(&work.path().join("repo"), spec);
    let r = post(
        &server,
        &admin,
        "/api/v1/repos",
        json!({"name": "other/sec", "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let r = post(
        &server,
        &admin,
        "/api/v1/secrets",
        json!({"repo": "other/sec", "name": "DEPLOY_KEY", "value": SECRET}),
    );
    assert_eq!(r.status, 204, "{}", r.describe());
    run(&server, "other/sec");

    let holder = Auth::Bearer(server.register_runner("holder"));
    let second = Auth::Bearer(server.register_runner("second"));
    let leased = lease(&server, &holder);
    assert!(
        !leased.body_text().contains(SECRET),
        "the lease itself carries no secret: {}",
        leased.body_text()
    );
    let leased = leased.json();
    assert!(leased.get("registry_token").is_none(), "{leased}");
    let job = leased["job_id"].as_i64().unwrap();
    let attempt = leased["attempt"].as_i64().unwrap();
    let token = leased["lease_token"].as_str().unwrap().to_owned();

    // A runner token without the lease's token: the holder's own (as if
    // leaked), or the second runner's; nor the second runner with the
    // holder's lease token.
    for (who, runner, lease_token, want) in [
        ("holder's token alone", &holder, None, 401),
        ("second runner", &second, None, 401),
        (
            "second runner with the holder's lease token",
            &second,
            Some(token.as_str()),
            409,
        ),
        (
            "holder with a made-up lease token",
            &holder,
            Some("sll_0000"),
            409,
        ),
    ] {
        let r = credentials(&server, runner, job, attempt, lease_token);
        assert_eq!(r.status, want, "{who}: {}", r.describe());
        assert!(!r.body_text().contains(SECRET), "{who}");
        // Nor any other route about the job: its source, its logs, its end.
        let mut headers = vec![("content-type", "application/json")];
        if let Some(t) = lease_token {
            headers.push(("x-slipway-lease", t));
        }
        for (method, path, body) in [
            (
                Method::GET,
                format!("/api/v1/runner/jobs/{job}/source?attempt={attempt}"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/runner/jobs/{job}/heartbeat"),
                Some(json!({"attempt": attempt})),
            ),
            (
                Method::POST,
                format!("/api/v1/runner/jobs/{job}/steps/0/log?attempt={attempt}&offset=0"),
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/runner/jobs/{job}/finish"),
                Some(json!({"attempt": attempt, "status": "success", "reason": null})),
            ),
        ] {
            let r = request_as(
                server.url(),
                runner,
                method.clone(),
                &path,
                &headers,
                body.map(|b| serde_json::to_vec(&b).unwrap()),
            );
            assert_eq!(r.status, want, "{who}: {method} {path}: {}", r.describe());
        }
    }
    // Another attempt number with the right token is refused too.
    let r = credentials(&server, &holder, job, attempt + 1, Some(&token));
    assert_eq!(r.status, 409, "{}", r.describe());
    // The holder, with its lease's token, gets the value.
    let r = credentials(&server, &holder, job, attempt, Some(&token));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["steps"][0]["secrets"],
        json!([["DEPLOY_KEY", SECRET]])
    );

    // The holder goes quiet: the lease runs out (10 s) and the job is queued
    // again; the second runner leases it as attempt 2. The first lease's
    // token is worthless now, for either attempt.
    let pipeline = |id: i64| {
        server
            .get(&format!("/api/v1/pipelines/{id}"), &admin)
            .json()
    };
    let pipeline_id = leased["context"]["pipeline_id"].as_i64().unwrap();
    wait_for(
        "the lost lease to be requeued",
        std::time::Duration::from_secs(30),
        || pipeline(pipeline_id)["jobs"][0]["status"] == "queued",
    );
    let again = lease(&server, &second).json();
    assert_eq!(again["job_id"], job);
    let attempt2 = again["attempt"].as_i64().unwrap();
    assert_eq!(attempt2, attempt + 1);
    let token2 = again["lease_token"].as_str().unwrap().to_owned();
    assert_ne!(token2, token);
    for (who, runner, a, t) in [
        ("old lease, old attempt", &holder, attempt, &token),
        ("old lease, new attempt", &holder, attempt2, &token),
        (
            "old lease token with the new runner",
            &second,
            attempt2,
            &token,
        ),
        ("new lease, old attempt", &second, attempt, &token2),
        (
            "new lease token with the old runner",
            &holder,
            attempt2,
            &token2,
        ),
    ] {
        let r = credentials(&server, runner, job, a, Some(t));
        assert_eq!(r.status, 409, "{who}: {}", r.describe());
    }
    let r = credentials(&server, &second, job, attempt2, Some(&token2));
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// A runner registered with a token limited to `team/*` never leases
/// another repository's job (so its token, if it leaks, reaches nothing
/// else), and the queue says why.
#[test]
fn a_runner_limited_to_repositories_leases_only_theirs() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("runner-scope");
    let url = repo_with_spec(
        &work.path().join("repo"),
        "jobs:\n  a:\n    steps:\n      - image: busybox\n        commands: [true]\n",
    );
    for name in ["team/app", "other/sec"] {
        let r = post(
            &server,
            &admin,
            "/api/v1/repos",
            json!({"name": name, "url": url}),
        );
        assert_eq!(r.status, 201, "{}", r.describe());
    }
    let register = |registration: &str, name: &str| {
        let r = post(
            &server,
            &Auth::None,
            "/api/v1/runner/register",
            json!({"registration_token": registration, "name": name, "labels": [], "capacity": 2}),
        );
        assert_eq!(r.status, 201, "{}", r.describe());
        Auth::Bearer(r.json()["token"].as_str().unwrap().to_owned())
    };
    let r = post(
        &server,
        &admin,
        "/api/v1/runner-tokens",
        json!({"repositories": ["team/*"]}),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let runner = register(r.json()["token"].as_str().unwrap(), "team-runner");

    let other = run(&server, "other/sec");
    let r = post(
        &server,
        &runner,
        "/api/v1/runner/lease",
        json!({"free": 2, "wait_ms": 1_000}),
    );
    assert_eq!(
        r.status,
        204,
        "other/sec's job is not for it: {}",
        r.describe()
    );
    let queue = server.get("/api/v1/queue", &admin).json();
    let waiting = queue
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["pipeline_id"] == other["id"])
        .unwrap();
    assert_eq!(
        waiting["runners"][0]["why_not"], "takes only jobs of team/*",
        "{queue}"
    );
    let runners = server.get("/api/v1/runners", &admin).json();
    assert_eq!(runners[0]["repositories"], json!(["team/*"]), "{runners}");

    let own = run(&server, "team/app");
    let leased = lease(&server, &runner).json();
    assert_eq!(leased["context"]["repo"], "team/app");
    assert_eq!(leased["context"]["pipeline_id"], own["id"]);
    // A shared runner still takes other/sec's.
    let shared = Auth::Bearer(server.register_runner("shared"));
    let leased = lease(&server, &shared).json();
    assert_eq!(leased["context"]["repo"], "other/sec");

    // Bad limits are refused; the CLI makes limited tokens too.
    for body in [
        json!({"repositories": []}),
        json!({"repositories": ["team*"]}),
    ] {
        let r = post(&server, &admin, "/api/v1/runner-tokens", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.describe());
    }
    let (ok, registration) = slipway(
        &server,
        &[
            "runner-token",
            "create",
            "--repo",
            "team/app",
            "--repo",
            "shop/*",
        ],
    );
    assert!(ok, "{registration}");
    register(registration.trim(), "cli-runner");
    let runners = server.get("/api/v1/runners", &admin).json();
    let cli = runners
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "cli-runner")
        .unwrap();
    assert_eq!(
        cli["repositories"],
        json!(["team/app", "shop/*"]),
        "{runners}"
    );
}

/// The attack: a runner holding `team/app`'s lease reports an image of
/// `other/private` (or one its step does not build) as this pipeline's, so
/// the pipeline page lists and links another repository's image. Only the
/// repository a build step of the job pushes to is recorded.
#[test]
fn a_job_reports_only_images_its_build_steps_push() {
    let server = TestServer::start();
    let work = scratch_dir("report-image");
    let spec = "jobs:
  image:
    steps:
      - name: test
        image: busybox
        commands: [true]
      - name: build
        build:
          image: team/app/web
";
    let url = repo_with_spec(&work.path().join("repo"), spec);
    let pipeline = add_and_run(&server, "team/app", &url);
    let runner = Auth::Bearer(server.register_runner("r"));
    let lease = lease(&server, &runner).json();
    let job = lease["job_id"].as_i64().unwrap();
    let attempt = lease["attempt"].as_i64().unwrap();
    let token = lease["lease_token"].as_str().unwrap().to_owned();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let report = |step: i64, repository: &str| {
        request_as(
            server.url(),
            &runner,
            Method::POST,
            &format!("/api/v1/runner/jobs/{job}/images"),
            &[
                ("content-type", "application/json"),
                ("x-slipway-lease", &token),
            ],
            Some(
                serde_json::to_vec(&json!({
                    "attempt": attempt, "step": step, "repository": repository,
                    "tags": ["v1"], "digest": digest,
                }))
                .unwrap(),
            ),
        )
    };
    for (step, repository) in [
        (1, "other/private"),
        (1, "team/app"),
        (0, "team/app/web"),
        (7, "team/app/web"),
    ] {
        let r = report(step, repository);
        assert_eq!(r.status, 403, "step {step} {repository}: {}", r.describe());
        assert_eq!(r.json()["error"]["code"], "forbidden", "{}", r.describe());
    }
    let r = report(1, "team/app/web");
    assert_eq!(r.status, 204, "{}", r.describe());

    let shown = server.get(
        &format!("/api/v1/pipelines/{}", pipeline["id"]),
        &server.admin_auth(),
    );
    let images: Vec<String> = shown.json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["repository"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(images, ["team/app/web"]);
}
