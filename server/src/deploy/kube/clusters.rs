//! One connection per kubernetes cluster, made from its sealed kubeconfig,
//! with a watch (kube-rs reflectors) on everything Slipway manages in its
//! namespace: Deployments, ReplicaSets, Pods, Services and Secrets labelled
//! `app.kubernetes.io/managed-by=slipway`. The reconciler reads these caches
//! (never a polling loop) and every change they see wakes it. A restarted
//! server rebuilds them from the cluster by that label.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::kube::api::Api;
use ::kube::runtime::reflector::{self, Store};
use ::kube::runtime::{watcher, WatchStreamExt};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::kubeconfig::{self, KubeconfigText};
use crate::app::App;

/// The label on every object Slipway makes (and the watches' selector).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "slipway");

/// The first listing of the namespace; action: the pass gives up on the
/// environment with this message, and the next pass tries again.
const LIST_DEADLINE: Duration = Duration::from_secs(20);

/// A connected cluster and its caches.
pub struct Cluster {
    pub name: String,
    pub client: ::kube::Client,
    pub namespace: String,
    /// The API server's URL (for messages).
    pub server: String,
    pub deployments: Store<Deployment>,
    pub pods: Store<Pod>,
    pub services: Store<Service>,
    pub secrets: Store<Secret>,
    /// The Deployments' ReplicaSets (their pod templates: which
    /// configuration Secrets are still referenced).
    pub replicasets: Store<ReplicaSet>,
    /// When its kubeconfig was stored: a new one reconnects.
    updated_at: i64,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

impl Cluster {
    pub fn api<K>(&self) -> Api<K>
    where
        K: ::kube::Resource<Scope = ::kube::core::NamespaceResourceScope>,
        <K as ::kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

/// A cluster's name, namespace, sealed kubeconfig (nonce, ciphertext) and
/// when it was stored.
type StoredKubeconfig = (String, String, Vec<u8>, Vec<u8>, i64);

/// The connected clusters, by id.
#[derive(Default)]
pub struct Clusters {
    connected: Mutex<HashMap<i64, Arc<Cluster>>>,
}

impl Clusters {
    /// Cluster `id`, connected (again, when its kubeconfig changed) with
    /// its caches filled. The error says what failed, never quoting the
    /// kubeconfig.
    pub async fn get(&self, app: &App, id: i64) -> Result<Arc<Cluster>, String> {
        let row: Option<StoredKubeconfig> = sqlx::query_as(
            "SELECT c.name, k.namespace, k.nonce, k.ciphertext, k.updated_at
             FROM clusters c JOIN cluster_kubeconfigs k ON k.cluster_id = c.id WHERE c.id = ?",
        )
        .bind(id)
        .fetch_optional(&app.db)
        .await
        .map_err(|e| e.to_string())?;
        let Some((name, namespace, nonce, ciphertext, updated_at)) = row else {
            return Err(format!("cluster {id} has no kubeconfig"));
        };
        if let Some(c) = self.connected.lock().unwrap().get(&id) {
            if c.updated_at == updated_at {
                return Ok(c.clone());
            }
        }
        let text = app
            .secrets
            .open_kubeconfig(&name, &nonce, &ciphertext)
            .map_err(|e| format!("cluster {name}: {e}"))?;
        let conn = kubeconfig::connect(&KubeconfigText::new(text), Some(&namespace))
            .await
            .map_err(|e| format!("cluster {name}: {e}"))?;
        let wake = app.deploys.wake.clone();
        let api = |c: &::kube::Client| (c.clone(), conn.namespace.clone());
        let (deployments, w1) = watch::<Deployment>(api(&conn.client), wake.clone());
        let (pods, w2) = watch::<Pod>(api(&conn.client), wake.clone());
        let (services, w3) = watch::<Service>(api(&conn.client), wake.clone());
        let (secrets, w4) = watch::<Secret>(api(&conn.client), wake.clone());
        let (replicasets, w5) = watch::<ReplicaSet>(api(&conn.client), wake);
        let cluster = Arc::new(Cluster {
            name: name.clone(),
            client: conn.client,
            namespace: conn.namespace,
            server: conn.server,
            deployments,
            pods,
            services,
            secrets,
            replicasets,
            updated_at,
            watches: vec![w1, w2, w3, w4, w5],
        });
        let filled = async {
            cluster.deployments.wait_until_ready().await.ok();
            cluster.pods.wait_until_ready().await.ok();
            cluster.services.wait_until_ready().await.ok();
            cluster.secrets.wait_until_ready().await.ok();
            cluster.replicasets.wait_until_ready().await.ok();
        };
        if tokio::time::timeout(LIST_DEADLINE, filled).await.is_err() {
            return Err(format!(
                "cluster {name}: the API server {} did not list namespace {} within {LIST_DEADLINE:?}",
                cluster.server, cluster.namespace
            ));
        }
        self.connected.lock().unwrap().insert(id, cluster.clone());
        Ok(cluster)
    }
}

/// A cache of the managed objects of kind `K` in the namespace, kept by a
/// watch (relisting with backoff after errors); each change wakes the
/// reconciler.
fn watch<K>(
    (client, namespace): (::kube::Client, String),
    wake: Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: ::kube::Resource<Scope = ::kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    <K as ::kube::Resource>::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::namespaced(client, &namespace);
    let (reader, writer) = reflector::store();
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().labels(&selector)),
    )
    .default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "watching the kubernetes namespace failed; retrying")
                }
            }
        }
    });
    (reader, task)
}
