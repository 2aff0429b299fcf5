//! The Kubernetes objects of one environment, as Slipway writes them (with
//! server-side apply, field manager `slipway`, so writing one again is a
//! no-op). Every object carries the labels of [`Owner`] (app, environment,
//! deployment) and its annotations; pods carry the environment and the
//! deployment's spec hash instead of its id, so a rollback to the same spec
//! finds the same ReplicaSet.
//!
//! - the Deployment of a slot (`main` for rolling; `blue`/`green`), its
//!   pods' image by digest only, a readiness probe from `health`,
//!   `progressDeadlineSeconds` from `deadline`;
//! - the configuration Secret: `env` and the environment's secrets, immutable,
//!   named by a hash of its content, referenced by the pod template;
//! - the image pull Secret: a pull-only registry token for exactly the
//!   deployment's repository (renewed before it expires);
//! - blue/green's Services: the live one (its selector names a slot) and
//!   the preview one.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, LocalObjectReference, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};

use super::clusters::MANAGED_BY;
use crate::deploy::model::{Config, Deployment as SlipwayDeployment};

pub const APP: &str = "app.kubernetes.io/name";
pub const ENVIRONMENT: &str = "slipway.dev/environment";
pub const ENVIRONMENT_ID: &str = "slipway.dev/environment-id";
pub const DEPLOYMENT: &str = "slipway.dev/deployment";
pub const SPEC_HASH: &str = "slipway.dev/spec-hash";
pub const SLOT: &str = "slipway.dev/slot";
pub const DIGEST: &str = "slipway.dev/digest";
pub const REPOSITORY: &str = "slipway.dev/repository";
/// On a blue/green slot's Deployment out of the live Service: until when
/// (ms since the epoch) it stays scaled up for a rollback.
pub const WARM_UNTIL: &str = "slipway.dev/warm-until";
/// On the image pull Secret: when its token expires (ms since the epoch).
pub const EXPIRES_AT: &str = "slipway.dev/expires-at";
/// The container's name in every pod.
pub const CONTAINER: &str = "app";

/// Whose objects: an environment and the deployment that wrote them.
pub struct Owner<'a> {
    pub env_id: i64,
    pub env_name: &'a str,
    pub deployment: &'a SlipwayDeployment,
    pub config: &'a Config,
}

/// `[a-z0-9-]`, at most `max` characters, starting and ending alphanumeric.
fn dns_label(text: &str, max: usize) -> String {
    let mut s: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.truncate(max);
    s.trim_matches('-').to_owned()
}

