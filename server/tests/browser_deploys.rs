//! The deploy pages in a real browser (headless Chromium over WebDriver),
//! with a runner and a node that speak their protocols and only report
//! (`common::deploy_peers`), so each instance becomes ready exactly when
//! the test says: the environments board following a rolling deploy live
//! without a reload, an approver approving from the board and the deploy
//! going on, what a viewer sees and the posts it may forge, and screenshots
//! of the board, a deployment's timeline and the traceability view at
//! desktop and phone width (`target/screenshots/`).
//!
//! Chromium and chromedriver must be installed (`scripts/test.sh` does
//! it); without them these tests fail, they do not skip.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::browser::{Browser, DESKTOP, PHONE, WAIT};
use common::deploy_peers::{
    api, deployment, deployments, join_local_node, run_pipeline_pushing, serve_until,
    serve_until_ended,
};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const REPO: &str = "team/web";

/// How long a step of a rollout may take to show on the board: the node
/// reports, the reconciler acts, the page polls every second.
const SHOWN: Duration = Duration::from_secs(20);
/// How long the test's node serves before a rollout step must have happened.
const STEP: Duration = Duration::from_secs(30);

/// A repository deploying `web` to dev (3 replicas, rolling), staging and
/// prod, added through the API; its first digest runs in dev.
fn repo_in_dev(server: &TestServer, runner: &Auth, node: &Auth, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    let spec = format!(
        "jobs:\n  image:\n    steps:\n      - name: build\n        build:\n          image: {REPO}\n\
         deploy:\n  app: web\n  image: {REPO}\n  port: 8080\n  health: /healthz\n  replicas: 1\n\
         \x20 environments:\n    dev: {{ strategy: rolling, replicas: 3 }}\n    staging: {{ strategy: rolling }}\n\
         \x20   prod: {{ strategy: rolling }}\n"
    );
    std::fs::write(dir.join(".slipway.yml"), spec).unwrap();
    std::fs::write(dir.join("Containerfile"), "FROM busybox\n").unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "Deploy web"]);
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/repos",
        Some(json!({"name": REPO, "url": dir.to_str().unwrap()})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let digest = run_pipeline_pushing(server, runner, REPO);
    serve_until(server, node, "dev running the first digest", || {
        deployments(server, REPO).iter().any(|d| {
            d["environment"] == "dev" && d["digest"] == digest.as_str() && d["state"] == "succeeded"
        })
    });
    digest
}

fn add_user(server: &TestServer, name: &str, role: &str) -> String {
    let password = format!("{name}-password-1");
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": name, "password": password, "role": role})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    password
}

/// Sign in through the form as `user`, landing on `next`.
fn sign_in(browser: &Browser, server: &TestServer, user: &str, password: &str, next: &str) {
    browser
        .block_on(browser.client().delete_all_cookies())
        .unwrap();
    browser.goto(&format!("{}/signin?next={next}", server.url()));
    browser.fill("#username", user);
    browser.fill("#password", password);
    browser.click("form[action='/signin'] button[type=submit]");
    browser.wait_until(
        &format!("{user} on {next} after signing in"),
        WAIT,
        &format!("location.pathname === '{next}' && document.querySelector('header .who')"),
    );
}

/// The test's node: what it was told last, and which instances it lets be
/// ready (the others it reports starting).
struct Node {
    auth: Auth,
    revision: i64,
    desired: Value,
    allowed: HashSet<String>,
}

impl Node {
    fn new(auth: Auth) -> Node {
        Node {
            auth,
            revision: 0,
            desired: json!({"instances": []}),
            allowed: HashSet::new(),
        }
    }

