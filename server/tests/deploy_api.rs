//! The deploy routes' refusals, exactly: status, and the whole error
//! envelope (code, message, where). Bad names and digests are 400 naming
//! the field before anything is looked up; unknown repositories,
//! environments, clusters, deployments and instances are 404 naming them;
//! promotions and rollbacks the chain does not allow are 409 with the
//! reason. The second test brings a repository's `dev` to a succeeded
//! deployment with a runner and a node that only report (`common::deploy_peers`).

mod common;

use common::deploy_peers::{
    add_cluster, api, deploy_repo, deploy_spec, deploy_to_dev, join, join_local_node,
    run_pipeline_pushing,
};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// The response is exactly this error: status and envelope.
fn assert_error(r: &HttpResponse, status: u16, error: Value) {
    assert_eq!(r.status, status, "{}", r.describe());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}",
        r.describe()
    );
    assert_eq!(r.json(), json!({ "error": error }), "{}", r.describe());
}

fn label_error(part: &str, field: &str, what: &str, value: &str) -> Value {
    json!({
        "code": "bad_request", "in": part, "field": field,
        "message": format!(
            "{what} {value:?} is not a valid name: lowercase letters, digits and '-' \
             (not first or last), at most 63"
        ),
    })
}

fn not_found(message: &str) -> Value {
    json!({"code": "not_found", "message": message})
}

fn conflict(message: &str) -> Value {
    json!({"code": "conflict", "message": message})
}

const NO_ENV: &str =
    "environments come from the deploy section of a pipeline that succeeded on the default branch";

#[test]
fn bad_names_and_unknown_things_are_named() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let call = |method: Method, path: &str, body: Option<Value>| {
        api(&server, &admin, method, path, body, &[])
    };
    // A repository with a deploy section whose pipeline never ran: it has
    // no environments yet.
    let work = scratch_dir("deploy-api");
    let url = deploy_repo(&work.path().join("repo"), "team/web");
    let r = call(
        Method::POST,
        "/api/v1/repos",
        Some(json!({"name": "team/web", "url": url})),
    );
    assert_eq!(r.status, 201, "{}", r.describe());

    // Names that are not DNS labels, and digests that are not digests.
    for bad in ["Prod", "-dev", "dev-", "a_b", "", &"x".repeat(64)] {
        assert_error(
            &call(Method::POST, "/api/v1/clusters", Some(json!({"name": bad}))),
            400,
            label_error("body", "name", "cluster name", bad),
        );
    }
    assert_error(
        &call(
            Method::POST,
            "/api/v1/environments/cluster",
            Some(json!({"repo": "team/web", "env": "dev", "cluster": "Edge"})),
        ),
        400,
        label_error("body", "cluster", "cluster name", "Edge"),
    );
    assert_error(
        &call(
            Method::POST,
            "/api/v1/deployments/promote",
            Some(json!({"repo": "team/web", "to": "Staging"})),
        ),
        400,
        label_error("body", "to", "environment", "Staging"),
    );
    assert_error(
        &call(
            Method::GET,
            "/api/v1/environments/secrets?repo=team/web&env=a.b",
            None,
        ),
        400,
        label_error("query", "env", "environment", "a.b"),
    );
    let upper = format!("sha256:{}", "A".repeat(64));
    for bad in ["latest", "sha256:abc", upper.as_str()] {
        assert_error(
            &call(
                Method::POST,
                "/api/v1/deployments/rollback",
                Some(json!({"repo": "team/web", "env": "dev", "to": bad})),
            ),
            400,
            json!({
                "code": "bad_request", "in": "body", "field": "to",
                "message": format!("{bad:?} is not a digest (sha256: and 64 lowercase hex digits)"),
            }),
        );
    }
    for limit in [0, 501] {
        assert_error(
            &call(
                Method::GET,
                &format!("/api/v1/deployments?repo=team/web&limit={limit}"),
                None,
            ),
            400,
            json!({
                "code": "bad_request", "in": "query", "field": "limit",
                "message": format!("limit must be from 1 to 500, not {limit}"),
            }),
        );
    }

    // Unknown repositories.
    let no_repo = not_found("no repository named \"team/nope\"");
    for (method, path, body) in [
        (Method::GET, "/api/v1/environments?repo=team/nope", None),
        (Method::GET, "/api/v1/deployments?repo=team/nope", None),
        (
            Method::GET,
            "/api/v1/environments/secrets?repo=team/nope&env=dev",
            None,
        ),
        (
            Method::POST,
            "/api/v1/deployments/promote",
            Some(json!({"repo": "team/nope", "to": "staging"})),
        ),
        (
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": "team/nope", "env": "dev"})),
        ),
        (
            Method::POST,
            "/api/v1/environments/secrets",
            Some(json!({"repo": "team/nope", "env": "dev", "name": "A", "value": "v"})),
        ),
    ] {
        assert_error(&call(method, path, body), 404, no_repo.clone());
    }

    // Unknown environments, named.
    let r = call(Method::GET, "/api/v1/environments?repo=team/web", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json(), json!([]));
    let no_prod = not_found(&format!("no environment \"prod\": {NO_ENV}"));
    for (method, path, body) in [
        (
            Method::GET,
            "/api/v1/deployments?repo=team/web&env=prod",
            None,
        ),
        (
            Method::GET,
            "/api/v1/environments/secrets?repo=team/web&env=prod",
            None,
        ),
        (
            Method::POST,
            "/api/v1/environments/secrets",
            Some(json!({"repo": "team/web", "env": "prod", "name": "A", "value": "v"})),
        ),
        (
            Method::POST,
            "/api/v1/environments/cluster",
            Some(json!({"repo": "team/web", "env": "prod", "cluster": "local"})),
        ),
        (
            Method::POST,
            "/api/v1/deployments/promote",
            Some(json!({"repo": "team/web", "to": "prod"})),
        ),
        (
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": "team/web", "env": "prod"})),
        ),
    ] {
        assert_error(&call(method, path, body), 404, no_prod.clone());
    }

    // Unknown deployments and instances.
    assert_error(
        &call(Method::GET, "/api/v1/deployments/9999", None),
        404,
        not_found("no deployment 9999"),
    );
    assert_error(
        &call(Method::GET, "/api/v1/instances/i1-dev/log", None),
        404,
        not_found("no instance \"i1-dev\""),
    );

    // The node protocol: a join token that is not one, user credentials.
    let r = api(
        &server,
        &Auth::None,
        Method::POST,
        "/api/v1/node/join",
        Some(json!({
            "join_token": "slj_nope", "name": "n1",
            "router_host": "127.0.0.1", "router_ports": [20000, 20100]
        })),
        &[],
    );
    assert_error(
        &r,
        401,
        json!({"code": "unauthenticated",
               "message": "unknown join token: make one with `slipway cluster add NAME`"}),
    );
    assert_error(
        &call(Method::GET, "/api/v1/node/desired?wait=0", None),
        401,
        json!({"code": "unauthenticated",
               "message": "node routes need `Authorization: Bearer sln_…`"}),
    );
}

