//! The reconciler: one idempotent step per environment, run on every wake-up
//! (a new deployment, a node's report) and at least every [`TICK`].
//!
//! An environment's *target* is its progressing deployment, or else the last
//! one that succeeded (the steady state: a crashed node's instances are made
//! again, a failed rollout's previous digest is brought back). The target's
//! strategy says what to do next (`rolling.rs`, `blue_green.rs`); the
//! actions are applied in one transaction that also bumps the node's
//! revision.
//!
//! The state machine, with each wait's deadline and action:
//! - awaiting_approval → pending: enough approvals of its digest
//!   (`gates.rs`); waits the environment's approval lifetime, then expired.
//!   A rejection ends it (rejected).
//! - pending → progressing: when no other deployment of the environment is
//!   progressing (deploys to one environment are serialised).
//! - progressing, no node in the cluster: waits `deadline`; then failed.
//! - progressing, a new instance not ready: waits `deadline` from its
//!   creation; then failed, every instance of the new spec is stopped and
//!   the previous deployment is the target again.
//! - progressing → succeeded: the strategy reports done (rolling: N new
//!   ready and no old one left; blue/green: swapped, and the node reports
//!   its router serving the new set). The wait for that is the rollout's
//!   deadline; action: failed, and the warm old set is swapped back.
//! - any of the above → failed (and reverted as for a failure): someone
//!   asked to abort it (`request::abort`); one not started yet ends at once.
//! - instances told to stop: the node drains and stops them; a node that
//!   never reports them gone keeps them listed, never routed.
//! - kept warm (blue/green's old set): stopped when `warm_until` passes.
//!
//! A killed server resumes from these rows: nothing is held in memory.

use std::sync::Arc;
use std::time::Duration;

use sqlx::SqliteConnection;

use super::model::{short_digest, Config, Deployment, Instance, State};
use super::{blue_green, environments, events, rolling};
use crate::app::App;
use crate::db::now_ms;
use crate::pipeline::spec::Strategy;

/// The longest the reconciler sleeps between passes.
pub const TICK: Duration = Duration::from_millis(500);

pub(super) struct Ctx<'a> {
    pub now: i64,
    /// The target is in progress (not the steady state's last success).
    pub active: bool,
    pub target: &'a Deployment,
    pub config: Config,
    /// Every instance of the environment, stopping ones included.
    pub instances: Vec<Instance>,
}

impl Ctx<'_> {
    /// The readiness wait of a new instance of the deployment in progress
    /// has passed its deadline (never one that was ready once, nor another
    /// deployment's: those are not this rollout's to fail).
    pub fn times_out(&self, i: &Instance) -> bool {
        self.active
            && i.deployment_id == self.target.id
            && i.ready_at.is_none()
            && !i.ready()
            && self.now - i.created_at > self.config.deadline_ms as i64
    }

    /// The whole rollout's deadline: every instance's readiness wait one
    /// after another, and a drain.
    pub fn rollout_deadline(&self) -> i64 {
        let waits = self.config.replicas as i64 + 2;
        self.target.started_at.unwrap_or(self.now)
            + waits * self.config.deadline_ms as i64
            + super::model::STOP_DEADLINE.as_millis() as i64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// A new instance of the target, with this route (`none`, `preview`).
    Start(&'static str),
    Route(i64, &'static str),
    /// Out of the table, then drained and stopped by the node.
    Stop(i64),
    /// Blue/green's switch: `live` take all traffic, `warm` leave the table
    /// and are kept running for the rollback window.
    Swap {
        live: Vec<i64>,
        warm: Vec<i64>,
    },
    /// Blue/green: the whole new set is on the preview address (from now).
    Previewed,
}

pub(crate) enum Outcome {
    Progress(String),
    Done(String),
    Failed(String),
}

/// Why instance `k` of `n` is not ready, in words a person can act on.
pub(super) fn not_ready_reason(ctx: &Ctx<'_>, i: &Instance, k: usize, n: usize) -> String {
    let waited =
        humantime::format_duration(Duration::from_secs((ctx.config.deadline_ms / 1000).max(1)));
    let what = match (i.observed.as_str(), i.health.as_deref()) {
        ("pending", _) => "the node never started it".to_owned(),
        ("crashed", Some(h)) => format!("it keeps exiting ({h})"),
        ("crashed", None) => "it keeps exiting".to_owned(),
        ("failed", Some(h)) => format!("it could not start: {h}"),
        (_, Some(h)) => h.to_owned(),
        (state, None) => format!("still {state}"),
    };
    let restarts = if i.restarts > 0 {
        format!(" ({} restarts)", i.restarts)
    } else {
        String::new()
    };
    let tail = i
        .log_tail
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let lines: Vec<&str> = t.lines().rev().take(5).collect();
            let lines: Vec<&str> = lines.into_iter().rev().collect();
            format!("; last log lines: {}", lines.join(" | "))
        })
        .unwrap_or_default();
    format!(
        "instance {k}/{n} of {}@{}: not ready after {waited}: {what}{restarts}{tail}",
        ctx.target.repository,
        short_digest(&ctx.target.digest)
    )
}

