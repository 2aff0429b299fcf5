//! `slipway env protect|protection`, `approve`, `reject` and `audit`:
//! release governance through a running server.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::{json, Value};

use super::deploy::{queued_then, Queued};
use crate::client::Client;
use crate::pipeline::notify::percent;

/// What `env protect` sets (the whole policy: what is not given is the
/// default).
pub struct Protect {
    pub approvals: u32,
    pub approver_role: Option<String>,
    pub approvers: Vec<String>,
    pub allow_self_approval: bool,
    pub approval_ttl: Duration,
    pub deployer_role: Option<String>,
    pub deployers: Vec<String>,
    /// `CRON;DURATION;TIME ZONE`, e.g. `0 16 * * FRI;64h;Europe/Paris`.
    pub freezes: Vec<String>,
}

/// `0 16 * * FRI;64h;Europe/Paris` as the API's freeze.
fn freeze(text: &str) -> anyhow::Result<Value> {
    let parts: Vec<&str> = text.split(';').map(str::trim).collect();
    let [cron, duration, timezone] = parts[..] else {
        bail!("--freeze {text:?}: give CRON;DURATION;TIME ZONE, e.g. \"0 16 * * FRI;64h;Europe/Paris\"");
    };
    let duration = humantime::parse_duration(duration).with_context(|| {
        format!("--freeze {text:?}: {duration:?} is not a duration such as 64h")
    })?;
    Ok(json!({ "cron": cron, "duration_s": duration.as_secs(), "timezone": timezone }))
}

fn who(role: &Option<String>, users: &[String]) -> Value {
    let mut v = json!({});
    if let Some(r) = role {
        v["role"] = json!(r);
    }
    if !users.is_empty() {
        v["users"] = json!(users);
    }
    v
}

pub async fn protect(client: &Client, repo: &str, env: &str, p: Protect) -> anyhow::Result<()> {
    let freezes = p
        .freezes
        .iter()
        .map(|f| freeze(f))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let policy = json!({
        "required_approvals": p.approvals,
        "approvers": who(&p.approver_role, &p.approvers),
        "separation_of_duties": !p.allow_self_approval,
        "approval_ttl_s": p.approval_ttl.as_secs(),
        "deployers": who(&p.deployer_role, &p.deployers),
        "freezes": freezes,
    });
    let view: Value = client
        .put(
            "/api/v1/environments/protection",
            &json!({ "repo": repo, "env": env, "policy": policy }),
        )
        .await?;
    print_protection(&view);
    Ok(())
}

pub async fn protection(client: &Client, repo: &str, env: &str) -> anyhow::Result<()> {
    let view: Value = client
        .get(&format!(
            "/api/v1/environments/protection?repo={}&env={}",
            percent(repo),
            percent(env)
        ))
        .await?;
    print_protection(&view);
    Ok(())
}

fn describe_who(w: &Value, default: &str) -> String {
    let mut parts = Vec::new();
    match w["role"].as_str() {
        Some("admin") => parts.push("admins".to_owned()),
        Some("user") => parts.push("developers and admins".to_owned()),
        _ => {}
    }
    if let Some(users) = w["users"].as_array().filter(|u| !u.is_empty()) {
        let names: Vec<&str> = users.iter().filter_map(Value::as_str).collect();
        parts.push(names.join(", "));
    }
    if parts.is_empty() {
        default.to_owned()
    } else {
        parts.join(" or ")
    }
}

fn print_protection(view: &Value) {
    let p = &view["policy"];
    println!(
        "{} {}",
        view["repo"].as_str().unwrap_or(""),
        view["env"].as_str().unwrap_or("")
    );
    let n = p["required_approvals"].as_u64().unwrap_or(0);
    if n == 0 {
        println!("  approvals: none required");
    } else {
        println!(
            "  approvals: {n} from {}, each valid {}{}",
            describe_who(&p["approvers"], "admins"),
            humantime::format_duration(Duration::from_secs(
                p["approval_ttl_s"].as_u64().unwrap_or(0)
            )),
            if p["separation_of_duties"].as_bool() == Some(false) {
                "; the requester may approve"
            } else {
                "; never the requester's own"
            }
        );
    }
    println!(
        "  may deploy: {}",
        describe_who(&p["deployers"], "developers and admins")
    );
    for f in p["freezes"].as_array().into_iter().flatten() {
        println!(
            "  freeze: {} for {} in {}",
            f["cron"].as_str().unwrap_or(""),
            humantime::format_duration(Duration::from_secs(f["duration_s"].as_u64().unwrap_or(0))),
            f["timezone"].as_str().unwrap_or("")
        );
    }
    if let Some(until) = view["frozen"].as_str() {
        println!("  frozen now, {until}");
    }
}

