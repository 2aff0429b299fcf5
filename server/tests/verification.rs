//! Verification through the API, with a runner and a node that only report
//! (`common::deploy_peers`): a deployment is verified once it stayed healthy
//! through its soak and its verify job passed; only a verified digest is
//! promoted (the refusal says why), `auto: true` promotes by itself, a failed
//! verify fails the deployment and, with `on_verify_failure: rollback`, rolls
//! back by itself; a rollback goes only to a digest verified there before.
//! `tests/deploys.rs` runs verify jobs for real (runc, the relay to the
//! environment's router).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::deploy_peers::{
    api, deployment, deployments, join_local_node, run_pipeline_pushing, serve_until,
};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const REPO: &str = "team/web";

/// dev verifies with a job; staging is promoted to by itself once dev
/// verifies, soaks, verifies with a job and rolls back when that fails;
/// prod is promoted to by people.
fn spec() -> String {
    format!(
        "jobs:\n  image:\n    steps:\n      - name: build\n        build:\n          image: {REPO}\n\
         deploy:\n  app: web\n  image: {REPO}\n  port: 8080\n  health: /healthz\n  replicas: 1\n\
         \x20 environments:\n\
         \x20   dev:\n      strategy: rolling\n      verify:\n        steps:\n\
         \x20         - name: smoke\n            image: busybox\n            commands: [\"wget -qO- $SLIPWAY_ENV_URL/healthz\"]\n\
         \x20   staging:\n      strategy: rolling\n      auto: true\n      soak: 1s\n      on_verify_failure: rollback\n\
         \x20     verify:\n        steps:\n          - name: e2e\n            image: busybox\n            commands: [\"true\"]\n\
         \x20   prod: {{ strategy: rolling }}\n"
    )
}

fn add_repo(server: &TestServer, dir: &Path) {
    add_repo_with(server, dir, &spec());
}

