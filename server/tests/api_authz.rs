//! Every REST API route, called anonymously, with a runner's token, as a
//! viewer (read-only role) and as an admin: anonymous callers and runners get
//! 401, a viewer reads but cannot change anything (403), an admin may do
//! everything. The runner protocol takes runner tokens and refuses user
//! credentials, webhooks need the repository's signature, and the OpenAPI
//! document is public. The routes called here, the routes documented in
//! openapi.json and the routes in the router's source are the same set: a
//! route added to one and not the others fails a test. API tokens limited to
//! some repositories, of every scope, go through every route too: their own
//! repository as far as the scope allows, nothing of another repository,
//! nothing that is not about one repository, and lists cut to what they reach.

mod common;

use std::collections::BTreeSet;

use common::deploy_peers::{deploy_to_dev, deployments, join_local_node, Deployed};
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

/// A path as the router and openapi.json spell it, below `/api/v1` and
/// without the query, with every parameter (a number here, `{name}` there,
/// an instance's name after `instances/`) as `{}`:
/// `/api/v1/jobs/1/steps/0/log?q=x` and `/jobs/{job}/steps/{position}/log`
/// are both `/jobs/{}/steps/{}/log`, `/api/v1/instances/i1-dev/log` is
/// `/instances/{}/log`.
fn template(path: &str) -> String {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path
        .strip_prefix("/api/v1")
        .unwrap_or(path)
        .split('/')
        .collect();
    segments
        .iter()
        .enumerate()
        .map(|(i, seg)| {
            let number = !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit());
            let instance = i > 0 && segments[i - 1] == "instances";
            if number || instance || (seg.starts_with('{') && seg.ends_with('}')) {
                "{}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every (method, templated path) openapi.json documents.
fn documented_routes(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), template(path)));
        }
    }
    routes
}

/// A user-facing route: (method, path, body, viewer's status, admin's status).
type Row = (Method, String, Option<serde_json::Value>, u16, u16);

/// Who calls the routes.
struct Callers {
    anonymous: Auth,
    /// A registered runner's token: good for the runner protocol only.
    runner: Auth,
    viewer: Auth,
    admin: Auth,
}

/// Call each row's route as every caller, in turn: anonymous callers and
/// runners get 401, the viewer and the admin what the row says.
fn check_user_routes(
    server: &TestServer,
    callers: &Callers,
    rows: &[Row],
    covered: &mut BTreeSet<(String, String)>,
) {
    for (method, path, body, as_viewer, as_admin) in rows {
        covered.insert((method.to_string(), template(path)));
        let expected = [
            ("anonymous", &callers.anonymous, 401),
            ("runner", &callers.runner, 401),
            ("viewer", &callers.viewer, *as_viewer),
            ("admin", &callers.admin, *as_admin),
        ];
        for (who, auth, status) in expected {
            assert_eq!(
                call(server, auth, method.clone(), path, body.clone()),
                status,
                "{who} {method} {path}"
            );
        }
    }
}

