//! The strategies on a kubernetes cluster: one idempotent step per
//! environment, called by the reconciler (`reconcile.rs`) once it has chosen
//! the environment's target (the progressing deployment, or else the last
//! that succeeded). It reads the cluster through the watches' caches
//! (`clusters.rs`), writes with server-side apply, and records progress and
//! the end in the deployment's row, exactly as for a local cluster.
//!
//! Waits, each with its deadline and action:
//! - the cluster's first listing: 20 s a pass; the rollout's backstop below.
//! - rolling, the Deployment's new ReplicaSet: Kubernetes'
//!   `progressDeadlineSeconds` (= `deadline`); when it reports
//!   `ProgressDeadlineExceeded`, Slipway fails the deployment with the pods'
//!   conditions and events, and the next pass applies the previous
//!   successful deployment's own spec (not `rollout undo`): its replicas,
//!   its configuration Secret, its digest.
//! - blue/green, the new slot: the same deadline; action: failed, the live
//!   Service never switched, the new slot scaled to 0.
//! - the rollout as a whole (a backstop whatever Kubernetes says, e.g. an
//!   unreachable cluster): `(replicas + 2) × deadline` and a minute; action:
//!   failed and reverted as above.
//! - blue/green's old slot: kept scaled up for `keep` after the switch (a
//!   rollback then only switches the selector back), then scaled to 0.
//! - the image pull Secret's token: renewed when half its lifetime is left.
//! - configuration Secrets nothing references any more (their ReplicaSets
//!   pruned): removed in the steady state, 10 s after they were made at the
//!   earliest.

use std::time::Duration;

use ::kube::api::{ListParams, Patch, PatchParams, PostParams};
use ::kube::runtime::reflector::ObjectRef;
use ::kube::ResourceExt;
use k8s_openapi::api::apps::v1::Deployment as KubeDeployment;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use sqlx::SqliteConnection;

use super::clusters::Cluster;
use super::objects::{self, Owner};
use crate::app::App;
use crate::auth::registry_token::AccessEntry;
use crate::db::now_ms;
use crate::deploy::model::{short_digest, Deployment, State};
use crate::deploy::reconcile::{finish, progress, Outcome};
use crate::pipeline::spec::Strategy;

/// The pull token's lifetime; renewed when less than half is left.
const PULL_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How old an unreferenced configuration Secret must be to be removed.
const CONFIG_GRACE: Duration = Duration::from_secs(10);

/// The field manager of Slipway's server-side applies.
const MANAGER: &str = "slipway";

/// The cluster environment `env_id` is bound to, when it is of kind
/// `kubernetes`.
pub async fn bound(conn: &mut SqliteConnection, env_id: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.id FROM environments e JOIN clusters c ON c.id = e.cluster_id
         WHERE e.id = ? AND c.kind = 'kubernetes'",
    )
    .bind(env_id)
    .fetch_optional(conn)
    .await
}