#[test]
fn the_chain_refuses_with_its_reason() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let call = |method: Method, path: &str, body: Option<Value>| {
        api(&server, &admin, method, path, body, &[])
    };
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("deploy-api-chain");
    let dev = deploy_to_dev(&server, &runner, &node, "team/web", work.path());

    // Pipelines deploy to the first environment; nobody promotes to it.
    assert_error(
        &call(
            Method::POST,
            "/api/v1/deployments/promote",
            Some(json!({"repo": "team/web", "to": "dev"})),
        ),
        409,
        conflict(
            "\"dev\" is the first environment of the chain: pipelines on the default branch deploy to it",
        ),
    );
    // One deployment succeeded in dev: nothing earlier to go back to, and
    // a digest that never ran there is no target.
    assert_error(
        &call(
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": "team/web", "env": "dev"})),
        ),
        409,
        conflict("no earlier verified deployment in dev to roll back to"),
    );
    let never = format!("sha256:{}", "0".repeat(64));
    assert_error(
        &call(
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": "team/web", "env": "dev", "to": never})),
        ),
        409,
        conflict(&format!(
            "{never} was never verified in dev: a rollback goes only to a digest verified there before"
        )),
    );
    // Staging has run nothing yet.
    assert_error(
        &call(
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": "team/web", "env": "staging"})),
        ),
        409,
        conflict("no earlier verified deployment in staging to roll back to"),
    );
    // A running environment stays on its cluster; an unknown cluster is named.
    assert_error(
        &call(
            Method::POST,
            "/api/v1/environments/cluster",
            Some(json!({"repo": "team/web", "env": "dev", "cluster": "edge"})),
        ),
        404,
        not_found("no cluster \"edge\""),
    );
    let r = call(
        Method::POST,
        "/api/v1/clusters",
        Some(json!({"name": "edge"})),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(r.json()["created"], true);
    assert_error(
        &call(
            Method::POST,
            "/api/v1/environments/cluster",
            Some(json!({"repo": "team/web", "env": "dev", "cluster": "edge"})),
        ),
        409,
        conflict(
            "environment \"dev\" has 1 instances on its current cluster; moving a running \
             environment is not supported yet",
        ),
    );
    assert_error(
        &call(
            Method::GET,
            "/api/v1/deployments?repo=team/web&env=qa",
            None,
        ),
        404,
        not_found(&format!("no environment \"qa\": {NO_ENV}")),
    );

    // What is allowed is answered in full: the promotion queued, dev's
    // deployment, the instance's log as the node shipped it.
    let r = call(
        Method::POST,
        "/api/v1/deployments/promote",
        Some(json!({"repo": "team/web", "to": "staging"})),
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let queued = &r.json()["deployment"];
    assert_eq!(queued["environment"], "staging", "{queued}");
    assert_eq!(queued["kind"], "promote", "{queued}");
    assert_eq!(queued["digest"], dev.digest.as_str(), "{queued}");
    assert_eq!(queued["requested_by"], "admin", "{queued}");
    let r = call(
        Method::GET,
        &format!("/api/v1/deployments/{}", dev.deployment),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["state"], "succeeded");
    assert_eq!(r.json()["image"], format!("team/web@{}", dev.digest));

    let log = |from: u64| {
        let r = call(
            Method::GET,
            &format!("/api/v1/instances/{}/log?from={from}", dev.instance),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        (
            r.header("x-slipway-log-length").unwrap().to_owned(),
            r.body_text(),
        )
    };
    assert_eq!(log(0), ("0".into(), String::new()));
    let ship = |offset: u64, bytes: &[u8]| {
        request_as(
            server.url(),
            &node,
            Method::POST,
            &format!(
                "/api/v1/node/instances/{}/log?offset={offset}",
                dev.instance
            ),
            &[("content-type", "application/octet-stream")],
            Some(bytes.to_vec()),
        )
    };
    let r = ship(0, b"hello\n");
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json(), json!({"length": 6}));
    // A resend overlapping what is held appends only the rest.
    assert_eq!(ship(3, b"lo\nworld\n").json(), json!({"length": 12}));
    assert_eq!(log(0), ("12".into(), "hello\nworld\n".into()));
    assert_eq!(log(6), ("12".into(), "world\n".into()));
    // Only the node's own instances.
    let r = request_as(
        server.url(),
        &node,
        Method::POST,
        "/api/v1/node/instances/i999-dev/log?offset=0",
        &[],
        Some(b"x".to_vec()),
    );
    assert_error(&r, 404, not_found("no instance \"i999-dev\" on this node"));
    // A revision beyond i64 (which JSON's f64 rounds to -2^63) is refused.
    let r = request_as(
        server.url(),
        &node,
        Method::POST,
        "/api/v1/node/status",
        &[("content-type", "application/json")],
        Some(br#"{"revision": -9223372036854775809, "instances": []}"#.to_vec()),
    );
    assert_eq!(r.status, 422, "{}", r.describe());
    let error = &r.json()["error"];
    assert_eq!(
        (&error["code"], &error["in"], &error["field"]),
        (&json!("invalid_body"), &json!("body"), &json!("revision")),
        "{}",
        r.describe()
    );
}

/// The promotion chain is the server's: a later commit that puts `staging`
/// first still deploys to `dev`, and the chain stays dev → staging.
#[test]
fn a_commit_cannot_reorder_the_chain() {
    let server = TestServer::start();
    let admin = server.admin_auth();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("deploy-api-reorder");
    let dev = deploy_to_dev(&server, &runner, &node, "team/web", work.path());

    let spec = deploy_spec("team/web").replace(
        "    dev: { strategy: rolling }\n    staging: { strategy: rolling }\n",
        "    staging: { strategy: rolling }\n    dev: { strategy: rolling }\n",
    );
    assert!(
        spec.contains("staging: { strategy: rolling }\n    dev:"),
        "{spec}"
    );
    std::fs::write(work.path().join(".slipway.yml"), spec).unwrap();
    git(work.path(), &["commit", "-q", "-am", "staging first"]);
    let digest = run_pipeline_pushing(&server, &runner, "team/web");
    assert_ne!(digest, dev.digest);

    // The pipeline's deployment appears (the outbox is drained in the
    // background): wait for it up to a deadline; action: fail with the history.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let deployment = loop {
        let history = api(
            &server,
            &admin,
            Method::GET,
            "/api/v1/deployments?repo=team/web",
            None,
            &[],
        )
        .json();
        if let Some(d) = history
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["digest"] == digest.as_str())
        {
            break d.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deployment of {digest}: {history}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(deployment["environment"], "dev", "{deployment}");
    let envs = api(
        &server,
        &admin,
        Method::GET,
        "/api/v1/environments?repo=team/web",
        None,
        &[],
    )
    .json();
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dev", "staging"], "{envs}");
    assert!(
        server
            .logs()
            .contains("a commit cannot reorder environments"),
        "the server says why it kept its chain"
    );
}

/// A join token lets nodes join for a day, then is refused saying so.
#[test]
fn an_expired_join_token_is_refused() {
    let server = TestServer::start();
    let added = add_cluster(&server, "edge");
    let token = added["join_token"].as_str().unwrap().to_owned();
    let expires_at = added["expires_at"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let day = 24 * 3600 * 1000;
    assert!(
        (day - 60_000..=day).contains(&(expires_at - now)),
        "valid a day: {added}"
    );
    // Age the token by a day in the server's database.
    server
        .sql(&format!(
            "UPDATE cluster_join_tokens SET expires_at = expires_at - {day}"
        ))
        .unwrap();
    let r = join(&server, &token, "n1");
    assert_eq!(r.status, 401, "{}", r.describe());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("this join token of cluster edge expired at ")
            && message.ends_with("make a new one with `slipway cluster add edge`"),
        "{message}"
    );
}
