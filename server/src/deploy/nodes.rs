//! Clusters' join tokens, nodes, what each node must run (its desired state,
//! versioned by a revision) and what it reports back.

use std::time::Duration;

use sha2::{Digest, Sha256};
use slipway_runner::node_protocol::{
    Desired, InstanceGoal, InstanceSpec, InstanceStatus, JoinRequest, JoinResponse, NodeStatus,
    RouterSpec,
};
use sqlx::SqlitePool;

use super::model::{Deployment, Instance};
use super::DeployError;
use crate::app::App;
use crate::auth::registry_token::AccessEntry;
use crate::db::now_ms;

/// A node's token lives as long as the node; registry tokens in its desired
/// state for this long (a node needs one only to pull when starting).
const PULL_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// A cluster's name: a DNS label.
pub fn valid_cluster_name(name: &str) -> bool {
    crate::pipeline::spec::valid_label(name)
}

/// How long a join token lets nodes join (any number of them).
pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A cluster made or found, and a new join token for it.
pub struct ClusterAdded {
    pub created: bool,
    pub join_token: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// Create cluster `name` if it does not exist (kind `local`) and a new join
/// token for it, valid for [`JOIN_TOKEN_TTL`].
pub async fn add_cluster(
    db: &SqlitePool,
    name: &str,
    created_by: &str,
) -> Result<ClusterAdded, DeployError> {
    if !valid_cluster_name(name) {
        return Err(DeployError::Invalid(format!(
            "cluster name {name:?} is not valid: lowercase letters, digits and '-', at most 63"
        )));
    }
    let now = now_ms();
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let created = sqlx::query(
        "INSERT INTO clusters (name, kind, created_at) VALUES (?, 'local', ?) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let kind: String = sqlx::query_scalar("SELECT kind FROM clusters WHERE name = ?")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    if kind != "local" {
        return Err(DeployError::Refused(format!(
            "cluster {name:?} is of kind {kind:?}: nodes do not join it (give it a new kubeconfig \
             with --kind {kind} --kubeconfig FILE)"
        )));
    }
    let token = new_token("slj_");
    let expires_at = now + JOIN_TOKEN_TTL.as_millis() as i64;
    sqlx::query(
        "INSERT INTO cluster_join_tokens (cluster_id, token_hash, created_by, created_at, expires_at)
         VALUES ((SELECT id FROM clusters WHERE name = ?), ?, ?, ?, ?)",
    )
    .bind(name)
    .bind(hash(&token))
    .bind(created_by)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    // Expired tokens are of no use; keep the table small.
    sqlx::query("DELETE FROM cluster_join_tokens WHERE expires_at <= ?")
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ClusterAdded {
        created,
        join_token: token,
        expires_at,
    })
}

pub struct ClusterInfo {
    pub name: String,
    pub kind: String,
    pub nodes: Vec<NodeInfo>,
}

pub struct NodeInfo {
    pub name: String,
    pub router_host: String,
    pub last_seen: Option<i64>,
    pub instances: i64,
}

pub async fn list_clusters(db: &SqlitePool) -> Result<Vec<ClusterInfo>, sqlx::Error> {
    let clusters: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, kind FROM clusters ORDER BY name")
            .fetch_all(db)
            .await?;
    let mut out = Vec::new();
    for (id, name, kind) in clusters {
        let nodes: Vec<(String, String, Option<i64>, i64)> = sqlx::query_as(
            "SELECT n.name, n.router_host, n.last_seen,
                    (SELECT COUNT(*) FROM instances i WHERE i.node_id = n.id)
             FROM nodes n WHERE n.cluster_id = ? ORDER BY n.name",
        )
        .bind(id)
        .fetch_all(db)
        .await?;
        out.push(ClusterInfo {
            name,
            kind,
            nodes: nodes
                .into_iter()
                .map(|(name, router_host, last_seen, instances)| NodeInfo {
                    name,
                    router_host,
                    last_seen,
                    instances,
                })
                .collect(),
        });
    }
    Ok(out)
}