/// A label value: `[A-Za-z0-9._-]`, at most 63, alphanumeric at both ends.
fn label_value(text: &str) -> String {
    let mut s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(63);
    s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

impl Owner<'_> {
    /// The environment's objects' common name: unique in the namespace by
    /// the environment's id, readable by its app and name.
    pub fn base(&self) -> String {
        base_name(self.env_id, &self.config.app, self.env_name)
    }

    /// The labels selecting the environment's pods (of one slot).
    pub fn selector(&self, slot: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (APP.to_owned(), label_value(&self.config.app)),
            (ENVIRONMENT_ID.to_owned(), self.env_id.to_string()),
            (SLOT.to_owned(), slot.to_owned()),
        ])
    }

    fn common_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (APP.to_owned(), label_value(&self.config.app)),
            (ENVIRONMENT.to_owned(), label_value(self.env_name)),
            (ENVIRONMENT_ID.to_owned(), self.env_id.to_string()),
        ])
    }

    /// The labels of the objects Slipway writes.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.common_labels();
        l.insert(DEPLOYMENT.to_owned(), self.deployment.id.to_string());
        l
    }

    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (DEPLOYMENT.to_owned(), self.deployment.id.to_string()),
            (SPEC_HASH.to_owned(), self.deployment.spec_hash.clone()),
            (DIGEST.to_owned(), self.deployment.digest.clone()),
            (REPOSITORY.to_owned(), self.deployment.repository.clone()),
        ])
    }

    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            labels: Some(self.labels()),
            annotations: Some(self.annotations()),
            ..Default::default()
        }
    }

    /// The configuration Secret: `env` then the environment's secrets
    /// (`values`), immutable, named by the hash of its content.
    pub fn config_secret(&self, values: &[(String, String)]) -> Secret {
        let mut hasher = Sha256::new();
        for (k, v) in values {
            hasher.update((k.len() as u64).to_le_bytes());
            hasher.update(k.as_bytes());
            hasher.update((v.len() as u64).to_le_bytes());
            hasher.update(v.as_bytes());
        }
        let hash = hex::encode(&hasher.finalize()[..6]);
        let data = values
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
            .collect();
        Secret {
            metadata: self.meta(format!("{}-cfg-{hash}", self.base())),
            immutable: Some(true),
            data: Some(data),
            type_: Some("Opaque".into()),
            ..Default::default()
        }
    }

    /// The image pull Secret for `registry` (host[:port]) with `token`.
    pub fn pull_secret(&self, registry: &str, token: &str, expires_at: i64) -> Secret {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("slipway:{token}"));
        let config = serde_json::json!({
            "auths": { registry: { "username": "slipway", "password": token, "auth": auth } }
        });
        let mut meta = self.meta(pull_secret_name(&self.base()));
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(EXPIRES_AT.to_owned(), expires_at.to_string());
        Secret {
            metadata: meta,
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_owned(),
                ByteString(config.to_string().into_bytes()),
            )])),
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Default::default()
        }
    }

    /// The Deployment of `slot` running `image` with `replicas`, its pods'
    /// environment read from the configuration Secret `config_secret`
    /// (which holds exactly `names`).
    pub fn deployment(
        &self,
        slot: &str,
        image: &str,
        replicas: i32,
        config_secret: &str,
        names: &[String],
    ) -> Deployment {
        let config = self.config;
        let mut pod_labels = self.common_labels();
        pod_labels.extend(self.selector(slot));
        pod_labels.insert(SPEC_HASH.to_owned(), self.deployment.spec_hash.clone());
        let env = names
            .iter()
            .map(|name| EnvVar {
                name: name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: config_secret.to_owned(),
                        key: name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let deadline_s = (config.deadline_ms / 1000).max(1) as i32;
        let container = Container {
            name: CONTAINER.into(),
            image: Some(image.to_owned()),
            image_pull_policy: Some("IfNotPresent".into()),
            ports: Some(vec![ContainerPort {
                container_port: config.port as i32,
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            env: Some(env),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(config.health.clone()),
                    port: IntOrString::Int(config.port as i32),
                    ..Default::default()
                }),
                period_seconds: Some(2),
                failure_threshold: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut meta = self.meta(slot_name(&self.base(), slot));
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(SLOT.to_owned(), slot.to_owned());
        Deployment {
            metadata: meta,
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(self.selector(slot)),
                    ..Default::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    }),
                }),
                progress_deadline_seconds: Some(deadline_s),
                revision_history_limit: Some(5),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(BTreeMap::from([
                            (DIGEST.to_owned(), self.deployment.digest.clone()),
                            (REPOSITORY.to_owned(), self.deployment.repository.clone()),
                        ])),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![container],
                        image_pull_secrets: Some(vec![LocalObjectReference {
                            name: pull_secret_name(&self.base()),
                        }]),
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A Service named `name` on the app's port, selecting `slot`'s pods.
    pub fn service(&self, name: String, slot: &str) -> Service {
        Service {
            metadata: self.meta(name),
            spec: Some(ServiceSpec {
                selector: Some(self.selector(slot)),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: self.config.port as i32,
                    target_port: Some(IntOrString::Int(self.config.port as i32)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Whether an object labelled `labels` is environment `env_id`'s, of `app`
/// (the app too: two servers may share a namespace).
pub fn belongs(labels: &BTreeMap<String, String>, env_id: i64, app: &str) -> bool {
    labels.get(ENVIRONMENT_ID) == Some(&env_id.to_string())
        && labels.get(APP) == Some(&label_value(app))
}

pub fn base_name(env_id: i64, app: &str, env_name: &str) -> String {
    dns_label(&format!("e{env_id}-{app}-{env_name}"), 40)
}

pub fn slot_name(base: &str, slot: &str) -> String {
    if slot == "main" {
        base.to_owned()
    } else {
        format!("{base}-{slot}")
    }
}

pub fn pull_secret_name(base: &str) -> String {
    format!("{base}-pull")
}

pub fn preview_service_name(base: &str) -> String {
    format!("{base}-preview")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels_whatever_the_app_is_called() {
        let base = base_name(12, "Web_App.v2", "prod");
        assert_eq!(base, "e12-web-app-v2-prod");
        let long = base_name(1, &"x".repeat(100), "prod");
        assert!(long.len() <= 40 && !long.ends_with('-'), "{long}");
        assert_eq!(label_value("-a b-"), "a-b");
    }
}