    /// Let every instance it runs now be ready (the first digest's three,
    /// which `serve_until` made ready), and report so.
    fn adopt(&mut self, server: &TestServer) {
        let r = api(
            server,
            &self.auth,
            Method::GET,
            "/api/v1/node/desired?after=0&wait=0",
            None,
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        for i in r.json()["instances"].as_array().unwrap() {
            self.allowed.insert(i["name"].as_str().unwrap().to_owned());
        }
        assert_eq!(self.round(server).len(), 3, "{}", self.desired);
    }

    /// One round: wait (the long-poll, 1 s) for a newer desired state, then
    /// report every instance to run ready if allowed, else starting, and
    /// every one to stop gone. Returns the names told to run.
    fn round(&mut self, server: &TestServer) -> Vec<String> {
        let r = api(
            server,
            &self.auth,
            Method::GET,
            &format!("/api/v1/node/desired?after={}&wait=1", self.revision),
            None,
            &[],
        );
        match r.status {
            200 => {
                self.desired = r.json();
                self.revision = self.desired["revision"].as_i64().unwrap();
            }
            204 => {}
            _ => panic!("{}", r.describe()),
        }
        let mut running = Vec::new();
        let instances: Vec<Value> = self.desired["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let name = i["name"].as_str().unwrap().to_owned();
                let run = i["desired"] == "run";
                let state = match (run, self.allowed.contains(&name)) {
                    (false, _) => "gone",
                    (true, true) => "ready",
                    (true, false) => "starting",
                };
                if run {
                    running.push(name.clone());
                }
                json!({
                    "name": name, "state": state, "container_id": format!("c-{name}"),
                    "restarts": 0, "health": if state == "ready" { "200" } else { "waiting for /healthz" },
                    "log_tail": [], "in_flight": 0
                })
            })
            .collect();
        let r = api(
            server,
            &self.auth,
            Method::POST,
            "/api/v1/node/status",
            Some(json!({"revision": self.revision, "instances": instances})),
            &[],
        );
        assert_eq!(r.status, 204, "{}", r.describe());
        running
    }

    /// Serve until an instance it does not let be ready runs (reported
    /// starting); its name. Deadline [`STEP`]; action: fail.
    fn until_new_instance(&mut self, server: &TestServer) -> String {
        let started = Instant::now();
        loop {
            let running = self.round(server);
            if let Some(new) = running.into_iter().find(|n| !self.allowed.contains(n)) {
                // Reported starting in this round already.
                return new;
            }
            assert!(
                started.elapsed() < STEP,
                "no new instance within {STEP:?}: {}",
                self.desired
            );
        }
    }
}

