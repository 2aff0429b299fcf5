//! Deploys: a digest a pipeline built goes live in an environment, then moves
//! along the promotion chain.
//!
//! The controller is a reconciler (see `reconcile.rs`): desired state in the
//! database (deployments, instances with a goal and a route), observed state
//! reported by nodes (`nodes.rs`), and one idempotent step per environment
//! that moves one notch and records why. One file per strategy
//! (`rolling.rs`, `blue_green.rs`).
//!
//! - `model.rs`: deployment states, the configuration snapshot, instance rows.
//! - `trigger.rs`: a successful default-branch pipeline deploys to the first
//!   environment (through `deploy_outbox`, so a restart loses none).
//! - `request.rs`: new deployments (pipeline, promote, rollback): one
//!   environment's deploys are serialised, a newer pending one supersedes
//!   older pending ones.
//! - `environments.rs`: a repository's environments from its spec, cluster
//!   binding, placement on a node and router ports, the status shown by
//!   `env list`.
//! - `nodes.rs`: join tokens, nodes, each node's desired state and revision,
//!   the status nodes report.
//! - `instance_logs.rs`: instances' output, shipped by nodes.
//! - `gates.rs`: release governance, server-side only: who may deploy,
//!   approvals bound to a digest, freeze windows (rollbacks skip them).
//! - `trace.rs`: from an environment or an instance back to the digest's
//!   provenance, the pipeline and its test results, and the environments it
//!   went through.
//! - `verify.rs`: soak and verify job after a deployment rolls out; only a
//!   verified digest is promoted, `auto: true` promotes it by itself.
//! - `notify.rs`: deployment states to the forge's deployments API and the
//!   outgoing webhook (from an outbox the database's triggers fill).
//! - `events.rs`: each deployment's timeline (states, instances, swap,
//!   drain, approvals), for the deployment page and `/deployments/{id}/events`.
//! - `audit.rs`: the append-only audit of every deploy, approval,
//!   rejection, override, rollback and protection change.
//! - `kube/`: clusters of kind `kubernetes` (kubeconfig, the Role and its
//!   check, adding one, the strategies on Deployments and Services).
//!
//! Architecture invariant: only the reconciler changes an instance's goal or
//! route (besides `nodes.rs` recording what a node observed), and every
//! change to what a node must do bumps that node's revision in the same
//! transaction, which wakes its long-poll.

pub mod audit;
pub mod environments;
pub mod events;
pub mod gates;
pub mod instance_logs;
pub mod kube;
pub mod model;
pub mod nodes;
pub mod notify;
pub mod reconcile;
pub mod request;
pub mod trace;
pub mod trigger;
pub mod verify;

mod blue_green;
mod rolling;

use std::sync::Arc;

use tokio::sync::{watch, Notify};

/// Wakes the reconciler and the nodes' long-polls.
#[derive(Clone)]
pub struct Deploys {
    /// Something changed that the reconciler should look at now.
    pub wake: Arc<Notify>,
    /// Bumped whenever any node's revision changed; long-polls re-check theirs.
    pub nodes_changed: watch::Sender<u64>,
    /// The kubernetes clusters connected so far, with their watches.
    pub kube: Arc<kube::clusters::Clusters>,
}

impl Default for Deploys {
    fn default() -> Self {
        Deploys {
            wake: Arc::new(Notify::new()),
            nodes_changed: watch::channel(0).0,
            kube: Default::default(),
        }
    }
}

impl Deploys {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn nodes_changed(&self) {
        self.nodes_changed.send_modify(|n| *n += 1);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    /// The caller may not (a role, a policy).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}
