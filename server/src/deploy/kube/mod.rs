//! Kind `kubernetes`: the deploy controller drives a Kubernetes API in one
//! namespace with kube-rs, reached with a kubeconfig that an admin gives
//! with `slipway cluster add NAME --kind kubernetes --kubeconfig FILE`.
//!
//! - `kubeconfig.rs`: the untrusted kubeconfig: self-contained or refused,
//!   and a client made from it (its text never reaches a log or a response).
//! - `access.rs`: the namespaced Role Slipway needs (the README shows it) and
//!   the check, one SelfSubjectAccessReview per verb and resource, that the
//!   kubeconfig's account has all of it.
//! - `cluster_add.rs`: adding (or re-keying) such a cluster: connect, check,
//!   seal the kubeconfig like secrets, store it.
//! - `clusters.rs`: one connection per cluster from its sealed kubeconfig,
//!   with watches (reflectors) on the objects Slipway manages, found by label.
//! - `objects.rs`: those objects (Deployments, Services, the configuration
//!   and image pull Secrets), labelled with app, environment and deployment.
//! - `rollout.rs`: rolling and blue/green on them, one idempotent step per
//!   environment called by the reconciler; deadlines that act.
//! - `status.rs`: the pods, shown as a local cluster's instances.

pub mod access;
pub mod cluster_add;
pub mod clusters;
pub mod kubeconfig;
pub mod objects;
pub mod rollout;
pub mod status;

/// Why a kubernetes cluster was not added. No variant carries the
/// kubeconfig's text or a credential from it.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig itself is refused: the message says what and where.
    #[error("{0}")]
    Kubeconfig(String),
    /// The API server could not be reached, or did not answer in time.
    #[error("the cluster's API server {server} {reason}")]
    Unreachable { server: String, reason: String },
    /// The account is refused some of the Role (names each missing permission).
    #[error(
        "the kubeconfig's account lacks {} in namespace {namespace:?}: {}; grant it the Role \
         in the README (Kubernetes clusters)",
        if .missing.len() == 1 { "a permission" } else { "permissions" },
        .missing.join(", ")
    )]
    MissingPermissions {
        namespace: String,
        missing: Vec<String>,
    },
    /// The name is taken by a cluster of another kind.
    #[error("cluster {name:?} exists with kind {kind:?}; a cluster's kind does not change")]
    OtherKind { name: String, kind: String },
    #[error(transparent)]
    Seal(#[from] crate::pipeline::secrets::SecretError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}