/// Run the reconciler until the server stops.
pub fn spawn(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = super::trigger::drain(&app).await {
                tracing::warn!(error = %e, "deploy trigger failed");
            }
            if let Err(e) = pass(&app).await {
                tracing::warn!(error = %e, "deploy reconcile failed");
            }
            let _ = tokio::time::timeout(TICK, app.deploys.wake.notified()).await;
        }
    })
}

/// One pass over every environment that has something to do.
pub async fn pass(app: &App) -> Result<(), sqlx::Error> {
    // Requests awaiting approval: approved enough, or expired.
    super::gates::expire_and_settle(&app.db).await?;
    // Soaks, verify jobs, and the auto-promotions they lead to.
    super::verify::advance(app).await?;
    let envs: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT environment_id FROM deployments WHERE state IN ('pending', 'progressing')
         UNION SELECT DISTINCT environment_id FROM instances
         UNION SELECT d.environment_id FROM deployments d JOIN environments e ON e.id = d.environment_id
             JOIN clusters c ON c.id = e.cluster_id WHERE c.kind = 'kubernetes'",
    )
    .fetch_all(&app.db)
    .await?;
    for env in envs {
        if let Err(e) = environment(app, env).await {
            tracing::warn!(environment = env, error = %e, "reconciling an environment failed");
        }
    }
    Ok(())
}

async fn deployment(
    conn: &mut SqliteConnection,
    sql: &str,
    env: i64,
) -> Result<Option<Deployment>, sqlx::Error> {
    sqlx::query_as::<_, Deployment>(sql)
        .bind(env)
        .fetch_optional(conn)
        .await
}