/// The deployment of `digest` to dev, once the pipeline's trigger made it
/// (the reconciler drains the trigger's outbox). Deadline [`STEP`];
/// action: fail.
fn dev_deployment_of(server: &TestServer, digest: &str) -> i64 {
    let started = Instant::now();
    loop {
        let list = deployments(server, REPO);
        if let Some(d) = list
            .iter()
            .find(|d| d["environment"] == "dev" && d["digest"] == digest)
        {
            return d["id"].as_i64().unwrap();
        }
        assert!(
            started.elapsed() < STEP,
            "no deployment of {digest} to dev within {STEP:?}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_board_follows_a_rolling_deploy_live_and_shows_its_timeline_and_trace() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node_auth = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("browser-deploys-live");
    let first = repo_in_dev(&server, &runner, &node_auth, &work.path().join("repo"));
    let mut node = Node::new(node_auth);
    // The first digest's three instances are ready; they stay so.
    node.adopt(&server);

    let browser = Browser::start();
    let board = format!("/repos/{REPO}/environments");
    sign_in(&browser, &server, "admin", server.admin_password(), &board);
    assert_eq!(browser.text("h1"), format!("{REPO} environments"));
    let columns = browser
        .eval("[...document.querySelectorAll('.board .env')].map(e => e.dataset.env).join(' ')");
    assert_eq!(
        columns, "dev staging prod",
        "a column per environment, in chain order"
    );
    let short = &first[..19];
    assert_eq!(browser.text("[data-env=dev] [data-role=digest]"), short);
    assert_eq!(
        browser.eval(
            "document.querySelectorAll('[data-env=dev] [data-instance][data-state=ready]').length"
        ),
        3
    );
    // A mark the page keeps only as long as it is not reloaded.
    browser.eval("window.__notReloaded = true");

    // A second digest rolls out to dev, one instance at a time.
    let second = run_pipeline_pushing(&server, &runner, REPO);
    let id = dev_deployment_of(&server, &second);
    for k in 0..3 {
        let new = node.until_new_instance(&server);
        browser.wait_until(
            &format!("the board showing new instance {new} starting, {k}/3 new ready"),
            SHOWN,
            &format!(
                "document.querySelector('[data-env=dev] [data-instance=\"{new}\"][data-state=starting]') \
                 && document.querySelector('[data-env=dev] [data-role=rollout][data-deployment=\"{id}\"] [data-role=counts]')\
                    ?.textContent.startsWith('new {k}/3 ready')"
            ),
        );
        assert_eq!(
            browser.eval("document.querySelector('[data-env=dev] [data-role=bar]').value"),
            k,
            "the progress bar"
        );
        if k == 1 {
            browser.screenshot("deploys-board-rolling-desktop");
        }
        node.allowed.insert(new);
    }
    // The last one ready: the rollout ends; the board shows the new digest.
    let mut ended = Value::Null;
    let started = Instant::now();
    while !matches!(ended["state"].as_str(), Some("succeeded" | "failed")) {
        assert!(started.elapsed() < STEP, "the rollout did not end: {ended}");
        node.round(&server);
        ended = deployment(&server, id);
    }
    assert_eq!(ended["state"], "succeeded", "{ended}");
    browser.wait_until(
        "the board showing the second digest running and no rollout",
        SHOWN,
        &format!(
            "document.querySelector('[data-env=dev] [data-role=digest]')?.textContent === '{}' \
             && !document.querySelector('[data-env=dev] [data-role=rollout]')",
            &second[..19]
        ),
    );
    assert_eq!(
        browser.eval("window.__notReloaded === true"),
        true,
        "the board changed without a reload"
    );
    browser.screenshot("deploys-board-desktop");
    browser.set_viewport(PHONE);
    browser.screenshot("deploys-board-phone");
    browser.set_viewport(DESKTOP);

    // The deployment's timeline: requested, started, each instance started,
    // ready and routed, each old one drained, succeeded.
    browser.goto(&format!("{}/deployments/{id}", server.url()));
    let kinds = browser
        .eval("[...document.querySelectorAll('[data-role=timeline] li')].map(l => l.dataset.kind)");
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(kinds.first(), Some(&"requested"), "{kinds:?}");
    // Rolled out, then verified (the spec has no soak nor verify job).
    assert_eq!(
        kinds[kinds.len() - 2..],
        ["succeeded", "verified"],
        "{kinds:?}"
    );
    assert_eq!(count("progressing"), 1, "{kinds:?}");
    assert_eq!(count("instance_started"), 3, "{kinds:?}");
    assert_eq!(count("instance_ready"), 3, "{kinds:?}");
    assert_eq!(count("routed"), 3, "{kinds:?}");
    assert_eq!(count("drain"), 3, "the three old instances: {kinds:?}");
    // The same timeline in the API.
    let events = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/deployments/{id}/events"),
        None,
        &[],
    );
    assert_eq!(events.status, 200, "{}", events.describe());
    let api_kinds: Vec<String> = events
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(api_kinds, kinds, "the page shows the API's timeline");
    assert_eq!(
        browser.attr("[data-role=state]", "data-state").as_deref(),
        Some("succeeded")
    );
    browser.screenshot("deploys-timeline-desktop");
    browser.set_viewport(PHONE);
    browser.screenshot("deploys-timeline-phone");
    browser.set_viewport(DESKTOP);

    // The traceability view of dev: the image, the pipeline that built it
    // with its jobs, and every environment the digest went through.
    browser.goto(&format!(
        "{}/repos/{REPO}/environments/dev/trace",
        server.url()
    ));
    assert_eq!(
        browser.text("[data-role=image]"),
        format!("{REPO}@{second}")
    );
    assert!(
        browser
            .text("[data-role=pipeline]")
            .starts_with(&format!("{REPO} #2")),
        "{}",
        browser.text("[data-role=pipeline]")
    );
    assert!(browser.text("[data-role=jobs]").contains("image"));
    assert!(browser
        .text("[data-role=environments]")
        .contains(&format!("{id} deploy")));
    browser.screenshot("deploys-trace-desktop");
    browser.set_viewport(PHONE);
    browser.screenshot("deploys-trace-phone");
}

#[test]
fn a_deployer_aborts_a_rollout_from_the_board_and_it_reverts() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node_auth = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("browser-deploys-abort");
    let first = repo_in_dev(&server, &runner, &node_auth, &work.path().join("repo"));
    let mut node = Node::new(node_auth);
    node.adopt(&server);
    let old: HashSet<String> = node.allowed.clone();
    let browser = Browser::start();
    let board = format!("/repos/{REPO}/environments");
    sign_in(&browser, &server, "admin", server.admin_password(), &board);

    // The second digest's first new instance never gets ready.
    let second = run_pipeline_pushing(&server, &runner, REPO);
    let id = dev_deployment_of(&server, &second);
    let new = node.until_new_instance(&server);
    let abort = format!(
        "[data-env=dev] [data-role=rollout][data-deployment='{id}'] [data-role=abort] button"
    );
    browser.wait_until(
        "the rollout with its abort button",
        SHOWN,
        &format!("document.querySelector(\"{abort}\")"),
    );
    browser.click(&abort);
    browser.wait_until(
        "the deployment page after aborting",
        WAIT,
        &format!("location.pathname === '/deployments/{id}'"),
    );
    // The controller fails it and stops its instance; the first digest's
    // instances serve on.
    let mut ended = Value::Null;
    let started = Instant::now();
    while ended["state"] != "failed" {
        assert!(
            started.elapsed() < STEP,
            "the abort did not end it: {ended}"
        );
        node.round(&server);
        ended = deployment(&server, id);
    }
    assert_eq!(ended["reason"], "aborted by admin", "{ended}");
    browser.wait_until(
        "the deployment page following it to failed",
        SHOWN,
        "document.querySelector('[data-role=state]')?.dataset.state === 'failed'",
    );
    let timeline = browser.text("[data-role=timeline]");
    assert!(
        timeline.contains("aborted by admin: reverting"),
        "{timeline}"
    );
    let running: HashSet<String> = node.round(&server).into_iter().collect();
    assert!(!running.contains(&new), "{new} is stopped");
    assert_eq!(
        running, old,
        "the first digest's instances, and only they, run"
    );
    let current = deployments(&server, REPO)
        .into_iter()
        .find(|d| d["environment"] == "dev" && d["state"] == "succeeded")
        .unwrap();
    assert_eq!(current["digest"], first.as_str());
    let audit = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/audit?repo={REPO}"),
        None,
        &[],
    )
    .json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "abort" && e["actor"] == "admin" && e["deployment_id"] == id),
        "{audit}"
    );
}