/// A git repository under `dir` whose `.slipway.yml` has one job with one
/// step; its path, to register it with.
fn one_job_repo(dir: &std::path::Path) -> String {
    let repo_dir = dir.join("repo");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let git = |args: &[&str]| git(&repo_dir, args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        repo_dir.join(".slipway.yml"),
        "jobs:\n  a:\n    steps:\n      - image: busybox\n        commands: [true]\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    repo_dir.to_str().unwrap().to_owned()
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
    // A registered runner, which later leases a job.
    let runner_token = server.register_runner("r");
    let callers = Callers {
        anonymous: Auth::None,
        runner: Auth::Bearer(runner_token),
        viewer: Auth::Basic("vera".into(), "viewer-password-1".into()),
        admin,
    };
    let everyone = [
        ("anonymous", &callers.anonymous),
        ("runner", &callers.runner),
        ("viewer", &callers.viewer),
        ("admin", &callers.admin),
    ];
    // Each (method, templated path) called below, to compare with openapi.json.
    let mut covered = BTreeSet::new();

    // A repository with one pipeline to read, cancel and take logs from.
    let work = scratch_dir("authz");
    let url = one_job_repo(work.path());
    let url = url.as_str();

    // In an order where the admin's calls set up what later rows need.
    let routes: Vec<Row> = vec![
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
            "/api/v1/repos/limits".into(),
            Some(json!({"repo": "team/app", "max_concurrent": 2})),
            403,
            204,
        ),
        (
            Method::POST,
            "/api/v1/repos/pull-allow".into(),
            Some(json!({"repo": "team/app", "patterns": ["library/*"]})),
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
        // After the cancel, so the step has ended and the stream ends too.
        (
            Method::GET,
            "/api/v1/jobs/1/steps/0/log/stream".into(),
            None,
            200,
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
    check_user_routes(&server, &callers, &routes, &mut covered);

    // A viewer's own token cannot reach beyond the role either.
    let r = request_as(
        server.url(),
        &callers.viewer,
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

    // The runner protocol takes runner tokens only: users, even admins, are
    // refused. The runner holds the re-run pipeline's job, so its own calls
    // are answered, in an order that ends with the job finished.
    let r = request_as(
        server.url(),
        &callers.runner,
        Method::POST,
        "/api/v1/runner/lease",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&json!({"free": 1, "wait_ms": 10_000})).unwrap()),
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let lease = r.json();
    let job = lease["job_id"].as_i64().unwrap();
    let attempt = lease["attempt"].as_i64().unwrap();
    let lease_token = lease["lease_token"].as_str().unwrap().to_owned();
    // (method, path, body, the runner's status)
    let runner_routes: Vec<(Method, String, Option<serde_json::Value>, u16)> = vec![
        // Nothing else is queued.
        (
            Method::POST,
            "/api/v1/runner/lease".into(),
            Some(json!({"free": 1, "wait_ms": 0})),
            204,
        ),
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{job}/credentials?attempt={attempt}"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/heartbeat"),
            Some(json!({"attempt": attempt})),
            200,
        ),
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{job}/source?attempt={attempt}"),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/steps/0"),
            Some(json!({"attempt": attempt, "status": "running", "exit_code": null})),
            204,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/steps/0/log?attempt={attempt}&offset=0"),
            None,
            200,
        ),
        // The server keeps the bytes as they come; these are not a tar.
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/artifacts?attempt={attempt}"),
            Some(json!("artifacts")),
            204,
        ),
        // The job needs no other job: the runner is let in, and told so.
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{job}/artifacts/1?attempt={attempt}"),
            None,
            404,
        ),
        // Let in, and refused: the job's one step builds nothing (a report
        // that is recorded: job_credentials::a_job_reports_only_images_its_build_steps_push).
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/images"),
            Some(
                json!({"attempt": attempt, "step": 0, "repository": "demo", "tags": [], "digest": format!("sha256:{}", "a".repeat(64))}),
            ),
            403,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{job}/finish"),
            Some(json!({"attempt": attempt, "status": "success", "reason": null})),
            204,
        ),
    ];
    for (method, path, body, as_runner) in &runner_routes {
        covered.insert((method.to_string(), template(path)));
        for (who, auth) in [
            ("anonymous", &callers.anonymous),
            ("viewer", &callers.viewer),
            ("admin", &callers.admin),
        ] {
            assert_eq!(
                call(&server, auth, method.clone(), path, body.clone()),
                401,
                "{who} {method} {path}"
            );
        }
        // The runner's calls about its job carry the lease's token.
        let lease_header: &[(&str, &str)] = if path.contains("/runner/jobs/") {
            &[("x-slipway-lease", lease_token.as_str())]
        } else {
            &[]
        };
        let headers = [&[("content-type", "application/json")], lease_header].concat();
        let r = request_as(
            server.url(),
            &callers.runner,
            method.clone(),
            path,
            &headers,
            body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
        );
        assert_eq!(r.status, *as_runner, "runner {method} {path}");
    }
    // Registering needs a registration token, not a user or a runner.
    covered.insert(("POST".into(), template("/api/v1/runner/register")));
    let register =
        json!({"registration_token": "srt_nope", "name": "r", "labels": [], "capacity": 1});
    for (who, auth) in everyone {
        assert_eq!(
            call(
                &server,
                auth,
                Method::POST,
                "/api/v1/runner/register",
                Some(register.clone())
            ),
            401,
            "{who} POST /api/v1/runner/register"
        );
    }

    // What the runner left, for users to read.
    let after_the_runner: Vec<Row> = vec![(
        Method::GET,
        format!("/api/v1/jobs/{job}/artifacts"),
        None,
        200,
        200,
    )];
    check_user_routes(&server, &callers, &after_the_runner, &mut covered);

    // Deploys: a repository whose pipeline (run by the runner, now idle)
    // pushed its image, running in dev on a node that joined cluster local.
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let dev = deploy_to_dev(
        &server,
        &callers.runner,
        &node,
        "team/web",
        &work.path().join("web"),
    );
    let deploy_routes: Vec<Row> = vec![
        (Method::GET, "/api/v1/clusters".into(), None, 403, 200),
        (
            Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({"name": "edge"})),
            403,
            201,
        ),
        // Only an admin gets as far as the kubeconfig (here refused unread).
        (
            Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({"name": "edge-k8s", "kind": "kubernetes", "kubeconfig": "not: [yaml"})),
            403,
            400,
        ),
        (
            Method::GET,
            "/api/v1/environments?repo=team/web".into(),
            None,
            200,
            200,
        ),
        (
            Method::POST,
            "/api/v1/environments/cluster".into(),
            Some(json!({"repo": "team/web", "env": "staging", "cluster": "edge"})),
            403,
            204,
        ),
        (
            Method::POST,
            "/api/v1/environments/secrets".into(),
            Some(json!({"repo": "team/web", "env": "dev", "name": "DB", "value": "v"})),
            403,
            204,
        ),
        (
            Method::GET,
            "/api/v1/environments/secrets?repo=team/web&env=dev".into(),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            "/api/v1/deployments?repo=team/web&env=dev&limit=10".into(),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            format!("/api/v1/deployments/{}", dev.deployment),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            format!("/api/v1/deployments/{}/events", dev.deployment),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            format!("/api/v1/instances/{}/log?from=0", dev.instance),
            None,
            200,
            200,
        ),
        (
            Method::POST,
            "/api/v1/deployments/promote".into(),
            Some(json!({"repo": "team/web", "to": "staging"})),
            403,
            202,
        ),
        (
            Method::POST,
            "/api/v1/deployments/rollback".into(),
            Some(json!({"repo": "team/web", "env": "dev", "to": dev.digest})),
            403,
            202,
        ),
    ];
    check_user_routes(&server, &callers, &deploy_routes, &mut covered);

    // Release gates: staging protected by one approval (the admin may
    // approve his own request here), a promotion awaiting it, approved; a
    // second one, rejected; the audit of it all.
    let gate_routes: Vec<Row> = vec![
        (
            Method::PUT,
            "/api/v1/environments/protection".into(),
            Some(json!({"repo": "team/web", "env": "staging", "policy": {
                "required_approvals": 1, "separation_of_duties": false
            }})),
            403,
            200,
        ),
        (
            Method::GET,
            "/api/v1/environments/protection?repo=team/web&env=staging".into(),
            None,
            200,
            200,
        ),
    ];
    check_user_routes(&server, &callers, &gate_routes, &mut covered);
    // The rollback row's deployment in dev ends at once (the same instances
    // serve it): wait for it, so dev is healthy to promote from. Deadline
    // 30 s; action: fail with the history.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let history = deployments(&server, "team/web");
        let busy = history.iter().any(|d| {
            d["environment"] == "dev" && (d["state"] == "pending" || d["state"] == "progressing")
        });
        if !busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dev stays busy: {history:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A rejection first: the approval after it counts for the digest and
    // would let a later request of it through at once. An abort of one
    // awaiting approval ends it.
    for verb in ["reject", "abort", "approve"] {
        let r = request_as(
            server.url(),
            &callers.admin,
            Method::POST,
            "/api/v1/deployments/promote",
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&json!({"repo": "team/web", "to": "staging"})).unwrap()),
        );
        assert_eq!(r.status, 202, "{}", r.describe());
        let awaiting = r.json()["deployment"].clone();
        assert_eq!(awaiting["state"], "awaiting_approval", "{awaiting}");
        let id = awaiting["id"].as_i64().unwrap();
        let path = match verb {
            "reject" => format!("/api/v1/deployments/{id}/reject"),
            "abort" => format!("/api/v1/deployments/{id}/abort"),
            _ => format!("/api/v1/deployments/{id}/approve"),
        };
        let body = match verb {
            "abort" => json!({"reason": "checked"}),
            _ => json!({"comment": "checked"}),
        };
        let decision: Vec<Row> = vec![(Method::POST, path, Some(body), 403, 200)];
        check_user_routes(&server, &callers, &decision, &mut covered);
    }
    let audit_routes: Vec<Row> = vec![
        (
            Method::GET,
            "/api/v1/audit?repo=team/web&env=staging&after=0&limit=10&format=jsonl".into(),
            None,
            200,
            200,
        ),
        (Method::GET, "/api/v1/audit".into(), None, 403, 200),
        (
            Method::GET,
            "/api/v1/trace?repo=team/web&env=dev".into(),
            None,
            200,
            200,
        ),
        (
            Method::GET,
            format!("/api/v1/instances/{}/trace", dev.instance),
            None,
            200,
            200,
        ),
    ];
    check_user_routes(&server, &callers, &audit_routes, &mut covered);
    // A node's token is for the node protocol only.
    for (method, path, body, _, _) in &deploy_routes {
        assert_eq!(
            call(&server, &node, method.clone(), path, body.clone()),
            401,
            "node {method} {path}"
        );
    }

    // The node protocol takes node tokens only: users, even admins, and
    // runners are refused. Joining takes a join token in its body.
    // (method, path, body, the node's status)
    let node_routes: Vec<(Method, String, Option<serde_json::Value>, u16)> = vec![
        (
            Method::POST,
            "/api/v1/node/join".into(),
            Some(json!({
                "join_token": "slj_nope", "name": "n2",
                "router_host": "127.0.0.1", "router_ports": [21000, 21100]
            })),
            401,
        ),
        (
            Method::GET,
            "/api/v1/node/desired?after=0&wait=0".into(),
            None,
            200,
        ),
        (
            Method::POST,
            "/api/v1/node/status".into(),
            Some(json!({"revision": 0, "instances": []})),
            204,
        ),
        (
            Method::POST,
            format!("/api/v1/node/instances/{}/log?offset=0", dev.instance),
            Some(json!("listening on 8080")),
            200,
        ),
    ];
    for (method, path, body, as_node) in &node_routes {
        covered.insert((method.to_string(), template(path)));
        for (who, auth) in everyone {
            assert_eq!(
                call(&server, auth, method.clone(), path, body.clone()),
                401,
                "{who} {method} {path}"
            );
        }
        assert_eq!(
            call(&server, &node, method.clone(), path, body.clone()),
            *as_node,
            "node {method} {path}"
        );
    }

    // Webhooks authenticate by signature: credentials alone are not enough.
    covered.insert(("POST".into(), template("/api/v1/webhooks/1")));
    for (who, auth) in everyone {
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
        assert_eq!(r.status, 401, "{who} POST /api/v1/webhooks/1");
    }

    // Deliberately public: the API's description, for clients and tools.
    covered.insert(("GET".into(), template("/api/v1/openapi.json")));
    for (who, auth) in everyone {
        assert_eq!(
            call(&server, auth, Method::GET, "/api/v1/openapi.json", None),
            200,
            "{who} GET /api/v1/openapi.json"
        );
    }

    // Every documented route was called above, and nothing undocumented
    // (the other test checks the router has no route openapi.json lacks).
    let doc = request_as(
        server.url(),
        &Auth::None,
        Method::GET,
        "/api/v1/openapi.json",
        &[],
        None,
    )
    .json();
    let documented = documented_routes(&doc);
    let untested: Vec<_> = documented.difference(&covered).collect();
    assert!(
        untested.is_empty(),
        "routes in openapi.json that this test does not call: {untested:?}"
    );
    let undocumented: Vec<_> = covered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes this test calls that openapi.json lacks: {undocumented:?}"
    );
}