fn add_repo_with(server: &TestServer, dir: &Path, spec: &str) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".slipway.yml"), spec).unwrap();
    std::fs::write(dir.join("Containerfile"), "FROM busybox\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "c"]);
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/repos",
        Some(json!({"name": REPO, "url": dir.to_str().unwrap()})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
}

/// The deployment of `digest` to `env` (newest first), once there is one.
fn find(server: &TestServer, env: &str, digest: &str, kind: &str) -> Option<Value> {
    deployments(server, REPO)
        .into_iter()
        .find(|d| d["environment"] == env && d["digest"] == digest && d["kind"] == kind)
}

/// A verify job, leased as `runner`: its lease.
struct VerifyLease {
    lease: Value,
}

/// Serve as `node` while waiting for the runner's lease of the next verify
/// job, which must come within the node's deadline.
fn lease_verify_job(server: &TestServer, runner: &Auth, node: &Auth) -> VerifyLease {
    let mut leased = None;
    serve_until(server, node, "a verify job to lease", || {
        let r = api(
            server,
            runner,
            Method::POST,
            "/api/v1/runner/lease",
            Some(json!({"free": 1, "wait_ms": 200})),
            &[],
        );
        match r.status {
            200 => {
                leased = Some(r.json());
                true
            }
            204 => false,
            _ => panic!("{}", r.describe()),
        }
    });
    VerifyLease {
        lease: leased.expect("leased above"),
    }
}

impl VerifyLease {
    fn job(&self) -> i64 {
        self.lease["job_id"].as_i64().unwrap()
    }

    fn step_env(&self, name: &str) -> Option<String> {
        self.lease["job"]["steps"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv[0] == name)
            .map(|kv| kv[1].as_str().unwrap().to_owned())
    }

    /// Report the step and the job with `status` (`success`, `failure`).
    fn finish(&self, server: &TestServer, runner: &Auth, status: &str) {
        let job = self.job();
        let attempt = self.lease["attempt"].as_i64().unwrap();
        let header = [(
            "x-slipway-lease",
            self.lease["lease_token"].as_str().unwrap(),
        )];
        let exit = if status == "success" { 0 } else { 1 };
        for (path, body) in [
            (
                format!("/api/v1/runner/jobs/{job}/steps/0"),
                json!({"attempt": attempt, "status": status, "exit_code": exit}),
            ),
            (
                format!("/api/v1/runner/jobs/{job}/finish"),
                json!({"attempt": attempt, "status": status, "reason": null}),
            ),
        ] {
            let r = api(server, runner, Method::POST, &path, Some(body), &header);
            assert_eq!(r.status, 204, "{}", r.describe());
        }
    }
}

/// Serve as `node` until deployment `id`'s verification is `state`.
fn until_verification(server: &TestServer, node: &Auth, id: i64, state: &str) -> Value {
    let mut last = Value::Null;
    serve_until(
        server,
        node,
        &format!("deployment {id} verification {state}"),
        || {
            last = deployment(server, id);
            last["verification"]["state"] == state
        },
    );
    last
}

fn pipeline(server: &TestServer, id: i64) -> Value {
    let r = api(
        server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/pipelines/{id}"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

fn promote(server: &TestServer, to: &str) -> HttpResponse {
    api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/deployments/promote",
        Some(json!({"repo": REPO, "to": to})),
        &[],
    )
}

#[test]
fn only_verified_digests_move_on_and_failed_verification_rolls_back() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("verification");
    add_repo(&server, work.path());

    // 1. A digest whose dev verify job fails.
    let bad = run_pipeline_pushing(&server, &runner, REPO);
    let lease = lease_verify_job(&server, &runner, &node);
    let dev_bad = find(&server, "dev", &bad, "deploy").expect("dev deployment of the bad digest");
    let dev_bad_id = dev_bad["id"].as_i64().unwrap();
    assert_eq!(dev_bad["state"], "succeeded", "{dev_bad}");
    assert_eq!(dev_bad["verification"]["state"], "verifying", "{dev_bad}");
    let verify_pipeline = dev_bad["verification"]["pipeline_id"].as_i64().unwrap();
    let p = pipeline(&server, verify_pipeline);
    assert_eq!(p["event"], "verify", "{p}");
    assert_eq!(p["jobs"][0]["id"], lease.job(), "{p}");
    assert_eq!(p["jobs"][0]["name"], "verify-dev", "{p}");
    let number = p["number"].as_i64().unwrap();
    // The job reaches dev's router through its runner, and knows the digest.
    let envs = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/environments?repo={REPO}"),
        None,
        &[],
    )
    .json();
    let dev_url = envs[0]["url"].as_str().unwrap().to_owned();
    let dev_port: u16 = dev_url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        lease.lease["job"]["reach"],
        json!({"port": dev_port, "target": format!("127.0.0.1:{dev_port}")}),
        "{}",
        lease.lease
    );
    assert_eq!(
        lease.step_env("SLIPWAY_ENV_URL").as_deref(),
        Some(format!("http://127.0.0.1:{dev_port}").as_str())
    );
    assert_eq!(
        lease.step_env("SLIPWAY_DIGEST").as_deref(),
        Some(bad.as_str())
    );
    assert_eq!(
        lease.step_env("SLIPWAY_ENVIRONMENT").as_deref(),
        Some("dev")
    );
    // A verify job is no pipeline that deploys: its success or failure
    // never queues a deployment of its own.
    lease.finish(&server, &runner, "failure");
    let failed = until_verification(&server, &node, dev_bad_id, "failed");
    let why = format!("verify job failed: pipeline {number}");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["verification"]["reason"], why.as_str(), "{failed}");
    assert_eq!(failed["reason"], why.as_str(), "{failed}");

    // A verify pipeline runs with its deployment, not again by itself.
    let r = api(
        &server,
        &server.admin_auth(),
        Method::POST,
        &format!("/api/v1/pipelines/{verify_pipeline}/rerun"),
        None,
        &[],
    );
    assert_eq!(r.status, 409, "{}", r.describe());

    // Not promoted: the refusal says why.
    let r = promote(&server, "staging");
    assert_eq!(r.status, 409, "{}", r.describe());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(
        message,
        format!("{REPO}@{} is not verified in dev ({why})", &bad[..19])
    );
    // It keeps running in dev (no rollback asked there), and it is not a
    // rollback target anywhere.
    let envs = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/environments?repo={REPO}"),
        None,
        &[],
    )
    .json();
    assert_eq!(envs[0]["current"]["digest"], bad.as_str(), "{envs}");
    assert!(
        deployments(&server, REPO)
            .iter()
            .all(|d| d["environment"] != "staging"),
        "nothing reached staging"
    );

    // 2. A good digest: dev verifies it, staging is promoted to by itself,
    // soaks, verifies.
    let good = run_pipeline_pushing(&server, &runner, REPO);
    let lease = lease_verify_job(&server, &runner, &node);
    assert_eq!(
        lease.step_env("SLIPWAY_DIGEST").as_deref(),
        Some(good.as_str())
    );
    lease.finish(&server, &runner, "success");
    let dev_good = find(&server, "dev", &good, "deploy").unwrap();
    until_verification(&server, &node, dev_good["id"].as_i64().unwrap(), "verified");
    let mut staged = None;
    serve_until(&server, &node, "the auto-promotion to staging", || {
        staged = find(&server, "staging", &good, "promote");
        staged.is_some()
    });
    let staged = staged.unwrap();
    assert_eq!(staged["requested_by"], "slipway", "{staged}");
    let staged_id = staged["id"].as_i64().unwrap();
    let soaking = until_verification(&server, &node, staged_id, "soaking");
    assert!(soaking["verification"]["soak_until"].as_i64().is_some());
    let lease = lease_verify_job(&server, &runner, &node);
    assert_eq!(
        lease.step_env("SLIPWAY_ENVIRONMENT").as_deref(),
        Some("staging")
    );
    lease.finish(&server, &runner, "success");
    let verified = until_verification(&server, &node, staged_id, "verified");
    assert_eq!(verified["state"], "succeeded");
    // prod is not auto: nothing went there by itself, and now it may be promoted.
    assert!(find(&server, "prod", &good, "promote").is_none());
    let r = promote(&server, "prod");
    assert_eq!(r.status, 202, "{}", r.describe());
    assert_eq!(r.json()["deployment"]["digest"], good.as_str());

    // 3. A third digest fails its verification in staging: staging rolls
    // back by itself to the good one, with its configuration.
    let third = run_pipeline_pushing(&server, &runner, REPO);
    lease_verify_job(&server, &runner, &node).finish(&server, &runner, "success");
    let lease = lease_verify_job(&server, &runner, &node);
    assert_eq!(
        lease.step_env("SLIPWAY_DIGEST").as_deref(),
        Some(third.as_str())
    );
    assert_eq!(
        lease.step_env("SLIPWAY_ENVIRONMENT").as_deref(),
        Some("staging")
    );
    lease.finish(&server, &runner, "failure");
    let mut rollback = None;
    serve_until(
        &server,
        &node,
        "staging's rollback after its verify failed",
        || {
            rollback = find(&server, "staging", &good, "rollback")
                .filter(|d| d["verification"]["state"] == "verified");
            rollback.is_some()
        },
    );
    let rollback = rollback.unwrap();
    assert_eq!(rollback["requested_by"], "slipway");
    assert_eq!(rollback["state"], "succeeded");
    let third_staging = find(&server, "staging", &third, "promote").unwrap();
    assert_eq!(third_staging["state"], "failed", "{third_staging}");

    // 4. A rollback goes only to a digest verified there before.
    let r = api(
        &server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/deployments/rollback",
        Some(json!({"repo": REPO, "env": "dev", "to": bad, "reason": "try"})),
        &[],
    );
    assert_eq!(r.status, 409, "{}", r.describe());
    assert_eq!(
        r.json()["error"]["message"],
        format!("{bad} was never verified in dev: a rollback goes only to a digest verified there before")
            .as_str()
    );

    // 5. The audit has each verification's outcome once.
    let r = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/audit?repo={REPO}"),
        None,
        &[],
    );
    let entries = r.json().as_array().unwrap().clone();
    let of = |action: &str, env: &str, digest: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["environment"] == env && e["digest"] == digest)
            .count()
    };
    assert_eq!(of("verify_failed", "dev", &bad), 1, "{entries:#?}");
    assert_eq!(of("verified", "dev", &good), 1, "{entries:#?}");
    assert_eq!(of("verified", "staging", &good), 1, "{entries:#?}");
    assert_eq!(of("verify_failed", "staging", &third), 1, "{entries:#?}");
    assert_eq!(of("rollback", "staging", &good), 1, "{entries:#?}");
}

