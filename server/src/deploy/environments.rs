//! A repository's environments: made from the spec's `deploy` section (names
//! and promotion order), bound to a cluster by the server only, placed on a
//! node with a router port and a preview port.

use sqlx::{SqliteConnection, SqlitePool};

use super::model::{Deployment, Instance};
use super::DeployError;
use crate::db::now_ms;
use crate::pipeline::spec::DeploySpec;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Environment {
    pub id: i64,
    pub name: String,
    pub app: String,
    pub position: i64,
    pub cluster_id: i64,
    pub node_id: Option<i64>,
    pub port: Option<i64>,
    pub preview_port: Option<i64>,
}

/// Record the spec's environments for `repo_id`: new ones join cluster
/// `local`; the promotion order follows the latest spec. Environments the
/// spec no longer names are kept (their instances keep running) but leave
/// the chain (position -1).
pub async fn sync(
    conn: &mut SqliteConnection,
    repo_id: i64,
    deploy: &DeploySpec,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query("UPDATE environments SET position = -1 WHERE repo_id = ?")
        .bind(repo_id)
        .execute(&mut *conn)
        .await?;
    for (position, env) in deploy.environments.iter().enumerate() {
        sqlx::query(
            "INSERT INTO environments (repo_id, name, app, position, cluster_id, created_at)
             VALUES (?, ?, ?, ?, (SELECT id FROM clusters WHERE name = 'local'), ?)
             ON CONFLICT (repo_id, name) DO UPDATE SET position = excluded.position, app = excluded.app",
        )
        .bind(repo_id)
        .bind(&env.name)
        .bind(&deploy.app)
        .bind(position as i64)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn get(db: &SqlitePool, repo_id: i64, name: &str) -> Result<Environment, DeployError> {
    sqlx::query_as("SELECT * FROM environments WHERE repo_id = ? AND name = ?")
        .bind(repo_id)
        .bind(name)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| {
            DeployError::NotFound(format!(
                "no environment {name:?}: environments come from the deploy section of a \
                 pipeline that succeeded on the default branch"
            ))
        })
}

/// The environments of a repository in promotion order (those the spec no
/// longer names last).
pub async fn list(db: &SqlitePool, repo_id: i64) -> Result<Vec<Environment>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM environments WHERE repo_id = ?
         ORDER BY CASE WHEN position < 0 THEN 1 ELSE 0 END, position, name",
    )
    .bind(repo_id)
    .fetch_all(db)
    .await
}

/// The node the environment runs on, choosing one (the node of its cluster
/// with the fewest environments, seen most recently) and its router ports
/// when it has none yet. `None` while the cluster has no node.
pub async fn place(conn: &mut SqliteConnection, env_id: i64) -> Result<Option<i64>, sqlx::Error> {
    let (cluster, node): (i64, Option<i64>) =
        sqlx::query_as("SELECT cluster_id, node_id FROM environments WHERE id = ?")
            .bind(env_id)
            .fetch_one(&mut *conn)
            .await?;
    if node.is_some() {
        return Ok(node);
    }
    let chosen: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT n.id, n.router_port_from, n.router_port_to FROM nodes n
         WHERE n.cluster_id = ?
         ORDER BY (SELECT COUNT(*) FROM environments e WHERE e.node_id = n.id), n.last_seen DESC, n.id
         LIMIT 1",
    )
    .bind(cluster)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((node, from, to)) = chosen else {
        return Ok(None);
    };
    let used: Vec<i64> = sqlx::query_scalar(
        "SELECT port FROM environments WHERE node_id = ? AND port IS NOT NULL
         UNION SELECT preview_port FROM environments WHERE node_id = ? AND preview_port IS NOT NULL",
    )
    .bind(node)
    .bind(node)
    .fetch_all(&mut *conn)
    .await?;
    let mut free = (from..=to).filter(|p| !used.contains(p));
    let (Some(port), Some(preview)) = (free.next(), free.next()) else {
        tracing::warn!(node, "no free router ports left on the node");
        return Ok(None);
    };
    sqlx::query("UPDATE environments SET node_id = ?, port = ?, preview_port = ? WHERE id = ?")
        .bind(node)
        .bind(port)
        .bind(preview)
        .bind(env_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE nodes SET revision = revision + 1 WHERE id = ?")
        .bind(node)
        .execute(&mut *conn)
        .await?;
    Ok(Some(node))
}

/// What `env list` shows for one environment.
pub struct EnvironmentStatus {
    pub env: Environment,
    pub cluster: String,
    pub url: Option<String>,
    pub preview_url: Option<String>,
    /// The last deployment that succeeded.
    pub current: Option<Deployment>,
    /// The one in progress, if any.
    pub in_progress: Option<Deployment>,
    pub instances: Vec<Instance>,
}

pub async fn status(db: &SqlitePool, env: Environment) -> Result<EnvironmentStatus, sqlx::Error> {
    let cluster: String = sqlx::query_scalar("SELECT name FROM clusters WHERE id = ?")
        .bind(env.cluster_id)
        .fetch_one(db)
        .await?;
    let host: Option<String> = match env.node_id {
        Some(node) => {
            sqlx::query_scalar("SELECT router_host FROM nodes WHERE id = ?")
                .bind(node)
                .fetch_optional(db)
                .await?
        }
        None => None,
    };
    let url = |port: Option<i64>| match (&host, port) {
        (Some(h), Some(p)) if h.contains(':') => Some(format!("http://[{h}]:{p}")),
        (Some(h), Some(p)) => Some(format!("http://{h}:{p}")),
        _ => None,
    };
    let current = sqlx::query_as(
        "SELECT * FROM deployments WHERE environment_id = ? AND state = 'succeeded' ORDER BY id DESC LIMIT 1",
    )
    .bind(env.id)
    .fetch_optional(db)
    .await?;
    let in_progress = sqlx::query_as(
        "SELECT * FROM deployments WHERE environment_id = ? AND state IN ('progressing', 'pending')
         ORDER BY CASE state WHEN 'progressing' THEN 0 ELSE 1 END, id LIMIT 1",
    )
    .bind(env.id)
    .fetch_optional(db)
    .await?;
    let instances = sqlx::query_as("SELECT * FROM instances WHERE environment_id = ? ORDER BY id")
        .bind(env.id)
        .fetch_all(db)
        .await?;
    Ok(EnvironmentStatus {
        url: url(env.port),
        preview_url: url(env.preview_port),
        env,
        cluster,
        current,
        in_progress,
        instances,
    })
}

/// Bind an environment to a cluster (admin, server-side only). Its running
/// instances stay where they are until its next deployment places it anew.
pub async fn bind(db: &SqlitePool, env: &Environment, cluster: &str) -> Result<(), DeployError> {
    let cluster_id: i64 = sqlx::query_scalar("SELECT id FROM clusters WHERE name = ?")
        .bind(cluster)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("no cluster {cluster:?}")))?;
    if cluster_id == env.cluster_id {
        return Ok(());
    }
    let running: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE environment_id = ?")
            .bind(env.id)
            .fetch_one(db)
            .await?;
    if running > 0 {
        return Err(DeployError::Refused(format!(
            "environment {:?} has {running} instances on its current cluster; moving a \
             running environment is not supported yet",
            env.name
        )));
    }
    sqlx::query(
        "UPDATE environments SET cluster_id = ?, node_id = NULL, port = NULL, preview_port = NULL WHERE id = ?",
    )
    .bind(cluster_id)
    .bind(env.id)
    .execute(db)
    .await?;
    Ok(())
}