/// Protect staging with one approval by a developer; admin asks to promote
/// dev's digest there. The id of the request awaiting approval.
fn awaiting_promotion(server: &TestServer) -> i64 {
    let r = api(
        server,
        &server.admin_auth(),
        Method::PUT,
        "/api/v1/environments/protection",
        Some(json!({"repo": REPO, "env": "staging",
                    "policy": {"required_approvals": 1, "approvers": {"role": "user"}}})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/deployments/promote",
        Some(json!({"repo": REPO, "to": "staging"})),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let d = r.json()["deployment"].clone();
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    d["id"].as_i64().unwrap()
}

#[test]
fn an_approver_approves_from_the_board_and_the_deploy_proceeds() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("browser-deploys-approve");
    let digest = repo_in_dev(&server, &runner, &node, &work.path().join("repo"));
    let id = awaiting_promotion(&server);
    let bob = add_user(&server, "bob", "user");
    let board = format!("/repos/{REPO}/environments");

    // The admin asked: separation of duties leaves him no approve or reject
    // button for it (he may abort it, as a deployer there).
    let browser = Browser::start();
    sign_in(&browser, &server, "admin", server.admin_password(), &board);
    let awaiting = format!("[data-env=staging] [data-role=awaiting][data-deployment='{id}']");
    assert!(browser.text(&awaiting).contains("0/1 approvals"));
    assert_eq!(
        browser.eval(&format!(
            "document.querySelectorAll(\"{awaiting} form:not([data-role=abort])\").length"
        )),
        0,
        "the requester may not approve his own request"
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelectorAll(\"{awaiting} [data-role=abort]\").length"
        )),
        1,
        "a deployer may abort it"
    );
    // Promote and roll back are his to use (dev ran nothing before: no
    // rollback there).
    assert_eq!(
        browser.eval("document.querySelectorAll('[data-env=staging] [data-role=promote]').length"),
        1
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('[data-env=dev] [data-role=promote], [data-env=dev] [data-role=rollback]').length"),
        0,
        "dev is first in the chain and ran nothing before"
    );

    // Bob approves from the board and lands on the deployment, which goes on.
    sign_in(&browser, &server, "bob", &bob, &board);
    browser.click(&format!("{awaiting} [data-role=approve] button"));
    browser.wait_until(
        "the deployment page after approving",
        WAIT,
        &format!("location.pathname === '/deployments/{id}'"),
    );
    let after = deployment(&server, id);
    assert!(
        matches!(after["state"].as_str(), Some("pending" | "progressing")),
        "approved, it goes on: {after}"
    );
    assert_eq!(after["approved_by"], json!(["bob"]), "{after}");
    let ended = serve_until_ended(&server, &node, id);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    browser.wait_until(
        "the deployment page following it to success",
        SHOWN,
        "document.querySelector('[data-role=state]')?.dataset.state === 'succeeded'",
    );
    let timeline = browser.text("[data-role=timeline]");
    assert!(timeline.contains("approval by bob"), "{timeline}");
    assert!(timeline.contains("approved by bob"), "{timeline}");
    assert!(
        browser.text(".facts").contains(&digest),
        "the page names the digest"
    );
    // The audit page has the approval, by bob.
    browser.goto(&format!("{}/repos/{REPO}/audit", server.url()));
    let audit = browser.text("table.audit tbody");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("bob") && l.contains("approve")),
        "{audit}"
    );
}

