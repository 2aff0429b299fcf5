//! The step log page and the log API under it: the page needs a session and
//! renders the step (snapshot, ids and times redacted); line ranges as JSON
//! with each line's time; search through the file; the raw log as a download;
//! and, in headless Chromium, the viewer itself: a 100,000-line log opening at
//! its tail, colours, `#L` links, search, timestamps, the keyboard, phone
//! width, and a running step followed live.
//!
//! A fake runner (the runner protocol over HTTP, no containers) writes the
//! logs, so what is read back is exactly what was sent.

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, PHONE, WAIT};
use common::web::{redact_page, sign_in_as, web_client};
use common::*;
use fantoccini::key::Key;
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

fn client() -> Client {
    web_client()
}

fn signed_in(server: &TestServer) -> Client {
    sign_in_as(server, "admin", server.admin_password())
}

fn redact(page: &str, server: &TestServer) -> String {
    redact_page(page, server)
}

/// The runner protocol by hand: one leased job whose steps we report and
/// whose logs we write.
struct FakeRunner {
    url: String,
    auth: Auth,
    job: i64,
    attempt: i64,
    /// The lease's own token, sent on every call about the job.
    lease_token: String,
    /// Bytes written so far, per step position.
    written: std::collections::HashMap<i64, u64>,
}

impl FakeRunner {
    fn post(&self, path: &str, body: Vec<u8>, json_body: bool) -> HttpResponse {
        let mut headers = vec![("x-slipway-lease", self.lease_token.as_str())];
        if json_body {
            headers.push(("content-type", "application/json"));
        }
        request_as(
            &self.url,
            &self.auth,
            Method::POST,
            path,
            &headers,
            Some(body),
        )
    }

    /// Register a runner and lease the one queued job.
    fn lease(server: &TestServer) -> FakeRunner {
        let mut runner = FakeRunner {
            url: server.url().to_owned(),
            auth: Auth::Bearer(server.register_runner("fake")),
            job: 0,
            attempt: 0,
            lease_token: String::new(),
            written: Default::default(),
        };
        let r = runner.post(
            "/api/v1/runner/lease",
            serde_json::to_vec(&json!({"free": 1, "wait_ms": 5000})).unwrap(),
            true,
        );
        assert_eq!(r.status, 200, "{}", r.describe());
        let lease = r.json();
        runner.job = lease["job_id"].as_i64().unwrap();
        runner.attempt = lease["attempt"].as_i64().unwrap();
        runner.lease_token = lease["lease_token"].as_str().unwrap().to_owned();
        runner
    }

    fn heartbeat(&self) {
        let path = format!("/api/v1/runner/jobs/{}/heartbeat", self.job);
        let r = self.post(
            &path,
            serde_json::to_vec(&json!({"attempt": self.attempt})).unwrap(),
            true,
        );
        assert_eq!(r.status, 200, "{}", r.describe());
    }

    fn step(&self, position: i64, status: &str, exit_code: Option<i32>) {
        self.heartbeat();
        let path = format!("/api/v1/runner/jobs/{}/steps/{position}", self.job);
        let body = json!({"attempt": self.attempt, "status": status, "exit_code": exit_code});
        let r = self.post(&path, serde_json::to_vec(&body).unwrap(), true);
        assert_eq!(r.status, 204, "{}", r.describe());
    }

    /// Append to a step's log, in pieces the server takes (1 MiB).
    fn log(&mut self, position: i64, bytes: &[u8]) {
        self.heartbeat();
        for piece in bytes.chunks(1 << 20) {
            let offset = self.written.get(&position).copied().unwrap_or(0);
            let path = format!(
                "/api/v1/runner/jobs/{}/steps/{position}/log?attempt={}&offset={offset}",
                self.job, self.attempt
            );
            let r = self.post(&path, piece.to_vec(), false);
            assert_eq!(r.status, 200, "{}", r.describe());
            let length = r.json()["length"].as_u64().unwrap();
            assert_eq!(length, offset + piece.len() as u64);
            self.written.insert(position, length);
        }
    }

