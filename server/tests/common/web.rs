//! The web UI over HTTP for tests: a cookie-keeping client that does not
//! follow redirects, signing in through the form, a form's CSRF token, and
//! redacting pages for snapshots.

use reqwest::blocking::Client;

use super::TestServer;

pub fn web_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap()
}

/// The first form's hidden `csrf` value in a page.
pub fn csrf_in(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..at + 64].to_owned()
}

/// Sign in through the form; returns the client holding the session cookie.
pub fn sign_in_as(server: &TestServer, user: &str, password: &str) -> Client {
    let c = web_client();
    let form = c
        .get(format!("{}/signin", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let r = c
        .post(format!("{}/signin", server.url()))
        .form(&[
            ("username", user),
            ("password", password),
            ("csrf", &csrf_in(&form)),
            ("next", "/"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().unwrap());
    c
}

/// Asset versions, ids, tokens, durations, commits, times, scratch paths and
/// the server's port out of a page, for snapshots.
pub fn redact_page(page: &str, server: &TestServer) -> String {
    let rules = [
        (r"\?v=[0-9a-f]{16}", "?v=[assets]"),
        (
            r#"(/pipelines/|/jobs/|data-id="|data-job=")\d+"#,
            "${1}[id]",
        ),
        ("[0-9a-f]{64}", "[token]"),
        (r"\b\d+(m \d+)?s\b", "[duration]"),
        (
            r"<code>[0-9a-f]{12}(?:[0-9a-f]{28})?</code>",
            "<code>[commit]</code>",
        ),
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", "[time]"),
        (r"/tmp/[A-Za-z0-9_.-]+/repo", "[repo dir]"),
    ];
    let mut page = page.replace(server.host_port(), "[server]");
    for (pattern, with) in rules {
        page = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&page, with)
            .into_owned();
    }
    page
}
