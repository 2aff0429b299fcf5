//! Pipelines end to end with the real binary: a git repository, the server, a
//! `slipway runner` process connected over HTTP running steps in runc
//! containers, and `slipway run --wait`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::fake_forge::{fake_forge, Seen};
use common::*;

/// A repository whose one commit has `files`.
fn repo_with(dir: &Path, files: &[(&str, &str)]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "the commit"]);
    head(dir)
}

/// A server with `library/busybox` in its registry, and a scratch directory
/// container root can reach (steps run as uid 100000, so it must be a+x).
fn with_busybox(prefix: &str) -> (TestServer, tempfile::TempDir) {
    let server = TestServer::start();
    let work = scratch_dir(prefix);
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let out = slipway(&server, &["image", "bootstrap", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    (server, work)
}

/// The webhook secret of the (only) repository, as an admin sees it.
fn webhook_secret(server: &TestServer) -> String {
    let repos = server.get("/api/v1/repos", &server.admin_auth()).json();
    repos[0]["webhook_secret"].as_str().unwrap().to_owned()
}

/// A git repository under `work` with one commit of `files`, added to the
/// server as `name`; returns its directory and the commit.
fn add_repo(
    server: &TestServer,
    work: &Path,
    name: &str,
    files: &[(&str, &str)],
) -> (std::path::PathBuf, String) {
    let dir = work.join("repo");
    let sha = repo_with(&dir, files);
    let out = slipway(
        server,
        &["repo", "add", name, "--url", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (dir, sha)
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
    start_named_runner(server, work, "test-runner", &["--capacity", "2"])
}

/// A runner called `name` with `args` (labels, capacity) besides the defaults.
fn start_named_runner(server: &TestServer, work: &Path, name: &str, args: &[&str]) -> Runner {
    let out = slipway(server, &["runner-token", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("srt_"), "{token}");
    let child = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["runner", "--server", server.url(), "--token", &token])
        .args(["--name", name])
        .args(args)
        .arg("--work-dir")
        .arg(work)
        .env("SLIPWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Runner(child)
}

/// The pipeline example in the README (its first yaml block), which must work
/// exactly as written.
static README_EXAMPLE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```yaml\n")
        .expect("a yaml block in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
});

#[test]
fn the_readme_pipeline_runs_its_jobs_in_order_on_a_runner() {
    let server = TestServer::start();
    let work = scratch_dir("pipelines");
    // Container root (uid 100000) must be able to reach the runner's dirs.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let out = slipway(&server, &["image", "bootstrap", "busybox"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let sha = repo_with(
        &work.path().join("demo"),
        &[(".slipway.yml", README_EXAMPLE.as_str())],
    );
    let url = work.path().join("demo");
    let out = slipway(
        &server,
        &["repo", "add", "team/demo", "--url", url.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _runner = start_runner(&server, &work.path().join("runner"));

    let out = slipway(&server, &["run", "team/demo", "--wait"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let greet = stdout.find(&format!("hello from {sha}")).expect(&stdout);
    let done = stdout.find("\ndone\n").expect(&stdout);
    assert!(greet < done, "jobs out of order:\n{stdout}");
    assert!(
        stdout.contains("=== pipeline team/demo #1: success ==="),
        "{stdout}"
    );

    // The API agrees, step by step.
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    assert_eq!(p["status"], "success");
    assert_eq!(p["commit"], sha.as_str());
    let jobs = p["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    for job in jobs {
        assert_eq!(job["status"], "success", "{job}");
        assert_eq!(job["attempt"], 1);
        assert_eq!(job["steps"][0]["exit_code"], 0);
    }
    let started_after: i64 = jobs[1]["started_at"].as_i64().unwrap();
    let finished_test: i64 = jobs[0]["finished_at"].as_i64().unwrap();
    assert!(
        started_after >= finished_test,
        "after started before test finished"
    );
}

#[test]
fn services_failures_and_missing_specs() {
    let (server, work) = with_busybox("pipelines-more");
    let spec = r#"jobs:
  with-db:
    services:
      db:
        image: busybox
        commands: ["echo pong-from-db | nc -l -p 5432"]
    steps:
      - name: query
        image: busybox
        commands:
          - for i in $(seq 100); do nc 127.0.0.1 5432 </dev/null && exit 0; sleep 0.1; done; exit 1
      - name: workspace
        image: busybox
        commands:
          - cat marker.txt
          - echo written > out.txt
          - test -s out.txt
  broken:
    steps:
      - name: fails
        image: busybox
        commands: ["echo before", "exit 3", "echo never"]
      - name: not-reached
        image: busybox
        commands: [echo unreachable]
  after-broken:
    needs: [broken]
    steps:
      - image: busybox
        commands: [echo should not run]
"#;
    let dir = work.path().join("repo");
    repo_with(
        &dir,
        &[(".slipway.yml", spec), ("marker.txt", "from the commit\n")],
    );
    let out = slipway(
        &server,
        &["repo", "add", "svc", "--url", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _runner = start_runner(&server, &work.path().join("runner"));

    let out = slipway(&server, &["run", "svc", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("pong-from-db"),
        "service not reachable:\n{stdout}"
    );
    assert!(stdout.contains("from the commit"), "{stdout}");
    assert!(
        stdout.contains("+ exit 3") && !stdout.contains("\nnever"),
        "{stdout}"
    );
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    assert_eq!(p["status"], "failure");
    let job = |name: &str| {
        p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(job("with-db")["status"], "success");
    let broken = job("broken");
    assert_eq!(broken["status"], "failure");
    assert_eq!(broken["steps"][0]["exit_code"], 3);
    assert_eq!(broken["steps"][1]["status"], "skipped");
    let after = job("after-broken");
    assert_eq!(after["status"], "skipped");
    assert!(
        after["reason"].as_str().unwrap().contains("\"broken\""),
        "{after}"
    );

    // A ref without a spec: the pipeline exists, in error, saying why.
    git(&dir, &["rm", "-q", ".slipway.yml"]);
    git(&dir, &["commit", "-q", "-m", "no spec"]);
    let out = slipway(&server, &["run", "svc", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("there is no .slipway.yml at commit"),
        "{stdout}"
    );
    // An unknown ref is a clear CLI error, and no pipeline.
    let out = slipway(&server, &["run", "svc", "--ref", "nope"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no ref or commit \"nope\""),
        "{}",
        text(&out.stderr)
    );
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The commit `HEAD` names in `dir`.
fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

/// A GitHub push event for `sha` on main of `dir`, announced as `full_name`.
fn github_push(full_name: &str, dir: &Path, sha: &str) -> Vec<u8> {
    let commit = serde_json::json!({ "id": sha, "message": "a change", "author": { "name": "Dev" },
                                     "added": ["notes.txt"], "modified": [], "removed": [] });
    serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0".repeat(40),
        "after": sha,
        "repository": { "full_name": full_name, "clone_url": dir.to_str().unwrap() },
        "head_commit": commit,
        "commits": [commit],
        "pusher": { "name": "dev" }
    }))
    .unwrap()
}

/// Delivers a GitHub push webhook for the repository with `repo_id`.
fn deliver_github(
    server: &TestServer,
    repo_id: i64,
    signature: Option<String>,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    let mut req = http_client()
        .post(format!("{}/api/v1/webhooks/{repo_id}", server.url()))
        .header("X-GitHub-Event", "push")
        .header("Content-Type", "application/json");
    if let Some(s) = signature {
        req = req.header("X-Hub-Signature-256", s);
    }
    req.body(body).send().unwrap()
}

/// The id of the pipeline an accepted webhook delivery started.
fn started_pipeline(accepted: reqwest::blocking::Response) -> i64 {
    assert_eq!(accepted.status(), 201);
    accepted.json::<serde_json::Value>().unwrap()["pipeline"]
        .as_i64()
        .unwrap()
}

/// Pipeline `id` once it has reached a final state.
fn finished_pipeline(server: &TestServer, id: i64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(
        &format!("pipeline {id} to finish"),
        std::time::Duration::from_secs(90),
        || {
            last = server
                .get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth())
                .json();
            ["success", "failure", "error", "cancelled"]
                .contains(&last["status"].as_str().unwrap_or(""))
        },
    );
    last
}

/// `slipway` as admin with `input` on its standard input.
fn slipway_with_input(server: &TestServer, args: &[&str], input: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "slipway {args:?}");
}

/// A push to a local repository plus a GitHub-format webhook makes a pipeline
/// that runs; forged, unsigned and oversized deliveries start nothing.
#[test]
fn a_signed_github_push_webhook_starts_a_pipeline_and_forgeries_do_not() {
    let (server, work) = with_busybox("pipelines-hook");
    let (dir, _) = add_repo(
        &server,
        work.path(),
        "team/hooked",
        &[(".slipway.yml", README_EXAMPLE.as_str())],
    );
    let secret = webhook_secret(&server);
    let repos = server.get("/api/v1/repos", &server.admin_auth()).json();
    let repo_id = repos[0]["id"].as_i64().unwrap();
    let _runner = start_runner(&server, &work.path().join("runner"));

    // A new commit, pushed (to the local repository) and announced.
    std::fs::write(dir.join("notes.txt"), "more\n").unwrap();
    git(&dir, &["add", "notes.txt"]);
    git(&dir, &["commit", "-q", "-m", "add notes"]);
    let sha = head(&dir);
    let body = github_push("team/hooked", &dir, &sha);
    let send = |signature, body| deliver_github(&server, repo_id, signature, body);

    // Refused: a wrong secret, no signature, a body changed after signing, too big.
    let forged = send(
        Some(github_signature("not-the-secret", &body)),
        body.clone(),
    );
    assert_eq!(forged.status(), 401);
    assert!(forged.text().unwrap().contains("does not match"));
    assert_eq!(send(None, body.clone()).status(), 401);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    assert_eq!(
        send(Some(github_signature(&secret, &body)), tampered).status(),
        401
    );
    let big = vec![b' '; 1_100_000];
    assert_eq!(
        send(Some(github_signature(&secret, &big)), big).status(),
        413
    );
    let malformed = b"{\"ref\": ".to_vec();
    let r = send(Some(github_signature(&secret, &malformed)), malformed);
    assert_eq!(r.status(), 400);
    let none = server.get("/api/v1/pipelines/1", &server.admin_auth());
    assert_eq!(none.status, 404, "a refused delivery started a pipeline");
    assert!(server.logs().contains("webhook refused"));

    // Signed: a pipeline for exactly that commit, which runs to success.
    let id = started_pipeline(send(Some(github_signature(&secret, &body)), body.clone()));
    let p = finished_pipeline(&server, id);
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(p["commit"], sha.as_str());
    assert_eq!(p["event"], "push");
    assert_eq!(p["ref"], "refs/heads/main");
    assert_eq!(p["triggered_by"], "push webhook (GitHub)");
}

/// Processes whose command line mentions `path`.
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// The whole path in one run: a commit pushed to a local repository and
/// announced by a signed GitHub push webhook makes a pipeline; its two jobs run
/// in DAG order on a `slipway runner` process connected over HTTP; the first
/// job's step reaches its service container on localhost and uses a secret the
/// log masks; the final state reaches the fake forge.
#[test]
fn a_pushed_commit_goes_from_webhook_to_forge_status() {
    let (server, work) = with_busybox("pipelines-e2e");
    let spec = r#"jobs:
  test:
    services:
      db:
        image: busybox
        commands: ["echo pong-from-db | nc -l -p 5432"]
    steps:
      - name: query
        image: busybox
        secrets: [DB_PASSWORD]
        commands:
          - for i in $(seq 100); do nc 127.0.0.1 5432 </dev/null > reply && [ -s reply ] && break; sleep 0.1; done
          - cat reply
          - echo "password is $DB_PASSWORD"
          - printf %s "$DB_PASSWORD" | sha256sum
  deploy:
    needs: [test]
    steps:
      - name: after
        image: busybox
        commands:
          - echo "deploying $SLIPWAY_COMMIT after test"
"#;
    let (dir, first) = add_repo(&server, work.path(), "team/shop", &[(".slipway.yml", spec)]);
    let repo_id = server.get("/api/v1/repos", &server.admin_auth()).json()[0]["id"]
        .as_i64()
        .unwrap();
    slipway_with_input(
        &server,
        &["secret", "set", "team/shop", "DB_PASSWORD"],
        "hunter2-but-longer",
    );
    let (forge, seen) = fake_forge();
    slipway_with_input(
        &server,
        &[
            "repo",
            "forge",
            "team/shop",
            "--kind",
            "github",
            "--api",
            &forge,
            "--repository",
            "team/shop",
        ],
        "forge-token-e2e\n",
    );
    let _runner = start_runner(&server, &work.path().join("runner"));

    // The push: a new commit in the repository, then the forge's webhook.
    std::fs::write(dir.join("notes.txt"), "a change\n").unwrap();
    git(&dir, &["add", "notes.txt"]);
    git(&dir, &["commit", "-q", "-m", "a change"]);
    let sha = head(&dir);
    assert_ne!(sha, first);
    let body = github_push("team/shop", &dir, &sha);
    let secret = webhook_secret(&server);
    let id = started_pipeline(deliver_github(
        &server,
        repo_id,
        Some(github_signature(&secret, &body)),
        body,
    ));

    let p = finished_pipeline(&server, id);
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(p["commit"], sha.as_str());
    assert_eq!(p["triggered_by"], "push webhook (GitHub)");
    let jobs = p["jobs"].as_array().unwrap();
    let (test, deploy) = (&jobs[0], &jobs[1]);
    assert_eq!(
        (test["name"].as_str(), deploy["name"].as_str()),
        (Some("test"), Some("deploy"))
    );
    for job in jobs {
        assert_eq!(job["status"], "success", "{job}");
        assert_eq!(job["runner"], "test-runner", "{job}");
    }
    assert!(
        deploy["started_at"].as_i64() >= test["finished_at"].as_i64(),
        "deploy started before test finished: {p}"
    );

    // The log: the service answered, the secret worked and is masked.
    let out = slipway(&server, &["logs", &id.to_string()]);
    let log = text(&out.stdout);
    assert!(out.status.success(), "{log}{}", text(&out.stderr));
    assert!(log.contains("pong-from-db"), "service not reached:\n{log}");
    assert!(log.contains("password is ********"), "{log}");
    assert!(!log.contains("hunter2"), "the secret leaked:\n{log}");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"hunter2-but-longer",
    ));
    assert!(
        log.contains(&digest),
        "the step did not see the secret:\n{log}"
    );
    assert!(
        log.contains(&format!("deploying {sha} after test")),
        "{log}"
    );
    let (test_at, deploy_at) = (
        log.find("pong-from-db").unwrap(),
        log.find("deploying").unwrap(),
    );
    assert!(test_at < deploy_at, "{log}");

    // The forge: states in order, success last, with its token. (Only the
    // newest state of a pipeline is sent when several are due, so a quick
    // pipeline may go straight to success.)
    let statuses = format!("/repos/team/shop/statuses/{sha}");
    wait_for(
        "the final state at the forge",
        std::time::Duration::from_secs(15),
        || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|s| s.path == statuses && s.body.contains("\"state\":\"success\""))
        },
    );
    let seen = seen.lock().unwrap().clone();
    let calls: Vec<&Seen> = seen.iter().filter(|s| s.path == statuses).collect();
    let order: Vec<usize> = calls
        .iter()
        .map(|s| {
            ["pending", "success"]
                .iter()
                .position(|state| s.body.contains(&format!("\"state\":\"{state}\"")))
                .unwrap_or_else(|| panic!("an unexpected state: {}", s.body))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");
    assert!(
        calls.last().unwrap().body.contains("\"state\":\"success\""),
        "{calls:?}"
    );
    assert!(calls
        .iter()
        .all(|s| s.authorization == "Bearer forge-token-e2e"));
}

/// Step options: the run's variables, `retry` (a later try sees the earlier
/// one's workspace), `entrypoint`/`args` without a shell, `when` on branch and
/// tag, and `timeout`; followed with `slipway logs --follow`.
#[test]
fn steps_retry_time_out_and_run_only_when_asked() {
    let (server, work) = with_busybox("pipelines-steps");
    let spec = r#"jobs:
  check:
    steps:
      - name: vars
        image: busybox
        commands:
          - echo "ref=$SLIPWAY_REF repo=$SLIPWAY_REPO job=$SLIPWAY_JOB pipeline=$SLIPWAY_PIPELINE"
      - name: flaky
        image: busybox
        retry: 2
        commands:
          - n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries; echo "try $n"
          - test $n -ge 2
      - name: direct
        image: busybox
        entrypoint: [/bin/echo]
        args: [direct, "$HOME is not expanded"]
      - name: tagged
        image: busybox
        when: { tag: "v*" }
        commands: [echo on a tag]
      - name: on-main
        image: busybox
        when: { branch: main }
        commands: [echo on main]
      - name: slow
        image: busybox
        timeout: 1s
        commands: [sleep 100]
"#;
    let (dir, _) = add_repo(
        &server,
        work.path(),
        "team/steps",
        &[(".slipway.yml", spec)],
    );
    git(&dir, &["tag", "v1.0"]);
    let _runner = start_runner(&server, &work.path().join("runner"));

    let out = slipway(&server, &["run", "team/steps"]);
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("pipeline 1 (team/steps #1 at ")
            && printed
                .trim_end()
                .ends_with(&format!("{}/pipelines/1", server.url())),
        "{printed}"
    );
    let started = std::time::Instant::now();
    let out = slipway(&server, &["logs", "1", "--follow"]);
    let log = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the timeout fails the pipeline:\n{log}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(
        log.contains("ref=refs/heads/main repo=team/steps job=check pipeline=1\n"),
        "{log}"
    );
    let (first, retry, second) = (
        log.find("try 1\n").expect(&log),
        log.find("--- retry 1 of 2 ---").expect(&log),
        log.find("try 2\n").expect(&log),
    );
    assert!(first < retry && retry < second, "{log}");
    assert!(!log.contains("try 3"), "{log}");
    assert!(log.contains("direct $HOME is not expanded\n"), "{log}");
    assert!(
        log.contains("on main\n") && !log.contains("on a tag"),
        "{log}"
    );
    assert!(log.contains("timed out after 1s"), "{log}");
    assert!(
        log.contains("=== pipeline team/steps #1: failure ==="),
        "{log}"
    );
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    let steps = &p["jobs"][0]["steps"];
    let statuses: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["success", "success", "success", "skipped", "success", "failure"],
        "{p}"
    );

    // On the tag: the tag's step runs, the branch's does not.
    let out = slipway(&server, &["run", "team/steps", "--ref", "v1.0", "--wait"]);
    let log = text(&out.stdout);
    assert!(log.contains("ref=refs/tags/v1.0 "), "{log}");
    assert!(
        log.contains("on a tag\n") && !log.contains("on main"),
        "{log}"
    );
}

/// SIGKILL a runner mid-job: its container is removed (by its guard), the
/// lease runs out and the job goes back to the queue with the reason, and
/// another runner runs it to the end as attempt 2.
#[test]
fn a_killed_runner_loses_its_job_to_the_queue_and_leaves_no_container() {
    let (server, work) = with_busybox("pipelines-loss");
    // With a service: the job's pod (its network namespace holder) must not
    // outlive the runner either.
    let spec = "jobs:\n  slow:\n    services:\n      db:\n        image: busybox\n        commands: [sleep 1000]\n    steps:\n      - name: wait\n        image: busybox\n        commands: [sleep 4, echo finished]\n";
    add_repo(&server, work.path(), "loss", &[(".slipway.yml", spec)]);
    let first_dir = work.path().join("runner-a");
    let mut first = start_runner(&server, &first_dir);
    let out = slipway(&server, &["run", "loss"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pipeline = || {
        server
            .get("/api/v1/pipelines/1", &server.admin_auth())
            .json()
    };
    wait_for(
        "the step to run",
        std::time::Duration::from_secs(60),
        || pipeline()["jobs"][0]["steps"][0]["status"] == "running",
    );
    let containers = first_dir.join("engine/containers");
    wait_for(
        "the container to start",
        std::time::Duration::from_secs(30),
        || {
            std::fs::read_dir(&containers)
                .map(|d| d.count())
                .unwrap_or(0)
                == 2
        },
    );

    let killed_at = std::time::Instant::now();
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    // The guard removes the container at once.
    wait_for(
        "the container to be removed",
        std::time::Duration::from_secs(10),
        || std::fs::read_dir(&containers).unwrap().count() == 0,
    );
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(first_dir.to_str().unwrap()));
    // No process of the runner's is left (the guard exits once it has reaped;
    // a forked helper holding the runner's descriptors would linger).
    wait_for(
        "the runner's processes to be gone",
        std::time::Duration::from_secs(10),
        || processes_mentioning(&first_dir).is_empty(),
    );
    let listed = Command::new("runc")
        .arg("--root")
        .arg(first_dir.join("engine/runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(text(&listed.stdout).trim(), "", "runc containers left");

    // Within the lease (10 s) plus the expiry pass, the job is queued again.
    wait_for(
        "the job to be requeued",
        std::time::Duration::from_secs(15),
        || pipeline()["jobs"][0]["status"] == "queued",
    );
    assert!(killed_at.elapsed() < std::time::Duration::from_secs(13));
    let job = pipeline()["jobs"][0].clone();
    assert!(
        job["reason"]
            .as_str()
            .unwrap()
            .contains("expired without a heartbeat"),
        "{job}"
    );
    assert_eq!(job["steps"][0]["status"], "pending");

    // Another runner takes it as attempt 2 and finishes it.
    let _second = start_runner(&server, &work.path().join("runner-b"));
    wait_for(
        "the pipeline to finish",
        std::time::Duration::from_secs(60),
        // One read: two could see "pending", then "running".
        || !matches!(pipeline()["status"].as_str(), Some("running" | "pending")),
    );
    let p = pipeline();
    assert_eq!(p["status"], "success", "{p}");
    assert_eq!(p["jobs"][0]["attempt"], 2);
    let log = server.get(
        &format!("/api/v1/jobs/{}/steps/0/log", p["jobs"][0]["id"]),
        &server.admin_auth(),
    );
    assert!(log.body_text().contains("finished"), "{}", log.body_text());
}

/// `slipway cancel` on a running pipeline: the runner hears it at its next
/// heartbeat (within 2 s), stops the container, and the job and step end
/// cancelled; a waiting job is cancelled at once.
#[test]
fn cancel_reaches_the_runner_and_stops_its_container() {
    let (server, work) = with_busybox("pipelines-cancel");
    let spec = r#"jobs:
  listens:
    steps:
      - name: trap
        image: busybox
        commands:
          - trap 'echo got TERM; exit 143' TERM; echo started; while true; do sleep 0.1; done
  ignores:
    steps:
      - name: sleep
        image: busybox
        commands: [sleep 1000]
  later:
    needs: [listens, ignores]
    steps:
      - image: busybox
        commands: [true]
"#;
    add_repo(&server, work.path(), "cancel-me", &[(".slipway.yml", spec)]);
    let runner_dir = work.path().join("runner");
    let _runner = start_runner(&server, &runner_dir);
    let out = slipway(&server, &["run", "cancel-me"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pipeline = || {
        server
            .get("/api/v1/pipelines/1", &server.admin_auth())
            .json()
    };
    let log = |job: &serde_json::Value| {
        server
            .get(
                &format!("/api/v1/jobs/{}/steps/0/log", job["id"]),
                &server.admin_auth(),
            )
            .body_text()
    };
    let containers = runner_dir.join("engine/containers");
    wait_for(
        "both containers to start",
        std::time::Duration::from_secs(60),
        || {
            std::fs::read_dir(&containers)
                .map(|d| d.count())
                .unwrap_or(0)
                == 2
                && log(&pipeline()["jobs"][0]).contains("started")
        },
    );

    let asked = std::time::Instant::now();
    let out = slipway(&server, &["cancel", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(pipeline()["jobs"][2]["status"], "cancelled");
    // The runner hears it and signals the container within 2 s.
    wait_for(
        "the step to be sent SIGTERM",
        std::time::Duration::from_secs(10),
        || log(&pipeline()["jobs"][0]).contains("got TERM"),
    );
    let heard = asked.elapsed();
    assert!(heard < std::time::Duration::from_secs(2), "{heard:?}");
    wait_for(
        "the jobs to end cancelled",
        std::time::Duration::from_secs(10),
        || {
            let p = pipeline();
            p["jobs"][0]["status"] == "cancelled" && p["jobs"][1]["status"] == "cancelled"
        },
    );
    // Both stopped, at the latest by SIGKILL after the 2 s stop grace.
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0);
    let p = pipeline();
    assert_eq!(p["status"], "cancelled", "{p}");
    for job in 0..2 {
        assert_eq!(p["jobs"][job]["steps"][0]["status"], "cancelled", "{p}");
    }
}

/// A secret set with `slipway secret set` reaches only the steps naming it, is
/// masked in the log (whole, base64, line by line), is not stored in the
/// clear, and a step naming an undefined secret fails saying so.
#[test]
fn secrets_are_usable_masked_and_only_where_named() {
    let (server, work) = with_busybox("pipelines-secrets");
    let spec = r#"jobs:
  use:
    steps:
      - name: with
        image: busybox
        secrets: [TOKEN, KEY, PASS, LONG]
        commands:
          - printf %s "$TOKEN" | sha256sum
          - echo "token is $TOKEN"
          - printf %s "$TOKEN" | base64
          - echo "$KEY"
          - echo "length ${#TOKEN}"
          - echo "$PASS" | base64
          - printf 'x%s\n' "$PASS" | base64
          - printf 'xy%s' "$PASS" | base64 -w 0; echo
          - echo "$LONG" | base64
          - echo "$KEY" | base64
          - printf %s "$KEY" | tail -n 1 | base64
          - echo "lines of the long one $(echo "$LONG" | base64 | wc -l)"
      - name: without
        image: busybox
        commands:
          - echo "token here is ${TOKEN:-unset}"
  missing:
    steps:
      - name: needs-undefined
        image: busybox
        secrets: [NOPE]
        commands: [echo should not run]
"#;
    add_repo(&server, work.path(), "secretive", &[(".slipway.yml", spec)]);
    let set = |name: &str, value: &str| {
        slipway_with_input(&server, &["secret", "set", "secretive", name], value)
    };
    set("TOKEN", "s3cr3t-t0ken-value\n");
    set("KEY", "first-line-of-key\nsecond-line-of-key");
    // Lengths not a multiple of 3: the base64 of the value and a newline
    // does not start with the value's own base64.
    let pass = "correct-horse-battery-staple";
    let long: String = (0..151)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    set("PASS", pass);
    set("LONG", &long);
    let listed = slipway(&server, &["secret", "list", "secretive"]);
    assert_eq!(text(&listed.stdout), "KEY\nLONG\nPASS\nTOKEN\n");

    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "secretive", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for leak in [
        "s3cr3t-t0ken-value",
        "czNjcjN0LXQwa2VuLXZhbHVl",
        "first-line-of-key",
        "second-line-of-key",
    ] {
        assert!(!stdout.contains(leak), "{leak} leaked:\n{stdout}");
    }
    for secret in [
        pass,
        long.as_str(),
        "first-line-of-key\nsecond-line-of-key",
        "second-line-of-key",
    ] {
        if let Some(leak) = base64_leak(secret, &stdout) {
            panic!("base64 of {secret:?} leaked ({leak}):\n{stdout}");
        }
    }
    // busybox wrapped the long one's base64 (so masking across lines was
    // exercised).
    assert!(stdout.contains("lines of the long one 3"), "{stdout}");
    assert!(stdout.contains("token is ********"), "{stdout}");
    assert!(stdout.contains("length 18"), "{stdout}");
    // The step had the real value: its digest matches.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"s3cr3t-t0ken-value",
    ));
    assert!(stdout.contains(&digest), "{stdout}");
    assert!(stdout.contains("token here is unset"), "{stdout}");
    assert!(
        stdout.contains("secret NOPE is not available to this run"),
        "{stdout}"
    );
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    assert_eq!(p["jobs"][0]["status"], "success", "{p}");
    assert_eq!(p["jobs"][1]["status"], "failure", "{p}");

    // Nothing in the clear at rest or in the server's log.
    let db = std::fs::read(server.data_dir().join("slipway.db")).unwrap_or_default();
    let wal = std::fs::read(server.data_dir().join("slipway.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(18).any(|w| w == b"s3cr3t-t0ken-value"));
    }
    assert!(!server.logs().contains("s3cr3t"));
}

/// A run of 12 characters of a base64 form of `secret` (after 0, 1 or 2
/// other bytes, with or without a newline after it) found in `output`, line
/// breaks ignored.
fn base64_leak(secret: &str, output: &str) -> Option<String> {
    use base64::Engine as _;
    let joined: String = output.split('\n').collect();
    for tail in ["", "\n"] {
        for offset in 0..3 {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(secret.as_bytes());
            bytes.extend_from_slice(tail.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&bytes);
            // Only the characters that depend on the secret's bytes alone.
            let stable = &encoded[(8 * offset).div_ceil(6)..(8 * bytes.len()) / 6];
            for w in stable.as_bytes().windows(12) {
                let w = std::str::from_utf8(w).unwrap();
                if joined.contains(w) {
                    return Some(format!("{w} at offset {offset}"));
                }
            }
        }
    }
    None
}

/// Pipeline states reach the forge's commit-status API (GitHub format, with
/// the token) and the signed outgoing webhook, ending with the final state;
/// then the same for Gitea's and GitLab's formats.
#[test]
fn states_reach_the_fake_forge_and_the_outgoing_webhook() {
    let (server, work) = with_busybox("pipelines-forge");
    let (_, sha) = add_repo(
        &server,
        work.path(),
        "reported",
        &[(".slipway.yml", README_EXAMPLE.as_str())],
    );
    let secret = webhook_secret(&server);
    let (forge, seen) = fake_forge();
    slipway_with_input(
        &server,
        &[
            "repo",
            "forge",
            "reported",
            "--kind",
            "github",
            "--api",
            &forge,
            "--repository",
            "team/reported",
        ],
        "forge-token-123\n",
    );
    let hook = format!("{forge}/hook");
    let out = slipway(&server, &["repo", "notify", "reported", "--url", &hook]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "reported", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    let statuses_path = format!("/repos/team/reported/statuses/{sha}");
    wait_for(
        "the final state at the forge and the webhook",
        std::time::Duration::from_secs(15),
        || {
            let seen = seen.lock().unwrap();
            let final_at = |path: &str, needle: &str| {
                seen.iter()
                    .any(|s| s.path == path && s.body.contains(needle))
            };
            final_at(&statuses_path, "\"state\":\"success\"")
                && final_at("/hook", "\"status\":\"success\"")
        },
    );
    let github = seen.lock().unwrap().clone();
    let forge_calls: Vec<&Seen> = github.iter().filter(|s| s.path == statuses_path).collect();
    assert!(forge_calls
        .iter()
        .all(|s| s.authorization == "Bearer forge-token-123"));
    let last = forge_calls.last().unwrap();
    assert!(
        last.body.contains("\"context\":\"slipway\""),
        "{}",
        last.body
    );
    // Its link is the pipeline's page in the web UI.
    assert!(
        last.body
            .contains(&format!("\"target_url\":\"{}/pipelines/1\"", server.url())),
        "{}",
        last.body
    );
    // The outgoing webhook: signed with the repository's secret.
    let hooks: Vec<&Seen> = github.iter().filter(|s| s.path == "/hook").collect();
    let final_hook = hooks
        .iter()
        .find(|s| s.body.contains("\"status\":\"success\""))
        .expect("a webhook with the final state");
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(final_hook.body.as_bytes());
    assert_eq!(
        final_hook.signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert!(final_hook.body.contains(&sha));

    // Gitea: the same API shape, its own token header.
    let forge_kind = |kind: &str, token: &str| {
        slipway_with_input(
            &server,
            &[
                "repo",
                "forge",
                "reported",
                "--kind",
                kind,
                "--api",
                &forge,
                "--repository",
                "team/reported",
            ],
            token,
        )
    };
    let gitea_success = |s: &Seen| {
        s.path == statuses_path
            && s.body.contains("/pipelines/2\"")
            && s.body.contains("\"state\":\"success\"")
    };
    forge_kind("gitea", "gitea-token\n");
    let out = slipway(&server, &["run", "reported", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    wait_for(
        "the final state at the Gitea forge",
        std::time::Duration::from_secs(15),
        || seen.lock().unwrap().iter().any(gitea_success),
    );
    let calls = seen.lock().unwrap().clone();
    let gitea: Vec<&Seen> = calls
        .iter()
        .filter(|s| s.path == statuses_path && s.body.contains("/pipelines/2\""))
        .collect();
    assert!(
        gitea.iter().all(|s| s.authorization == "token gitea-token"),
        "{gitea:?}"
    );

    // GitLab: a project path, the state in the query, PRIVATE-TOKEN.
    forge_kind("gitlab", "gitlab-token\n");
    let out = slipway(&server, &["run", "reported", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let gitlab_path = format!("/projects/team%2Freported/statuses/{sha}?");
    let is_final = |s: &Seen| s.path.starts_with(&gitlab_path) && s.path.contains("state=success");
    wait_for(
        "the final state at the GitLab forge",
        std::time::Duration::from_secs(15),
        || seen.lock().unwrap().iter().any(is_final),
    );
    let calls = seen.lock().unwrap().clone();
    let gitlab: Vec<&Seen> = calls
        .iter()
        .filter(|s| s.path.starts_with(&gitlab_path))
        .collect();
    assert!(
        gitlab.iter().all(|s| s.private_token == "gitlab-token"),
        "{gitlab:?}"
    );
    let done = gitlab.iter().find(|s| is_final(s)).unwrap();
    assert!(done.path.contains("name=slipway"), "{}", done.path);
    assert!(done.path.contains("%2Fpipelines%2F3"), "{}", done.path);
}

/// SIGKILL the server with 20 pipelines in flight and start it again on the
/// same address: every pipeline reaches a final state, each step's log holds
/// every line the step printed exactly once, in order, and no job ran twice.
#[test]
fn a_server_killed_mid_flight_loses_no_run_and_no_log_line() {
    let (mut server, work) = with_busybox("pipelines-restart");
    let spec = "jobs:\n  count:\n    steps:\n      - name: lines\n        image: busybox\n        commands:\n          - for i in $(seq 1 60); do echo line-$i; sleep 0.03; done\n";
    add_repo(&server, work.path(), "busy", &[(".slipway.yml", spec)]);
    let _runner = start_runner(&server, &work.path().join("runner"));
    const PIPELINES: i64 = 20;
    for _ in 0..PIPELINES {
        let out = slipway(&server, &["run", "busy"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let states = |server: &TestServer| -> Vec<String> {
        (1..=PIPELINES)
            .map(|id| {
                server
                    .get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth())
                    .json()["status"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    wait_for(
        "some pipelines to run",
        std::time::Duration::from_secs(60),
        || states(&server).iter().filter(|s| *s == "running").count() >= 2,
    );
    let before = states(&server);
    server.kill_hard();
    std::thread::sleep(std::time::Duration::from_millis(500));
    server.restart_same_address();

    wait_for(
        "every pipeline to finish",
        std::time::Duration::from_secs(180),
        || {
            states(&server)
                .iter()
                .all(|s| ["success", "failure", "error", "cancelled"].contains(&s.as_str()))
        },
    );
    let after = states(&server);
    assert!(
        after.iter().all(|s| s == "success"),
        "before the kill: {before:?}\nafter: {after:?}"
    );
    let expected: String = (1..=60).map(|i| format!("line-{i}\n")).collect();
    for id in 1..=PIPELINES {
        let p = server
            .get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth())
            .json();
        let job = &p["jobs"][0];
        assert_eq!(job["attempt"], 1, "pipeline {id} ran its job twice: {p}");
        let log = server
            .get(
                &format!("/api/v1/jobs/{}/steps/0/log", job["id"]),
                &server.admin_auth(),
            )
            .body_text();
        let printed: String = log
            .lines()
            .filter(|l| l.starts_with("line-"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(printed, expected, "pipeline {id}'s log:\n{log}");
    }
    // Line ranges and the tail come from the line index.
    let job = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json()["jobs"][0]["id"]
        .clone();
    let tail = server.get(
        &format!("/api/v1/jobs/{job}/steps/0/log?tail=2"),
        &server.admin_auth(),
    );
    assert_eq!(tail.body_text(), "line-59\nline-60\n");
    let total: u64 = tail.header("x-log-lines").unwrap().parse().unwrap();
    let range = server.get(
        &format!(
            "/api/v1/jobs/{job}/steps/0/log?from_line={}&to_line={}",
            total - 60,
            total - 58
        ),
        &server.admin_auth(),
    );
    assert_eq!(range.body_text(), "line-1\nline-2\n");
}

/// `slipway rerun --failed` runs only what did not succeed (and what needs it),
/// recording the rest as reused; a plain re-run runs everything; `slipway logs`
/// prints a finished pipeline's logs.
#[test]
fn rerunning_failed_jobs_reuses_the_ones_that_passed() {
    let (server, work) = with_busybox("pipelines-rerun");
    // `flaky` fails in pipeline #1 only.
    let spec = r#"jobs:
  steady:
    steps:
      - image: busybox
        commands: ['echo "steady ran in $SLIPWAY_PIPELINE"']
  flaky:
    steps:
      - image: busybox
        commands: ['echo "flaky ran in $SLIPWAY_PIPELINE"', 'test "$SLIPWAY_PIPELINE" -ge 2']
  after:
    needs: [steady, flaky]
    steps:
      - image: busybox
        commands: ['echo "after ran in $SLIPWAY_PIPELINE"']
"#;
    add_repo(&server, work.path(), "flaky", &[(".slipway.yml", spec)]);
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "flaky", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    let out = slipway(&server, &["rerun", "1", "--failed", "--wait"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("flaky ran in 2") && stdout.contains("after ran in 2"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("steady ran in 2"),
        "steady ran again:\n{stdout}"
    );
    let p = server
        .get("/api/v1/pipelines/2", &server.admin_auth())
        .json();
    assert_eq!(p["status"], "success");
    assert!(
        p["triggered_by"]
            .as_str()
            .unwrap()
            .contains("re-run (failed jobs) of #1"),
        "{p}"
    );
    let steady = &p["jobs"][0];
    assert_eq!(steady["status"], "success");
    assert!(
        steady["reason"].as_str().unwrap().contains("pipeline #1"),
        "{steady}"
    );

    let out = slipway(&server, &["rerun", "1", "--wait"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("steady ran in 3") && stdout.contains("flaky ran in 3"),
        "{stdout}"
    );

    // `slipway logs` on a finished pipeline prints its logs and the summary.
    let out = slipway(&server, &["logs", "2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("flaky ran in 2"), "{stdout}");
    assert!(
        stdout.contains("=== pipeline flaky #2: success ==="),
        "{stdout}"
    );
}

/// The queue explains itself: a job asking for a label no runner has shows its
/// position and why the runner cannot take it; a job waiting on another shows
/// what it needs.
#[test]
fn the_queue_says_why_a_job_waits() {
    let (server, work) = with_busybox("pipelines-queue");
    let spec = "jobs:
  gpu:
    runs-on: [gpu]
    steps:
      - image: busybox
        commands: [echo on the gpu runner]
  after:
    needs: [gpu]
    steps:
      - image: busybox
        commands: [true]
  one:
    steps:
      - image: busybox
        commands: [sleep 2]
  two:
    steps:
      - image: busybox
        commands: [sleep 2]
";
    add_repo(&server, work.path(), "waits", &[(".slipway.yml", spec)]);
    let _runner = start_named_runner(
        &server,
        &work.path().join("runner"),
        "test-runner",
        &["--capacity", "1"],
    );
    wait_for(
        "the runner to register",
        std::time::Duration::from_secs(30),
        || server.get("/api/v1/runners", &server.admin_auth()).json()[0]["online"] == true,
    );
    let out = slipway(&server, &["run", "waits"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One of `one` and `two` runs; the other waits for the runner's one slot.
    let mut queue = serde_json::Value::Null;
    wait_for(
        "a job to be leased",
        std::time::Duration::from_secs(10),
        || {
            queue = server.get("/api/v1/queue", &server.admin_auth()).json();
            queue.as_array().unwrap().len() == 3
        },
    );
    let waiting = |name: &str| {
        queue
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["job"] == name)
            .unwrap_or_else(|| panic!("{name} not in {queue}"))
            .clone()
    };
    let gpu = waiting("gpu");
    assert_eq!(gpu["position"], 1);
    assert_eq!(gpu["runners"][0]["runner"], "test-runner");
    assert_eq!(gpu["runners"][0]["can_take"], false);
    assert_eq!(gpu["runners"][0]["why_not"], "lacks label gpu");
    let after = waiting("after");
    assert_eq!(after["position"], serde_json::Value::Null);
    assert_eq!(after["blocked_on"], serde_json::json!(["gpu"]));
    let other = if queue.to_string().contains("\"job\":\"one\"") {
        "one"
    } else {
        "two"
    };
    let other = waiting(other);
    assert_eq!(other["position"], 2);
    assert_eq!(
        other["runners"][0]["why_not"], "busy (1 of 1 slots)",
        "{queue}"
    );
    let out = slipway(&server, &["queue"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("#1") && stdout.contains("not test-runner: lacks label gpu"),
        "{stdout}"
    );
    assert!(stdout.contains("needs gpu to succeed first"), "{stdout}");
    let out = slipway(&server, &["runners"]);
    assert!(
        text(&out.stdout).contains("test-runner"),
        "{}",
        text(&out.stdout)
    );

    // A runner with the label takes the job, and the pipeline completes.
    let _gpu = start_named_runner(
        &server,
        &work.path().join("gpu-runner"),
        "gpu-runner",
        &["--capacity", "1", "--labels", "gpu,linux"],
    );
    let p = finished_pipeline(&server, 1);
    assert_eq!(p["status"], "success", "{p}");
    let jobs = p["jobs"].as_array().unwrap();
    let job = |name: &str| jobs.iter().find(|j| j["name"] == name).unwrap();
    assert_eq!(job("gpu")["runner"], "gpu-runner");
    // No runner ever ran more jobs at once than its capacity (1).
    for a in jobs {
        for b in jobs {
            if a["id"] != b["id"]
                && a["runner"] == b["runner"]
                && a["started_at"].as_i64() <= b["started_at"].as_i64()
            {
                assert!(
                    a["finished_at"].as_i64() <= b["started_at"].as_i64(),
                    "{} and {} overlapped on {}",
                    a["name"],
                    b["name"],
                    a["runner"]
                );
            }
        }
    }
}

/// Polling starts a pipeline when the default branch moves (not for the head
/// it first sees), and a cron schedule in the spec starts pipelines by itself.
#[test]
fn polling_and_cron_start_pipelines() {
    let server = TestServer::start();
    let work = scratch_dir("pipelines-timed");
    let dir = work.path().join("polled");
    repo_with(&dir, &[(".slipway.yml", README_EXAMPLE.as_str())]);
    let out = slipway(
        &server,
        &[
            "repo",
            "add",
            "polled",
            "--url",
            dir.to_str().unwrap(),
            "--poll",
            "1s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pipelines_of = |repo: &str| -> Vec<serde_json::Value> {
        (1..=50)
            .map(|id| server.get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth()))
            .take_while(|r| r.status == 200)
            .map(|r| r.json())
            .filter(|p| p["repo"] == repo)
            .collect()
    };
    // Give the first poll time to record the head; it starts nothing.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(pipelines_of("polled").is_empty());
    std::fs::write(dir.join("new.txt"), "x").unwrap();
    git(&dir, &["add", "new.txt"]);
    git(&dir, &["commit", "-q", "-m", "second"]);
    wait_for(
        "a pipeline from polling",
        std::time::Duration::from_secs(15),
        || !pipelines_of("polled").is_empty(),
    );
    let p = &pipelines_of("polled")[0];
    assert_eq!(p["triggered_by"], "git poll");
    assert_eq!(p["event"], "push");
    assert_eq!(p["message"], "second");

    let cron_dir = work.path().join("cron");
    let spec = format!(
        "cron:\n  - name: every-second\n    schedule: \"* * * * * *\"\n{}",
        README_EXAMPLE.as_str()
    );
    repo_with(&cron_dir, &[(".slipway.yml", spec.as_str())]);
    let out = slipway(
        &server,
        &["repo", "add", "timed", "--url", cron_dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(
        "a cron pipeline",
        std::time::Duration::from_secs(15),
        || !pipelines_of("timed").is_empty(),
    );
    let p = &pipelines_of("timed")[0];
    assert_eq!(p["event"], "cron");
    assert_eq!(p["ref"], "refs/heads/main");
    assert!(
        p["triggered_by"]
            .as_str()
            .unwrap()
            .starts_with("cron every-second"),
        "{p}"
    );
}

/// A repository limited to one job at a time runs its pipelines one after the
/// other even on a runner with room for more.
#[test]
fn a_concurrency_limit_serialises_a_repositorys_jobs() {
    let (server, work) = with_busybox("pipelines-limit");
    let spec = "jobs:\n  one:\n    steps:\n      - image: busybox\n        commands: [sleep 0.5]\n";
    add_repo(&server, work.path(), "limited", &[(".slipway.yml", spec)]);
    let out = slipway(&server, &["repo", "limit", "limited", "--max", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _runner = start_runner(&server, &work.path().join("runner")); // capacity 2
    for _ in 0..3 {
        let out = slipway(&server, &["run", "limited"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let pipeline = |id: i64| {
        server
            .get(&format!("/api/v1/pipelines/{id}"), &server.admin_auth())
            .json()
    };
    wait_for(
        "three pipelines",
        std::time::Duration::from_secs(60),
        || (1..=3).all(|id| pipeline(id)["status"] == "success"),
    );
    let mut spans: Vec<(i64, i64)> = (1..=3)
        .map(|id| {
            let job = &pipeline(id)["jobs"][0];
            (
                job["started_at"].as_i64().unwrap(),
                job["finished_at"].as_i64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "jobs overlapped: {spans:?}");
    }
}

/// Artifacts go from a job to the jobs that need it; symlinks travel as links
/// (the runner never follows one to a host file), and an artifact path that
/// leaves the workspace through a symlinked directory fails its job.
#[test]
fn artifacts_are_handed_to_the_jobs_that_need_them() {
    let (server, work) = with_busybox("pipelines-artifacts");
    let spec = r#"jobs:
  build:
    artifacts: [dist]
    steps:
      - image: busybox
        commands:
          - mkdir -p dist/sub
          - echo built-by-build > dist/sub/app.txt
          - ln -s /etc/hostname dist/host-link
  use:
    needs: [build]
    steps:
      - image: busybox
        commands:
          - cat dist/sub/app.txt
          - test -L dist/host-link && echo "link kept as a link"
  escape:
    artifacts: [evil/hostname]
    steps:
      - image: busybox
        commands: [ln -s /etc evil]
"#;
    add_repo(&server, work.path(), "arts", &[(".slipway.yml", spec)]);
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "arts", "--wait"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("built-by-build"), "{stdout}");
    assert!(stdout.contains("link kept as a link"), "{stdout}");
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    let job = |name: &str| {
        p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(job("use")["status"], "success", "{p}");
    let escape = job("escape");
    assert_eq!(escape["status"], "error", "{escape}");
    assert!(
        escape["reason"]
            .as_str()
            .unwrap()
            .contains("leaves it through a symlink"),
        "{escape}"
    );
    // The tar, as users download it: the link is a link, nothing of the host.
    let build = job("build");
    assert!(build["artifacts_bytes"].as_i64().unwrap() > 0);
    let tar = server.get(
        &format!("/api/v1/jobs/{}/artifacts", build["id"]),
        &server.admin_auth(),
    );
    assert_eq!(tar.status, 200);
    let files = tar_files(&tar.body);
    assert_eq!(files["dist/sub/app.txt"], b"built-by-build\n");
    let hostname = std::fs::read("/etc/hostname").unwrap_or_default();
    assert!(
        !tar.body
            .windows(hostname.len().max(1))
            .any(|w| w == hostname.as_slice())
            || hostname.is_empty(),
        "the host's /etc/hostname is in the artifacts"
    );
}

/// The reported attack: a step links `creds` to a host directory (here a
/// canary standing in for the runner's credentials) and the spec names
/// `creds/` or `creds/.`, so the kernel followed the link while the old check
/// looked at the parent only. Such paths are refused with line:column before
/// any job runs; a plain `creds`, or a link inside an artifact directory, is
/// packed as a link: the canary is in no artifact.
#[test]
fn artifacts_never_follow_a_symlinked_directory_to_the_host() {
    let (server, work) = with_busybox("pipelines-artifact-links");
    let host = work.path().join("host-creds");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("runner-token"), "CANARY-RUNNER-TOKEN\n").unwrap();
    let host = host.display();
    let spec = format!(
        r#"jobs:
  slash:
    artifacts: [creds/, creds/.]
    steps:
      - image: busybox
        commands: [ln -s {host} creds]
"#
    );
    add_repo(&server, work.path(), "slash", &[(".slipway.yml", &spec)]);
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "slash", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(".slipway.yml:3:17: artifacts of job \"slash\": \"creds/\" ends with '/'"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            ".slipway.yml:3:25: artifacts of job \"slash\": \"creds/.\" has a '.' component"
        ),
        "{stdout}"
    );

    let spec = format!(
        r#"jobs:
  linked:
    artifacts: [creds, keep]
    steps:
      - image: busybox
        commands:
          - ln -s {host} creds
          - mkdir keep && ln -s {host} keep/creds && echo kept > keep/file
"#
    );
    let repo = work.path().join("linked");
    add_repo(&server, &repo, "linked", &[(".slipway.yml", &spec)]);
    let out = slipway(&server, &["run", "linked", "--wait"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let mut found = 0;
    for pipeline in [1, 2] {
        let p = server
            .get(
                &format!("/api/v1/pipelines/{pipeline}"),
                &server.admin_auth(),
            )
            .json();
        for job in p["jobs"].as_array().into_iter().flatten() {
            let tar = server.get(
                &format!("/api/v1/jobs/{}/artifacts", job["id"]),
                &server.admin_auth(),
            );
            if tar.status != 200 {
                continue;
            }
            found += 1;
            assert!(
                !tar.body.windows(7).any(|w| w == b"CANARY-"),
                "the host directory's file is in job {}'s artifacts",
                job["name"]
            );
            let files = tar_files(&tar.body);
            assert_eq!(files["keep/file"], b"kept\n", "{files:?}");
            assert!(
                !files.keys().any(|k| k.contains("runner-token")),
                "{files:?}"
            );
        }
    }
    assert_eq!(found, 1, "only the linked job has artifacts");
}

/// A step's log over Server-Sent Events: lines arrive while the step runs,
/// then an `end` event; a reconnect with `Last-Event-ID` resumes after what was
/// received.
#[test]
fn step_logs_stream_live_over_server_sent_events() {
    use std::io::{BufRead, BufReader};
    let (server, work) = with_busybox("pipelines-sse");
    let spec = "jobs:\n  talk:\n    steps:\n      - image: busybox\n        commands:\n          - for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.3; done\n";
    add_repo(&server, work.path(), "talky", &[(".slipway.yml", spec)]);
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "talky"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json()["jobs"][0]["id"]
        .as_i64()
        .unwrap();
    let url = format!("{}/api/v1/jobs/{job}/steps/0/log/stream", server.url());
    let response = http_client()
        .get(&url)
        .basic_auth("admin", Some(server.admin_password()))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut reader = BufReader::new(response);
    let (mut text_seen, mut event, mut last_id) = (String::new(), String::new(), String::new());
    let mut first_tick_while_running = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let line = line.trim_end_matches('\n');
        if let Some(e) = line.strip_prefix("event: ") {
            event = e.to_owned();
        } else if let Some(id) = line.strip_prefix("id: ") {
            last_id = id.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            if event == "log" {
                text_seen.push_str(v["text"].as_str().unwrap());
                if first_tick_while_running.is_none() && text_seen.contains("tick-1") {
                    let p = server
                        .get("/api/v1/pipelines/1", &server.admin_auth())
                        .json();
                    first_tick_while_running = Some(p["status"] == "running");
                }
            } else if event == "end" {
                assert_eq!(v["status"], "success");
                break;
            }
        }
    }
    assert_eq!(
        first_tick_while_running,
        Some(true),
        "the first line came only at the end"
    );
    for i in 1..=6 {
        assert_eq!(
            text_seen.matches(&format!("tick-{i}\n")).count(),
            1,
            "{text_seen}"
        );
    }
    // Resuming from the last id sends nothing again, just the end.
    let mut resumed = String::new();
    use std::io::Read;
    http_client()
        .get(&url)
        .basic_auth("admin", Some(server.admin_password()))
        .header("Last-Event-ID", &last_id)
        .send()
        .unwrap()
        .read_to_string(&mut resumed)
        .unwrap();
    assert!(!resumed.contains("event: log"), "{resumed}");
    assert!(resumed.contains("event: end"), "{resumed}");
}

/// Issue 5, acceptance 6: a pipeline with a test job and a build job, pushed
/// as a commit, yields an image tagged with the commit sha (plus its extra
/// tag) with the provenance referrer attached; that tag cannot be moved.
#[test]
fn a_build_job_pushes_the_commit_image_with_its_provenance() {
    let (server, work) = with_busybox("pipelines-build");
    let spec = "jobs:
  test:
    steps:
      - name: unit
        image: busybox
        commands: [sh app.sh | grep -q 'hello from the app']
  image:
    needs: [test]
    steps:
      - name: build
        build:
          image: shop/app
          tags: [latest]
          args: {GREETING: hello}
";
    let containerfile = "FROM busybox\nARG GREETING\nCOPY app.sh /app.sh\nRUN echo \"$GREETING\" > /greeting\nCMD [\"sh\", \"/app.sh\"]\n";
    let (_, sha) = add_repo(
        &server,
        work.path(),
        "shop",
        &[
            (".slipway.yml", spec),
            ("Containerfile", containerfile),
            ("app.sh", "echo hello from the app\n"),
        ],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "shop", "--wait"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("[stage-0 4/5] RUN echo \"$GREETING\" > /greeting  run"),
        "{stdout}"
    );

    // The pipeline lists the image it produced.
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    let images = p["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{p}");
    let image = &images[0];
    assert_eq!(image["repository"], "shop/app");
    assert_eq!(image["tags"], serde_json::json!([sha, "latest"]));
    let digest = image["digest"].as_str().unwrap().to_owned();
    assert_eq!(image["pull"], format!("shop/app@{digest}"));

    // The registry has it under the commit sha.
    let admin = server.admin_auth();
    let head = server.head_manifest("shop/app", &sha, &admin);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers["docker-content-digest"].to_str().unwrap(),
        digest
    );
    let manifest = server.get_manifest("shop/app", &digest, &admin).json();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&server.get_blob("shop/app", config_digest, &admin)).unwrap();
    let labels = &config["config"]["Labels"];
    assert_eq!(labels["org.opencontainers.image.revision"], sha.as_str());
    assert_eq!(labels["dev.slipway.pipeline"], "shop#1");
    // SOURCE_DATE_EPOCH is the commit's time, not 1970.
    assert!(
        config["created"].as_str().unwrap().starts_with("20"),
        "{config}"
    );

    // The provenance referrer names the commit and the base image.
    let referrers = server
        .get(&format!("/v2/shop/app/referrers/{digest}"), &admin)
        .json();
    let found = referrers["manifests"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{referrers}");
    assert_eq!(found[0]["artifactType"], "application/vnd.in-toto+json");
    let referrer = server
        .get_manifest("shop/app", found[0]["digest"].as_str().unwrap(), &admin)
        .json();
    assert_eq!(referrer["subject"]["digest"], digest.as_str());
    let statement: serde_json::Value = serde_json::from_slice(&server.get_blob(
        "shop/app",
        referrer["layers"][0]["digest"].as_str().unwrap(),
        &admin,
    ))
    .unwrap();
    let params = &statement["predicate"]["buildDefinition"]["externalParameters"];
    assert_eq!(params["source"]["commit"], sha.as_str());
    assert_eq!(params["source"]["repository"], "shop");
    assert_eq!(params["buildArgs"]["GREETING"], "hello");
    assert!(params["containerfile"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert!(
        deps[0]["uri"]
            .as_str()
            .unwrap()
            .ends_with("/library/busybox:latest"),
        "{deps}"
    );
    assert_eq!(statement["subject"][0]["digest"]["sha256"], &digest[7..]);

    // The commit tag is immutable: another image under it is refused, while
    // `latest` may move.
    let other = serde_json::to_vec(&referrer).unwrap();
    let put = |tag: &str| {
        let url = format!("{}/v2/shop/app/manifests/{tag}", server.url());
        let req = http_client()
            .put(&url)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(other.clone());
        HttpResponse::send("PUT", &url, admin.apply(req))
    };
    let refused = put(&sha);
    assert!(
        (400..500).contains(&refused.status),
        "moving the commit tag: {} {}",
        refused.status,
        refused.body_text()
    );
    assert!(
        refused.body_text().contains("immutable"),
        "{}",
        refused.body_text()
    );
    let head = server.head_manifest("shop/app", &sha, &admin);
    assert_eq!(
        head.headers["docker-content-digest"].to_str().unwrap(),
        digest
    );
    assert_eq!(put("latest").status, 201);

    // The image runs what was built.
    let out = slipway(
        &server,
        &[
            "exec",
            "--image",
            &format!("shop/app:{sha}"),
            "--work-dir",
            work.path().join("exec").to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "cat /greeting; sh /app.sh",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nhello from the app\n");
}

/// The reported amplification through the server: a 16×16 matrix over 7,000
/// `<<`-merged steps. The pipeline is created in error, saying the limit and
/// the count with line:column, and no job or step row is written.
#[test]
fn an_amplified_spec_makes_an_error_pipeline_and_no_rows() {
    let server = TestServer::start();
    let work = scratch_dir("amplified");
    let values = (0..16)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut spec = format!(
        "x-step: &s {{image: busybox, commands: [echo hi]}}\njobs:\n  big:\n    matrix: {{A: [{values}], B: [{values}]}}\n    steps:\n"
    );
    for i in 0..7000 {
        spec.push_str(&format!("      - {{<<: *s, name: s{i}}}\n"));
    }
    add_repo(&server, work.path(), "amp", &[(".slipway.yml", &spec)]);
    let out = slipway(&server, &["run", "amp", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(
            ".slipway.yml:3:3: the pipeline expands to 1792000 steps after the matrix; at most 2000 are allowed"
        ),
        "{stdout}"
    );
    let p = server
        .get("/api/v1/pipelines/1", &server.admin_auth())
        .json();
    assert_eq!(p["status"], "error", "{p}");
    assert_eq!(p["jobs"].as_array().map(Vec::len), Some(0), "{p}");
}

/// Every blob of every manifest of every repository in the registry, layers
/// uncompressed, with where it came from.
fn registry_contents(server: &TestServer) -> Vec<(String, Vec<u8>)> {
    let admin = server.admin_auth();
    let mut found = Vec::new();
    let catalog = server.get("/v2/_catalog", &admin).json();
    for repo in catalog["repositories"].as_array().unwrap() {
        let repo = repo.as_str().unwrap();
        let tags = server.get(&format!("/v2/{repo}/tags/list"), &admin).json();
        let mut manifests: Vec<String> = tags["tags"]
            .as_array()
            .map(|t| t.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        while let Some(reference) = manifests.pop() {
            let manifest = server.get_manifest(repo, &reference, &admin);
            found.push((format!("{repo}:{reference}"), manifest.body.clone()));
            let manifest = manifest.json();
            for child in manifest["manifests"].as_array().into_iter().flatten() {
                manifests.push(child["digest"].as_str().unwrap().to_owned());
            }
            let blobs = manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(manifest.get("config"));
            for d in blobs {
                let digest = d["digest"].as_str().unwrap();
                let bytes = server.get_blob(repo, digest, &admin);
                let media = d["mediaType"].as_str().unwrap_or_default();
                let bytes = if media.ends_with("gzip") {
                    gunzip(&bytes)
                } else {
                    bytes
                };
                found.push((format!("{repo}@{digest}"), bytes));
            }
        }
    }
    found
}

/// (job, build context, extra `build:` keys, [(path, symlink target)], the
/// error expected in the step's log).
type SymlinkCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<(&'a str, std::path::PathBuf)>,
    &'a str,
);

/// Issue 11, finding 1: a repository commits its build's control files as
/// symlinks to a host file and to the runner's own token (where runners
/// kept it, and where they keep it now), absolute and relative, as the
/// default Containerfile, as `file:`, as `.dockerignore` and as
/// `.containerignore`. Every build is refused with an error naming the
/// symlink, and neither secret appears in a log, in the API or in the
/// registry.
#[test]
fn build_files_symlinked_out_of_the_checkout_are_refused_and_leak_nothing() {
    let (server, work) = with_busybox("pipelines-symlinks");
    // A host file only root may read, with content that (as a Containerfile
    // or an ignore pattern) makes a parse error quoting it.
    let canary_value = format!("[slipway-canary-{}", random_hex(16));
    let canary = work.path().join("canary");
    std::fs::write(&canary, format!("{canary_value}\n")).unwrap();
    std::fs::set_permissions(&canary, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let runner_dir = work.path().join("runner");
    let old_token = runner_dir.join("runner-token");
    let new_token = work.path().join("runner-credentials/runner-token");

    let normal = "FROM busybox\nCOPY Containerfile /copied\n";
    let cases: Vec<SymlinkCase> = vec![
        (
            "canary-containerfile",
            "a",
            "",
            vec![("a/Containerfile", canary.clone())],
            "Containerfile: a/Containerfile: is a symlink; refused",
        ),
        (
            "relative-dockerfile",
            "b",
            "",
            // b → workspace → job dir → jobs → runner → the test's dir.
            vec![("b/Dockerfile", "../../../../../canary".into())],
            "Containerfile: b/Dockerfile: is a symlink; refused",
        ),
        (
            "old-token",
            "c",
            "",
            vec![("c/Containerfile", old_token.clone())],
            "Containerfile: c/Containerfile: is a symlink; refused",
        ),
        (
            "new-token",
            "d",
            "",
            vec![("d/Containerfile", new_token.clone())],
            "Containerfile: d/Containerfile: is a symlink; refused",
        ),
        (
            "named-file",
            "e",
            "          file: e/build.containerfile\n",
            vec![("e/build.containerfile", canary.clone())],
            "Containerfile: e/build.containerfile: is a symlink; refused",
        ),
        (
            "dockerignore-canary",
            "f",
            "",
            vec![("f/.dockerignore", canary.clone())],
            ".dockerignore: is a symlink; refused",
        ),
        (
            "dockerignore-token",
            "g",
            "",
            vec![("g/.dockerignore", old_token.clone())],
            ".dockerignore: is a symlink; refused",
        ),
        (
            "containerignore-token",
            "h",
            "",
            vec![("h/.containerignore", new_token.clone())],
            ".containerignore: is a symlink; refused",
        ),
        (
            "context-through-a-link",
            "link/i",
            "",
            vec![("link", "real".into())],
            "build context: link/i: link is a symlink; refused",
        ),
    ];
    let mut spec = String::from("jobs:\n");
    let dir = work.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    for (job, context, extra, links, _) in &cases {
        spec.push_str(&format!(
            "  {job}:\n    steps:\n      - name: build\n        build:\n          image: leaky/{job}\n          context: {context}\n{extra}"
        ));
        let ctx = dir.join(context.replace("link/", "real/"));
        std::fs::create_dir_all(&ctx).unwrap();
        for (path, target) in links {
            std::os::unix::fs::symlink(target, dir.join(path)).unwrap();
        }
        if !links.iter().any(|(p, _)| p.ends_with("file")) {
            std::fs::write(ctx.join("Containerfile"), normal).unwrap();
        }
    }
    std::fs::write(dir.join(".slipway.yml"), &spec).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "."]);
    git(&dir, &["commit", "-q", "-m", "symlinks"]);
    let out = slipway(
        &server,
        &["repo", "add", "leaky", "--url", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let _runner = start_runner(&server, &runner_dir);
    let out = slipway(&server, &["run", "leaky", "--wait"]);
    let mut seen = vec![
        ("`slipway run` output".to_owned(), out.stdout.clone()),
        ("`slipway run` errors".to_owned(), out.stderr.clone()),
    ];
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");

    // Each build failed, saying why.
    let admin = server.admin_auth();
    let p = server.get("/api/v1/pipelines/1", &admin);
    seen.push(("the pipeline".into(), p.body.clone()));
    let p = p.json();
    let jobs = p["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), cases.len(), "{p}");
    for (job, _, _, _, expected) in &cases {
        let j = jobs.iter().find(|j| j["name"] == *job).expect(job);
        assert_eq!(j["status"], "failure", "{job}: {j}");
        let log = server.get(&format!("/api/v1/jobs/{}/steps/0/log", j["id"]), &admin);
        let log_text = log.body_text();
        assert!(
            log_text.contains(&format!("slipway: build failed: {expected}")),
            "{job}: {log_text}"
        );
        seen.push((format!("the log of {job}"), log.body));
    }
    assert!(p["images"].as_array().unwrap().is_empty(), "{p}");

    // The runner did register: its token exists, outside the work dir.
    let token = std::fs::read_to_string(&new_token)
        .or_else(|_| std::fs::read_to_string(&old_token))
        .expect("the runner's token");
    let token = token.trim().to_owned();
    assert!(token.starts_with("slr_"), "{token}");
    assert!(!old_token.exists(), "the token is still in the work dir");

    for path in ["/api/v1/pipelines", "/api/v1/runners", "/api/v1/queue"] {
        let r = server.get(path, &admin);
        seen.push((path.to_owned(), r.body));
    }
    seen.extend(registry_contents(&server));
    seen.push(("the server's log".into(), server.logs().into_bytes()));
    let canary_core = &canary_value[1..];
    for (what, bytes) in &seen {
        for (secret, name) in [
            (canary_core, "the host file"),
            (token.as_str(), "the runner token"),
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{name} leaked into {what}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// Copy image `from:tag` to `to:tag` in the server's registry (blobs
/// mounted, the same manifest), as the admin.
fn copy_image(server: &TestServer, from: &str, to: &str, tag: &str) {
    let admin = server.admin_auth();
    let manifest = server.get_manifest(from, tag, &admin);
    assert_eq!(manifest.status, 200, "{}", manifest.describe());
    let body = manifest.json();
    let mut digests = vec![body["config"]["digest"].as_str().unwrap().to_owned()];
    digests.extend(
        body["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    for digest in digests {
        let r = server.request(
            reqwest::Method::POST,
            &format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"),
            &[],
            None,
        );
        assert_eq!(r.status, 201, "mount {digest}: {}", r.describe());
    }
    let media_type = manifest.header("content-type").unwrap().to_owned();
    let r = server.request(
        reqwest::Method::PUT,
        &format!("/v2/{to}/manifests/{tag}"),
        &[("content-type", media_type.as_str())],
        Some(manifest.body.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
}

/// Issue 11: an image a shared runner stored for one repository's job does
/// not let another repository's job use it. `vault/app` runs its own tool
/// image, so the runner has it; `team/app` then names it as a build's
/// `FROM` and as a step image with the server's host written out (creation
/// does not check images with a host). Both are refused by the registry for
/// team/app's token though the runner has the image; busybox still works.
#[test]
fn a_runners_stored_images_do_not_widen_a_jobs_token() {
    let (server, work) = with_busybox("pipelines-stored-images");
    copy_image(&server, "library/busybox", "vault/app/tool", "latest");
    let vault = "jobs:\n  use:\n    steps:\n      - image: vault/app/tool\n        commands: [echo vault tool ran]\n";
    add_repo(
        &server,
        &work.path().join("vault"),
        "vault/app",
        &[(".slipway.yml", vault)],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let out = slipway(&server, &["run", "vault/app", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stdout));

    let team = format!(
        "jobs:
  by-host:
    steps:
      - image: {host}/vault/app/tool
        commands: [echo borrowed tool ran]
  build:
    steps:
      - name: from-vault
        build:
          image: team/app
  plain:
    steps:
      - image: busybox
        commands: [echo busybox ran]
",
        host = server.host_port()
    );
    add_repo(
        &server,
        &work.path().join("team"),
        "team/app",
        &[
            (".slipway.yml", team.as_str()),
            ("Containerfile", "FROM vault/app/tool\nRUN echo built\n"),
        ],
    );
    let out = slipway(&server, &["run", "team/app", "--wait"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!stdout.contains("borrowed tool ran"), "{stdout}");
    assert!(stdout.contains("busybox ran"), "{stdout}");
    let p = server
        .get("/api/v1/pipelines?repo=team/app", &server.admin_auth())
        .json();
    let p = finished_pipeline(&server, p[0]["id"].as_i64().unwrap());
    let status = |job: &str| {
        p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == job)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("by-host"), "failure", "{p}");
    assert_eq!(status("build"), "failure", "{p}");
    assert_eq!(status("plain"), "success", "{p}");
    assert!(p["images"].as_array().unwrap().is_empty(), "{p}");
}
