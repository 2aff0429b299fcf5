//! The pipeline commands: `slipway repo add`, `slipway run [--wait]`,
//! `slipway runner-token create` (REST API clients) and `slipway runner` (the
//! runner agent from `slipway_runner::agent`).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use crate::client::Client;

#[derive(Deserialize)]
struct Repo {
    name: String,
    webhook_secret: Option<String>,
}

pub async fn repo_add(
    client: &Client,
    name: &str,
    url: &str,
    branch: Option<&str>,
    poll: Option<&str>,
) -> anyhow::Result<()> {
    let body = json!({ "name": name, "url": url, "default_branch": branch, "poll_interval": poll });
    let repo: Repo = client.post("/api/v1/repos", &body).await?;
    println!("added {}", repo.name);
    if let Some(secret) = repo.webhook_secret {
        println!("webhook secret: {secret}");
    }
    Ok(())
}

pub async fn repo_forge(
    client: &Client,
    repo: &str,
    kind: &str,
    api: &str,
    repository: &str,
) -> anyhow::Result<()> {
    use std::io::Read;
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("reading the forge token from standard input")?;
    let token = token.trim();
    let body = json!({
        "repo": repo, "kind": kind, "api_url": api, "repository": repository,
        "token": (!token.is_empty()).then_some(token),
    });
    client.post_empty("/api/v1/repos/forge", &body).await?;
    println!("{repo}: pipeline states go to {kind} ({api}, {repository})");
    Ok(())
}

pub async fn repo_notify(client: &Client, repo: &str, url: Option<String>) -> anyhow::Result<()> {
    let body = json!({ "repo": repo, "url": url });
    client.post_empty("/api/v1/repos/notify", &body).await?;
    match url {
        Some(url) => println!("{repo}: state changes are POSTed to {url}"),
        None => println!("{repo}: no outgoing webhook"),
    }
    Ok(())
}

#[derive(Deserialize)]
struct Step {
    position: i64,
    name: String,
    status: String,
    exit_code: Option<i64>,
}

