//! The web UI in a real browser (headless Chromium over WebDriver): signing in
//! through the form, the dashboard following a pipeline live without a
//! reload, how pages look at desktop and phone width (screenshots in
//! `target/screenshots/`), and getting around with the keyboard alone.
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
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
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