/// The soak fails a deployment whose instance stops being ready during it.
#[test]
fn an_instance_unhealthy_during_the_soak_fails_the_verification() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("verification-soak");
    let spec = format!(
        "jobs:\n  image:\n    steps:\n      - name: build\n        build:\n          image: {REPO}\n\
         deploy:\n  app: web\n  image: {REPO}\n  port: 8080\n  health: /healthz\n  replicas: 1\n\
         \x20 environments:\n    dev: {{ strategy: rolling, soak: 1h }}\n    staging: {{ strategy: rolling }}\n"
    );
    add_repo_with(&server, work.path(), &spec);
    let digest = run_pipeline_pushing(&server, &runner, REPO);
    let mut dev = None;
    serve_until(&server, &node, "dev soaking", || {
        dev = find(&server, "dev", &digest, "deploy")
            .filter(|d| d["verification"]["state"] == "soaking");
        dev.is_some()
    });
    let id = dev.unwrap()["id"].as_i64().unwrap();
    // Promotion waits for the soak.
    let r = promote(&server, "staging");
    assert_eq!(r.status, 409, "{}", r.describe());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with(&format!(
            "{REPO}@{} is not verified in dev (soaking until ",
            &digest[..19]
        )),
        "{message}"
    );
    // The node reports the instance unhealthy.
    let desired = api(
        &server,
        &node,
        Method::GET,
        "/api/v1/node/desired?after=0&wait=1",
        None,
        &[],
    )
    .json();
    let name = desired["instances"][0]["name"].as_str().unwrap().to_owned();
    let r = api(
        &server,
        &node,
        Method::POST,
        "/api/v1/node/status",
        Some(json!({"revision": desired["revision"], "instances": [{
            "name": name, "state": "unhealthy", "container_id": "c", "restarts": 0,
            "health": "GET /healthz: 500", "log_tail": [], "in_flight": 0
        }]})),
        &[],
    );
    assert_eq!(r.status, 204, "{}", r.describe());
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let d = deployment(&server, id);
        if d["verification"]["state"] == "failed" {
            break d;
        }
        assert!(Instant::now() < deadline, "the soak did not fail: {d}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(failed["state"], "failed");
    assert_eq!(
        failed["verification"]["reason"],
        format!("not healthy during the soak: instance {name} is unhealthy: GET /healthz: 500")
            .as_str()
    );
}