#[derive(Deserialize)]
struct Job {
    id: i64,
    name: String,
    status: String,
    reason: Option<String>,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
struct Pipeline {
    id: i64,
    number: i64,
    repo: String,
    commit: String,
    status: String,
    error: Option<String>,
    jobs: Vec<Job>,
}

fn finished(status: &str) -> bool {
    matches!(status, "success" | "failure" | "cancelled" | "error")
}

/// Start a pipeline; with `wait`, print its logs as they come and return
/// whether it succeeded.
pub async fn run(
    client: &Client,
    repo: &str,
    git_ref: Option<&str>,
    wait: bool,
) -> anyhow::Result<bool> {
    let body = json!({ "repo": repo, "ref": git_ref });
    let p: Pipeline = client.post("/api/v1/pipelines", &body).await?;
    println!(
        "pipeline {} ({} #{} at {}): {}/pipelines/{}",
        p.id,
        p.repo,
        p.number,
        &p.commit[..p.commit.len().min(12)],
        client.base(),
        p.id
    );
    if !wait {
        return Ok(true);
    }
    follow(client, p.id, true).await
}

/// `slipway rerun`: a new pipeline at the same commit.
pub async fn rerun(
    client: &Client,
    id: i64,
    failed_only: bool,
    wait: bool,
) -> anyhow::Result<bool> {
    let p: Pipeline = client
        .post(
            &format!("/api/v1/pipelines/{id}/rerun"),
            &json!({ "failed_only": failed_only }),
        )
        .await?;
    println!(
        "pipeline {} ({} #{}, re-run of {id}): {}/pipelines/{}",
        p.id,
        p.repo,
        p.number,
        client.base(),
        p.id
    );
    if !wait {
        return Ok(true);
    }
    follow(client, p.id, true).await
}

/// Print each step's log (once it has started); with `keep_following`, follow
/// them until the pipeline finishes. Returns whether it succeeded.
pub async fn follow(client: &Client, id: i64, keep_following: bool) -> anyhow::Result<bool> {
    let mut offsets: HashMap<(i64, i64), u64> = HashMap::new();
    let mut announced: HashMap<(i64, i64), String> = HashMap::new();
    let mut out = std::io::stdout();
    loop {
        let p: Pipeline = client.get(&format!("/api/v1/pipelines/{id}")).await?;
        let done = finished(&p.status);
        for job in &p.jobs {
            for step in &job.steps {
                let key = (job.id, step.position);
                if step.status == "pending" {
                    continue;
                }
                if announced.get(&key) != Some(&step.status) {
                    if !announced.contains_key(&key) {
                        writeln!(out, "--- {} / {} ---", job.name, step.name)?;
                    }
                    announced.insert(key, step.status.clone());
                }
                if step.status == "skipped" {
                    continue;
                }
                loop {
                    let offset = offsets.entry(key).or_default();
                    let (bytes, _) = client
                        .get_raw(&format!(
                            "/api/v1/jobs/{}/steps/{}/log?offset={offset}",
                            job.id, step.position
                        ))
                        .await?;
                    if bytes.is_empty() {
                        break;
                    }
                    *offset += bytes.len() as u64;
                    out.write_all(&bytes)?;
                }
                out.flush()?;
            }
        }
        if done || !keep_following {
            writeln!(
                out,
                "=== pipeline {} #{}: {} ===",
                p.repo, p.number, p.status
            )?;
            if let Some(e) = &p.error {
                writeln!(out, "{e}")?;
            }
            for job in &p.jobs {
                let steps: Vec<String> = job
                    .steps
                    .iter()
                    .map(|s| match s.exit_code {
                        Some(code) if s.status == "failure" => {
                            format!("{} {} (exit {code})", s.name, s.status)
                        }
                        _ => format!("{} {}", s.name, s.status),
                    })
                    .collect();
                writeln!(
                    out,
                    "{}: {}{} [{}]",
                    job.name,
                    job.status,
                    job.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                    steps.join(", ")
                )?;
            }
            return Ok(p.status == "success");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn cancel(client: &Client, id: i64) -> anyhow::Result<()> {
    let p: Pipeline = client
        .post(&format!("/api/v1/pipelines/{id}/cancel"), &json!({}))
        .await?;
    println!("pipeline {} ({} #{}): {}", p.id, p.repo, p.number, p.status);
    Ok(())
}

pub async fn secret_set(
    client: &Client,
    repo: &str,
    name: &str,
    allow_pr: bool,
) -> anyhow::Result<()> {
    use std::io::Read;
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the secret's value from standard input")?;
    // A trailing newline from `echo` or a file is almost never part of it.
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let body =
        json!({ "repo": repo, "name": name, "value": value, "allow_pull_requests": allow_pr });
    client.post_empty("/api/v1/secrets", &body).await?;
    println!("set {name} for {repo}");
    Ok(())
}

pub async fn secret_list(client: &Client, repo: &str) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Info {
        name: String,
        allow_pull_requests: bool,
    }
    let list: Vec<Info> = client
        .get(&format!(
            "/api/v1/secrets?repo={}",
            crate::pipeline::notify::percent(repo)
        ))
        .await?;
    for s in list {
        let note = if s.allow_pull_requests {
            " (also for fork pull requests)"
        } else {
            ""
        };
        println!("{}{note}", s.name);
    }
    Ok(())
}

pub async fn queue(client: &Client) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Candidate {
        runner: String,
        why_not: Option<String>,
    }
    #[derive(Deserialize)]
    struct Waiting {
        pipeline_id: i64,
        repo: String,
        job: String,
        position: Option<usize>,
        waiting_ms: i64,
        blocked_on: Vec<String>,
        runners: Vec<Candidate>,
    }
    let waiting: Vec<Waiting> = client.get("/api/v1/queue").await?;
    if waiting.is_empty() {
        println!("nothing is waiting");
    }
    for w in waiting {
        let place = match w.position {
            Some(p) => format!("#{p}"),
            None => "blocked".into(),
        };
        println!(
            "{place:>8}  {} pipeline {} / {}  (waiting {} s)",
            w.repo,
            w.pipeline_id,
            w.job,
            w.waiting_ms / 1000
        );
        if !w.blocked_on.is_empty() {
            println!(
                "          needs {} to succeed first",
                w.blocked_on.join(", ")
            );
            continue;
        }
        let able: Vec<&str> = w
            .runners
            .iter()
            .filter(|c| c.why_not.is_none())
            .map(|c| c.runner.as_str())
            .collect();
        if !able.is_empty() {
            println!("          can run on: {}", able.join(", "));
        } else if w.runners.is_empty() {
            println!("          no runner is registered (slipway runner-token create, then slipway runner)");
        } else {
            for c in &w.runners {
                println!(
                    "          not {}: {}",
                    c.runner,
                    c.why_not.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

pub async fn runners(client: &Client) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Runner {
        name: String,
        labels: Vec<String>,
        capacity: i64,
        online: bool,
        running_jobs: Vec<i64>,
    }
    let runners: Vec<Runner> = client.get("/api/v1/runners").await?;
    if runners.is_empty() {
        println!("no runners registered");
    }
    for r in runners {
        println!(
            "{:<20} {:<8} {}/{} busy  labels [{}]",
            r.name,
            if r.online { "online" } else { "offline" },
            r.running_jobs.len(),
            r.capacity,
            r.labels.join(", ")
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct RegistrationToken {
    token: String,
}

/// A registration token; with `repos`, its runners take only those
/// repositories' jobs.
pub async fn runner_token_create(client: &Client, repos: &[String]) -> anyhow::Result<()> {
    let body = if repos.is_empty() {
        json!({})
    } else {
        json!({ "repositories": repos })
    };
    let t: RegistrationToken = client
        .post("/api/v1/runner-tokens", &body)
        .await
        .context("creating a runner registration token")?;
    println!("{}", t.token);
    Ok(())
}