pub async fn decide(
    client: &Client,
    id: i64,
    approve: bool,
    comment: Option<&str>,
    follow: bool,
) -> anyhow::Result<bool> {
    let verb = if approve { "approve" } else { "reject" };
    let queued: Queued = client
        .post(
            &format!("/api/v1/deployments/{id}/{verb}"),
            &json!({ "comment": comment }),
        )
        .await?;
    queued_then(client, queued, follow).await
}

#[derive(Deserialize)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    repo: Option<String>,
    environment: Option<String>,
    digest: Option<String>,
    deployment_id: Option<i64>,
    reason: Option<String>,
    before: Option<Value>,
    after: Option<Value>,
}

pub async fn audit(
    client: &Client,
    repo: Option<&str>,
    env: Option<&str>,
    json_lines: bool,
) -> anyhow::Result<()> {
    let mut path = String::from("/api/v1/audit?");
    if let Some(r) = repo {
        path.push_str(&format!("repo={}&", percent(r)));
    }
    if let Some(e) = env {
        path.push_str(&format!("env={}&", percent(e)));
    }
    if json_lines {
        let (body, _) = client.get_raw(&format!("{path}format=jsonl")).await?;
        use std::io::Write;
        std::io::stdout().write_all(&body)?;
        return Ok(());
    }
    let rows: Vec<AuditRow> = client.get(&path).await?;
    for r in rows {
        let mut line = format!(
            "{:>6}  {}  {:<16} {:<10}",
            r.id,
            crate::db::format_utc(r.at),
            r.action,
            r.actor
        );
        for (k, v) in [
            ("repo", r.repo),
            ("env", r.environment),
            ("digest", r.digest.map(|d| d.chars().take(19).collect())),
            ("deployment", r.deployment_id.map(|d| d.to_string())),
            ("reason", r.reason),
        ] {
            if let Some(v) = v {
                line.push_str(&format!("  {k}={v}"));
            }
        }
        println!("{line}");
        if r.before.is_some() || r.after.is_some() {
            if let Some(b) = r.before {
                println!("          before: {b}");
            }
            if let Some(a) = r.after {
                println!("          after:  {a}");
            }
        }
    }
    Ok(())
}

/// What `slipway trace` starts from.
pub enum Traced<'a> {
    Environment(&'a str, &'a str),
    Instance(&'a str),
}

/// `slipway trace`: the chain from what runs back to its sources, as a tree
/// (or the API's JSON).
pub async fn trace(client: &Client, what: Traced<'_>, json: bool) -> anyhow::Result<()> {
    let path = match what {
        Traced::Environment(repo, env) => {
            format!("/api/v1/trace?repo={}&env={}", percent(repo), percent(env))
        }
        Traced::Instance(name) => format!("/api/v1/instances/{}/trace", percent(name)),
    };
    let t: Value = client.get(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!("{}", s(&t["image"]));
    match t["provenance"].as_object() {
        Some(p) => {
            println!(
                "  provenance {} (commit {})",
                s(&p["referrer"]),
                s(&p["source_commit"])
            );
            println!(
                "  Containerfile {} {}",
                s(&p["containerfile_path"]),
                s(&p["containerfile_digest"])
            );
            for b in p["bases"].as_array().into_iter().flatten() {
                println!("  base {}@{}", s(&b["image"]), s(&b["digest"]));
            }
        }
        None => println!("  no provenance referrer"),
    }
    match t["pipeline"].as_object() {
        Some(p) => {
            println!(
                "  pipeline #{} of {} at {} ({}): {}",
                p["number"],
                s(&p["repo"]),
                s(&p["commit"]),
                s(&p["git_ref"]),
                s(&p["status"])
            );
            if let Some(m) = p["message"].as_str() {
                println!(
                    "    {:?} by {}",
                    m.lines().next().unwrap_or(""),
                    s(&p["author"])
                );
            }
            for j in p["jobs"].as_array().into_iter().flatten() {
                println!("    job {}: {}", s(&j["name"]), s(&j["status"]));
                for st in j["steps"].as_array().into_iter().flatten() {
                    println!(
                        "      step {}: {}  log {}",
                        s(&st["name"]),
                        s(&st["status"]),
                        s(&st["log"])
                    );
                }
            }
        }
        None => println!("  built by no pipeline of this server"),
    }
    for e in t["environments"].as_array().into_iter().flatten() {
        let approved: Vec<String> = e["approved_by"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        let approved = if approved.is_empty() {
            String::new()
        } else {
            format!(", approved by {}", approved.join(", "))
        };
        println!(
            "  {:<10} deployment {} ({}) {} by {}{approved}",
            s(&e["environment"]),
            e["deployment_id"],
            s(&e["kind"]),
            s(&e["state"]),
            s(&e["requested_by"])
        );
    }
    Ok(())
}