/// One step for an environment on kubernetes cluster `cluster_id`:
/// `active` is its progressing deployment, `target` that or else the last
/// that succeeded.
pub async fn environment(
    app: &App,
    env_id: i64,
    cluster_id: i64,
    active: Option<Deployment>,
    target: Option<Deployment>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let (env_name, app_name): (String, String) =
        sqlx::query_as("SELECT name, app FROM environments WHERE id = ?")
            .bind(env_id)
            .fetch_one(&app.db)
            .await?;
    let outcome = match app.deploys.kube.get(app, cluster_id).await {
        Err(why) => Outcome::Progress(format!("waiting for the cluster: {why}")),
        Ok(cluster) => match &target {
            None => match scale_down_all(&cluster, env_id, &app_name).await {
                Ok(()) => return Ok(()),
                Err(e) => Outcome::Progress(format!("kubernetes: {e}")),
            },
            Some(target) => {
                let config = target.config();
                let owner = Owner {
                    env_id,
                    env_name: &env_name,
                    deployment: target,
                    config: &config,
                };
                let step = Step {
                    app,
                    cluster: &cluster,
                    owner: &owner,
                    active: active.is_some(),
                    now,
                };
                let result = match config.strategy() {
                    Strategy::Rolling => step.rolling().await,
                    Strategy::BlueGreen => step.blue_green().await,
                };
                result.unwrap_or_else(|e| Outcome::Progress(format!("kubernetes: {e}")))
            }
        },
    };
    let Some(d) = active else {
        if let (Some(t), Ok(cluster)) = (&target, app.deploys.kube.get(app, cluster_id).await) {
            if let Err(e) = collect_config_secrets(&cluster, env_id, &t.config().app, now).await {
                tracing::warn!(environment = env_id, error = %e, "removing unused configuration Secrets failed");
            }
        }
        if let Outcome::Progress(why) = &outcome {
            if why.starts_with("kubernetes:") || why.starts_with("waiting for the cluster") {
                tracing::warn!(environment = env_id, %why, "keeping a kubernetes environment failed");
            }
        }
        return Ok(());
    };
    let mut conn = app.db.acquire().await?;
    match outcome {
        Outcome::Progress(what) => {
            let config = d.config();
            let started = d.started_at.unwrap_or(now);
            // The backstop: whatever the cluster says, the rollout ends.
            let deadline = started
                + (config.replicas as i64 + 2) * config.deadline_ms as i64
                + crate::deploy::model::STOP_DEADLINE.as_millis() as i64;
            if now > deadline {
                let reason = format!(
                    "the rollout did not finish within {} (its deadline for {} replicas): {what}{}",
                    humantime::format_duration(Duration::from_secs(
                        ((now - started) / 1000) as u64
                    )),
                    config.replicas,
                    revert_note(app, &d).await?
                );
                finish(&mut conn, d.id, State::Failed, &reason, now).await?;
                tracing::warn!(deployment = d.id, %reason, "deployment failed; reverting");
                app.deploys.wake();
            } else {
                progress(&mut conn, d.id, &what).await?;
            }
        }
        Outcome::Done(what) => {
            finish(&mut conn, d.id, State::Succeeded, &what, now).await?;
            crate::deploy::verify::rolled_out(&mut conn, &d, now).await?;
            tracing::info!(deployment = d.id, %what, "deployment succeeded");
        }
        Outcome::Failed(reason) => {
            let reason = format!("{reason}{}", revert_note(app, &d).await?);
            finish(&mut conn, d.id, State::Failed, &reason, now).await?;
            tracing::warn!(deployment = d.id, %reason, "deployment failed; reverting");
            app.deploys.wake();
        }
    }
    Ok(())
}

/// What a failure of `d` goes back to.
async fn revert_note(app: &App, d: &Deployment) -> Result<String, sqlx::Error> {
    let previous: Option<Deployment> = sqlx::query_as(&format!(
        "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
        crate::deploy::model::RUNNING
    ))
    .bind(d.environment_id)
    .fetch_optional(&app.db)
    .await?;
    Ok(match previous {
        Some(p) => format!(
            "; reverted to deployment {} ({}@{})",
            p.id,
            p.repository,
            short_digest(&p.digest)
        ),
        None => "; nothing succeeded here before: its Deployments are scaled to 0".to_owned(),
    })
}

/// Nothing in progress and nothing ever succeeded: nothing runs.
async fn scale_down_all(cluster: &Cluster, env_id: i64, app: &str) -> Result<(), ::kube::Error> {
    for d in cluster.deployments.state() {
        if objects::belongs(d.labels(), env_id, app) && replicas(&d) > 0 {
            scale(cluster, &d.name_any(), 0).await?;
        }
    }
    Ok(())
}

