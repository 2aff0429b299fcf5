//! The namespaced Role that Slipway needs on a kubernetes cluster (the
//! README shows it as YAML; `scripts/kube-env.sh` binds exactly it for the
//! tests), and the check that a kubeconfig's account has all of it: one
//! SelfSubjectAccessReview per verb and resource, which every authenticated
//! account may create.

use std::time::Duration;

use ::kube::api::{Api, PostParams};
use futures_util::future::try_join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};

use super::kubeconfig::Connection;
use super::KubeError;

/// One rule of the Role: these verbs on this resource of this API group.
pub struct Rule {
    /// `""` is the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

const READ: &[&str] = &["get", "list", "watch"];
const READ_WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];

/// What Slipway does in its namespace, and nothing more: it manages
/// Deployments (the strategies), Services (blue/green's selector switch) and
/// Secrets (configuration and image pull secrets), and reads ReplicaSets
/// (revisions), Pods (status, readiness, restarts) and Events (why a
/// deployment failed).
pub const ROLE: &[Rule] = &[
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: READ_WRITE,
    },
    Rule {
        group: "apps",
        resource: "replicasets",
        verbs: READ,
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: READ,
    },
    Rule {
        group: "",
        resource: "events",
        verbs: READ,
    },
    Rule {
        group: "",
        resource: "services",
        verbs: READ_WRITE,
    },
    Rule {
        group: "",
        resource: "secrets",
        verbs: READ_WRITE,
    },
];

/// The whole check's deadline; action: the cluster is refused as unreachable.
const CHECK_DEADLINE: Duration = Duration::from_secs(30);

/// `verb resource[.group]`, as `kubectl auth can-i` spells it.
fn permission(verb: &str, rule: &Rule) -> String {
    if rule.group.is_empty() {
        format!("{verb} {}", rule.resource)
    } else {
        format!("{verb} {}.{}", rule.resource, rule.group)
    }
}

/// Every permission of [`ROLE`] that the connection's account lacks in its
/// namespace, in the Role's order.
pub async fn missing_permissions(conn: &Connection) -> Result<Vec<String>, KubeError> {
    let reviews: &Api<SelfSubjectAccessReview> = &Api::all(conn.client.clone());
    let checks = ROLE.iter().flat_map(|rule| {
        rule.verbs.iter().map(move |verb| {
            let reviews = reviews.clone();
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        namespace: Some(conn.namespace.clone()),
                        group: Some(rule.group.to_owned()),
                        resource: Some(rule.resource.to_owned()),
                        verb: Some((*verb).to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            async move {
                let answer = reviews.create(&PostParams::default(), &review).await?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                Ok::<_, ::kube::Error>((!allowed).then(|| permission(verb, rule)))
            }
        })
    });
    let answers = match tokio::time::timeout(CHECK_DEADLINE, try_join_all(checks)).await {
        Err(_) => {
            return Err(KubeError::Unreachable {
                server: conn.server.clone(),
                reason: format!("did not answer the access checks within {CHECK_DEADLINE:?}"),
            })
        }
        Ok(Err(::kube::Error::Api(status))) if status.code == 401 => {
            return Err(KubeError::Kubeconfig(format!(
                "the API server {} does not accept the kubeconfig's credentials: {}",
                conn.server, status.message
            )))
        }
        Ok(Err(::kube::Error::Api(status))) if status.code == 403 => {
            return Err(KubeError::MissingPermissions {
                namespace: conn.namespace.clone(),
                missing: vec!["create selfsubjectaccessreviews.authorization.k8s.io".into()],
            })
        }
        Ok(Err(e)) => {
            return Err(KubeError::Unreachable {
                server: conn.server.clone(),
                reason: format!("could not be asked: {e}"),
            })
        }
        Ok(Ok(answers)) => answers,
    };
    Ok(answers.into_iter().flatten().collect())
}