/// One step for one environment.
pub async fn environment(app: &App, env_id: i64) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut changed = false;
    let mut tx = app.db.begin_with("BEGIN IMMEDIATE").await?;
    // Serialise: the oldest pending one starts when none is progressing.
    let mut active = deployment(
        &mut tx,
        "SELECT * FROM deployments WHERE environment_id = ? AND state = 'progressing' ORDER BY id LIMIT 1",
        env_id,
    )
    .await?;
    if active.is_none() {
        if let Some(next) = deployment(
            &mut tx,
            "SELECT * FROM deployments WHERE environment_id = ? AND state = 'pending' ORDER BY id LIMIT 1",
            env_id,
        )
        .await?
        {
            let missing = missing_secrets(&mut tx, env_id, &next.config().secrets).await?;
            let held = super::gates::hold(&mut tx, &next, now).await?;
            if let Some(why) = held {
                // Not started: the gates hold it (a freeze until it ends,
                // or back to awaiting approval).
                if progress(&mut tx, next.id, &why).await? {
                    events::record(&mut tx, next.id, "held", &why).await?;
                }
            } else if missing.is_empty() {
                sqlx::query(
                    "UPDATE deployments SET state = 'progressing', started_at = ?, progress = 'starting' WHERE id = ?",
                )
                .bind(now)
                .bind(next.id)
                .execute(&mut *tx)
                .await?;
                let c = next.config();
                let what = format!("started: {} to {} instances", c.strategy, c.replicas);
                events::record(&mut tx, next.id, "progressing", &what).await?;
                active =
                    deployment(&mut tx, "SELECT * FROM deployments WHERE id = ?", next.id).await?;
            } else {
                // Never start an instance without a secret its spec names:
                // the deployment fails before anything runs.
                let env_name: String =
                    sqlx::query_scalar("SELECT name FROM environments WHERE id = ?")
                        .bind(env_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let reason = format!(
                    "the deploy section names secret{} {} for environment {env_name:?}, which {} not set there: \
                     set {} with `slipway env secret set REPO {env_name} NAME`, then deploy again",
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(", "),
                    if missing.len() > 1 { "are" } else { "is" },
                    if missing.len() > 1 { "them" } else { "it" },
                );
                finish(&mut tx, next.id, State::Failed, &reason, now).await?;
            }
        }
    }
    let target = match &active {
        Some(d) => Some(d.clone()),
        None => {
            deployment(
                &mut tx,
                &format!(
            "SELECT * FROM deployments WHERE environment_id = ? AND {} ORDER BY id DESC LIMIT 1",
            super::model::RUNNING
        ),
                env_id,
            )
            .await?
        }
    };
    // Kind kubernetes: its own driver, outside this transaction.
    if let Some(cluster) = super::kube::rollout::bound(&mut tx, env_id).await? {
        tx.commit().await?;
        return super::kube::rollout::environment(app, env_id, cluster, active, target).await;
    }
    let instances: Vec<Instance> =
        sqlx::query_as("SELECT * FROM instances WHERE environment_id = ? ORDER BY id")
            .bind(env_id)
            .fetch_all(&mut *tx)
            .await?;
    // Gone and no longer wanted: forget them.
    let gone: Vec<i64> = instances
        .iter()
        .filter(|i| !i.running() && !i.alive(now))
        .map(|i| i.id)
        .collect();
    for id in &gone {
        sqlx::query("DELETE FROM instances WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    // Their shipped output goes with them (a failure's reason keeps its last
    // lines), after the commit.
    let gone_names: Vec<String> = instances
        .iter()
        .filter(|i| gone.contains(&i.id))
        .map(|i| i.name.clone())
        .collect();
    let _forget_logs = ForgetLogs(app, gone_names);
    let instances: Vec<Instance> = instances
        .into_iter()
        .filter(|i| !gone.contains(&i.id))
        .collect();

    let Some(target) = target else {
        // Nothing ever succeeded and nothing is in progress: stop leftovers.
        let stop: Vec<Action> = instances
            .iter()
            .filter(|i| i.running())
            .map(|i| Action::Stop(i.id))
            .collect();
        changed |= apply(&mut tx, env_id, None, &stop, now).await?;
        tx.commit().await?;
        if changed {
            app.deploys.nodes_changed();
        }
        return Ok(());
    };
    let config = target.config();
    let Some(node_id) = environments::place(&mut tx, env_id).await? else {
        if active.is_some() && now - target.started_at.unwrap_or(now) > config.deadline_ms as i64 {
            finish(
                &mut tx,
                target.id,
                State::Failed,
                "no node of the environment's cluster has joined; start `slipway node` with a join token from `slipway cluster add`",
                now,
            )
            .await?;
        } else if active.is_some() {
            progress(
                &mut tx,
                target.id,
                "waiting for a node of the cluster to join",
            )
            .await?;
        }
        tx.commit().await?;
        return Ok(());
    };
    let ctx = Ctx {
        now,
        active: active.is_some(),
        target: &target,
        config: config.clone(),
        instances: instances.clone(),
    };
    let (mut actions, mut outcome) = match config.strategy() {
        Strategy::Rolling => rolling::step(&ctx),
        Strategy::BlueGreen => blue_green::step(&ctx),
    };
    // Wait: the rollout as a whole; action: fail and revert.
    if let (true, Outcome::Progress(what)) = (ctx.active, &outcome) {
        if now > ctx.rollout_deadline() {
            let took = humantime::format_duration(Duration::from_secs(
                ((now - target.started_at.unwrap_or(now)) / 1000) as u64,
            ));
            outcome = Outcome::Failed(format!(
                "the rollout did not finish within {took} (its deadline for {} instances): {what}",
                config.replicas
            ));
        }
    }
    // Wait: none; action: someone asked to abort it: fail and revert.
    if let (true, Some(why)) = (ctx.active, target.abort_requested.as_deref()) {
        outcome = Outcome::Failed(why.to_owned());
    }
    // Whatever the strategy: instances of another spec that are neither
    // serving nor kept warm go; warm ones go when their window ends.
    let mentioned = |id: i64, actions: &[Action]| {
        actions.iter().any(|a| match a {
            Action::Stop(s) | Action::Route(s, _) => *s == id,
            Action::Swap { live, warm } => live.contains(&id) || warm.contains(&id),
            Action::Start(_) | Action::Previewed => false,
        })
    };
    for i in instances.iter().filter(|i| i.running()) {
        let other = i.spec_hash != target.spec_hash;
        let idle = i.routed != "live";
        let warm = i.warm_until.is_some_and(|t| t > now);
        let expired = i.warm_until.is_some_and(|t| t <= now);
        if ((other && idle && !warm) || expired) && !mentioned(i.id, &actions) {
            actions.push(Action::Stop(i.id));
        }
    }
    match (&active, outcome) {
        (Some(d), Outcome::Failed(reason)) => {
            // The new spec's instances go; the previous deployment becomes
            // the target again on the next pass and is brought back if needed.
            // Only what this deployment started: instances of the same spec
            // that served before it keep serving.
            let stop: Vec<Action> = instances
                .iter()
                .filter(|i| i.running() && i.deployment_id == d.id)
                .map(|i| Action::Stop(i.id))
                .collect();
            changed |= apply(
                &mut tx,
                env_id,
                Some((&target, &config, node_id)),
                &stop,
                now,
            )
            .await?;
            finish(&mut tx, d.id, State::Failed, &reason, now).await?;
            tracing::warn!(deployment = d.id, %reason, "deployment failed; reverting");
            app.deploys.wake();
        }
        (Some(d), Outcome::Done(what)) => {
            changed |= apply(
                &mut tx,
                env_id,
                Some((&target, &config, node_id)),
                &actions,
                now,
            )
            .await?;
            finish(&mut tx, d.id, State::Succeeded, &what, now).await?;
            super::verify::rolled_out(&mut tx, d, now).await?;
            tracing::info!(deployment = d.id, %what, "deployment succeeded");
        }
        (Some(d), Outcome::Progress(what)) => {
            changed |= apply(
                &mut tx,
                env_id,
                Some((&target, &config, node_id)),
                &actions,
                now,
            )
            .await?;
            progress(&mut tx, d.id, &what).await?;
        }
        (None, _) => {
            // Steady state: keep the last good deployment whole.
            changed |= apply(
                &mut tx,
                env_id,
                Some((&target, &config, node_id)),
                &actions,
                now,
            )
            .await?;
        }
    }
    tx.commit().await?;
    if changed {
        app.deploys.nodes_changed();
    }
    Ok(())
}

/// Removes instances' shipped logs when dropped (after the transaction).
struct ForgetLogs<'a>(&'a App, Vec<String>);

impl Drop for ForgetLogs<'_> {
    fn drop(&mut self) {
        for name in &self.1 {
            self.0.instance_logs.remove(name);
        }
    }
}