/// Configuration Secrets no Deployment nor ReplicaSet of the environment
/// references (Kubernetes prunes ReplicaSets past `revisionHistoryLimit`)
/// are deleted, in the steady state only and once [`CONFIG_GRACE`] old: a
/// Secret is written just before the Deployment that references it. A
/// later rollback to that configuration writes it again.
async fn collect_config_secrets(
    cluster: &Cluster,
    env_id: i64,
    app: &str,
    now: i64,
) -> Result<(), ::kube::Error> {
    let mut used: Vec<String> = Vec::new();
    let mut add = |t: Option<&k8s_openapi::api::core::v1::PodSpec>| {
        for c in t.map(|s| s.containers.as_slice()).unwrap_or_default() {
            for e in c.env.iter().flatten() {
                if let Some(r) = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                {
                    used.push(r.name.clone());
                }
            }
        }
    };
    for d in cluster.deployments.state() {
        if objects::belongs(d.labels(), env_id, app) {
            add(d.spec.template.spec.as_ref());
        }
    }
    for rs in cluster.replicasets.state() {
        if objects::belongs(rs.labels(), env_id, app) {
            add(rs.spec.template.as_ref().and_then(|t| t.spec.as_ref()));
        }
    }
    for s in cluster.secrets.state() {
        let name = s.name_any();
        let created = s
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(now);
        if objects::belongs(s.labels(), env_id, app)
            && name.contains("-cfg-")
            && !used.contains(&name)
            && now - created > CONFIG_GRACE.as_millis() as i64
        {
            match cluster
                .api::<Secret>()
                .delete(&name, &Default::default())
                .await
            {
                Ok(_) => tracing::info!(secret = %name, "unused configuration Secret removed"),
                Err(::kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn replicas(d: &KubeDeployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

async fn scale(cluster: &Cluster, name: &str, replicas: i32) -> Result<(), ::kube::Error> {
    cluster
        .api::<KubeDeployment>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    Ok(())
}

struct Step<'a> {
    app: &'a App,
    cluster: &'a Cluster,
    owner: &'a Owner<'a>,
    active: bool,
    now: i64,
}

/// How a Deployment (of one slot) stands against its spec.
enum Rollout {
    /// Every replica updated, ready and available, no other left.
    Complete,
    /// Kubernetes reports `ProgressDeadlineExceeded`: its message.
    Stuck(String),
    Progressing(String),
}

fn rollout(d: &KubeDeployment, want: i32) -> Rollout {
    let Some(status) = &d.status else {
        return Rollout::Progressing("the Deployment has no status yet".into());
    };
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let all = status.replicas.unwrap_or(0);
    if observed {
        if let Some(c) = status.conditions.iter().flatten().find(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.status.as_deref() == Some("False")
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        }) {
            return Rollout::Stuck(c.message.clone().unwrap_or_default());
        }
        if updated == want && ready == want && available == want && all == want {
            return Rollout::Complete;
        }
    }
    Rollout::Progressing(format!(
        "{updated}/{want} pods updated, {ready} ready, {all} in all"
    ))
}

impl Step<'_> {
    fn base(&self) -> String {
        self.owner.base()
    }

    fn deployment(&self, name: &str) -> Option<std::sync::Arc<KubeDeployment>> {
        self.cluster
            .deployments
            .get(&ObjectRef::new(name).within(&self.cluster.namespace))
    }

    fn service(&self, name: &str) -> Option<std::sync::Arc<Service>> {
        self.cluster
            .services
            .get(&ObjectRef::new(name).within(&self.cluster.namespace))
    }

    fn annotation<'o>(obj: &'o impl ResourceExt, key: &str) -> Option<&'o str> {
        obj.annotations().get(key).map(String::as_str)
    }

    /// `host[:port]` of this server's registry, as pods pull from it.
    fn registry(&self) -> String {
        let url = self.app.settings.default_public_url();
        url.trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    }

    fn image(&self) -> String {
        format!("{}/{}", self.registry(), self.owner.deployment.image())
    }

    async fn apply<K>(&self, obj: &K) -> Result<(), ::kube::Error>
    where
        K: ::kube::Resource<Scope = ::kube::core::NamespaceResourceScope>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Clone
            + std::fmt::Debug,
        <K as ::kube::Resource>::DynamicType: Default,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        self.cluster
            .api::<K>()
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?;
        Ok(())
    }

    /// The image pull Secret, made or renewed when half its token's
    /// lifetime has passed (or it names another repository).
    async fn pull_secret(&self) -> Result<(), ::kube::Error> {
        let name = objects::pull_secret_name(&self.base());
        let current = self
            .cluster
            .secrets
            .get(&ObjectRef::new(&name).within(&self.cluster.namespace));
        let fresh = current.as_ref().is_some_and(|s| {
            let s = &**s;
            let expires = Self::annotation(s, objects::EXPIRES_AT)
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0);
            expires - self.now > PULL_TOKEN_TTL.as_millis() as i64 / 2
                && Self::annotation(s, objects::REPOSITORY)
                    == Some(self.owner.deployment.repository.as_str())
        });
        if fresh {
            return Ok(());
        }
        let issued = self.app.auth.registry_tokens.issue_for(
            &format!("kube:{}:{}", self.cluster.name, self.owner.env_id),
            vec![AccessEntry::repository(
                self.owner.deployment.repository.clone(),
                &["pull"],
            )],
            PULL_TOKEN_TTL,
        );
        let expires_at = self.now + PULL_TOKEN_TTL.as_millis() as i64;
        self.apply(
            &self
                .owner
                .pull_secret(&self.registry(), &issued.token, expires_at),
        )
        .await
    }

    /// The configuration Secret of the target (made once: it is
    /// immutable); its name and the variables it holds.
    async fn config_secret(&self) -> Result<(String, Vec<String>), String> {
        let config = self.owner.config;
        let mut values = config.env.clone();
        if !config.secrets.is_empty() {
            let secrets = self
                .app
                .secrets
                .environment_values(self.owner.env_id, &config.secrets)
                .await
                .map_err(|e| e.to_string())?;
            values.extend(secrets);
        }
        let secret = self.owner.config_secret(&values);
        let name = secret.name_any();
        let made = self
            .cluster
            .secrets
            .get(&ObjectRef::new(&name).within(&self.cluster.namespace))
            .is_some();
        if !made {
            match self
                .cluster
                .api::<Secret>()
                .create(&PostParams::default(), &secret)
                .await
            {
                Ok(_) => {}
                Err(::kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((name, values.into_iter().map(|(k, _)| k).collect()))
    }

    /// Writes the target's Deployment in `slot` with `replicas` (after its
    /// Secrets), unless it already is the target's.
    async fn ensure_deployment(&self, slot: &str, replicas: i32) -> Result<(), String> {
        self.pull_secret().await.map_err(|e| e.to_string())?;
        let name = objects::slot_name(&self.base(), slot);
        let id = self.owner.deployment.id.to_string();
        if let Some(d) = self.deployment(&name) {
            if Self::annotation(&*d, objects::DEPLOYMENT) == Some(id.as_str())
                && self::replicas(&d) == replicas
            {
                return Ok(());
            }
        }
        let (secret, names) = self.config_secret().await?;
        let d = self
            .owner
            .deployment(slot, &self.image(), replicas, &secret, &names);
        self.apply(&d).await.map_err(|e| e.to_string())
    }

    /// Why the target's pods are not ready: each pod with its conditions
    /// and restarts, and its latest events.
    async fn not_ready(&self, slot: &str, stuck: &str) -> String {
        let hash = &self.owner.deployment.spec_hash;
        let pods: Vec<std::sync::Arc<Pod>> = self.cluster.pods.state_filter(|p| {
            let l = p.labels();
            objects::belongs(l, self.owner.env_id, &self.owner.config.app)
                && l.get(objects::SLOT).map(String::as_str) == Some(slot)
                && l.get(objects::SPEC_HASH) == Some(hash)
        });
        let waited = humantime::format_duration(Duration::from_secs(
            (self.owner.config.deadline_ms / 1000).max(1),
        ));
        let mut parts = Vec::new();
        for pod in pods.iter().filter(|p| !pod_ready(p)) {
            parts.push(self.describe_pod(pod).await);
        }
        let pods = if parts.is_empty() {
            "no pod of it was made".to_owned()
        } else {
            parts.join("; ")
        };
        format!(
            "{}@{} not ready after {waited} (Kubernetes: {stuck}): {pods}",
            self.owner.deployment.repository,
            short_digest(&self.owner.deployment.digest),
        )
    }

    async fn describe_pod(&self, pod: &Pod) -> String {
        let name = pod.name_any();
        let status = pod.status.clone().unwrap_or_default();
        let conditions: Vec<String> = status
            .conditions
            .iter()
            .flatten()
            .filter(|c| c.status != "True")
            .map(|c| {
                let mut s = format!("{}={}", c.type_, c.status);
                if let Some(r) = &c.reason {
                    s.push_str(&format!(" {r}"));
                }
                if let Some(m) = &c.message {
                    s.push_str(&format!(": {m}"));
                }
                s
            })
            .collect();
        let restarts: i32 = status
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum();
        let events = self
            .cluster
            .api::<Event>()
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .rev()
                    .take(3)
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.reason.clone().unwrap_or_default(),
                            e.message.clone().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut out = format!(
            "pod {name}: {}",
            if conditions.is_empty() {
                "no condition reported".to_owned()
            } else {
                conditions.join(", ")
            }
        );
        if restarts > 0 {
            out.push_str(&format!(" ({restarts} restarts)"));
        }
        if !events.is_empty() {
            out.push_str(&format!("; events: {}", events.join(" | ")));
        }
        out
    }

    /// Rolling: one Deployment (slot `main`), maxSurge 1, maxUnavailable 0.
    async fn rolling(&self) -> Result<Outcome, String> {
        let n = self.owner.config.replicas as i32;
        self.ensure_deployment("main", n).await?;
        let name = objects::slot_name(&self.base(), "main");
        let Some(d) = self.deployment(&name) else {
            return Ok(Outcome::Progress(format!("Deployment {name} written")));
        };
        let id = self.owner.deployment.id.to_string();
        if Self::annotation(&*d, objects::DEPLOYMENT) != Some(id.as_str()) {
            return Ok(Outcome::Progress(format!("Deployment {name} written")));
        }
        Ok(match rollout(&d, n) {
            Rollout::Complete => Outcome::Done(format!(
                "{n}/{n} pods ready on {}",
                short_digest(&self.owner.deployment.digest)
            )),
            Rollout::Stuck(why) => Outcome::Failed(self.not_ready("main", &why).await),
            Rollout::Progressing(what) => Outcome::Progress(what),
        })
    }

    /// Blue/green: two Deployments (slots `blue` and `green`), the live
    /// Service selecting one, the preview Service the other.
    async fn blue_green(&self) -> Result<Outcome, String> {
        let n = self.owner.config.replicas as i32;
        let base = self.base();
        let hash = &self.owner.deployment.spec_hash;
        let live: Option<String> = self.service(&base).and_then(|s| {
            s.spec
                .as_ref()?
                .selector
                .as_ref()?
                .get(objects::SLOT)
                .cloned()
        });
        let other = |slot: Option<&str>| match slot {
            Some("blue") => "green",
            _ => "blue",
        };
        let runs_target = |slot: &str| {
            self.deployment(&objects::slot_name(&base, slot))
                .is_some_and(|d| {
                    Self::annotation(&*d, objects::SPEC_HASH) == Some(hash.as_str())
                        && replicas(&d) == n
                })
        };
        let slot = match live.as_deref() {
            Some(l) if runs_target(l) => l,
            l => other(l),
        };
        if live.as_deref() == Some(slot) {
            // Serving: keep it whole; the old slot goes when its window ends.
            self.ensure_deployment(slot, n).await?;
            let old = objects::slot_name(&base, other(Some(slot)));
            let warm_until = |d: &KubeDeployment| {
                Self::annotation(d, objects::WARM_UNTIL)
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            if let Some(d) = self.deployment(&old) {
                if replicas(&d) > 0 && warm_until(&d) <= self.now {
                    // The cache may not have the window written with the
                    // switch yet: the API server says, before a scale-down.
                    let d = self
                        .cluster
                        .api::<KubeDeployment>()
                        .get(&old)
                        .await
                        .map_err(|e| e.to_string())?;
                    if replicas(&d) > 0 && warm_until(&d) <= self.now {
                        scale(self.cluster, &old, 0)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
            return Ok(Outcome::Done(format!("{n}/{n} pods serving")));
        }
        if !self.active && live.is_some() {
            // The steady state never switches: a failed rollout's slot goes.
            // The cache may not show a switch just made: the API server
            // says which slot is live before a scale-down.
            let name = objects::slot_name(&base, slot);
            let now_live = self
                .cluster
                .api::<Service>()
                .get_opt(&base)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.spec?.selector?.get(objects::SLOT).cloned());
            if now_live.as_deref() == Some(slot) {
                return Ok(Outcome::Progress("switched; the watch is behind".into()));
            }
            if let Some(d) = self.deployment(&name) {
                if replicas(&d) > 0 && Self::annotation(&*d, objects::WARM_UNTIL).is_none() {
                    scale(self.cluster, &name, 0)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            return Ok(Outcome::Progress(
                "the live Service selects a slot of another spec".into(),
            ));
        }
        self.ensure_deployment(slot, n).await?;
        let preview = self
            .owner
            .service(objects::preview_service_name(&base), slot);
        let previewing = self
            .service(&objects::preview_service_name(&base))
            .and_then(|s| {
                s.spec
                    .as_ref()?
                    .selector
                    .as_ref()?
                    .get(objects::SLOT)
                    .cloned()
            });
        if previewing.as_deref() != Some(slot) {
            self.apply(&preview).await.map_err(|e| e.to_string())?;
        }
        let name = objects::slot_name(&base, slot);
        let Some(d) = self.deployment(&name) else {
            return Ok(Outcome::Progress(format!("Deployment {name} written")));
        };
        if Self::annotation(&*d, objects::SPEC_HASH) != Some(hash.as_str()) {
            return Ok(Outcome::Progress(format!("Deployment {name} written")));
        }
        match rollout(&d, n) {
            Rollout::Stuck(why) => return Ok(Outcome::Failed(self.not_ready(slot, &why).await)),
            Rollout::Progressing(what) => {
                return Ok(Outcome::Progress(format!("{what} on the preview Service")))
            }
            Rollout::Complete => {}
        }
        // Every pod of the slot is the target's and Ready (the cache, not
        // only the Deployment's counters).
        let pods = self.cluster.pods.state_filter(|p| {
            let l = p.labels();
            objects::belongs(l, self.owner.env_id, &self.owner.config.app)
                && l.get(objects::SLOT).map(String::as_str) == Some(slot)
                && p.metadata.deletion_timestamp.is_none()
        });
        let ready = pods
            .iter()
            .filter(|p| pod_ready(p) && p.labels().get(objects::SPEC_HASH) == Some(hash))
            .count();
        if ready != n as usize || pods.len() != n as usize {
            return Ok(Outcome::Progress(format!(
                "{ready}/{n} new pods ready on the preview Service"
            )));
        }
        // The old slot's window first (so no pass sees it switched and
        // unmarked), then the switch: one update of the live Service's
        // selector; then the new slot is no longer in a window.
        let keep = self.owner.config.keep_ms as i64;
        let annotate = |value: serde_json::Value| {
            Patch::Merge(serde_json::json!({
                "metadata": { "annotations": { objects::WARM_UNTIL: value } }
            }))
        };
        let deployments = self.cluster.api::<KubeDeployment>();
        if let Some(l) = &live {
            let old = objects::slot_name(&base, l);
            deployments
                .patch(
                    &old,
                    &PatchParams::default(),
                    &annotate((self.now + keep).to_string().into()),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        self.apply(&self.owner.service(base.clone(), slot))
            .await
            .map_err(|e| e.to_string())?;
        deployments
            .patch(
                &name,
                &PatchParams::default(),
                &annotate(serde_json::Value::Null),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Outcome::Done(format!(
            "{n}/{n} pods serving; switched from {} to {slot}",
            live.as_deref().unwrap_or("nothing")
        )))
    }
}

pub(super) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