#[test]
fn a_viewer_sees_no_buttons_and_its_forged_posts_change_nothing() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("browser-deploys-viewer");
    repo_in_dev(&server, &runner, &node, &work.path().join("repo"));
    // A second digest in dev, so dev could be rolled back.
    let second = run_pipeline_pushing(&server, &runner, REPO);
    let second_id = dev_deployment_of(&server, &second);
    assert_eq!(
        serve_until_ended(&server, &node, second_id)["state"],
        "succeeded"
    );
    let id = awaiting_promotion(&server);
    let vera = add_user(&server, "vera", "viewer");
    let board = format!("/repos/{REPO}/environments");

    // The admin sees the buttons a viewer must not.
    let browser = Browser::start();
    sign_in(&browser, &server, "admin", server.admin_password(), &board);
    let buttons = "document.querySelectorAll('.board form').length";
    assert!(
        browser.eval(buttons).as_u64().unwrap() >= 2,
        "promote and rollback for the admin"
    );

    sign_in(&browser, &server, "vera", &vera, &board);
    assert!(browser
        .text(&format!(
            "[data-env=staging] [data-role=awaiting][data-deployment='{id}']"
        ))
        .contains("0/1 approvals"));
    assert_eq!(browser.eval(buttons), 0, "a viewer sees no buttons");
    browser.goto(&format!("{}/deployments/{id}", server.url()));
    assert_eq!(
        browser.eval("document.querySelectorAll('#live form').length"),
        0
    );

    let before = deployments(&server, REPO);
    let audit_before = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/audit?repo={REPO}"),
        None,
        &[],
    )
    .json();
    // Posts from the viewer's own page, with its session: without the CSRF
    // token, then with it (its role refuses); the API with the session's
    // token; the API with the viewer's own API token.
    let csrf = browser.eval("document.querySelector('form.who input[name=csrf]').value");
    let csrf = csrf.as_str().unwrap();
    let forms = [
        (format!("/deployments/{id}/abort"), String::new()),
        (format!("/deployments/{id}/approve"), String::new()),
        (format!("/deployments/{id}/reject"), "comment=no".to_owned()),
        (
            "/environments/promote".to_owned(),
            format!("repo={REPO}&env=staging"),
        ),
        (
            "/environments/rollback".to_owned(),
            format!("repo={REPO}&env=dev"),
        ),
    ];
    for (path, fields) in &forms {
        for token in ["", csrf] {
            let body = if token.is_empty() {
                fields.clone()
            } else {
                format!("csrf={token}&{fields}")
            };
            let status = browser.js(
                "return fetch(arguments[0], {method: 'POST', credentials: 'same-origin', \
                   headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1]}) \
                 .then(r => r.status);",
                vec![json!(path), json!(body)],
            );
            assert_eq!(status, 403, "a viewer's post to {path} with {body:?}");
        }
    }
    for (path, body) in [
        (format!("/api/v1/deployments/{id}/abort"), json!({})),
        (format!("/api/v1/deployments/{id}/approve"), json!({})),
        (
            format!("/api/v1/deployments/{id}/reject"),
            json!({"comment": "no"}),
        ),
        (
            "/api/v1/deployments/rollback".to_owned(),
            json!({"repo": REPO, "env": "dev"}),
        ),
    ] {
        let status = browser.js(
            "return fetch(arguments[0], {method: 'POST', credentials: 'same-origin', \
               headers: {'content-type': 'application/json', 'x-csrf-token': arguments[2]}, \
               body: JSON.stringify(arguments[1])}).then(r => r.status);",
            vec![json!(path), body.clone(), json!(csrf)],
        );
        assert_eq!(status, 403, "the viewer's session on {path}");
    }
    let r = api(
        &server,
        &Auth::Basic("vera".into(), vera.clone()),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "mine", "scopes": ["pull"]})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let token = Auth::Bearer(r.json()["token"].as_str().unwrap().to_owned());
    let r = api(
        &server,
        &token,
        Method::POST,
        &format!("/api/v1/deployments/{id}/approve"),
        None,
        &[],
    );
    assert_eq!(r.status, 403, "{}", r.describe());

    // Nothing changed: the same deployments, the request still waits with
    // no approval, and the audit has nothing new.
    assert_eq!(deployments(&server, REPO), before);
    let d = deployment(&server, id);
    assert_eq!(d["state"], "awaiting_approval", "{d}");
    assert_eq!(d["approvals"]["approved_by"], json!([]), "{d}");
    let audit_after = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/audit?repo={REPO}"),
        None,
        &[],
    )
    .json();
    assert_eq!(audit_after, audit_before);
}
