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
    pub repo_id: i64,
    pub name: String,
    pub app: String,
    pub position: i64,
    pub cluster_id: i64,
    pub node_id: Option<i64>,
    pub port: Option<i64>,
    pub preview_port: Option<i64>,
}

/// Record the spec's environments for `repo_id` and return what the server
/// kept differently from the spec (one line each, for the log).
///
/// The promotion chain is the server's, not the commit's: a commit may add
/// environments (at the end of the chain), but it cannot reorder or drop the
/// ones that exist, nor put a new one before them, so it can never make
/// prod the first environment (deployed automatically) or change the one
/// before prod. New environments join cluster `local`; an environment the
/// spec no longer names keeps its place and its instances.
pub async fn sync(
    conn: &mut SqliteConnection,
    repo_id: i64,
    deploy: &DeploySpec,
) -> Result<Vec<String>, sqlx::Error> {
    let now = now_ms();
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM environments WHERE repo_id = ? AND position >= 0 ORDER BY position",
    )
    .bind(repo_id)
    .fetch_all(&mut *conn)
    .await?;
    let spec: Vec<&str> = deploy
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    let (chain, kept) = merge_chain(&existing, &spec);
    for (position, name) in chain.iter().enumerate() {
        let app = if spec.contains(&name.as_str()) {
            Some(deploy.app.as_str())
        } else {
            None
        };
        sqlx::query(
            "INSERT INTO environments (repo_id, name, app, position, cluster_id, created_at)
             VALUES (?, ?, ?, ?, (SELECT id FROM clusters WHERE name = 'local'), ?)
             ON CONFLICT (repo_id, name) DO UPDATE SET position = excluded.position,
                 app = COALESCE(?, app)",
        )
        .bind(repo_id)
        .bind(name)
        .bind(app.unwrap_or(&deploy.app))
        .bind(position as i64)
        .bind(now)
        .bind(app)
        .execute(&mut *conn)
        .await?;
    }
    Ok(kept)
}

/// The chain after a spec naming `spec` (in its order) meets the server's
/// `existing` chain, and a note for each way the spec's order was not taken.
fn merge_chain(existing: &[String], spec: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut chain: Vec<String> = existing.to_vec();
    let mut notes = Vec::new();
    let named_existing: Vec<&str> = spec
        .iter()
        .copied()
        .filter(|n| existing.iter().any(|e| e == n))
        .collect();
    let server_order: Vec<&str> = existing
        .iter()
        .map(String::as_str)
        .filter(|e| named_existing.contains(e))
        .collect();
    if named_existing != server_order {
        notes.push(format!(
            "the deploy section orders existing environments {}; the server keeps its chain {} \
             (a commit cannot reorder environments)",
            named_existing.join(" → "),
            existing.join(" → "),
        ));
    }
    // New environments join at the end, in the spec's order: one put
    // before an existing environment would become the one a promotion to
    // it checks first (a fresh, unprotected step before prod).
    let mut placed_late = Vec::new();
    for (i, name) in spec.iter().enumerate() {
        if chain.iter().any(|c| c == name) {
            continue;
        }
        if !existing.is_empty()
            && spec[i + 1..]
                .iter()
                .any(|after| existing.iter().any(|e| e == after))
        {
            placed_late.push(*name);
        }
        chain.push((*name).to_owned());
    }
    if !placed_late.is_empty() {
        notes.push(format!(
            "new environment{} {} join{} the chain after {} (a commit cannot put an \
             environment before existing ones)",
            if placed_late.len() > 1 { "s" } else { "" },
            placed_late.join(", "),
            if placed_late.len() > 1 { "" } else { "s" },
            existing.last().map(String::as_str).unwrap_or_default(),
        ));
    }
    let dropped: Vec<&str> = existing
        .iter()
        .map(String::as_str)
        .filter(|e| !spec.contains(e))
        .collect();
    if !dropped.is_empty() {
        notes.push(format!(
            "the deploy section no longer names {}; {} keep{} {} place in the chain and {} instances",
            dropped.join(", "),
            if dropped.len() > 1 { "they" } else { "it" },
            if dropped.len() > 1 { "" } else { "s" },
            if dropped.len() > 1 { "their" } else { "its" },
            if dropped.len() > 1 { "their" } else { "its" },
        ));
    }
    (chain, notes)
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

/// The environments of a repository in promotion order (those out of the
/// chain, from before the chain was kept by the server, last).
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
    let current = sqlx::query_as(&format!(
        "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
        super::model::RUNNING
    ))
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
pub async fn bind(
    db: &SqlitePool,
    (repo, env): (&str, &Environment),
    cluster: &str,
    by: &str,
) -> Result<(), DeployError> {
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
    let before: String = sqlx::query_scalar("SELECT name FROM clusters WHERE id = ?")
        .bind(env.cluster_id)
        .fetch_one(db)
        .await?;
    let mut tx = db.begin().await?;
    sqlx::query(
        "UPDATE environments SET cluster_id = ?, node_id = NULL, port = NULL, preview_port = NULL WHERE id = ?",
    )
    .bind(cluster_id)
    .bind(env.id)
    .execute(&mut *tx)
    .await?;
    super::audit::record(
        &mut tx,
        super::audit::Entry {
            actor: by,
            action: "bind_cluster",
            repo: Some(repo),
            environment: Some(&env.name),
            before: Some(serde_json::json!({ "cluster": before })),
            after: Some(serde_json::json!({ "cluster": cluster })),
            ..Default::default()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::merge_chain;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_spec_sets_the_chain() {
        let (chain, notes) = merge_chain(&[], &["dev", "staging", "prod"]);
        assert_eq!(chain, names(&["dev", "staging", "prod"]));
        assert!(notes.is_empty());
    }

    #[test]
    fn a_commit_cannot_put_prod_first_or_skip_staging() {
        let existing = names(&["dev", "staging", "prod"]);
        let (chain, notes) = merge_chain(&existing, &["prod", "dev", "staging"]);
        assert_eq!(chain, existing);
        assert!(
            notes[0].contains("server keeps its chain dev → staging → prod"),
            "{notes:?}"
        );
        let (chain, notes) = merge_chain(&existing, &["dev", "prod"]);
        assert_eq!(chain, existing);
        assert!(
            notes[0].contains("no longer names staging; it keeps its place"),
            "{notes:?}"
        );
    }

    #[test]
    fn new_environments_join_at_the_end() {
        let existing = names(&["dev", "prod"]);
        let (chain, notes) = merge_chain(&existing, &["dev", "prod", "dr"]);
        assert_eq!(chain, names(&["dev", "prod", "dr"]));
        assert!(notes.is_empty(), "{notes:?}");
        // Never before prod (it would be the step a promotion to prod
        // checks), nor first (deployed by every commit).
        let (chain, notes) = merge_chain(&existing, &["preview", "dev", "qa", "prod"]);
        assert_eq!(chain, names(&["dev", "prod", "preview", "qa"]));
        assert!(
            notes[0].contains("new environments preview, qa join the chain after prod"),
            "{notes:?}"
        );
    }
}
