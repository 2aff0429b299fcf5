//! The web UI in a real browser (headless Chromium over WebDriver): signing in
//! through the form, the dashboard and the pipeline page following runs live
//! without a reload, a run started from the repository page, cancel stopping
//! the containers, what a viewer sees and a forged post, how pages look at
//! desktop and phone width (screenshots in `target/screenshots/`), and
//! getting around with the keyboard alone.
//!
//! Each test starts its own server and browser. Chromium and chromedriver
//! must be installed (`scripts/test.sh` does it); without them these tests
//! fail, they do not skip.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::browser::{Browser, DESKTOP, PHONE, WAIT};
use common::*;
use fantoccini::key::Key;

/// How long a one-step busybox pipeline may take from runner start to success.
const PIPELINE_RUN: Duration = Duration::from_secs(60);

const ONE_STEP: &str =
    "jobs:\n  build:\n    steps:\n      - image: busybox\n        commands: [echo hello]\n";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The CLI as admin against `server`.
fn slipway(server: &TestServer, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slipway {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// A git repository with one commit of `.slipway.yml`, added to the server
/// as `name` through the API.
fn add_repo(server: &TestServer, dir: &Path, name: &str, spec: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let git = |args: &[&str]| git(dir, args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.join(".slipway.yml"), spec).unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "Add the pipeline"]);
    let body = serde_json::json!({"name": name, "url": dir.to_str().unwrap()});
    let r = server.request(
        reqwest::Method::POST,
        "/api/v1/repos",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
}

/// Start a pipeline of `repo` through the API; returns its id.
fn start_pipeline(server: &TestServer, repo: &str) -> i64 {
    let body = serde_json::json!({"repo": repo});
    let r = server.request(
        reqwest::Method::POST,
        "/api/v1/pipelines",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    r.json()["id"].as_i64().expect("the new pipeline's id")
}

struct Runner(Child);

impl Drop for Runner {
    fn drop(&mut self) {
        // SIGTERM lets it finish; tests end with nothing running.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start_runner(server: &TestServer, work: &Path) -> Runner {
    let token = text(&slipway(server, &["runner-token", "create"]).stdout)
        .trim()
        .to_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["runner", "--server", server.url(), "--token", &token])
        .args([
            "--name",
            "browser-test-runner",
            "--capacity",
            "1",
            "--work-dir",
        ])
        .arg(work)
        .env("SLIPWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Runner(child)
}

/// Sign in as admin through the form, from the dashboard's redirect.
fn sign_in(browser: &Browser, server: &TestServer) {
    browser.goto(&format!("{}/", server.url()));
    assert_eq!(browser.path(), "/signin?next=/");
    browser.fill("#username", "admin");
    browser.fill("#password", server.admin_password());
    browser.click("form[action='/signin'] button[type=submit]");
    browser.wait_until(
        "the dashboard after signing in",
        WAIT,
        "location.pathname === '/' && document.body.dataset.page === 'dashboard'",
    );
}

/// The status badge of pipeline `id` on the dashboard, as a CSS selector.
fn badge(id: i64) -> String {
    format!("tbody#pipelines tr[data-id='{id}'] .status")
}

#[test]
fn signing_in_through_the_form_lands_on_the_dashboard() {
    let server = TestServer::start();
    let browser = Browser::start();

    browser.goto(&format!("{}/", server.url()));
    assert_eq!(
        browser.path(),
        "/signin?next=/",
        "a page sends strangers to sign in"
    );
    assert_eq!(browser.text("h1"), "Sign in to Slipway");
    assert!(
        browser.focused().starts_with("input#username"),
        "the user name field has the focus, not {}",
        browser.focused()
    );

    // A wrong password: the form again, with an alert saying so.
    browser.fill("#username", "admin");
    browser.fill("#password", "not-the-password");
    browser.click("form[action='/signin'] button[type=submit]");
    assert_eq!(browser.text("[role=alert]"), "Wrong user name or password.");

    browser.fill("#username", "admin");
    browser.fill("#password", server.admin_password());
    browser.click("form[action='/signin'] button[type=submit]");
    browser.wait_until(
        "the dashboard after signing in",
        WAIT,
        "location.pathname === '/' && document.querySelector('h1')",
    );
    assert_eq!(browser.text("h1"), "Recent pipelines");
    assert_eq!(browser.eval("document.title"), "Pipelines · Slipway");
    assert!(
        browser.text("header .who").contains("admin"),
        "the header names who is signed in"
    );
    assert_eq!(browser.text("tbody#pipelines"), "No pipelines yet.");
    let cookies = browser.eval("document.cookie");
    assert!(
        !cookies.as_str().unwrap().contains("slipway_session"),
        "the session cookie is HttpOnly: scripts see {cookies}"
    );
}

/// The open redirect after sign-in: a link to
/// `/signin?next=/%09/evil.example/x` put a tab in the form's `next`, the
/// server answered `Location: /\t/evil.example/x`, and Chromium, dropping the
/// tab, went to `//evil.example/x`. Signing in from that link must stay here.
#[test]
fn signing_in_from_a_crafted_link_stays_on_the_site() {
    let server = TestServer::start();
    let browser = Browser::start();
    let origin = server.url().to_owned();

    browser.goto(&format!("{origin}/signin?next=/%09/evil.example/x"));
    browser.fill("#username", "admin");
    browser.fill("#password", server.admin_password());
    browser.click("form[action='/signin'] button[type=submit]");
    // Back on this site's dashboard. (Before the fix the browser went off to
    // evil.example, which does not resolve here: it never came back.)
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let url = browser
            .block_on(browser.client().current_url())
            .expect("the current URL");
        if url.path() != "/signin" {
            assert_eq!(
                url.origin().ascii_serialization(),
                origin,
                "signing in went to {url}"
            );
            assert_eq!(url.path(), "/", "signing in went to {url}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "signing in did not land on this site within {WAIT:?} (the browser is still at {url}, or loading another site)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.wait_until(
        "the dashboard after signing in",
        WAIT,
        "document.body.dataset.page === 'dashboard'",
    );
}

#[test]
fn the_dashboard_follows_a_pipeline_to_success_without_a_reload() {
    let server = TestServer::start();
    let work = scratch_dir("browser-live");
    // Steps run as container root, uid 100000, which must reach the runner's dirs.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    slipway(&server, &["image", "bootstrap", "busybox"]);
    add_repo(&server, &work.path().join("repo"), "team/live", ONE_STEP);
    // No runner yet, so it waits.
    let id = start_pipeline(&server, "team/live");

    let browser = Browser::start();
    sign_in(&browser, &server);
    let badge = badge(id);
    assert_eq!(
        browser.text(&format!("tbody#pipelines tr[data-id='{id}'] a")),
        "team/live #1"
    );
    assert!(
        browser.text(&badge).ends_with("pending"),
        "{}",
        browser.text(&badge)
    );
    assert_eq!(
        browser.attr(&badge, "class").as_deref(),
        Some("status status-pending")
    );

    // Mark this document: a reload or navigation would lose the mark.
    browser.eval("window.__marker = 1");
    let _runner = start_runner(&server, &work.path().join("runner"));
    let status = format!(
        "(() => {{ const b = document.querySelector(\"{badge}\"); \
         return b && b.classList.contains('status-success') && b.textContent.trim(); }})()"
    );
    let seen = browser.wait_until("the badge turns to success", PIPELINE_RUN, &status);
    assert!(seen.as_str().unwrap().ends_with(" success"), "{seen}");
    assert_eq!(
        browser.eval("window.__marker"),
        1,
        "the page was reloaded or left"
    );
    assert_eq!(browser.path(), "/");
    let api = server.get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth());
    assert_eq!(api.json()["status"], "success");
}

#[test]
fn the_dashboard_at_desktop_and_phone_width() {
    let server = TestServer::start();
    let work = scratch_dir("browser-shots");
    add_repo(&server, &work.path().join("repo"), "team/app", ONE_STEP);
    let id = start_pipeline(&server, "team/app");

    let browser = Browser::start();
    sign_in(&browser, &server);
    browser.find(&badge(id));

    browser.set_viewport(DESKTOP);
    let shot = browser.screenshot("dashboard-desktop");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    browser.set_viewport(PHONE);
    let shot = browser.screenshot("dashboard-phone");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // The table folds into blocks: nothing sticks out sideways.
    let width = browser.eval("document.documentElement.scrollWidth");
    assert!(
        width.as_u64().unwrap() <= PHONE.0 as u64,
        "at {}px the page is {width}px wide",
        PHONE.0
    );
}

#[test]
fn the_keyboard_reaches_the_skip_link_first_and_sign_out_later() {
    let server = TestServer::start();
    let browser = Browser::start();
    sign_in(&browser, &server);
    // From the top of a freshly loaded page.
    browser.goto(&format!("{}/", server.url()));
    browser.find("h1");
    assert_eq!(browser.focused(), "body");

    browser.press(Key::Tab);
    assert_eq!(browser.focused(), "a.skip \"Skip to content\"");
    // Following it puts the focus on the content, past the header.
    browser.press(Key::Enter);
    assert_eq!(browser.focused(), "main#main");

    browser.goto(&format!("{}/", server.url()));
    browser.find("h1");
    let mut path = Vec::new();
    for _ in 0..30 {
        browser.press(Key::Tab);
        let now = browser.focused();
        path.push(now.clone());
        if now == "button \"Sign out\"" {
            assert_eq!(path[0], "a.skip \"Skip to content\"", "{path:?}");
            return;
        }
    }
    panic!("30 presses of Tab never reached the sign-out button: {path:?}");
}

/// A scratch dir container root (uid 100000) can reach, with busybox in the
/// server's registry.
fn runner_ready(server: &TestServer, prefix: &str) -> tempfile::TempDir {
    let work = scratch_dir(prefix);
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    slipway(server, &["image", "bootstrap", "busybox"]);
    work
}

/// The pipeline page's status badge text, e.g. "▶ running".
const PIPELINE_STATUS: &str = "[data-role='pipeline-status']";

/// A run started from the repository page's form, then followed on its
/// pipeline page from running to success without a reload.
#[test]
fn a_run_from_the_repository_page_goes_to_success_on_its_page_without_a_reload() {
    let server = TestServer::start();
    let work = runner_ready(&server, "browser-run");
    let spec = "jobs:\n  test:\n    steps:\n      - name: slow\n        image: busybox\n        commands: [sleep 3, echo done]\n  after:\n    needs: [test]\n    steps:\n      - name: report\n        image: busybox\n        commands: [echo reported]\n";
    add_repo(&server, &work.path().join("repo"), "team/app", spec);
    let _runner = start_runner(&server, &work.path().join("runner"));

    let browser = Browser::start();
    sign_in(&browser, &server);
    browser.goto(&format!("{}/repos/team/app", server.url()));
    assert_eq!(browser.attr("#ref", "value").as_deref(), Some("main"));
    browser.click("form.run button[type=submit]");
    browser.wait_until(
        "the new pipeline's page",
        WAIT,
        "location.pathname === '/pipelines/1' && document.body.dataset.page === 'pipeline'",
    );
    browser.eval("window.__marker = 1");
    browser.wait_until(
        "the pipeline to be running",
        PIPELINE_RUN,
        &format!(
            "document.querySelector(\"{PIPELINE_STATUS}\").classList.contains('status-running')"
        ),
    );
    browser.screenshot("pipeline-running");
    browser.wait_until(
        "the pipeline to succeed",
        PIPELINE_RUN,
        &format!(
            "document.querySelector(\"{PIPELINE_STATUS}\").classList.contains('status-success')"
        ),
    );
    assert_eq!(browser.eval("window.__marker"), 1, "the page was reloaded");
    // Every job and step on the page says success too, with text not colour alone.
    let texts = browser.eval(
        "[...document.querySelectorAll(\"[data-role='job-status'] .text, [data-role='step-status'] .text\")].map(e => e.textContent)",
    );
    assert_eq!(
        texts,
        serde_json::json!(["success", "success", "success", "success"]),
        "{texts}"
    );
    assert!(
        browser.attr("[data-role='cancel']", "hidden").is_some(),
        "no cancel once finished"
    );
    browser.screenshot("pipeline");
}

/// Cancel on the pipeline page stops the running step's container.
#[test]
fn cancelling_from_the_pipeline_page_stops_its_containers() {
    let server = TestServer::start();
    let work = runner_ready(&server, "browser-cancel");
    let spec = "jobs:\n  wait:\n    steps:\n      - name: sleeper\n        image: busybox\n        commands: [sleep 120]\n";
    add_repo(&server, &work.path().join("repo"), "team/slow", spec);
    let runner_dir = work.path().join("runner");
    let _runner = start_runner(&server, &runner_dir);
    let id = start_pipeline(&server, "team/slow");

    let browser = Browser::start();
    sign_in(&browser, &server);
    browser.goto(&format!("{}/pipelines/{id}", server.url()));
    browser.wait_until(
        "the step to run",
        PIPELINE_RUN,
        "document.querySelector(\"[data-role='step-status']\").classList.contains('status-running')",
    );
    let containers = runner_dir.join("engine/containers");
    let count = || {
        std::fs::read_dir(&containers)
            .map(|d| d.count())
            .unwrap_or(0)
    };
    wait_for("a container to start", WAIT, || count() > 0);
    browser.click("form[data-role='cancel'] button");
    browser.wait_until(
        "the page to say cancelled",
        WAIT,
        &format!(
            "document.querySelector(\"{PIPELINE_STATUS}\").classList.contains('status-cancelled')"
        ),
    );
    wait_for(
        "the container to be gone after the cancel",
        Duration::from_secs(10),
        || count() == 0,
    );
    let api = server.get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth());
    assert_eq!(api.json()["status"], "cancelled");
}

/// A viewer sees neither cancel nor re-run, and a POST forged from the page
/// (with or without the viewer's token) changes nothing.
#[test]
fn a_viewer_sees_no_cancel_or_rerun_and_forged_posts_are_refused() {
    let server = TestServer::start();
    let work = scratch_dir("browser-viewer");
    add_repo(&server, &work.path().join("repo"), "team/app", ONE_STEP);
    let id = start_pipeline(&server, "team/app");
    let body =
        serde_json::json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"});
    let r = server.request(
        reqwest::Method::POST,
        "/api/v1/users",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());

    let browser = Browser::start();
    browser.goto(&format!("{}/signin", server.url()));
    browser.fill("#username", "vera");
    browser.fill("#password", "viewer-password-1");
    browser.click("form[action='/signin'] button[type=submit]");
    browser.wait_until(
        "the dashboard",
        WAIT,
        "document.body.dataset.page === 'dashboard'",
    );
    browser.goto(&format!("{}/pipelines/{id}", server.url()));
    assert_eq!(
        browser.eval("document.querySelectorAll(\"[data-role='cancel'], [data-role='rerun'], [data-role='rerun-failed']\").length"),
        0
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('button')].some(b => /re-run|cancel/i.test(b.textContent))"),
        false
    );
    // Forged from the page itself: the form post with the viewer's own
    // token (role refused), one with no token, and the API without the
    // session's X-CSRF-Token.
    let statuses = browser.js(
        "const token = document.querySelector('input[name=csrf]').value;
         const post = (url, body, headers) => fetch(url, {method: 'POST', body, headers, credentials: 'same-origin', redirect: 'manual'}).then(r => r.status);
         return Promise.all([
           post(arguments[0] + '/cancel', new URLSearchParams({csrf: token})),
           post(arguments[0] + '/rerun', new URLSearchParams({csrf: 'forged'})),
           post('/api/v1' + arguments[0] + '/cancel', null, {}),
         ]);",
        vec![serde_json::json!(format!("/pipelines/{id}"))],
    );
    assert_eq!(statuses, serde_json::json!([403, 403, 403]), "{statuses}");
    let api = server.get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth());
    assert_eq!(api.json()["status"], "pending", "nothing changed");
    let all = server.get("/api/v1/pipelines", &server.admin_auth()).json();
    assert_eq!(all.as_array().unwrap().len(), 1, "no re-run was made");
}
