//! A runner and a node that speak their protocols over HTTP and do nothing
//! but report: they bring a repository's first environment to a succeeded
//! deployment without building or running anything, for tests of the API
//! around deploys (authorization, error envelopes). `tests/deploys.rs` runs
//! the real runner and node.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use super::{git, random_hex, request_as, Auth, HttpResponse, TestServer};

/// How long the controller may take to deploy to the node's report.
const DEPLOY_DEADLINE: Duration = Duration::from_secs(60);

/// A JSON request (or none) as `auth`, with extra headers.
pub fn api(
    server: &TestServer,
    auth: &Auth,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let headers = [&[("content-type", "application/json")], headers].concat();
    request_as(
        server.url(),
        auth,
        method,
        path,
        &headers,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
    )
}

/// The spec of a repository whose job builds `image` and deploys it to
/// `dev`, then `staging` (rolling, one replica each).
pub fn deploy_spec(image: &str) -> String {
    format!(
        "jobs:\n  image:\n    steps:\n      - name: build\n        build:\n          image: {image}\n\
         deploy:\n  app: web\n  image: {image}\n  port: 8080\n  health: /healthz\n  replicas: 1\n\
         \x20 environments:\n    dev: {{ strategy: rolling }}\n    staging: {{ strategy: rolling }}\n"
    )
}

/// A git repository in `dir` with [`deploy_spec`] for `image`; its path.
pub fn deploy_repo(dir: &Path, image: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".slipway.yml"), deploy_spec(image)).unwrap();
    std::fs::write(dir.join("Containerfile"), "FROM busybox\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "c"]);
    dir.to_str().unwrap().to_owned()
}

/// Join cluster `local` as node `name` through the protocol (an admin makes
/// the join token); the node's token.
pub fn join_local_node(server: &TestServer, name: &str) -> String {
    let added = add_cluster(server, "local");
    let r = join(server, added["join_token"].as_str().unwrap(), name);
    assert_eq!(r.status, 201, "{}", r.describe());
    r.json()["token"].as_str().unwrap().to_owned()
}