/// Deployment states reach the forge's deployments API (GitHub: one
/// deployment per Slipway deployment, then its statuses; GitLab: created,
/// then updated) and the signed outgoing webhook as `deployment.status`.
#[test]
fn deployment_states_reach_the_forge_and_the_outgoing_webhook() {
    use common::fake_forge::fake_forge;
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("verification-forge");
    add_repo(&server, work.path());
    let admin = server.admin_auth();
    let (forge, forge_seen) = fake_forge();
    let seen = forge_seen.clone();
    for (path, body) in [
        (
            "/api/v1/repos/forge",
            json!({"repo": REPO, "kind": "github", "api_url": forge, "repository": "team/web", "token": "forge-token-1"}),
        ),
        (
            "/api/v1/repos/notify",
            json!({"repo": REPO, "url": format!("{forge}/hook")}),
        ),
    ] {
        let r = api(&server, &admin, Method::POST, path, Some(body), &[]);
        assert!(r.status < 300, "{}", r.describe());
    }
    let secret = api(&server, &admin, Method::GET, "/api/v1/repos", None, &[]).json()[0]
        ["webhook_secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let digest = run_pipeline_pushing(&server, &runner, REPO);
    // dev's verify job passes: the deployment is verified.
    lease_verify_job(&server, &runner, &node).finish(&server, &runner, "success");
    let dev = find(&server, "dev", &digest, "deploy").unwrap();
    let dev_id = dev["id"].as_i64().unwrap();
    until_verification(&server, &node, dev_id, "verified");
    let sha = dev["commit"].as_str().unwrap().to_owned();

    // Delivered in the background: wait (with a deadline) for the last ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hook_says = |state: &str, verification: &str| {
        seen.lock().unwrap().iter().any(|s| {
            s.path == "/hook" && {
                let body: Value = serde_json::from_str(&s.body).unwrap();
                body["deployment"]["id"] == dev_id
                    && body["deployment"]["state"] == state
                    && body["deployment"]["verification"] == verification
            }
        })
    };
    while !(hook_says("succeeded", "verified")
        && seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.path.ends_with("/statuses") && s.body.contains("\"success\"")))
    {
        assert!(
            Instant::now() < deadline,
            "not reported: {:#?}",
            seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let seen = seen_now(&forge_seen);
    // GitHub: the deployment once, for the commit and the environment, with
    // the token; then statuses of it, the last one success.
    let created: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/repos/team/web/deployments")
        .collect();
    assert_eq!(created.len(), 2, "dev's and staging's (auto): {seen:#?}");
    let body: Value = serde_json::from_str(&created[0].body).unwrap();
    assert_eq!(body["ref"], sha.as_str());
    assert_eq!(body["environment"], "dev");
    assert_eq!(body["payload"]["slipway_deployment"], dev_id);
    assert_eq!(body["production_environment"], false);
    assert_eq!(created[0].authorization, "Bearer forge-token-1");
    let forge_id: i64 = {
        let index = seen
            .iter()
            .position(|s| std::ptr::eq(s, created[0]))
            .unwrap();
        1000 + index as i64 + 1
    };
    let statuses: Vec<Value> = seen
        .iter()
        .filter(|s| s.path == format!("/repos/team/web/deployments/{forge_id}/statuses"))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert!(!statuses.is_empty(), "{seen:#?}");
    assert_eq!(
        statuses.last().unwrap()["state"],
        "success",
        "{statuses:#?}"
    );
    assert_eq!(statuses.last().unwrap()["environment"], "dev");
    // The webhook is signed with the repository's secret.
    let hook = seen.iter().find(|s| s.path == "/hook").unwrap();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes()).unwrap();
    hmac::Mac::update(&mut mac, hook.body.as_bytes());
    let expected = format!(
        "sha256={}",
        hex::encode(hmac::Mac::finalize(mac).into_bytes())
    );
    assert_eq!(hook.signature, expected);

    // Staging (auto) verifies it too, so that no verify job is left queued.
    let lease = lease_verify_job(&server, &runner, &node);
    assert_eq!(
        lease.step_env("SLIPWAY_ENVIRONMENT").as_deref(),
        Some("staging")
    );
    lease.finish(&server, &runner, "success");
    let staged = find(&server, "staging", &digest, "promote").unwrap();
    until_verification(&server, &node, staged["id"].as_i64().unwrap(), "verified");

    // GitLab: the deployment is created with its status, then updated.
    let r = api(
        &server,
        &admin,
        Method::POST,
        "/api/v1/repos/forge",
        Some(
            json!({"repo": REPO, "kind": "gitlab", "api_url": forge, "repository": "team/web", "token": "gl-token-1"}),
        ),
        &[],
    );
    assert!(r.status < 300, "{}", r.describe());
    let second = run_pipeline_pushing(&server, &runner, REPO);
    lease_verify_job(&server, &runner, &node).finish(&server, &runner, "success");
    let dev2 = find(&server, "dev", &second, "deploy").unwrap();
    until_verification(&server, &node, dev2["id"].as_i64().unwrap(), "verified");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (created, forge_id) = loop {
        let seen = seen_now(&forge_seen);
        let created = seen.iter().enumerate().find(|(_, s)| {
            s.method == "POST"
                && s.path == "/projects/team%2Fweb/deployments"
                && s.body.contains("\"environment\":\"dev\"")
        });
        if let Some((index, s)) = created {
            let forge_id = 1000 + index as i64 + 1;
            let updated = seen.iter().any(|u| {
                u.method == "PUT"
                    && u.path == format!("/projects/team%2Fweb/deployments/{forge_id}")
                    && u.body.contains("\"success\"")
            });
            if updated || s.body.contains("\"success\"") {
                break (s.clone(), forge_id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "not reported to GitLab: {seen:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let body: Value = serde_json::from_str(&created.body).unwrap();
    assert_eq!(body["environment"], "dev");
    assert_eq!(body["ref"], "main");
    assert_eq!(body["tag"], false);
    assert_eq!(created.private_token, "gl-token-1");
    assert!(forge_id > 1000);
}

fn seen_now(
    seen: &std::sync::Arc<std::sync::Mutex<Vec<common::fake_forge::Seen>>>,
) -> Vec<common::fake_forge::Seen> {
    seen.lock().unwrap().clone()
}