/// A node joins with a join token. Joining again under the same name
/// replaces the node's token and keeps its environments (a re-installed
/// machine).
pub async fn join(db: &SqlitePool, request: &JoinRequest) -> Result<JoinResponse, DeployError> {
    let cluster: Option<(i64, String, i64)> = sqlx::query_as(
        "SELECT c.id, c.name, t.expires_at FROM cluster_join_tokens t JOIN clusters c ON c.id = t.cluster_id
         WHERE t.token_hash = ?",
    )
    .bind(hash(&request.join_token))
    .fetch_optional(db)
    .await?;
    let Some((cluster_id, cluster, expires_at)) = cluster else {
        return Err(DeployError::Refused(
            "unknown join token: make one with `slipway cluster add NAME`".into(),
        ));
    };
    if expires_at <= now_ms() {
        return Err(DeployError::Refused(format!(
            "this join token of cluster {cluster} expired at {}: make a new one with \
             `slipway cluster add {cluster}`",
            crate::db::format_utc(expires_at)
        )));
    }
    if !valid_cluster_name(&request.name) {
        return Err(DeployError::Invalid(format!(
            "node name {:?} is not valid: lowercase letters, digits and '-', at most 63",
            request.name
        )));
    }
    let (from, to) = request.router_ports;
    if from == 0 || to < from.saturating_add(1) {
        return Err(DeployError::Invalid(format!(
            "router ports {from}-{to}: give a range of at least two ports above 0"
        )));
    }
    if request.router_host.is_empty()
        || request.router_host.len() > 253
        || !request
            .router_host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
    {
        return Err(DeployError::Invalid(format!(
            "router host {:?} is not a host name or address",
            request.router_host
        )));
    }
    let token = new_token("sln_");
    let now = now_ms();
    let node_id: i64 = sqlx::query_scalar(
        "INSERT INTO nodes (cluster_id, name, token_hash, router_host, router_port_from, router_port_to, last_seen, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (cluster_id, name) DO UPDATE SET token_hash = excluded.token_hash,
             router_host = excluded.router_host, router_port_from = excluded.router_port_from,
             router_port_to = excluded.router_port_to, revision = nodes.revision + 1,
             last_seen = excluded.last_seen
         RETURNING id",
    )
    .bind(cluster_id)
    .bind(&request.name)
    .bind(hash(&token))
    .bind(&request.router_host)
    .bind(from as i64)
    .bind(to as i64)
    .bind(now)
    .bind(now)
    .fetch_one(db)
    .await?;
    Ok(JoinResponse {
        node_id,
        cluster,
        token,
    })
}

/// The node a `sln_` token belongs to.
pub async fn authenticate(db: &SqlitePool, token: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM nodes WHERE token_hash = ?")
        .bind(hash(token))
        .fetch_optional(db)
        .await
}

pub async fn revision(db: &SqlitePool, node: i64) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT revision FROM nodes WHERE id = ?")
        .bind(node)
        .fetch_one(db)
        .await
}

/// Wait until the node's revision passes `after`, at most `wait`.
pub async fn wait_for_change(
    app: &App,
    node: i64,
    after: i64,
    wait: Duration,
) -> Result<Option<Desired>, DeployError> {
    let mut changes = app.deploys.nodes_changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.mark_unchanged();
        if revision(&app.db, node).await? > after {
            return Ok(Some(desired(app, node).await?));
        }
        // Wait: a change or the long-poll's end; action: answer "nothing new".
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(None);
        }
    }
}

