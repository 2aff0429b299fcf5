//! Adding a kubernetes cluster, or giving an existing one a new kubeconfig:
//! connect with it, check every permission of the Role, seal it like
//! secrets, store it. Nothing is stored unless all of that passed.

use sqlx::SqlitePool;

use super::kubeconfig::{self, KubeconfigText};
use super::{access, KubeError};
use crate::db::now_ms;
use crate::pipeline::secrets::Secrets;

/// A kubernetes cluster that was added (or re-keyed).
#[derive(Debug)]
pub struct KubeClusterAdded {
    /// false: the cluster existed and now has this kubeconfig.
    pub created: bool,
    pub namespace: String,
    /// The API server's URL.
    pub server: String,
}

pub async fn add_kubernetes_cluster(
    db: &SqlitePool,
    secrets: &Secrets,
    name: &str,
    text: &KubeconfigText,
    namespace: Option<&str>,
    by: &str,
) -> Result<KubeClusterAdded, KubeError> {
    let conn = kubeconfig::connect(text, namespace).await?;
    let missing = access::missing_permissions(&conn).await?;
    if !missing.is_empty() {
        return Err(KubeError::MissingPermissions {
            namespace: conn.namespace,
            missing,
        });
    }
    let sealed = secrets.seal_kubeconfig(name, text.expose())?;
    let now = now_ms();
    let mut tx = db.begin_with("BEGIN IMMEDIATE").await?;
    let created = sqlx::query(
        "INSERT INTO clusters (name, kind, created_at) VALUES (?, 'kubernetes', ?)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    let (id, kind): (i64, String) = sqlx::query_as("SELECT id, kind FROM clusters WHERE name = ?")
        .bind(name)
        .fetch_one(&mut *tx)
        .await?;
    if kind != "kubernetes" {
        return Err(KubeError::OtherKind {
            name: name.to_owned(),
            kind,
        });
    }
    sqlx::query(
        "INSERT INTO cluster_kubeconfigs (cluster_id, namespace, nonce, ciphertext, updated_by, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (cluster_id) DO UPDATE SET namespace = excluded.namespace,
             nonce = excluded.nonce, ciphertext = excluded.ciphertext,
             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(&conn.namespace)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(by)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(KubeClusterAdded {
        created,
        namespace: conn.namespace,
        server: conn.server,
    })
}