/// What a route asks of a credential, beyond reaching the repository.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// Any credential (reading).
    Read,
    /// The push scope (starting, cancelling, re-running pipelines).
    Push,
    /// The admin scope (repository settings and secrets).
    Admin,
}

/// Which repository a route is about, for a token limited to `team/*`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum About {
    /// `team/…`: allowed when the scope is enough.
    Own,
    /// `other/…`: refused whatever the scope.
    Other,
    /// `other/…` by its id or name: not found (404), so that a token does
    /// not learn what another repository has.
    OtherUnseen,
    /// Things of every repository, filtered (checked after the table).
    List,
    /// Not one repository's (users, tokens, runners, GC): refused.
    Server,
    /// The credential itself (`whoami`).
    Caller,
}

/// (method, path, body, about, need, status when allowed)
type LimitedRow = (Method, String, Option<serde_json::Value>, About, Need, u16);

/// API tokens limited to `team/*`, one per scope, on every route: allowed on
/// `team/app` as far as their scope goes, refused (403, in the API's error
/// envelope) on `other/sec` and on routes that are not about one repository,
/// and lists show only `team/` things. The attack this closes: a push token
/// limited to `a/*` started a pipeline of `other/sec` (which then got
/// `other/sec`'s secrets), and an admin token limited to `a/*` created users
/// and runner registration tokens.
#[test]
fn repository_limited_tokens_reach_only_their_repositories() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("authz-limited");
    let url = one_job_repo(work.path());
    let post = |auth: &Auth, path: &str, body: serde_json::Value| {
        let r = request_as(
            server.url(),
            auth,
            Method::POST,
            path,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&body).unwrap()),
        );
        assert!(r.status < 300, "{}", r.describe());
        r.json()
    };
    // Two repositories, each with a queued pipeline (no runner takes them).
    post(
        &admin,
        "/api/v1/repos",
        json!({"name": "team/app", "url": url}),
    );
    post(
        &admin,
        "/api/v1/repos",
        json!({"name": "other/sec", "url": url}),
    );
    // Two repositories running in dev (a runner and a node that only
    // report), before any other job is queued.
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let own_web = deploy_to_dev(&server, &runner, &node, "team/web", &work.path().join("a"));
    let other_web = deploy_to_dev(&server, &runner, &node, "other/web", &work.path().join("b"));
    let own = post(&admin, "/api/v1/pipelines", json!({"repo": "team/app"}));
    let other = post(&admin, "/api/v1/pipelines", json!({"repo": "other/sec"}));
    let own_pipeline = own["id"].as_i64().unwrap();
    let own_job = own["jobs"][0]["id"].as_i64().unwrap();
    let other_pipeline = other["id"].as_i64().unwrap();
    let other_job = other["jobs"][0]["id"].as_i64().unwrap();

    let tokens: Vec<(&str, Auth)> = ["pull", "push", "delete", "admin"]
        .into_iter()
        .map(|scope| (scope, Auth::Bearer(server.create_token(&[scope], "team/*"))))
        .collect();
    let allowed = |scope: &str, need: Need| match need {
        Need::Read => true,
        Need::Push => scope == "push",
        Need::Admin => scope == "admin",
    };

    // The same route about team/app and about other/sec.
    let both = |method: Method,
                path: &dyn Fn(&str, i64, i64) -> String,
                body: &dyn Fn(&str) -> Option<serde_json::Value>,
                need: Need,
                ok: u16|
     -> [LimitedRow; 2] {
        [
            (
                method.clone(),
                path("team/app", own_pipeline, own_job),
                body("team/app"),
                About::Own,
                need,
                ok,
            ),
            (
                method,
                path("other/sec", other_pipeline, other_job),
                body("other/sec"),
                About::Other,
                need,
                ok,
            ),
        ]
    };
    let no_body = |_: &str| None;
    let mut rows: Vec<LimitedRow> = vec![
        (
            Method::GET,
            "/api/v1/whoami".into(),
            None,
            About::Caller,
            Need::Read,
            200,
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({"username": "x2", "password": "password-123"})),
            About::Server,
            Need::Admin,
            201,
        ),
        (
            Method::POST,
            "/api/v1/tokens".into(),
            Some(json!({"name": "t", "scopes": ["pull"], "repository": "team/*"})),
            About::Server,
            Need::Read,
            201,
        ),
        (
            Method::POST,
            "/api/v1/registry/gc?dry_run=true".into(),
            None,
            About::Server,
            Need::Admin,
            200,
        ),
        (
            Method::POST,
            "/api/v1/runner-tokens".into(),
            None,
            About::Server,
            Need::Admin,
            201,
        ),
        (
            Method::GET,
            "/api/v1/runners".into(),
            None,
            About::Server,
            Need::Read,
            200,
        ),
        (
            Method::GET,
            "/api/v1/repos".into(),
            None,
            About::List,
            Need::Read,
            200,
        ),
        (
            Method::GET,
            "/api/v1/pipelines?limit=50".into(),
            None,
            About::List,
            Need::Read,
            200,
        ),
        (
            Method::GET,
            "/api/v1/queue".into(),
            None,
            About::List,
            Need::Read,
            200,
        ),
    ];
    // Settings that make the server fetch or call a URL the caller chooses,
    // with its own network position and credentials: not for tokens limited
    // to repositories, even about their own.
    rows.extend([
        (
            Method::POST,
            "/api/v1/repos".into(),
            Some(json!({"name": "team/app-2", "url": url})),
            About::Server,
            Need::Admin,
            201,
        ),
        (
            Method::POST,
            "/api/v1/repos/forge".into(),
            Some(
                json!({"repo": "team/app", "kind": "github", "api_url": "http://127.0.0.1:9/", "repository": "o/r"}),
            ),
            About::Server,
            Need::Admin,
            204,
        ),
        (
            Method::POST,
            "/api/v1/repos/notify".into(),
            Some(json!({"repo": "team/app", "url": "http://127.0.0.1:9/"})),
            About::Server,
            Need::Admin,
            204,
        ),
    ]);
    rows.extend(both(
        Method::POST,
        &|_, _, _| "/api/v1/repos/limits".into(),
        &|repo| Some(json!({"repo": repo, "max_concurrent": 3})),
        Need::Admin,
        204,
    ));
    rows.extend(both(
        Method::POST,
        &|_, _, _| "/api/v1/repos/pull-allow".into(),
        &|repo| Some(json!({"repo": repo, "patterns": ["library/*"]})),
        Need::Admin,
        204,
    ));
    rows.extend(both(
        Method::POST,
        &|_, _, _| "/api/v1/secrets".into(),
        &|repo| Some(json!({"repo": repo, "name": "TOKEN", "value": "v"})),
        Need::Admin,
        204,
    ));
    rows.extend(both(
        Method::GET,
        &|repo, _, _| format!("/api/v1/secrets?repo={repo}"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::DELETE,
        &|repo, _, _| format!("/api/v1/secrets?repo={repo}&name=TOKEN"),
        &no_body,
        Need::Admin,
        204,
    ));
    rows.extend(both(
        Method::GET,
        &|repo, _, _| format!("/api/v1/pipelines?repo={repo}"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::POST,
        &|_, _, _| "/api/v1/pipelines".into(),
        &|repo| Some(json!({"repo": repo})),
        Need::Push,
        201,
    ));
    rows.extend(both(
        Method::GET,
        &|_, p, _| format!("/api/v1/pipelines/{p}"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::GET,
        &|_, _, j| format!("/api/v1/jobs/{j}/steps/0/log"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::GET,
        &|_, _, j| format!("/api/v1/jobs/{j}/steps/0/log/search?q=x"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::POST,
        &|_, p, _| format!("/api/v1/pipelines/{p}/cancel"),
        &no_body,
        Need::Push,
        200,
    ));
    // After the cancel, so team/app's step has ended and its stream ends.
    rows.extend(both(
        Method::GET,
        &|_, _, j| format!("/api/v1/jobs/{j}/steps/0/log/stream"),
        &no_body,
        Need::Read,
        200,
    ));
    rows.extend(both(
        Method::POST,
        &|_, p, _| format!("/api/v1/pipelines/{p}/rerun"),
        &no_body,
        Need::Push,
        201,
    ));
    // Allowed in: the job left no artifacts, and the answer says so.
    rows.extend(both(
        Method::GET,
        &|_, _, j| format!("/api/v1/jobs/{j}/artifacts"),
        &no_body,
        Need::Read,
        404,
    ));

    // Deploys: clusters and where an environment runs are the server's;
    // the rest is about one repository.
    rows.extend([
        (
            Method::GET,
            "/api/v1/clusters".into(),
            None,
            About::Server,
            Need::Admin,
            200,
        ),
        (
            Method::POST,
            "/api/v1/clusters".into(),
            Some(json!({"name": "edge"})),
            About::Server,
            Need::Admin,
            201,
        ),
        (
            Method::POST,
            "/api/v1/environments/cluster".into(),
            Some(json!({"repo": "team/web", "env": "staging", "cluster": "local"})),
            About::Server,
            Need::Admin,
            204,
        ),
        (
            Method::GET,
            "/api/v1/audit".into(),
            None,
            About::Server,
            Need::Admin,
            200,
        ),
    ]);
    let deploy_rows = |d: &Deployed, about: About| -> Vec<LimitedRow> {
        let repo = d.repo.as_str();
        // A deployment or an instance of another repository is not found.
        let by_id = if about == About::Own {
            About::Own
        } else {
            About::OtherUnseen
        };
        vec![
            (
                Method::GET,
                format!("/api/v1/environments?repo={repo}"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::POST,
                "/api/v1/environments/secrets".into(),
                Some(json!({"repo": repo, "env": "dev", "name": "DB", "value": "v"})),
                about,
                Need::Admin,
                204,
            ),
            (
                Method::GET,
                format!("/api/v1/environments/secrets?repo={repo}&env=dev"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/deployments?repo={repo}&env=dev"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/deployments/{}", d.deployment),
                None,
                by_id,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/deployments/{}/events", d.deployment),
                None,
                by_id,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/instances/{}/log", d.instance),
                None,
                by_id,
                Need::Read,
                200,
            ),
            (
                Method::POST,
                "/api/v1/deployments/promote".into(),
                Some(json!({"repo": repo, "to": "staging"})),
                about,
                Need::Push,
                202,
            ),
            (
                Method::POST,
                "/api/v1/deployments/rollback".into(),
                Some(json!({"repo": repo, "env": "dev", "to": d.digest})),
                about,
                Need::Push,
                202,
            ),
            (
                Method::GET,
                format!("/api/v1/environments/protection?repo={repo}&env=staging"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::PUT,
                "/api/v1/environments/protection".into(),
                Some(json!({"repo": repo, "env": "staging", "policy": {}})),
                about,
                Need::Admin,
                200,
            ),
            // Allowed in: dev's deployment awaits no approval, and the
            // answer says so.
            (
                Method::POST,
                format!("/api/v1/deployments/{}/approve", d.deployment),
                None,
                by_id,
                Need::Push,
                409,
            ),
            (
                Method::POST,
                format!("/api/v1/deployments/{}/reject", d.deployment),
                Some(json!({"comment": "no"})),
                by_id,
                Need::Push,
                409,
            ),
            // Allowed in: dev's deployment has ended, and the answer says so.
            (
                Method::POST,
                format!("/api/v1/deployments/{}/abort", d.deployment),
                None,
                by_id,
                Need::Push,
                409,
            ),
            (
                Method::GET,
                format!("/api/v1/audit?repo={repo}"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/trace?repo={repo}&env=dev"),
                None,
                about,
                Need::Read,
                200,
            ),
            (
                Method::GET,
                format!("/api/v1/instances/{}/trace", d.instance),
                None,
                by_id,
                Need::Read,
                200,
            ),
        ]
    };
    rows.extend(deploy_rows(&own_web, About::Own));
    rows.extend(deploy_rows(&other_web, About::Other));

    let mut covered = BTreeSet::new();
    for (method, path, body, about, need, ok) in &rows {
        covered.insert((method.to_string(), template(path)));
        for (scope, auth) in &tokens {
            let allow = match about {
                About::Own | About::List | About::Caller => allowed(scope, *need),
                About::Other | About::OtherUnseen | About::Server => false,
            };
            let r = request_as(
                server.url(),
                auth,
                method.clone(),
                path,
                &[("content-type", "application/json")],
                body.as_ref().map(|b| serde_json::to_vec(b).unwrap()),
            );
            let (want, code) = match (allow, about) {
                (true, _) => (*ok, ""),
                (false, About::OtherUnseen) => (404, "not_found"),
                (false, _) => (403, "forbidden"),
            };
            assert_eq!(
                r.status,
                want,
                "{scope} token limited to team/*: {method} {path} ({about:?}): {}",
                r.body_text()
            );
            if !allow {
                assert_eq!(
                    r.json()["error"]["code"],
                    code,
                    "{scope}: {method} {path}: {}",
                    r.body_text()
                );
            }
        }
    }

    // Lists show team/ things only, though other/sec has some (as the
    // unlimited admin sees).
    let names = |auth: &Auth, path: &str, field: &str| -> Vec<String> {
        let r = request_as(server.url(), auth, Method::GET, path, &[], None);
        assert_eq!(r.status, 200, "{}", r.describe());
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v[field].as_str().unwrap().to_owned())
            .collect()
    };
    for (path, field) in [
        ("/api/v1/repos", "name"),
        ("/api/v1/pipelines?limit=50", "repo"),
        ("/api/v1/queue", "repo"),
    ] {
        let everything = names(&admin, path, field);
        assert!(
            everything.iter().any(|n| n.starts_with("other/")),
            "{path}: the admin sees other/sec: {everything:?}"
        );
        for (scope, auth) in &tokens {
            let seen = names(auth, path, field);
            assert!(!seen.is_empty(), "{scope} {path}: team/app is listed");
            assert!(
                seen.iter().all(|n| n.starts_with("team/")),
                "{scope} {path} lists only team/: {seen:?}"
            );
        }
    }

    // The runner protocol takes runner tokens only; webhooks take a
    // signature; the API's description is public.
    let elsewhere: Vec<(Method, String, u16)> = vec![
        (Method::POST, "/api/v1/runner/register".into(), 401),
        (Method::POST, "/api/v1/runner/lease".into(), 401),
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{own_job}/credentials?attempt=1"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/heartbeat"),
            401,
        ),
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{own_job}/source?attempt=1"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/steps/0"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/steps/0/log?attempt=1&offset=0"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/artifacts?attempt=1"),
            401,
        ),
        (
            Method::GET,
            format!("/api/v1/runner/jobs/{own_job}/artifacts/{other_job}?attempt=1"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/images"),
            401,
        ),
        (
            Method::POST,
            format!("/api/v1/runner/jobs/{own_job}/finish"),
            401,
        ),
        (Method::POST, "/api/v1/webhooks/1".into(), 401),
        (Method::GET, "/api/v1/openapi.json".into(), 200),
        // The node protocol takes node tokens (and join tokens to join).
        (Method::POST, "/api/v1/node/join".into(), 401),
        (Method::GET, "/api/v1/node/desired?wait=0".into(), 401),
        (Method::POST, "/api/v1/node/status".into(), 401),
        (
            Method::POST,
            format!("/api/v1/node/instances/{}/log?offset=0", own_web.instance),
            401,
        ),
    ];
    for (method, path, want) in &elsewhere {
        covered.insert((method.to_string(), template(path)));
        // Registering and joining read their tokens from the body.
        let body = if path.ends_with("/register") {
            serde_json::to_vec(
                &json!({"registration_token": "srt_nope", "name": "r", "labels": [], "capacity": 1}),
            )
            .unwrap()
        } else if path.ends_with("/join") {
            serde_json::to_vec(&json!({
                "join_token": "slj_nope", "name": "n2",
                "router_host": "127.0.0.1", "router_ports": [21000, 21100]
            }))
            .unwrap()
        } else {
            b"{}".to_vec()
        };
        for (scope, auth) in &tokens {
            let r = request_as(
                server.url(),
                auth,
                method.clone(),
                path,
                &[
                    ("content-type", "application/json"),
                    ("x-github-event", "push"),
                ],
                Some(body.clone()),
            );
            assert_eq!(r.status, *want, "{scope}: {method} {path}");
        }
    }

    // Every documented route is in this table, and nothing else.
    let doc = request_as(
        server.url(),
        &Auth::None,
        Method::GET,
        "/api/v1/openapi.json",
        &[],
        None,
    )
    .json();
    let documented = documented_routes(&doc);
    let untested: Vec<_> = documented.difference(&covered).collect();
    assert!(
        untested.is_empty(),
        "routes in openapi.json that the repository-limited table lacks: {untested:?}"
    );
    let undocumented: Vec<_> = covered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes the repository-limited table calls that openapi.json lacks: {undocumented:?}"
    );
}

/// The (method, templated path) of every `.route(...)` in a router's source,
/// below `prefix`.
fn routes_in_source(source: &str, prefix: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (start, _) in source.match_indices(".route(") {
        // The call's text, up to its closing parenthesis.
        let rest = &source[start + ".route(".len()..];
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("`.route(` is closed");
        let call = &rest[..end];
        let path = call.split('"').nth(1).expect("a route's path is a literal");
        let mut methods = 0;
        for method in ["get", "post", "put", "patch", "delete", "head", "options"] {
            let found = call.match_indices(&format!("{method}(")).any(|(i, _)| {
                !call[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if found {
                methods += 1;
                routes.insert((method.to_uppercase(), template(&format!("{prefix}{path}"))));
            }
        }
        assert!(methods > 0, "no method found in .route({call})");
    }
    routes
}

/// The OpenAPI document the server serves lists exactly the routes in the
/// router and the paths tested above, and every path it documents answers (as
/// a real route: 401 anonymously, not 404).
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
    let documented = documented_routes(&doc);
    let documented_paths: BTreeSet<String> = documented.iter().map(|(_, p)| p.clone()).collect();
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api_authz.rs"))
            .unwrap();
    // Every API path this file calls is documented.
    for quoted in source
        .split('"')
        .filter(|s| s.len() > "/api/v1/".len() && s.starts_with("/api/v1/") && !s.contains("..."))
    {
        assert!(
            documented_paths.contains(&template(quoted)),
            "{quoted} is not in openapi.json"
        );
    }
    // Every route in the router's source is documented. The API's router
    // nests the runner protocol's and the node protocol's; a router nested
    // anywhere else needs adding here.
    let api = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
    let read = |file: &str| std::fs::read_to_string(format!("{api}/{file}")).unwrap();
    let top = read("mod.rs");
    assert_eq!(
        top.matches(".nest(").count(),
        2,
        "src/api/mod.rs nests a router this test does not read"
    );
    assert!(top.contains(r#".nest("/runner", runner::router())"#));
    assert!(top.contains(r#".nest("/node", nodes::router())"#));
    let mut routed = routes_in_source(&top, "");
    routed.extend(routes_in_source(&read("runner.rs"), "/runner"));
    routed.extend(routes_in_source(&read("nodes.rs"), "/node"));
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes in src/api that openapi.json lacks: {undocumented:?}"
    );
    // And the other way, so a route spelled in a way this reading misses
    // shows up here rather than going unchecked.
    let unread: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unread.is_empty(),
        "documented routes not found in src/api's source: {unread:?}"
    );
    // Every documented path is routed.
    for (path, methods) in paths {
        let concrete = path
            .replace("{id}", "1")
            .replace("{job}", "1")
            .replace("{position}", "0")
            .replace("{from}", "2")
            .replace("{repo}", "1")
            .replace("{name}", "i1-dev");
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

/// POST a JSON body as `auth`; the status and the error message (if any).
fn post_json(
    server: &TestServer,
    auth: &Auth,
    path: &str,
    body: serde_json::Value,
) -> (u16, String) {
    let r = request_as(
        server.url(),
        auth,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    );
    let message = if r.status >= 400 {
        r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    } else {
        String::new()
    };
    (r.status, message)
}

/// The attack: an admin token limited to `team/*` sets `team/app`'s pull
/// allowlist to `*` (or `other/*`), and `team/app`'s job tokens then pull
/// `other/sec`'s images. A limited admin may allow only what its own pattern
/// covers, what the list already holds, and the default `library/*`.
#[test]
fn limited_admins_allow_pulls_only_within_their_repositories() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("authz-pull-allow");
    let url = one_job_repo(work.path());
    for name in ["team/app", "other/sec"] {
        let (status, message) = post_json(
            &server,
            &admin,
            "/api/v1/repos",
            json!({"name": name, "url": url}),
        );
        assert_eq!(status, 201, "{message}");
    }
    let limited = Auth::Bearer(server.create_token(&["admin"], "team/*"));
    let set = |auth: &Auth, patterns: &[&str]| {
        post_json(
            &server,
            auth,
            "/api/v1/repos/pull-allow",
            json!({"repo": "team/app", "patterns": patterns}),
        )
    };
    let allowlist = || -> Vec<String> {
        let r = request_as(
            server.url(),
            &admin,
            Method::GET,
            "/api/v1/repos",
            &[],
            None,
        );
        let repos = r.json();
        let app = repos
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "team/app")
            .unwrap()
            .clone();
        serde_json::from_value(app["pull_allow"].clone()).unwrap()
    };

    for beyond in [
        &["*"][..],
        &["other/*"],
        &["other/sec"],
        &["library/*", "other/sec"],
        &["team"],
    ] {
        let (status, message) = set(&limited, beyond);
        assert_eq!(status, 403, "{beyond:?}: {message}");
        assert!(
            message.contains("limited to repositories team/*")
                && message.contains(beyond.last().unwrap()),
            "{beyond:?}: {message}"
        );
        assert_eq!(allowlist(), ["library/*"], "{beyond:?} left no trace");
    }
    let (status, message) = set(&limited, &["Bad Name"]);
    assert_eq!(status, 400, "{message}");

    // Within its own pattern, and the default.
    let (status, message) = set(&limited, &["library/*", "team/*", "team/tools"]);
    assert_eq!(status, 204, "{message}");
    assert_eq!(allowlist(), ["library/*", "team/*", "team/tools"]);

    // What an unlimited admin allowed, a limited one may keep (or drop),
    // but not widen.
    let (status, message) = set(&admin, &["shared/base"]);
    assert_eq!(status, 204, "{message}");
    let (status, message) = set(&limited, &["shared/base", "team/x"]);
    assert_eq!(status, 204, "{message}");
    let (status, message) = set(&limited, &["shared/*"]);
    assert_eq!(status, 403, "{message}");
    assert_eq!(allowlist(), ["shared/base", "team/x"]);
    // The unlimited admin may allow anything.
    let (status, message) = set(&admin, &["*"]);
    assert_eq!(status, 204, "{message}");
}

/// The attack: registering a repository whose URL is the server's own mirror
/// of another repository (`<data>/git/<id>.git`), by its path, a `file://`
/// URL, `..`, a symlink or a `.git` file, copies that repository's source.
/// Refused for everyone; and a token limited to repositories may not register
/// a URL at all (the server fetches it with its own credentials).
#[test]
fn repositories_may_not_come_from_the_servers_own_disk() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("authz-repo-url");
    let url = one_job_repo(work.path());
    let (status, message) = post_json(
        &server,
        &admin,
        "/api/v1/repos",
        json!({"name": "other/sec", "url": url}),
    );
    assert_eq!(status, 201, "{message}");
    let mirrors = server.data_dir().join("git");
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "git"))
        .expect("other/sec's mirror");
    let mirror_text = mirror.to_str().unwrap().to_owned();

    let limited = Auth::Bearer(server.create_token(&["admin"], "team/*"));
    let (status, message) = post_json(
        &server,
        &limited,
        "/api/v1/repos",
        json!({"name": "team/x", "url": url}),
    );
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("not limited to repositories"), "{message}");

    let link = work.path().join("link.git");
    std::os::unix::fs::symlink(&mirror, &link).unwrap();
    let gitfile = work.path().join("gitfile");
    std::fs::create_dir_all(&gitfile).unwrap();
    std::fs::write(gitfile.join(".git"), format!("gitdir: {mirror_text}\n")).unwrap();
    let dotdot = format!(
        "{}/../git/{}",
        mirrors.display(),
        mirror.file_name().unwrap().to_str().unwrap()
    );
    for (i, sneaky) in [
        mirror_text.clone(),
        format!("file://{mirror_text}"),
        dotdot,
        link.to_str().unwrap().to_owned(),
        gitfile.to_str().unwrap().to_owned(),
        format!("file://{}", mirror_text.replace('/', "%2F")),
    ]
    .iter()
    .enumerate()
    {
        let (status, message) = post_json(
            &server,
            &admin,
            "/api/v1/repos",
            json!({"name": format!("copy/n{i}"), "url": sneaky}),
        );
        assert_eq!(status, 400, "{sneaky}: {message}");
        assert!(
            message.contains("data directory") || message.contains("must be http"),
            "{sneaky}: {message}"
        );
    }
    let r = request_as(
        server.url(),
        &admin,
        Method::GET,
        "/api/v1/repos",
        &[],
        None,
    );
    let names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["other/sec"], "no copy was registered");
}

/// The attack: a repository with a one-part name `team` pushes and pulls
/// `team` and `team/*`, so registered beside `team/app` its job tokens read
/// and overwrite `team/app`'s images. Registering either beside the other is
/// refused (409), in both orders.
#[test]
fn a_one_part_repository_cannot_share_a_namespace() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("authz-namespace");
    let url = one_job_repo(work.path());
    let add = |name: &str| {
        post_json(
            &server,
            &admin,
            "/api/v1/repos",
            json!({"name": name, "url": url}),
        )
    };
    for (first, second) in [("team/app", "team"), ("solo", "solo/app")] {
        let (status, message) = add(first);
        assert_eq!(status, 201, "{first}: {message}");
        let (status, message) = add(second);
        assert_eq!(status, 409, "{second} beside {first}: {message}");
        assert!(
            message.contains(&format!("{first:?}")) && message.contains("namespace"),
            "{message}"
        );
    }
    // Names that merely start alike are separate namespaces.
    for name in ["teamx", "team-app/x", "solo2/app"] {
        let (status, message) = add(name);
        assert_eq!(status, 201, "{name}: {message}");
    }
}

