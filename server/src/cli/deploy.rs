//! `slipway cluster …`, `env …`, `promote`, `rollback` and `deployments`:
//! clients of the deploy routes of the REST API.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use serde::Deserialize;
use serde_json::json;

use crate::client::Client;
use crate::pipeline::notify::percent;

#[derive(Deserialize)]
struct ClusterAdded {
    cluster: String,
    created: bool,
    join_token: Option<String>,
    expires_at: Option<i64>,
    namespace: Option<String>,
    server: Option<String>,
}

pub async fn cluster_add(
    client: &Client,
    name: &str,
    kind: &str,
    kubeconfig: Option<&Path>,
    namespace: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({ "name": name, "kind": kind });
    if let Some(path) = kubeconfig {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        body["kubeconfig"] = json!(text);
    }
    if let Some(namespace) = namespace {
        body["namespace"] = json!(namespace);
    }
    let added: ClusterAdded = client.post("/api/v1/clusters", &body).await?;
    if let Some(join_token) = added.join_token {
        eprintln!(
            "{} cluster {}; join nodes to it until {} with:\n  SLIPWAY_JOIN_TOKEN=<the token below> slipway node --server {}",
            if added.created { "created" } else { "new join token for" },
            added.cluster,
            crate::db::format_utc(added.expires_at.unwrap_or_default()),
            client.base()
        );
        println!("{join_token}");
    } else {
        println!(
            "{} kubernetes cluster {}: {} namespace {} (the account has every permission of the Role)",
            if added.created { "added" } else { "new kubeconfig for" },
            added.cluster,
            added.server.unwrap_or_default(),
            added.namespace.unwrap_or_default()
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct ClusterView {
    name: String,
    kind: String,
    nodes: Vec<NodeView>,
}

#[derive(Deserialize)]
struct NodeView {
    name: String,
    router_host: String,
    last_seen: Option<i64>,
    instances: i64,
}

pub async fn cluster_list(client: &Client) -> anyhow::Result<()> {
    let clusters: Vec<ClusterView> = client.get("/api/v1/clusters").await?;
    let now = crate::db::now_ms();
    for c in clusters {
        println!("{} ({}): {} node(s)", c.name, c.kind, c.nodes.len());
        for n in c.nodes {
            let seen = n
                .last_seen
                .map(|t| format!("seen {} ago", ago(now - t)))
                .unwrap_or_else(|| "never seen".into());
            println!(
                "  {}  routers on {}  {} instance(s)  {seen}",
                n.name, n.router_host, n.instances
            );
        }
    }
    Ok(())
}

fn ago(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

#[derive(Deserialize)]
pub struct DeploymentView {
    pub id: i64,
    pub environment: String,
    pub kind: String,
    pub image: String,
    pub digest: String,
    pub pipeline_id: Option<i64>,
    pub commit: Option<String>,
    pub strategy: String,
    pub replicas: u32,
    pub state: String,
    pub progress: Option<String>,
    pub reason: Option<String>,
    pub requested_by: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub approvals: Option<Approvals>,
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub approved_by: Vec<String>,
}

#[derive(Deserialize)]
pub struct Verification {
    pub state: String,
    pub pipeline_id: Option<i64>,
    pub soak_until: Option<i64>,
    pub reason: Option<String>,
}

impl Verification {
    /// `verified`, `soaking (4m left)`, `verifying (pipeline id 12)`,
    /// `verify failed: …`.
    fn describe(&self, now: i64) -> String {
        match self.state.as_str() {
            "soaking" => match self.soak_until {
                Some(t) => format!("soaking ({} left)", ago(t - now)),
                None => "soaking".to_owned(),
            },
            "verifying" => match self.pipeline_id {
                Some(p) => format!("verifying (pipeline id {p})"),
                None => "verifying".to_owned(),
            },
            "failed" | "cancelled" => format!(
                "verification {}: {}",
                self.state,
                self.reason.as_deref().unwrap_or("")
            ),
            other => other.to_owned(),
        }
    }
}

#[derive(Deserialize)]
pub struct Approvals {
    pub approved_by: Vec<String>,
    pub required: u32,
}

#[derive(Deserialize)]
struct InstanceView {
    name: String,
    digest: String,
    state: String,
    goal: String,
    routed: String,
    container_id: Option<String>,
    restarts: i64,
    health: Option<String>,
}

#[derive(Deserialize)]
struct EnvironmentView {
    name: String,
    app: String,
    cluster: String,
    url: Option<String>,
    preview_url: Option<String>,
    current: Option<DeploymentView>,
    in_progress: Option<DeploymentView>,
    instances: Vec<InstanceView>,
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

fn short_commit(commit: &Option<String>) -> String {
    commit
        .as_deref()
        .map(|c| c[..c.len().min(12)].to_owned())
        .unwrap_or_else(|| "-".into())
}

pub async fn env_list(client: &Client, repo: Option<&str>) -> anyhow::Result<()> {
    let repos: Vec<String> = match repo {
        Some(r) => vec![r.to_owned()],
        None => {
            #[derive(Deserialize)]
            struct Repo {
                name: String,
            }
            let repos: Vec<Repo> = client.get("/api/v1/repos").await?;
            repos.into_iter().map(|r| r.name).collect()
        }
    };
    let mut out = std::io::stdout();
    for repo in repos {
        let envs: Vec<EnvironmentView> = client
            .get(&format!("/api/v1/environments?repo={}", percent(&repo)))
            .await?;
        if envs.is_empty() {
            continue;
        }
        writeln!(out, "{repo} (app {})", envs[0].app)?;
        for e in envs {
            let running = match &e.current {
                Some(d) => format!(
                    "{} commit {} ({}){}",
                    d.image.replace(&d.digest, short(&d.digest)),
                    short_commit(&d.commit),
                    d.strategy,
                    d.verification
                        .as_ref()
                        .map(|v| format!(", {}", v.describe(crate::db::now_ms())))
                        .unwrap_or_default()
                ),
                None => "nothing deployed".into(),
            };
            writeln!(
                out,
                "  {:<10} {}  {}  [cluster {}]",
                e.name,
                e.url.as_deref().unwrap_or("(not placed yet)"),
                running,
                e.cluster
            )?;
            if let Some(d) = &e.in_progress {
                writeln!(
                    out,
                    "             deployment {} ({} of {}) {}: {}",
                    d.id,
                    d.kind,
                    short(&d.digest),
                    d.state,
                    d.progress.as_deref().unwrap_or("")
                )?;
                if let Some(p) = &e.preview_url {
                    writeln!(out, "             preview {p}")?;
                }
            }
            for i in &e.instances {
                let mut line = format!("             {} {} {}", i.name, short(&i.digest), i.state);
                if i.routed != "none" {
                    line.push_str(&format!(" ({})", i.routed));
                }
                if i.goal == "stop" {
                    line.push_str(" stopping");
                }
                if i.restarts > 0 {
                    line.push_str(&format!(" restarts {}", i.restarts));
                }
                if let Some(h) = i.health.as_deref().filter(|_| i.state != "ready") {
                    line.push_str(&format!(" health: {h}"));
                }
                if let Some(c) = &i.container_id {
                    line.push_str(&format!(" container {c}"));
                }
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

pub async fn env_bind(client: &Client, repo: &str, env: &str, cluster: &str) -> anyhow::Result<()> {
    client
        .post_empty(
            "/api/v1/environments/cluster",
            &json!({ "repo": repo, "env": env, "cluster": cluster }),
        )
        .await?;
    println!("{repo} {env} now runs on cluster {cluster}");
    Ok(())
}

pub async fn env_secret_set(
    client: &Client,
    repo: &str,
    env: &str,
    name: &str,
    value: &str,
) -> anyhow::Result<()> {
    client
        .post_empty(
            "/api/v1/environments/secrets",
            &json!({ "repo": repo, "env": env, "name": name, "value": value }),
        )
        .await?;
    println!("secret {name} set for {repo} {env}");
    Ok(())
}

pub async fn env_secret_list(client: &Client, repo: &str, env: &str) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Secret {
        name: String,
    }
    let secrets: Vec<Secret> = client
        .get(&format!(
            "/api/v1/environments/secrets?repo={}&env={}",
            percent(repo),
            percent(env)
        ))
        .await?;
    for s in secrets {
        println!("{}", s.name);
    }
    Ok(())
}

/// Print the environment's instances' output, each line prefixed with the
/// instance; with `follow`, keep printing new output (and new instances).
pub async fn env_logs(client: &Client, repo: &str, env: &str, follow: bool) -> anyhow::Result<()> {
    let mut offsets: std::collections::HashMap<String, u64> = Default::default();
    let mut partial: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut out = std::io::stdout();
    loop {
        let envs: Vec<EnvironmentView> = client
            .get(&format!("/api/v1/environments?repo={}", percent(repo)))
            .await?;
        let Some(e) = envs.into_iter().find(|e| e.name == env) else {
            anyhow::bail!("{repo} has no environment {env:?}");
        };
        for i in &e.instances {
            let offset = offsets.entry(i.name.clone()).or_default();
            let (bytes, headers) = client
                .get_raw(&format!(
                    "/api/v1/instances/{}/log?from={offset}",
                    percent(&i.name)
                ))
                .await?;
            let length: u64 = headers
                .get("x-slipway-log-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(*offset + bytes.len() as u64);
            *offset = length;
            let buffer = partial.entry(i.name.clone()).or_default();
            buffer.extend_from_slice(&bytes);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                write!(out, "{} | {}", i.name, String::from_utf8_lossy(&line))?;
            }
            if !follow && !buffer.is_empty() {
                writeln!(out, "{} | {}", i.name, String::from_utf8_lossy(buffer))?;
                buffer.clear();
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Deserialize)]
pub(super) struct Queued {
    deployment: DeploymentView,
}

fn describe(d: &DeploymentView) -> String {
    format!(
        "deployment {} ({}) of {} to {} (commit {}, {} x{})",
        d.id,
        d.kind,
        d.image.replace(&d.digest, short(&d.digest)),
        d.environment,
        short_commit(&d.commit),
        d.strategy,
        d.replicas
    )
}

/// Follow a deployment until it ends, printing each change of its progress;
/// true when it succeeded.
pub async fn wait(client: &Client, id: i64) -> anyhow::Result<bool> {
    let mut last = String::new();
    loop {
        let d: DeploymentView = client.get(&format!("/api/v1/deployments/{id}")).await?;
        let now = match (&d.state[..], &d.approvals) {
            ("awaiting_approval", Some(a)) => format!(
                "awaiting approval: {} of {} ({}); an approver runs `slipway approve {id}`",
                a.approved_by.len(),
                a.required,
                if a.approved_by.is_empty() {
                    "none yet".to_owned()
                } else {
                    a.approved_by.join(", ")
                }
            ),
            _ => format!("{}: {}", d.state, d.progress.as_deref().unwrap_or("")),
        };
        if now != last {
            eprintln!("deployment {id} {now}");
            last = now;
        }
        match d.state.as_str() {
            "succeeded" => {
                println!(
                    "deployment {id} succeeded: {}",
                    d.reason.unwrap_or_default()
                );
                return Ok(true);
            }
            "failed" | "superseded" | "rejected" | "expired" => {
                println!(
                    "deployment {id} {}: {}",
                    d.state,
                    d.reason.unwrap_or_default()
                );
                return Ok(false);
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

pub(super) async fn queued_then(
    client: &Client,
    queued: Queued,
    follow: bool,
) -> anyhow::Result<bool> {
    println!("queued {}", describe(&queued.deployment));
    if follow {
        wait(client, queued.deployment.id).await
    } else {
        Ok(true)
    }
}

/// A promotion: `override_freeze` breaks glass (admins, with `reason`).
pub struct Promotion<'a> {
    pub repo: &'a str,
    pub to: &'a str,
    pub override_freeze: bool,
    pub reason: Option<&'a str>,
}

pub async fn promote(client: &Client, p: Promotion<'_>, follow: bool) -> anyhow::Result<bool> {
    let queued: Queued = client
        .post(
            "/api/v1/deployments/promote",
            &json!({
                "repo": p.repo, "to": p.to,
                "override_freeze": p.override_freeze, "reason": p.reason,
            }),
        )
        .await?;
    queued_then(client, queued, follow).await
}

pub async fn rollback(
    client: &Client,
    repo: &str,
    env: &str,
    to: Option<&str>,
    reason: Option<&str>,
    follow: bool,
) -> anyhow::Result<bool> {
    let queued: Queued = client
        .post(
            "/api/v1/deployments/rollback",
            &json!({ "repo": repo, "env": env, "to": to, "reason": reason }),
        )
        .await?;
    queued_then(client, queued, follow).await
}

/// `slipway abort ID`: one not started ends at once; one in progress is
/// reverted by the controller.
pub async fn abort(client: &Client, id: i64, reason: Option<&str>) -> anyhow::Result<()> {
    let after: Queued = client
        .post(
            &format!("/api/v1/deployments/{id}/abort"),
            &json!({ "reason": reason }),
        )
        .await?;
    let d = &after.deployment;
    match d.state.as_str() {
        "progressing" => println!(
            "aborting {}: the controller fails it and reverts (`slipway deployments` follows it)",
            describe(d)
        ),
        state => println!("{} is {state}", describe(d)),
    }
    Ok(())
}

pub async fn history(client: &Client, repo: &str, env: Option<&str>) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/deployments?repo={}", percent(repo));
    if let Some(env) = env {
        path.push_str(&format!("&env={}", percent(env)));
    }
    let rows: Vec<DeploymentView> = client.get(&path).await?;
    let now = crate::db::now_ms();
    for d in rows {
        let by = match d.pipeline_id {
            Some(p) if d.kind == "deploy" => format!("pipeline {p}"),
            _ => d.requested_by.clone(),
        };
        let took = d
            .finished_at
            .map(|f| format!(" in {}", ago(f - d.created_at)))
            .unwrap_or_default();
        let by = if d.approved_by.is_empty() {
            by
        } else {
            format!("{by}, approved by {}", d.approved_by.join(", "))
        };
        println!(
            "{:>5}  {:<10} {:<9} {:<11} {}  commit {}  by {by}, {} ago{took}",
            d.id,
            d.environment,
            d.kind,
            d.state,
            short(&d.digest),
            short_commit(&d.commit),
            ago(now - d.created_at)
        );
        if let Some(v) = &d.verification {
            println!("       {}", v.describe(now));
        } else if let Some(r) = d.reason.as_deref().filter(|_| d.state != "succeeded") {
            println!("       {r}");
        }
    }
    Ok(())
}