/// Everything node `node` must run and route.
pub async fn desired(app: &App, node: i64) -> Result<Desired, DeployError> {
    let mut tx = app.db.begin().await?;
    let revision: i64 = sqlx::query_scalar("SELECT revision FROM nodes WHERE id = ?")
        .bind(node)
        .fetch_one(&mut *tx)
        .await?;
    let rows: Vec<Instance> = sqlx::query_as(
        "SELECT * FROM instances WHERE node_id = ? AND NOT (goal = 'stop' AND observed = 'gone') ORDER BY id",
    )
    .bind(node)
    .fetch_all(&mut *tx)
    .await?;
    let mut instances = Vec::new();
    let mut deployments: std::collections::HashMap<i64, Deployment> = Default::default();
    for i in &rows {
        if !deployments.contains_key(&i.deployment_id) {
            let d: Deployment = sqlx::query_as("SELECT * FROM deployments WHERE id = ?")
                .bind(i.deployment_id)
                .fetch_one(&mut *tx)
                .await?;
            deployments.insert(i.deployment_id, d);
        }
        let d = &deployments[&i.deployment_id];
        let config = d.config();
        let env_name: String = sqlx::query_scalar("SELECT name FROM environments WHERE id = ?")
            .bind(i.environment_id)
            .fetch_one(&mut *tx)
            .await?;
        let mut env = config.env.clone();
        if i.running() && !config.secrets.is_empty() {
            let values = app
                .secrets
                .environment_values(i.environment_id, &config.secrets)
                .await
                .map_err(|e| DeployError::Refused(e.to_string()))?;
            env.extend(values);
        }
        let registry_token = app
            .auth
            .registry_tokens
            .issue_for(
                &format!("node:{node}"),
                vec![AccessEntry::repository(d.repository.clone(), &["pull"])],
                PULL_TOKEN_TTL,
            )
            .token;
        instances.push(InstanceSpec {
            name: i.name.clone(),
            app: config.app.clone(),
            environment: env_name,
            image: d.image(),
            port: config.port,
            health: config.health.clone(),
            env,
            memory_bytes: config.memory_bytes,
            cpus: config.cpus,
            desired: if i.running() {
                InstanceGoal::Run
            } else {
                InstanceGoal::Stop
            },
            registry_token,
        });
    }
    let envs: Vec<(i64, String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT id, app, name, port, preview_port FROM environments WHERE node_id = ? ORDER BY id",
    )
    .bind(node)
    .fetch_all(&mut *tx)
    .await?;
    let host: String = sqlx::query_scalar("SELECT router_host FROM nodes WHERE id = ?")
        .bind(node)
        .fetch_one(&mut *tx)
        .await?;
    let mut routers = Vec::new();
    for (id, app_name, env, port, preview) in envs {
        let (Some(port), Some(preview)) = (port, preview) else {
            continue;
        };
        let pick = |routed: &str| -> Vec<String> {
            rows.iter()
                .filter(|i| i.environment_id == id && i.running() && i.routed == routed)
                .map(|i| i.name.clone())
                .collect()
        };
        let addr = |p: i64| {
            if host.contains(':') {
                format!("[{host}]:{p}")
            } else {
                format!("{host}:{p}")
            }
        };
        routers.push(RouterSpec {
            app: app_name,
            environment: env,
            listen: addr(port),
            preview: addr(preview),
            live: pick("live"),
            preview_set: pick("preview"),
        });
    }
    tx.commit().await?;
    Ok(Desired {
        revision,
        instances,
        routers,
    })
}

/// Record what a node observed; wakes the reconciler when anything changed.
pub async fn report(app: &App, node: i64, status: &NodeStatus) -> Result<(), DeployError> {
    let now = now_ms();
    let mut tx = app.db.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE nodes SET last_seen = ? WHERE id = ?")
        .bind(now)
        .bind(node)
        .execute(&mut *tx)
        .await?;
    let mut changed = false;
    for s in &status.instances {
        changed |= record_instance(&mut tx, node, s, now).await? > 0;
    }
    tx.commit().await?;
    if changed {
        app.deploys.wake();
    }
    Ok(())
}

async fn record_instance(
    conn: &mut sqlx::SqliteConnection,
    node: i64,
    s: &InstanceStatus,
    now: i64,
) -> Result<u64, sqlx::Error> {
    let tail: String = s
        .log_tail
        .iter()
        .rev()
        .take(20)
        .rev()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n");
    let health: Option<String> = s.health.as_ref().map(|h| h.chars().take(300).collect());
    let container: Option<String> = s
        .container_id
        .as_ref()
        .map(|c| c.chars().take(128).collect());
    let route = match s.route.as_str() {
        "live" => "live",
        "preview" => "preview",
        _ => "none",
    };
    let before: Option<(i64, String)> = sqlx::query_as(
        "SELECT deployment_id, observed FROM instances WHERE node_id = ? AND name = ?",
    )
    .bind(node)
    .bind(&s.name)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((deployment, _)) = before.filter(|(_, was)| was != s.state.as_str()) {
        let kind = format!("instance_{}", s.state.as_str());
        let what = health.as_deref().unwrap_or(s.state.as_str());
        super::events::record_instance(conn, deployment, &kind, &s.name, what).await?;
    }
    let done = sqlx::query(
        "UPDATE instances SET observed = ?, container_id = COALESCE(?, container_id), restarts = ?,
             health = ?, log_tail = ?, updated_at = ?, node_route = ?,
             ready_at = CASE WHEN ? = 'ready' THEN COALESCE(ready_at, ?) ELSE ready_at END
         WHERE node_id = ? AND name = ?
           AND (observed IS NOT ? OR restarts != ? OR health IS NOT ? OR container_id IS NOT ?
                OR node_route != ?)",
    )
    .bind(s.state.as_str())
    .bind(&container)
    .bind(s.restarts as i64)
    .bind(&health)
    .bind(&tail)
    .bind(now)
    .bind(route)
    .bind(s.state.as_str())
    .bind(now)
    .bind(node)
    .bind(&s.name)
    .bind(s.state.as_str())
    .bind(s.restarts as i64)
    .bind(&health)
    .bind(&container)
    .bind(route)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
