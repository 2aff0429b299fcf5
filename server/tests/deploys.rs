//! Deploys end to end with the real binary: a git repository whose pipeline
//! builds an image, a `slipway runner`, a `slipway node` running instances
//! with runc behind its routers, and the deploy CLI.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The CLI as admin against `server`.
fn slipway(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap()
}

fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = slipway(server, args);
    assert!(
        out.status.success(),
        "slipway {args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn git(dir: &Path, args: &[&str]) {
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
}

fn commit(dir: &Path, files: &[(&str, &str)], message: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    if !dir.join(".git").exists() {
        git(dir, &["init", "-q", "-b", "main"]);
    }
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", message]);
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .unwrap();
    text(&out.stdout).trim().to_owned()
}

/// The deploy example of the README, exactly as written there.
fn readme_deploy_example() -> String {
    let readme = include_str!("../../README.md");
    let marker = "```yaml\njobs:\n  image:";
    let start = readme
        .find(marker)
        .expect("the deploy example in the README")
        + 8;
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_owned()
}

/// A web app for busybox httpd: `/version` says `version`, `/healthz` is ok.
const CONTAINERFILE: &str = "FROM busybox\n\
COPY version /www/version\n\
RUN echo ok > /www/healthz\n\
CMD [\"sh\", \"-c\", \"exec httpd -f -p $PORT -h /www\"]\n";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start_runner(server: &TestServer, work: &Path) -> Process {
    let token = ok(server, &["runner-token", "create"]).trim().to_owned();
    Process(
        Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(["runner", "--server", server.url(), "--token", &token])
            .args(["--name", "deploy-runner", "--capacity", "2"])
            .arg("--work-dir")
            .arg(work)
            .env("SLIPWAY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// A run of `count` free loopback ports (checked by binding each).
fn free_ports(count: u16) -> (u16, u16) {
    for _ in 0..200 {
        let base = 20000 + (rand_u16() % 30000);
        let all_free = (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return (base, base + count - 1);
        }
    }
    panic!("no run of {count} free ports");
}

fn rand_u16() -> u16 {
    let bytes = random_bytes(2);
    u16::from_le_bytes([bytes[0], bytes[1]])
}

/// A node of cluster `local` joined with a fresh join token.
fn start_node(server: &TestServer, work: &Path, ports: (u16, u16)) -> Process {
    let token = ok(server, &["cluster", "add", "local"]).trim().to_owned();
    assert!(token.starts_with("slj_"), "{token}");
    spawn_node(server, work, Some(&token), ports)
}

fn spawn_node(server: &TestServer, work: &Path, token: Option<&str>, ports: (u16, u16)) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
    cmd.args(["node", "--server", server.url(), "--name", "node-1"])
        .arg("--work-dir")
        .arg(work)
        .args(["--router-ports", &format!("{}-{}", ports.0, ports.1)])
        .env("SLIPWAY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(token) = token {
        cmd.args(["--token", token]);
    }
    Process(cmd.spawn().unwrap())
}

fn environments(server: &TestServer, repo: &str) -> Vec<Value> {
    let r = server.get(
        &format!("/api/v1/environments?repo={repo}"),
        &server.admin_auth(),
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json().as_array().unwrap().clone()
}

fn environment(server: &TestServer, repo: &str, env: &str) -> Value {
    environments(server, repo)
        .into_iter()
        .find(|e| e["name"] == env)
        .unwrap_or_else(|| panic!("no environment {env}"))
}

/// Wait (up to `deadline`) until `env` runs `replicas` ready instances of
/// its current deployment and nothing is in progress; its URL.
fn wait_serving(server: &TestServer, repo: &str, env: &str, deadline: Duration) -> Value {
    let start = Instant::now();
    loop {
        let Some(e) = environments(server, repo)
            .into_iter()
            .find(|e| e["name"] == env)
        else {
            assert!(
                start.elapsed() < deadline,
                "no environment {env} after {deadline:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let ready = e["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready" && i["routed"] == "live" && i["goal"] == "run")
            .count();
        let wanted = e["current"]["replicas"].as_u64().unwrap_or(u64::MAX) as usize;
        if e["in_progress"].is_null() && ready == wanted && !e["url"].is_null() {
            return e;
        }
        assert!(
            start.elapsed() < deadline,
            "{env} not serving after {deadline:?}: {e:#}\nserver log:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get_text(url: &str) -> (u16, String) {
    let client = http_client();
    match client.get(url).send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Acceptance 1: the README's example, from a commit to prod.
#[test]
fn a_commit_is_built_deployed_to_dev_and_promoted_to_prod() {
    let server = TestServer::start();
    let work = scratch_dir("deploys-e2e");
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    ok(&server, &["image", "bootstrap", "busybox"]);
    let spec = readme_deploy_example();
    let repo = work.path().join("repo");
    let sha = commit(
        &repo,
        &[
            (".slipway.yml", spec.as_str()),
            ("Containerfile", CONTAINERFILE),
            ("version", "v1\n"),
        ],
        "v1",
    );
    ok(
        &server,
        &["repo", "add", "demo", "--url", repo.to_str().unwrap()],
    );
    let _runner = start_runner(&server, &work.path().join("runner"));
    let ports = free_ports(20);
    let _node = start_node(&server, &work.path().join("node"), ports);

    let out = slipway(&server, &["run", "demo", "--wait"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The pipeline's digest goes to dev by itself, 2 instances.
    let dev = wait_serving(&server, "demo", "dev", Duration::from_secs(120));
    let digest = dev["current"]["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{dev:#}");
    assert_eq!(dev["current"]["commit"], sha.as_str());
    assert_eq!(dev["instances"].as_array().unwrap().len(), 2, "{dev:#}");
    let url = dev["url"].as_str().unwrap();
    assert_eq!(get_text(&format!("{url}/version")), (200, "v1\n".into()));

    // Promotion along the chain, each by its own strategy.
    let out = ok(&server, &["promote", "demo", "--to", "staging", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let out = ok(&server, &["promote", "demo", "--to", "prod", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let prod = wait_serving(&server, "demo", "prod", Duration::from_secs(60));
    assert_eq!(prod["instances"].as_array().unwrap().len(), 3, "{prod:#}");
    let prod_url = prod["url"].as_str().unwrap();
    assert_eq!(
        get_text(&format!("{prod_url}/version")),
        (200, "v1\n".into())
    );

    // `env list` shows the same digest in all three, each with its commit.
    let listed = ok(&server, &["env", "list", "demo"]);
    let short = &digest[..19];
    for env in ["dev", "staging", "prod"] {
        let line = listed
            .lines()
            .find(|l| l.trim_start().starts_with(env))
            .unwrap_or_else(|| panic!("{env} in {listed}"));
        assert!(line.contains(short), "{line}");
        assert!(line.contains(&sha[..12]), "{line}");
    }
    for e in environments(&server, "demo") {
        assert_eq!(e["current"]["digest"], digest.as_str(), "{e:#}");
        assert_eq!(e["current"]["commit"], sha.as_str(), "{e:#}");
    }
    let history = ok(&server, &["deployments", "demo"]);
    assert_eq!(
        history.lines().filter(|l| l.contains("succeeded")).count(),
        3,
        "{history}"
    );
}