/// `POST /api/v1/clusters` as admin: the cluster and a new join token.
pub fn add_cluster(server: &TestServer, name: &str) -> Value {
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/clusters",
        Some(json!({"name": name})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    r.json()
}

/// `POST /api/v1/node/join` as node `name` with `join_token`.
pub fn join(server: &TestServer, join_token: &str, name: &str) -> HttpResponse {
    api(
        server,
        &Auth::None,
        Method::POST,
        "/api/v1/node/join",
        Some(json!({
            "join_token": join_token, "name": name,
            "router_host": "127.0.0.1", "router_ports": [20000, 20100]
        })),
        &[],
    )
}

/// Run a pipeline of `repo` at its branch's head as `runner`, which leases
/// the job, reports an image of `repo` pushed (a random digest) and
/// succeeds; the digest. No other job may be queued.
pub fn run_pipeline_pushing(server: &TestServer, runner: &Auth, repo: &str) -> String {
    let admin = server.admin_auth();
    let r = api(
        server,
        &admin,
        Method::POST,
        "/api/v1/pipelines",
        Some(json!({"repo": repo})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let job = r.json()["jobs"][0]["id"].as_i64().unwrap();

    // The runner: lease, report the image, succeed.
    let r = api(
        server,
        runner,
        Method::POST,
        "/api/v1/runner/lease",
        Some(json!({"free": 1, "wait_ms": 10_000})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let lease = r.json();
    assert_eq!(
        lease["job_id"], job,
        "the runner leased another job: {lease}"
    );
    let attempt = lease["attempt"].as_i64().unwrap();
    let lease_header = [("x-slipway-lease", lease["lease_token"].as_str().unwrap())];
    let digest = format!("sha256:{}", random_hex(32));
    let reports = [
        (
            format!("/api/v1/runner/jobs/{job}/images"),
            json!({"attempt": attempt, "step": 0, "repository": repo, "tags": [], "digest": digest}),
        ),
        (
            format!("/api/v1/runner/jobs/{job}/steps/0"),
            json!({"attempt": attempt, "status": "success", "exit_code": 0}),
        ),
        (
            format!("/api/v1/runner/jobs/{job}/finish"),
            json!({"attempt": attempt, "status": "success", "reason": null}),
        ),
    ];
    for (path, body) in reports {
        let r = api(
            server,
            runner,
            Method::POST,
            &path,
            Some(body),
            &lease_header,
        );
        assert_eq!(r.status, 204, "{}", r.describe());
    }

    digest
}

/// A repository's first environment running one digest.
pub struct Deployed {
    pub repo: String,
    /// The succeeded deployment to `dev`.
    pub deployment: i64,
    /// Its instance.
    pub instance: String,
    pub digest: String,
}

/// Add repository `repo` (its image is named the same) with [`deploy_spec`],
/// run its pipeline as `runner`, which leases the job, reports the image
/// pushed and succeeds; then act as `node` (joined to cluster `local`),
/// reporting every instance it must run ready, until `dev` runs the digest.
/// No other job may be queued.
pub fn deploy_to_dev(
    server: &TestServer,
    runner: &Auth,
    node: &Auth,
    repo: &str,
    dir: &Path,
) -> Deployed {
    let admin = server.admin_auth();
    let url = deploy_repo(dir, repo);
    let r = api(
        server,
        &admin,
        Method::POST,
        "/api/v1/repos",
        Some(json!({"name": repo, "url": url})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let digest = run_pipeline_pushing(server, runner, repo);

    let mut succeeded = None;
    serve_until(
        server,
        node,
        &format!("dev of {repo} running {digest}"),
        || {
            // Verified too (at once: the spec has no soak nor verify job).
            succeeded = deployments(server, repo).into_iter().find(|d| {
                d["environment"] == "dev"
                    && d["state"] == "succeeded"
                    && d["verification"]["state"] == "verified"
                    && d["digest"] == digest.as_str()
            });
            succeeded.is_some()
        },
    );
    let d = succeeded.expect("found above");
    let envs = api(
        server,
        &admin,
        Method::GET,
        &format!("/api/v1/environments?repo={repo}"),
        None,
        &[],
    )
    .json();
    let instance = envs[0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["goal"] == "run")
        .unwrap_or_else(|| panic!("dev runs no instance: {envs}"))["name"]
        .as_str()
        .unwrap()
        .to_owned();
    Deployed {
        repo: repo.to_owned(),
        deployment: d["id"].as_i64().unwrap(),
        instance,
        digest,
    }
}

/// A repository's deployments, newest first (as admin).
pub fn deployments(server: &TestServer, repo: &str) -> Vec<Value> {
    let r = api(
        server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/deployments?repo={repo}"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json().as_array().unwrap().clone()
}

/// Deployment `id` (as admin).
pub fn deployment(server: &TestServer, id: i64) -> Value {
    let r = api(
        server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/deployments/{id}"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

/// Act as `node` (joined to cluster `local`) until `done()`: each round
/// waits on the node's long-poll (a change), then reports every instance it
/// must run ready and every one it must stop gone. `done` is asked before
/// each round. The wait's deadline is [`DEPLOY_DEADLINE`]; action: fail
/// naming `what`.
pub fn serve_until(server: &TestServer, node: &Auth, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    let mut revision = 0;
    while !done() {
        assert!(
            started.elapsed() < DEPLOY_DEADLINE,
            "{what}: not within {DEPLOY_DEADLINE:?}"
        );
        let r = api(
            server,
            node,
            Method::GET,
            &format!("/api/v1/node/desired?after={revision}&wait=1"),
            None,
            &[],
        );
        match r.status {
            204 => continue,
            200 => {}
            _ => panic!("{}", r.describe()),
        }
        let desired = r.json();
        revision = desired["revision"].as_i64().unwrap();
        let instances: Vec<Value> = desired["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let run = i["desired"] == "run";
                json!({
                    "name": i["name"], "state": if run { "ready" } else { "gone" },
                    "container_id": format!("c-{}", i["name"].as_str().unwrap()),
                    "restarts": 0, "health": if run { "200" } else { "stopped" },
                    "log_tail": [], "in_flight": 0
                })
            })
            .collect();
        let r = api(
            server,
            node,
            Method::POST,
            "/api/v1/node/status",
            Some(json!({"revision": revision, "instances": instances})),
            &[],
        );
        assert_eq!(r.status, 204, "{}", r.describe());
    }
}

/// Serve as `node` until deployment `id` ends; its final view.
pub fn serve_until_ended(server: &TestServer, node: &Auth, id: i64) -> Value {
    let mut last = Value::Null;
    serve_until(server, node, &format!("deployment {id} ending"), || {
        last = deployment(server, id);
        !matches!(
            last["state"].as_str(),
            Some("pending" | "progressing" | "awaiting_approval")
        )
    });
    last
}
