//! `env list`, the API and the environments page show a kubernetes
//! environment's pods as they show a local cluster's instances: name,
//! digest, ready or not, restarts, which route (slot) serves them.

use ::kube::ResourceExt;
use k8s_openapi::api::core::v1::Pod;

use super::objects;
use super::rollout::pod_ready;
use crate::app::App;
use crate::deploy::environments::EnvironmentStatus;
use crate::deploy::model::Instance;

/// Replaces `status.instances` with the pods of the environment when it is
/// bound to a kubernetes cluster (from the watch's cache). A cluster that
/// cannot be reached leaves none, and says so in the log.
pub async fn fill(app: &App, status: &mut EnvironmentStatus) -> Result<(), sqlx::Error> {
    let cluster_id: Option<i64> =
        sqlx::query_scalar("SELECT id FROM clusters WHERE id = ? AND kind = 'kubernetes'")
            .bind(status.env.cluster_id)
            .fetch_optional(&app.db)
            .await?;
    let Some(cluster_id) = cluster_id else {
        return Ok(());
    };
    let cluster = match app.deploys.kube.get(app, cluster_id).await {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(environment = status.env.id, %why, "no pods to show");
            status.instances.clear();
            return Ok(());
        }
    };
    let base = objects::base_name(status.env.id, &status.env.app, &status.env.name);
    let live = cluster
        .services
        .state()
        .into_iter()
        .find(|s| s.name_any() == base)
        .and_then(|s| {
            s.spec
                .as_ref()?
                .selector
                .as_ref()?
                .get(objects::SLOT)
                .cloned()
        });
    let mut pods = cluster
        .pods
        .state_filter(|p| objects::belongs(p.labels(), status.env.id, &status.env.app));
    pods.sort_by_key(|p| p.name_any());
    let deployments: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, spec_hash FROM deployments WHERE environment_id = ? ORDER BY id DESC",
    )
    .bind(status.env.id)
    .fetch_all(&app.db)
    .await?;
    status.instances = pods
        .iter()
        .map(|p| instance(p, status.env.id, &deployments, live.as_deref()))
        .collect();
    Ok(())
}

fn instance(p: &Pod, env_id: i64, deployments: &[(i64, String)], live: Option<&str>) -> Instance {
    let labels = p.labels();
    let hash = labels.get(objects::SPEC_HASH).cloned().unwrap_or_default();
    let slot = labels.get(objects::SLOT).map(String::as_str);
    let status = p.status.clone().unwrap_or_default();
    let ready = pod_ready(p);
    let terminating = p.metadata.deletion_timestamp.is_some();
    let observed = if terminating {
        "stopping"
    } else if ready {
        "ready"
    } else if status.phase.as_deref() == Some("Running") {
        "starting"
    } else {
        "pending"
    };
    let routed = match (slot, live) {
        (Some("main"), _) => "live",
        (Some(s), Some(l)) if s == l => "live",
        _ => "preview",
    };
    let health = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| match (&c.reason, &c.message) {
            (Some(r), Some(m)) => format!("Ready={} {r}: {m}", c.status),
            (Some(r), None) => format!("Ready={} {r}", c.status),
            _ => format!("Ready={}", c.status),
        });
    let restarts: i32 = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    Instance {
        id: 0,
        name: p.name_any(),
        environment_id: env_id,
        deployment_id: deployments
            .iter()
            .find(|(_, h)| *h == hash)
            .map(|(id, _)| *id)
            .unwrap_or(0),
        spec_hash: hash,
        goal: if terminating { "stop" } else { "run" }.into(),
        routed: routed.into(),
        node_route: routed.into(),
        observed: observed.into(),
        warm_until: None,
        container_id: p.metadata.uid.clone(),
        restarts: restarts as i64,
        health,
        log_tail: None,
        created_at: created,
        ready_at: None,
        updated_at: created,
    }
}