    /// Heartbeats every second from another thread, until dropped: the
    /// lease outlives a slow browser start.
    fn keep_alive(&self) -> KeepAlive {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, auth, job, attempt, lease_token) = (
            self.url.clone(),
            self.auth.clone(),
            self.job,
            self.attempt,
            self.lease_token.clone(),
        );
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = request_as(
                    &url,
                    &auth,
                    Method::POST,
                    &format!("/api/v1/runner/jobs/{job}/heartbeat"),
                    &[
                        ("content-type", "application/json"),
                        ("x-slipway-lease", lease_token.as_str()),
                    ],
                    Some(serde_json::to_vec(&json!({"attempt": attempt})).unwrap()),
                );
                std::thread::park_timeout(Duration::from_secs(1));
            }
        });
        KeepAlive {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(&self, status: &str) {
        let path = format!("/api/v1/runner/jobs/{}/finish", self.job);
        let body = json!({"attempt": self.attempt, "status": status, "reason": null});
        let r = self.post(&path, serde_json::to_vec(&body).unwrap(), true);
        assert!(r.status == 200 || r.status == 204, "{}", r.describe());
    }
}

struct KeepAlive {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A repository whose one job `build` has one step `compile`, and a
/// pipeline of it, leased by a fake runner.
fn leased_step(server: &TestServer, work: &std::path::Path) -> FakeRunner {
    let repo = work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| git(&repo, args);
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join(".slipway.yml"),
        "jobs:\n  build:\n    steps:\n      - name: compile <all>\n        image: busybox\n        commands: [make]\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "c"]);
    let body = json!({"name": "team/app", "url": repo.to_str().unwrap()});
    let r = server.request(
        Method::POST,
        "/api/v1/repos",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    let r = server.request(
        Method::POST,
        "/api/v1/pipelines",
        &[("content-type", "application/json")],
        Some(serde_json::to_vec(&json!({"repo": "team/app"})).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    FakeRunner::lease(server)
}

fn api(server: &TestServer, path: &str) -> HttpResponse {
    request_as(
        server.url(),
        &server.admin_auth(),
        Method::GET,
        path,
        &[],
        None,
    )
}

#[test]
fn the_log_page_needs_a_session_and_shows_the_step() {
    let server = TestServer::start();
    let work = scratch_dir("ui-log-page");
    let mut runner = leased_step(&server, work.path());
    let _alive = runner.keep_alive();
    let job = runner.job;
    let page_path = format!("/jobs/{job}/steps/0");

    let r = client()
        .get(format!("{}{page_path}", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], format!("/signin?next={page_path}"));

    runner.step(0, "running", None);
    runner.log(
        0,
        b"\x1b[1mmake\x1b[0m all\n\x1b[31merror\x1b[0m: none\npartial",
    );
    let c = signed_in(&server);
    let r = c
        .get(format!("{}{page_path}", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("style-src 'self'"));
    let page = r.text().unwrap();
    assert!(page.contains("compile &#60;all&#62;") || page.contains("compile &lt;all&gt;"));
    assert!(page.contains("data-live=\"true\""), "{page}");
    assert!(page.contains("data-lines=\"3\""), "{page}");
    insta::assert_snapshot!("log_page_running", redact(&page, &server));

    // Finished: not live, and the exit code shows.
    runner.step(0, "failure", Some(2));
    let page = c
        .get(format!("{}{page_path}", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("data-live=\"false\""), "{page}");
    assert!(page.contains("exit code 2"), "{page}");

    // An unknown step is a 404; the script and stylesheet are served.
    let r = c
        .get(format!("{}/jobs/{job}/steps/9", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    for (path, kind) in [
        ("/static/log.js", "text/javascript"),
        ("/static/log.css", "text/css"),
    ] {
        let r = c.get(format!("{}{path}", server.url())).send().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
}

/// `count` lines like `line 7 of the log`, every 1000th one in red and
/// saying `needle`.
fn numbered_log(count: usize) -> Vec<u8> {
    let mut log = Vec::new();
    for i in 1..=count {
        if i % 1000 == 0 {
            log.extend(format!("\x1b[31mline {i}\x1b[0m has a Nee\x1b[1mdle in it\n").as_bytes());
        } else {
            log.extend(format!("line {i} of the log, padded to look like output\n").as_bytes());
        }
    }
    log
}

#[test]
fn the_log_api_reads_json_ranges_searches_and_downloads() {
    let server = TestServer::start();
    let work = scratch_dir("ui-log-api");
    let mut runner = leased_step(&server, work.path());
    let _alive = runner.keep_alive();
    let job = runner.job;
    runner.step(0, "running", None);
    let log = numbered_log(30_000);
    assert!(log.len() > 1 << 20);
    runner.log(0, &log);
    let base = format!("/api/v1/jobs/{job}/steps/0/log");

    // A range as JSON: the lines without newlines, a time for each, offsets.
    let r = api(
        &server,
        &format!("{base}?format=json&from_line=998&to_line=1001"),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["from_line"], 998);
    assert_eq!(v["to_line"], 1001);
    assert_eq!(v["total_lines"], 30_000);
    assert_eq!(v["finished"], false);
    assert_eq!(v["status"], "running");
    assert_eq!(
        v["lines"],
        json!([
            "line 999 of the log, padded to look like output",
            "\u{1b}[31mline 1000\u{1b}[0m has a Nee\u{1b}[1mdle in it",
            "line 1001 of the log, padded to look like output"
        ])
    );
    let start = log.windows(9).position(|w| w == b"line 999 ").unwrap() as u64;
    assert_eq!(v["start_offset"], start);
    let times: Vec<i64> = v["times"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().expect("a time per line"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - times[0]).abs() < 600_000, "{times:?} vs {now}");

    // The tail, with the offset a live reader continues at.
    runner.log(0, b"last words, no newline yet");
    let v = api(&server, &format!("{base}?format=json&tail=2")).json();
    assert_eq!(
        (v["from_line"].as_u64(), v["to_line"].as_u64()),
        (Some(29_999), Some(30_001))
    );
    assert_eq!(v["last_line_partial"], true);
    assert_eq!(v["lines"][1], "last words, no newline yet");
    let length = log.len() as u64 + 26;
    assert_eq!(v["end_offset"], length);

    // Text ranges are as before; bad requests say what is wrong.
    let r = api(&server, &format!("{base}?from_line=0&to_line=2"));
    assert_eq!(r.header("x-log-lines"), Some("30001"));
    assert!(r.body_text().starts_with("line 1 of the log"));
    let r = api(&server, &format!("{base}?format=yaml&tail=1"));
    assert_eq!(r.status, 400, "{}", r.describe());
    let r = api(&server, &format!("{base}?format=json"));
    assert_eq!(r.status, 400, "{}", r.describe());

    // Search: visible text (colour codes inside a word do not hide it), case,
    // limits and going on.
    let search = |query: &str| api(&server, &format!("{base}/search?{query}"));
    let v = search("q=Needle").json();
    let every_thousandth: Vec<u64> = (1..=30).map(|k| k * 1000 - 1).collect();
    assert_eq!(v["lines"], json!(every_thousandth));
    assert_eq!(v["next_line"], Value::Null);
    assert_eq!(search("q=needle").json()["lines"], json!([]));
    assert_eq!(
        search("q=needle&ignore_case=1").json()["lines"],
        json!(every_thousandth)
    );
    assert_eq!(search("q=31m").json()["lines"], json!([]));
    let v = search("q=Needle&limit=2").json();
    assert_eq!(v, json!({"lines": [999, 1999], "next_line": 2000}));
    let v = search("q=Needle&limit=2&from_line=2000").json();
    assert_eq!(v, json!({"lines": [2999, 3999], "next_line": 4000}));
    assert_eq!(search("q=last%20words").json()["lines"], json!([30_000]));
    assert_eq!(search("q=").status, 400);
    assert_eq!(search(&format!("q={}", "x".repeat(300))).status, 400);
    assert_eq!(search("q=x&ignore_case=maybe").status, 400);
    let r = api(
        &server,
        &format!("/api/v1/jobs/{job}/steps/7/log/search?q=x"),
    );
    assert_eq!(r.status, 404);

    // The whole log as an attachment (no 1 MiB cap), and the times kept
    // through a resent chunk.
    runner.step(0, "success", Some(0));
    let r = api(&server, &format!("{base}?download=1"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-disposition"),
        Some(format!("attachment; filename=\"job-{job}-step-0-attempt-1.log\"").as_str())
    );
    assert_eq!(r.header("x-log-complete"), Some("true"));
    assert_eq!(r.body.len() as u64, length);
    assert!(r.body.starts_with(b"line 1 of"));
    assert!(r.body.ends_with(b"no newline yet"));
    let v = api(&server, &format!("{base}?format=json&tail=1")).json();
    assert_eq!(v["finished"], true);
}

/// Sign the browser in and open `path`.
fn open_signed_in(browser: &Browser, server: &TestServer, path: &str) {
    browser.goto(&format!("{}{path}", server.url()));
    assert!(
        browser.path().starts_with("/signin?next="),
        "{}",
        browser.path()
    );
    browser.fill("#username", "admin");
    browser.fill("#password", server.admin_password());
    browser.click("form[action='/signin'] button[type=submit]");
    browser.wait_until(
        "the log page after signing in",
        WAIT,
        "document.body.dataset.page === 'log'",
    );
}

/// The line numbers drawn, and whether line `n` (1-based) is in the viewport.
const ROWS: &str = "Array.from(document.querySelectorAll('#log .r:not(.wait) .n')).map(a => Number(a.textContent))";
fn in_view(n: u64) -> String {
    format!(
        "(() => {{ const a = document.querySelector('#log .r:not(.wait) a.n[href=\"#L{n}\"]'); if (!a) return false; \
         const log = document.getElementById('log'), r = a.getBoundingClientRect(), b = log.getBoundingClientRect(); \
         const top = b.top + log.clientTop; return r.top >= top - 1 && r.bottom <= top + log.clientHeight + 1; }})()"
    )
}

#[test]
fn the_viewer_opens_a_long_log_at_its_tail_and_gets_around_it() {
    let server = TestServer::start();
    let work = scratch_dir("ui-log-browser");
    let mut runner = leased_step(&server, work.path());
    let _alive = runner.keep_alive();
    let job = runner.job;
    runner.step(0, "running", None);
    let log = numbered_log(100_000);
    runner.log(0, &log);
    runner.step(0, "success", Some(0));
    runner.finish("success");

    let browser = Browser::start();
    let page = format!("/jobs/{job}/steps/0");
    open_signed_in(&browser, &server, &page);
    // The page as a user opens it: at the tail, timed from navigation start.
    browser.goto(&format!("{}{page}", server.url()));
    browser.wait_until("the last line drawn", WAIT, &in_view(100_000));
    let shown = browser.eval("window.slipwayLog.shownAt").as_f64().unwrap();
    eprintln!(
        "100,000 lines ({:.1} MB): the tail drawn {shown:.0} ms after navigation started",
        log.len() as f64 / 1e6
    );
    let drawn = browser.eval(&format!("{ROWS}.length")).as_u64().unwrap();
    assert!(
        drawn < 400,
        "only the rows near the viewport are in the page: {drawn}"
    );
    // Colours are classes on spans; escapes are gone from the text.
    assert_eq!(
        browser.eval("document.querySelector('#log a.n[href=\"#L100000\"]').parentElement.querySelector('.x .fg1').textContent"),
        json!("line 100000")
    );
    let row = browser.text("#log a.n[href='#L100000'] ~ .x");
    assert_eq!(row, "line 100000 has a Needle in it");

    // Keyboard: the log takes focus; Home and End go to either end.
    browser.click("#log-end");
    assert_eq!(browser.focused(), "div#log.log");
    browser.press(Key::Home);
    browser.wait_until("line 1 at the top", WAIT, &in_view(1));
    browser.press(Key::PageDown);
    browser.wait_until(
        "a page further",
        WAIT,
        &format!("!{} && {}", in_view(1), in_view(30)),
    );
    browser.press(Key::End);
    browser.wait_until("back at the end", WAIT, &in_view(100_000));

    // A link to a line (and a range) scrolls there and highlights it.
    browser.goto(&format!("{}{page}#L54321", server.url()));
    browser.wait_until("line 54321 shown", WAIT, &in_view(54_321));
    browser.screenshot("log");
    assert_eq!(
        browser
            .eval("Array.from(document.querySelectorAll('#log .r.hl .n')).map(a => a.textContent)"),
        json!(["54321"])
    );
    browser.goto(&format!("{}{page}#L70-L72", server.url()));
    browser.wait_until("line 70 shown", WAIT, &in_view(70));
    assert_eq!(
        browser
            .eval("Array.from(document.querySelectorAll('#log .r.hl .n')).map(a => a.textContent)"),
        json!(["70", "71", "72"])
    );
    // Clicking a line number links it.
    browser.click("#log a.n[href='#L75']");
    browser.wait_until("the link in the address", WAIT, "location.hash === '#L75'");

    // Search on the server, then Enter for the next match.
    browser.fill("#log-q", "needle");
    browser.press(Key::Enter);
    browser.wait_until(
        "the first match",
        WAIT,
        "document.getElementById('log-hits').textContent === '1 of 100 lines'",
    );
    browser.wait_until("line 1000 shown", WAIT, &in_view(1000));
    assert_eq!(
        browser.eval("document.querySelector('#log .r.cur mark').textContent"),
        json!("Nee")
    );
    browser.press(Key::Enter);
    browser.wait_until("the second match", WAIT, &in_view(2000));
    assert_eq!(browser.text("#log-hits"), "2 of 100 lines");
    browser.click("#log-case");
    browser.wait_until(
        "no match with the case",
        WAIT,
        "document.getElementById('log-hits').textContent === 'No matches.'",
    );

    // Timestamps, on request.
    browser.click("#log-times");
    let stamp = browser.wait_until(
        "times shown",
        WAIT,
        "(document.querySelector('#log .r:not(.wait) .t') || {}).textContent",
    );
    let stamp = stamp.as_str().unwrap();
    assert!(
        regex::Regex::new(r"^\d\d:\d\d:\d\d\.\d{3}$")
            .unwrap()
            .is_match(stamp),
        "{stamp}"
    );

    // Scrolling the middle of the log a long way draws the rows there.
    browser.js(
        "const b = document.getElementById('log'); b.scrollTop = b.scrollHeight / 2;",
        vec![],
    );
    browser.wait_until(
        "rows in the middle",
        WAIT,
        &format!("{ROWS}.some(n => n > 45000 && n < 55000)"),
    );

    // Phone width: nothing of the page sticks out sideways; the log scrolls
    // inside its box.
    browser.set_viewport(PHONE);
    browser.goto(&format!("{}{page}", server.url()));
    browser.wait_until("the last line at phone width", WAIT, &in_view(100_000));
    assert_eq!(
        browser.eval(
            "Array.from(document.querySelectorAll('main, main *')).filter(e => !e.closest('.log-window') \
             && e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '.' + e.className)"
        ),
        json!([])
    );
    assert_eq!(
        browser.eval("(() => { const b = document.getElementById('log'); return b.scrollWidth > b.clientWidth; })()"),
        json!(true)
    );
    browser.screenshot("log-phone");
}

#[test]
fn the_viewer_follows_a_running_step() {
    let server = TestServer::start();
    let work = scratch_dir("ui-log-live");
    let mut runner = leased_step(&server, work.path());
    let _alive = runner.keep_alive();
    let job = runner.job;
    runner.step(0, "running", None);
    runner.log(0, &numbered_log(2_500));
    runner.log(0, b"half a li");

    let browser = Browser::start();
    open_signed_in(&browser, &server, &format!("/jobs/{job}/steps/0"));
    browser.wait_until("the tail", WAIT, &in_view(2_501));

    // Lines written now appear without a reload, and the view stays at the end.
    runner.log(0, b"ne\nand more\n");
    browser.wait_until(
        "the partial line completed",
        WAIT,
        "(document.querySelector('#log a.n[href=\"#L2501\"]') || {parentElement: {}}).parentElement.textContent \
         === '2501half a line'",
    );
    let started = Instant::now();
    let mut more = Vec::new();
    for i in 0..1_500 {
        more.extend(format!("streamed {i}\n").as_bytes());
    }
    runner.log(0, &more);
    browser.wait_until("streamed lines at the bottom", WAIT, &in_view(4_002));
    eprintln!("1,500 streamed lines shown within {:?}", started.elapsed());

    // Scrolled up, the view stays put while lines arrive.
    browser.click("#log");
    browser.press(Key::Home);
    browser.wait_until("line 1 at the top", WAIT, &in_view(1));
    runner.log(0, b"one more\n");
    browser.wait_until(
        "the new line counted",
        WAIT,
        "window.slipwayLog.total === 4003",
    );
    assert_eq!(browser.eval(&in_view(1)), json!(true));

    // The end of the step reaches the page.
    runner.step(0, "success", Some(0));
    runner.finish("success");
    browser.wait_until(
        "the status updated",
        Duration::from_secs(15),
        "document.querySelector('#log-status .text').textContent === 'success'",
    );
}

/// Past ~400,000 lines the scroll range is scaled (browsers cap an element's
/// height): a million lines still open at the tail, page by whole lines,
/// follow links and search.
#[test]
fn a_million_lines_stay_usable() {
    let server = TestServer::start();
    let work = scratch_dir("ui-log-million");
    let mut runner = leased_step(&server, work.path());
    let _alive = runner.keep_alive();
    let job = runner.job;
    runner.step(0, "running", None);
    let mut log = Vec::new();
    for i in 1..=1_000_000 {
        if i % 250_000 == 0 {
            log.extend(format!("{i} needle\n").as_bytes());
        } else {
            log.extend(format!("{i}\n").as_bytes());
        }
    }
    runner.log(0, &log);
    runner.step(0, "success", Some(0));
    runner.finish("success");

    let browser = Browser::start();
    let page = format!("/jobs/{job}/steps/0");
    open_signed_in(&browser, &server, &page);
    browser.goto(&format!("{}{page}", server.url()));
    browser.wait_until("the last line drawn", WAIT, &in_view(1_000_000));
    let shown = browser.eval("window.slipwayLog.shownAt").as_f64().unwrap();
    eprintln!("1,000,000 lines: the tail drawn {shown:.0} ms after navigation started");
    assert_eq!(browser.eval("window.slipwayLog.scaled"), json!(true));

    browser.click("#log-end");
    browser.press(Key::Home);
    browser.wait_until("line 1 at the top", WAIT, &in_view(1));
    let rows = browser.eval("window.slipwayLog.rows()").as_u64().unwrap();
    browser.press(Key::PageDown);
    // A page on is the next lines, none skipped.
    browser.wait_until(
        "the next page",
        WAIT,
        &format!("!{} && {}", in_view(rows - 1), in_view(rows)),
    );
    browser.js(
        "const b = document.getElementById('log'); b.scrollTop = b.scrollHeight / 2;",
        vec![],
    );
    browser.wait_until(
        "rows in the middle",
        WAIT,
        &format!("{ROWS}.some(n => n > 450000 && n < 550000)"),
    );
    browser.goto(&format!("{}{page}#L777777", server.url()));
    browser.wait_until("line 777777 shown", WAIT, &in_view(777_777));
    browser.fill("#log-q", "needle");
    browser.press(Key::Enter);
    browser.wait_until("a match shown", WAIT, &in_view(1_000_000));
    assert_eq!(browser.text("#log-hits"), "4 of 4 lines");
}