/// The names in `names` that environment `env_id` has no secret for.
async fn missing_secrets(
    conn: &mut SqliteConnection,
    env_id: i64,
    names: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    let set: Vec<String> =
        sqlx::query_scalar("SELECT name FROM environment_secrets WHERE environment_id = ?")
            .bind(env_id)
            .fetch_all(conn)
            .await?;
    Ok(names.iter().filter(|n| !set.contains(n)).cloned().collect())
}

/// Set a deployment's progress; true if it changed.
pub(crate) async fn progress(
    conn: &mut SqliteConnection,
    id: i64,
    what: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE deployments SET progress = ? WHERE id = ? AND (progress IS NOT ? )")
            .bind(what)
            .bind(id)
            .bind(what)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() > 0)
}

pub(crate) async fn finish(
    conn: &mut SqliteConnection,
    id: i64,
    state: State,
    reason: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deployments SET state = ?, reason = ?, progress = NULL, finished_at = ? WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(reason)
    .bind(now)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    events::record(conn, id, state.as_str(), reason).await?;
    Ok(())
}

/// Apply actions in the caller's transaction and bump the node's revision
/// when anything changed for it (the caller wakes the long-polls after its
/// commit).
async fn apply(
    conn: &mut SqliteConnection,
    env_id: i64,
    target: Option<(&Deployment, &Config, i64)>,
    actions: &[Action],
    now: i64,
) -> Result<bool, sqlx::Error> {
    if actions.is_empty() {
        return Ok(false);
    }
    let mut changed = false;
    for action in actions {
        let done = match action {
            Action::Start(routed) => {
                let Some((d, _, node)) = target else { continue };
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO instances (name, environment_id, deployment_id, node_id, spec_hash,
                         goal, routed, created_at, updated_at)
                     VALUES ('', ?, ?, ?, ?, 'run', ?, ?, ?) RETURNING id",
                )
                .bind(env_id)
                .bind(d.id)
                .bind(node)
                .bind(&d.spec_hash)
                .bind(routed)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
                let env_name: String =
                    sqlx::query_scalar("SELECT app || '-' || name FROM environments WHERE id = ?")
                        .bind(env_id)
                        .fetch_one(&mut *conn)
                        .await?;
                // A node's instance id: at most 63 of [a-z0-9-], unique by the row id.
                let mut name = format!("i{id}-{env_name}");
                name.truncate(63);
                let name = name.trim_end_matches('-').to_owned();
                sqlx::query("UPDATE instances SET name = ? WHERE id = ?")
                    .bind(&name)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                let what = format!("started (route: {routed})");
                events::record_instance(conn, d.id, "instance_started", &name, &what).await?;
                1
            }
            Action::Route(id, routed) => sqlx::query(
                "UPDATE instances SET routed = ?, updated_at = ? WHERE id = ? AND routed != ?",
            )
            .bind(routed)
            .bind(now)
            .bind(id)
            .bind(routed)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Action::Stop(id) => sqlx::query(
                "UPDATE instances SET goal = 'stop', routed = 'none', warm_until = NULL, updated_at = ?
                 WHERE id = ? AND goal = 'run'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *conn)
            .await?
            .rows_affected(),
            Action::Previewed => {
                let Some((d, _, _)) = target else { continue };
                let first = sqlx::query(
                    "UPDATE deployments SET preview_since = ? WHERE id = ? AND preview_since IS NULL",
                )
                .bind(now)
                .bind(d.id)
                .execute(&mut *conn)
                .await?;
                if first.rows_affected() > 0 {
                    let what = "the whole new set serves on the preview address";
                    events::record(conn, d.id, "previewed", what).await?;
                }
                // Not a change for the node.
                0
            }
            Action::Swap { live, warm } => {
                let keep = target.map(|(_, c, _)| c.keep_ms as i64).unwrap_or(0);
                let mut n = 0;
                for id in live {
                    n += sqlx::query(
                        "UPDATE instances SET routed = 'live', warm_until = NULL, updated_at = ? WHERE id = ?",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                for id in warm {
                    n += sqlx::query(
                        "UPDATE instances SET routed = 'none', warm_until = ?, updated_at = ? WHERE id = ?",
                    )
                    .bind(now + keep)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                }
                n
            }
        };
        if done > 0 {
            record(conn, target.map(|(d, _, _)| d.id), action, now).await?;
        }
        changed |= done > 0;
    }
    if changed {
        sqlx::query(
            "UPDATE nodes SET revision = revision + 1
             WHERE id IN (SELECT node_id FROM instances WHERE environment_id = ?
                          UNION SELECT node_id FROM environments WHERE id = ?)",
        )
        .bind(env_id)
        .bind(env_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(changed)
}

/// The timeline's event for an applied action (a start records its own):
/// on the target's timeline, or, with none, the instance's deployment's.
async fn record(
    conn: &mut SqliteConnection,
    target: Option<i64>,
    action: &Action,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (id, kind, what) = match action {
        Action::Start(_) | Action::Previewed => return Ok(()),
        Action::Route(id, "live") => (*id, "routed", "takes traffic".to_owned()),
        Action::Route(id, route) => (*id, "routed", format!("routed: {route}")),
        Action::Stop(id) => (
            *id,
            "drain",
            "out of the route table: the node drains it, then stops it".to_owned(),
        ),
        Action::Swap { live, warm } => {
            let Some(d) = target else { return Ok(()) };
            let until: Option<i64> = match warm.first() {
                Some(w) => {
                    sqlx::query_scalar("SELECT warm_until FROM instances WHERE id = ?")
                        .bind(w)
                        .fetch_one(&mut *conn)
                        .await?
                }
                None => None,
            };
            let kept = until.map_or(String::new(), |u| {
                let left = Duration::from_secs(((u - now).max(0) / 1000) as u64);
                format!(", kept warm for {}", humantime::format_duration(left))
            });
            let what = format!(
                "swap: the route table now sends all traffic to {} new instances; {} old out of it{kept}",
                live.len(),
                warm.len()
            );
            return events::record(conn, d, "swapped", &what).await;
        }
    };
    let (name, owner): (String, i64) =
        sqlx::query_as("SELECT name, deployment_id FROM instances WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    events::record_instance(conn, target.unwrap_or(owner), kind, &name, &what).await
}
