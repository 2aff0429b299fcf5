//! The web UI over HTTP: sign-in with its login CSRF check, the session
//! cookie, sign-out, pages refusing anonymous visitors, forged form posts and
//! cookie-authenticated API writes without the session's CSRF token, and a
//! rendering snapshot of each page (times, ids and tokens redacted).
//! Browser tests (headless Chromium) are in `browser.rs`.

mod common;

use common::web::{
    csrf_in as token_in, redact_page as redact, sign_in_as as signed_in, web_client as client,
};
use common::*;
use reqwest::blocking::Client;

#[test]
fn pages_need_a_signed_in_user_and_forms_need_their_token() {
    let server = TestServer::start();
    let anonymous = client();
    // A page redirects to the sign-in form, keeping where it was going.
    let r = anonymous.get(format!("{}/", server.url())).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/signin?next=/");

    let form = anonymous
        .get(format!("{}/signin", server.url()))
        .send()
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let form = form.text().unwrap();
    insta::assert_snapshot!("signin", redact(&form, &server));

    // A sign-in posted from elsewhere (no login cookie, or another token) is refused.
    let forged = client()
        .post(format!("{}/signin", server.url()))
        .form(&[
            ("username", "admin"),
            ("password", server.admin_password()),
            ("csrf", &token_in(&form)),
        ])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert!(forged
        .headers()
        .get("set-cookie")
        .is_some_and(|c| !c.to_str().unwrap().starts_with("slipway_session=")));

    // A wrong password says so and sets no session.
    let r = anonymous
        .post(format!("{}/signin", server.url()))
        .form(&[
            ("username", "admin"),
            ("password", "not-the-password"),
            ("csrf", &token_in(&form)),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().unwrap().contains("Wrong user name or password."));

    // `next` never leaves the server.
    let c = client();
    let page = c
        .get(format!("{}/signin?next=//evil.example/x", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let r = c
        .post(format!("{}/signin", server.url()))
        .form(&[
            ("username", "admin"),
            ("password", server.admin_password()),
            ("csrf", &token_in(&page)),
            ("next", "//evil.example/x"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");

    // Signed in: the dashboard, then sign-out needs the page's token.
    let admin = signed_in(&server, "admin", server.admin_password());
    let page = admin
        .get(format!("{}/", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("Recent pipelines"), "{page}");
    let r = admin
        .post(format!("{}/signout", server.url()))
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "a forged sign-out");
    let r = admin
        .post(format!("{}/signout", server.url()))
        .form(&[("csrf", token_in(&page))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = admin.get(format!("{}/", server.url())).send().unwrap();
    assert_eq!(r.status(), 303, "the session ended");
}

/// After sign-in the server redirects to `next`, so `next` must stay on this
/// site. Browsers drop tabs and newlines from a `Location` and read `\` as
/// `/`, so `/\t/evil.example/x` is `//evil.example/x` to them: every value
/// that is not one `/` followed by a plain path character lands on `/`, both
/// in the sign-in form's hidden field and in the redirect after signing in.
#[test]
fn sign_in_never_redirects_off_the_site() {
    let server = TestServer::start();
    // Each as the server reads it from the query or the form (the client
    // percent-encodes it on the way).
    let bad = [
        "//evil.example/x",
        "/\\evil.example/x",
        "/\t/evil.example/x",
        "/\n/evil.example/x",
        "/\r\n/evil.example/x",
        "/ /evil.example/x",
        "/%09/evil.example/x",
        "/%2F/evil.example/x",
        "/%5Cevil.example/x",
        "/%5c%5cevil.example/x",
        "%2F%2Fevil.example/x",
        "\\\\evil.example/x",
        "https://evil.example/x",
        "http:evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/\u{3000}/evil.example/x",
        "/x\u{0}y",
        "",
    ];
    for next in bad {
        let c = client();
        let r = c
            .get(format!("{}/signin", server.url()))
            .query(&[("next", next)])
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{next:?}");
        let page = r.text().unwrap();
        assert!(
            page.contains(r#"<input type="hidden" name="next" value="/">"#),
            "the form keeps {next:?}:\n{page}"
        );
        let r = c
            .post(format!("{}/signin", server.url()))
            .form(&[
                ("username", "admin"),
                ("password", server.admin_password()),
                ("csrf", &token_in(&page)),
                ("next", next),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/", "next = {next:?}");
    }
    // A path on this server is kept.
    for next in [
        "/pipelines/7",
        "/repos/team/app?tab=runs",
        "/",
        "/x/log?q=a%20b",
        "/a%2Fb",
    ] {
        let c = client();
        let page = c
            .get(format!("{}/signin", server.url()))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let r = c
            .post(format!("{}/signin", server.url()))
            .form(&[
                ("username", "admin"),
                ("password", server.admin_password()),
                ("csrf", &token_in(&page)),
                ("next", next),
            ])
            .send()
            .unwrap();
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], next);
    }
}

#[test]
fn the_session_cookie_reads_the_api_and_writes_only_with_its_token() {
    let server = TestServer::start();
    let c = signed_in(&server, "admin", server.admin_password());
    let r = c
        .get(format!("{}/api/v1/pipelines", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "[]");
    // A write with the cookie alone (what a forged cross-site request has) is
    // refused; with the session's token it goes through.
    let r = c
        .post(format!("{}/api/v1/tokens", server.url()))
        .json(&serde_json::json!({"name": "t", "scopes": ["pull"]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = c
        .get(format!("{}/", server.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let r = c
        .post(format!("{}/api/v1/tokens", server.url()))
        .header("x-csrf-token", token_in(&page))
        .json(&serde_json::json!({"name": "t", "scopes": ["pull"]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
}

/// A repository `team/app` (one job `a`, then `b` needing it) and one pending
/// pipeline (no runner), created through the API.
fn repo_with_a_pipeline(server: &TestServer, work: &std::path::Path) {
    let repo = work.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_NAME", "Dev <b>Bold</b>")
            .env("GIT_AUTHOR_EMAIL", "d@e")
            .env("GIT_COMMITTER_NAME", "d")
            .env("GIT_COMMITTER_EMAIL", "d@e")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(
        repo.join(".slipway.yml"),
        "jobs:\n  a:\n    steps:\n      - name: first\n        image: busybox\n        commands: [true]\n  b:\n    needs: [a]\n    steps:\n      - name: second\n        image: busybox\n        commands: [true]\n",
    )
    .unwrap();
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "Add the <pipeline>"]);
    let admin = server.admin_auth();
    let post = |path: &str, body: serde_json::Value| {
        request_as(
            server.url(),
            &admin,
            reqwest::Method::POST,
            path,
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(&body).unwrap()),
        )
    };
    let r = post(
        "/api/v1/repos",
        serde_json::json!({"name": "team/app", "url": repo.to_str().unwrap()}),
    );
    assert_eq!(r.status, 201);
    let r = post("/api/v1/pipelines", serde_json::json!({"repo": "team/app"}));
    assert_eq!(r.status, 201);
    let r = post(
        "/api/v1/users",
        serde_json::json!({"username": "vera", "password": "viewer-password-1", "role": "viewer"}),
    );
    assert_eq!(r.status, 201);
}

fn get_page(c: &Client, server: &TestServer, path: &str) -> String {
    let r = c.get(format!("{}{path}", server.url())).send().unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.text().unwrap()
}

#[test]
fn the_dashboard_lists_recent_pipelines() {
    let server = TestServer::start();
    let work = scratch_dir("ui-dashboard");
    repo_with_a_pipeline(&server, work.path());
    let c = signed_in(&server, "admin", server.admin_password());
    let page = get_page(&c, &server, "/");
    assert!(page.contains("team/app #1"), "{page}");
    assert!(
        page.contains("Add the &#60;pipeline&#62;") || page.contains("Add the &lt;pipeline&gt;"),
        "{page}"
    );
    insta::assert_snapshot!("dashboard", redact(&page, &server));
}

/// The pipeline and repository pages; cancel, re-run and run forms only for
/// roles that may, and only with the session's token.
#[test]
fn pipeline_and_repository_pages_act_only_for_those_who_may() {
    let server = TestServer::start();
    let work = scratch_dir("ui-pipeline");
    repo_with_a_pipeline(&server, work.path());
    let admin = signed_in(&server, "admin", server.admin_password());
    let page = get_page(&admin, &server, "/pipelines/1");
    assert!(page.contains("data-role=\"cancel\""), "{page}");
    // Job b needs a: it is in the second column.
    let a = page.find("aria-label=\"job a\"").unwrap();
    let b = page.find("aria-label=\"job b\"").unwrap();
    assert!(a < b && page[a..b].contains("class=\"column\""), "{page}");
    assert!(page.contains("href=\"/jobs/"), "steps link to their logs");
    insta::assert_snapshot!("pipeline", redact(&page, &server));

    let repo_page = get_page(&admin, &server, "/repos/team/app");
    assert!(repo_page.contains("Run pipeline"));
    assert!(repo_page.contains("<td>main</td>"), "{repo_page}");
    insta::assert_snapshot!("repo", redact(&repo_page, &server));

    // A viewer sees neither the buttons nor the run form, and a post with
    // the viewer's own valid token is refused.
    let viewer = signed_in(&server, "vera", "viewer-password-1");
    let seen = get_page(&viewer, &server, "/pipelines/1");
    assert!(!seen.contains("data-role=\"cancel\""), "{seen}");
    assert!(!seen.contains("Re-run"), "{seen}");
    assert!(!get_page(&viewer, &server, "/repos/team/app").contains("Run pipeline"));
    let r = viewer
        .post(format!("{}/pipelines/1/cancel", server.url()))
        .form(&[("csrf", token_in(&seen))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // The admin's post without the page's token is refused too.
    let r = admin
        .post(format!("{}/pipelines/1/cancel", server.url()))
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let status = |id: i64| {
        server
            .get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth())
            .json()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(status(1), "pending");
    // With it, the run is cancelled and the page comes back.
    let r = admin
        .post(format!("{}/pipelines/1/cancel", server.url()))
        .form(&[("csrf", token_in(&page))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/pipelines/1");
    assert_eq!(status(1), "cancelled");
    // Run from the repository page, and re-run from the pipeline page.
    let r = admin
        .post(format!("{}/repos/team/app/run", server.url()))
        .form(&[("csrf", token_in(&repo_page).as_str()), ("ref", "main")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/pipelines/2");
    let r = admin
        .post(format!("{}/pipelines/1/rerun", server.url()))
        .form(&[("csrf", token_in(&page))])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/pipelines/3");
    assert_eq!(status(3), "pending");
    // Pages for things that do not exist say so.
    let r = admin
        .get(format!("{}/pipelines/99", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The images, runners and queue pages, with something on each.
#[test]
fn images_runners_and_queue_pages_show_what_there_is() {
    let server = TestServer::start();
    let work = scratch_dir("ui-more");
    repo_with_a_pipeline(&server, work.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["image", "bootstrap", "busybox"])
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A registered runner that never called in.
    let created = server.request(
        reqwest::Method::POST,
        "/api/v1/runner-tokens",
        &[("content-type", "application/json")],
        Some(b"{}".to_vec()),
    );
    assert_eq!(created.status, 201, "{}", created.body_text());
    let token = created.json()["token"].as_str().unwrap().to_owned();
    let r = request_as(
        server.url(),
        &Auth::None,
        reqwest::Method::POST,
        "/api/v1/runner/register",
        &[("content-type", "application/json")],
        Some(
            serde_json::to_vec(&serde_json::json!({
                "registration_token": token, "name": "builder-1", "labels": ["linux"], "capacity": 2
            }))
            .unwrap(),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body_text());

    let c = signed_in(&server, "vera", "viewer-password-1");
    let images = get_page(&c, &server, "/images");
    assert!(
        images.contains("href=\"/images/library/busybox\""),
        "{images}"
    );
    insta::assert_snapshot!("images", redact(&images, &server));
    let busybox = get_page(&c, &server, "/images/library/busybox");
    assert!(busybox.contains("<h2>latest</h2>"), "{busybox}");
    assert!(
        busybox.contains("/library/busybox@sha256:"),
        "a pull reference by digest"
    );
    insta::assert_snapshot!("image_repo", redact(&busybox, &server));
    let runners = get_page(&c, &server, "/runners");
    assert!(
        runners.contains("builder-1") && runners.contains("0 of 2"),
        "{runners}"
    );
    insta::assert_snapshot!("runners", redact(&runners, &server));
    let queue = get_page(&c, &server, "/queue");
    assert!(queue.contains("team/app</a> a"), "{queue}");
    assert!(
        queue.contains("builder-1 can take it") && queue.contains("waiting for a"),
        "the queue names the runners that could take each job: {queue}"
    );
    insta::assert_snapshot!("queue", redact(&queue, &server));
    let r = c
        .get(format!("{}/images/no/such", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// The deploy pages: the environments board, a deployment with its
/// timeline, an environment's history, the audit, the trace; the pipeline
/// page and the dashboard link to the deployment the pipeline caused.
#[test]
fn deploy_pages_show_the_chain_and_link_the_pipeline_to_its_deployments() {
    use common::deploy_peers::{api, deploy_to_dev, join_local_node};
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("ui-deploys");
    let dev = deploy_to_dev(&server, &runner, &node, "team/web", work.path());
    let admin_auth = server.admin_auth();
    let r = api(
        &server,
        &admin_auth,
        reqwest::Method::PUT,
        "/api/v1/environments/protection",
        Some(serde_json::json!({"repo": "team/web", "env": "staging",
                                "policy": {"required_approvals": 1}})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let r = api(
        &server,
        &admin_auth,
        reqwest::Method::POST,
        "/api/v1/deployments/promote",
        Some(serde_json::json!({"repo": "team/web", "to": "staging"})),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let awaiting = r.json()["deployment"]["id"].as_i64().unwrap();

    let admin = signed_in(&server, "admin", server.admin_password());
    let redact = |page: &str| {
        let page = redact(page, &server);
        let rules = [
            (r"sha256:[0-9a-f]{12}", "sha256:[digest]"),
            (r"\b[0-9a-f]{40}\b", "[commit]"),
        ];
        let mut page = page;
        for (pattern, with) in rules {
            page = regex::Regex::new(pattern)
                .unwrap()
                .replace_all(&page, with)
                .into_owned();
        }
        page
    };
    let board = get_page(&admin, &server, "/repos/team/web/environments");
    let digest = &dev.digest[..19];
    assert!(board.contains(digest), "{board}");
    assert!(
        board.contains(&format!(
            "data-role=\"awaiting\" data-deployment=\"{awaiting}\""
        )),
        "{board}"
    );
    assert!(
        !board.contains("data-role=\"approve\""),
        "the requester may not approve: {board}"
    );
    insta::assert_snapshot!("environments", redact(&board));
    let live = get_page(&admin, &server, "/repos/team/web/environments?live=1");
    assert!(!live.contains("<html"), "the live part alone: {live}");
    assert!(live.contains(digest), "{live}");

    let page = get_page(&admin, &server, &format!("/deployments/{}", dev.deployment));
    for kind in [
        "requested",
        "progressing",
        "instance_started",
        "instance_ready",
        "routed",
        "succeeded",
    ] {
        assert!(
            page.contains(&format!("data-kind=\"{kind}\"")),
            "{kind}: {page}"
        );
    }
    insta::assert_snapshot!("deployment", redact(&page));
    let history = get_page(&admin, &server, "/repos/team/web/environments/staging");
    assert!(history.contains("awaiting_approval"), "{history}");
    insta::assert_snapshot!("env_history", redact(&history));
    let audit = get_page(&admin, &server, "/repos/team/web/audit");
    assert!(audit.contains("protect"), "{audit}");
    insta::assert_snapshot!("audit", redact(&audit));
    let trace = get_page(&admin, &server, "/repos/team/web/environments/dev/trace");
    assert!(trace.contains(&dev.digest), "{trace}");
    insta::assert_snapshot!("trace", redact(&trace));
    let instance = get_page(
        &admin,
        &server,
        &format!("/instances/{}/trace", dev.instance),
    );
    assert!(instance.contains(&dev.digest), "{instance}");
    let index = get_page(&admin, &server, "/environments");
    assert!(index.contains("dev → staging"), "{index}");

    // The pipeline that built the digest links to its deployment to dev;
    // so does the dashboard.
    let link = format!("href=\"/deployments/{}\"", dev.deployment);
    let pipeline = get_page(&admin, &server, "/pipelines/1");
    assert!(pipeline.contains(&link), "{pipeline}");
    let dashboard = get_page(&admin, &server, "/");
    assert!(dashboard.contains(&link), "{dashboard}");
    // An environment that does not exist is named.
    let r = admin
        .get(format!("{}/repos/team/web/environments/nope", server.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("no environment \"nope\""));
}