/// The attack: a token limited to `team/*` reads the queue, where a runner
/// limited to `other/*` explains it "takes only jobs of other/sec, ...",
/// naming repositories the token may not see. Their names are redacted; the
/// unlimited admin still reads them.
#[test]
fn the_queue_names_no_repository_beyond_the_token() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let work = scratch_dir("authz-queue");
    let url = one_job_repo(work.path());
    let (status, message) = post_json(
        &server,
        &admin,
        "/api/v1/repos",
        json!({"name": "team/app", "url": url}),
    );
    assert_eq!(status, 201, "{message}");
    let (status, message) = post_json(
        &server,
        &admin,
        "/api/v1/pipelines",
        json!({"repo": "team/app"}),
    );
    assert_eq!(status, 201, "{message}");
    // A runner for another team's secret project, and one for both.
    for (name, repositories) in [
        ("r-secret", json!(["secret/project", "other/*"])),
        ("r-mixed", json!(["team/tools", "hidden/*"])),
    ] {
        let r = request_as(
            server.url(),
            &admin,
            Method::POST,
            "/api/v1/runner-tokens",
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&json!({"repositories": repositories})).unwrap()),
        );
        assert_eq!(r.status, 201, "{}", r.describe());
        let body = json!({
            "registration_token": r.json()["token"], "name": name, "labels": [], "capacity": 1
        });
        let (status, message) = post_json(&server, &Auth::None, "/api/v1/runner/register", body);
        assert_eq!(status, 201, "{message}");
    }
    let why = |auth: &Auth| -> Vec<String> {
        let r = request_as(server.url(), auth, Method::GET, "/api/v1/queue", &[], None);
        assert_eq!(r.status, 200, "{}", r.describe());
        let queue = r.json();
        let mut out: Vec<String> = queue[0]["runners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}: {}",
                    c["runner"].as_str().unwrap(),
                    c["why_not"].as_str().unwrap()
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        why(&admin),
        [
            "r-mixed: takes only jobs of team/tools, hidden/*",
            "r-secret: takes only jobs of secret/project, other/*",
        ]
    );
    let limited = Auth::Bearer(server.create_token(&["pull"], "team/*"));
    let seen = why(&limited);
    assert_eq!(
        seen,
        [
            "r-mixed: takes only jobs of team/tools, other repositories",
            "r-secret: takes only jobs of other repositories",
        ]
    );
}
