//! The control plane of `scripts/kube-env.sh` behaves for real, as the
//! service account the kubernetes cluster kind runs as (the README's Role):
//! a Deployment's pods are scheduled onto kwok's fake nodes by the real
//! scheduler, created by the real ReplicaSet controller and become Running
//! and Ready; a version marked never-ready runs un-Ready while later pods
//! become Ready, until the real deployment controller reports
//! `ProgressDeadlineExceeded`; and the account is refused what its Role does
//! not grant.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::kube_env::{within, Account, KubeEnv};
use futures_util::TryStreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{wait::await_condition, watcher};
use kube::{Api, ResourceExt};
use rand::Rng;

const DEADLINE: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::thread_rng().gen::<u32>())
}

/// A Deployment of `replicas` pods of `image`, labelled `app: NAME`, with
/// `annotations` on its pod template.
fn deployment(name: &str, replicas: i32, image: &str, annotations: &[(&str, &str)]) -> Deployment {
    let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(replicas),
            progress_deadline_seconds: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(
                        annotations
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    ),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".to_string(),
                        image: Some(image.to_string()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn condition(pod: &Pod, kind: &str) -> Option<(String, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn phase(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.phase.clone()
}

fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready").is_some_and(|(status, _)| status == "True")
}

fn describe(pods: &[Arc<Pod>]) -> String {
    let lines: Vec<String> = pods
        .iter()
        .map(|p| {
            format!(
                "{} on {:?}: phase {:?}, Ready {:?}",
                p.name_any(),
                p.spec.as_ref().and_then(|s| s.node_name.clone()),
                phase(p),
                condition(p, "Ready")
            )
        })
        .collect();
    format!("pods: [{}]", lines.join("; "))
}

/// The pods labelled `app: NAME`, kept by a watch (kube-runtime's reflector),
/// with a counter bumped on every event the watch brings.
struct PodWatch {
    store: Store<Pod>,
    events: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    fn start(pods: Api<Pod>, app: &str) -> PodWatch {
        let (store, writer) = reflector::store();
        let (bump, events) = tokio::sync::watch::channel(0u64);
        let stream = reflector::reflector(
            writer,
            watcher(
                pods,
                watcher::Config::default().labels(&format!("app={app}")),
            ),
        );
        // Every event bumps, the initial listing's end too: the reflector
        // fills its store only then, so a pod already there when the watch
        // started is seen.
        let task = tokio::spawn(async move {
            stream
                .try_for_each(|_| {
                    bump.send_modify(|n| *n += 1);
                    async { Ok(()) }
                })
                .await
                .expect("the pods' watch failed");
        });
        PodWatch {
            store,
            events,
            task,
        }
    }

    fn pods(&self) -> Vec<Arc<Pod>> {
        self.store.state()
    }

    /// Waits until `done` holds for the pods, re-checking on every event.
    /// Deadline: [`DEADLINE`]; action: the test fails listing the pods.
    async fn until(&mut self, what: &str, done: impl Fn(&[Arc<Pod>]) -> bool) {
        let store = self.store.clone();
        let events = &mut self.events;
        let check = async {
            loop {
                events.borrow_and_update();
                if done(&store.state()) {
                    return;
                }
                events.changed().await.expect("the pods' watch ended");
            }
        };
        within(what, DEADLINE, check, || describe(&self.store.state())).await
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_become_running_and_ready_on_kwok_nodes() {
    let env = KubeEnv::get();
    let client = env.client(Account::Slipway).await;
    let name = unique("ready");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &env.namespace);
    let pods: Api<Pod> = Api::namespaced(client, &env.namespace);
    let mut watch = PodWatch::start(pods, &name);

    deployments
        .create(
            &PostParams::default(),
            &deployment(&name, 2, "registry.test/app@sha256:1111", &[]),
        )
        .await
        .expect("the service account creates a Deployment");

    watch
        .until("2 pods Running and Ready", |pods| {
            pods.len() == 2
                && pods
                    .iter()
                    .all(|p| phase(p).as_deref() == Some("Running") && is_ready(p))
        })
        .await;
    for pod in watch.pods() {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_deref().is_some_and(|n| n.starts_with("kwok-node-")),
            "{} was scheduled onto {node:?}, not a kwok node",
            pod.name_any()
        );
    }
    // The deployment controller sees them too.
    within(
        "the Deployment reports 2 ready replicas",
        DEADLINE,
        await_condition(deployments.clone(), &name, |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                == Some(2)
        }),
        || String::new(),
    )
    .await
    .expect("the Deployment's watch failed");

    drop(watch);
    deployments
        .delete(&name, &DeleteParams::default())
        .await
        .expect("the service account deletes its Deployment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_pods_stay_unready_until_the_progress_deadline() {
    let env = KubeEnv::get();
    let client = env.client(Account::Slipway).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &env.namespace);
    let pods: Api<Pod> = Api::namespaced(client, &env.namespace);

    // Both markers: the annotation, and an image whose name says so.
    let by_annotation = unique("bad-annotation");
    let by_image = unique("bad-image");
    let mut annotated = PodWatch::start(pods.clone(), &by_annotation);
    let mut imaged = PodWatch::start(pods.clone(), &by_image);
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                &by_annotation,
                1,
                "registry.test/app@sha256:2222",
                &[("slipway.test/never-ready", "true")],
            ),
        )
        .await
        .unwrap();
    deployments
        .create(
            &PostParams::default(),
            &deployment(&by_image, 1, "registry.test/never-ready@sha256:3333", &[]),
        )
        .await
        .unwrap();
    for (watch, what) in [
        (&mut annotated, "annotated"),
        (&mut imaged, "never-ready image"),
    ] {
        watch
            .until(&format!("the {what} pod runs"), |pods| {
                pods.len() == 1 && phase(&pods[0]).as_deref() == Some("Running")
            })
            .await;
        let pod = &watch.pods()[0];
        assert_eq!(
            condition(pod, "Ready"),
            Some(("False".to_string(), Some("ContainersNotReady".to_string()))),
            "{}",
            describe(&watch.pods())
        );
    }

    // A good version started after them becomes Ready while they do not.
    let good = unique("good");
    let mut good_pods = PodWatch::start(pods, &good);
    deployments
        .create(
            &PostParams::default(),
            &deployment(&good, 1, "registry.test/app@sha256:4444", &[]),
        )
        .await
        .unwrap();
    good_pods
        .until("the later good pod is Ready", |pods| {
            pods.len() == 1 && is_ready(&pods[0])
        })
        .await;

    // The deployment controller gives up on them after progressDeadlineSeconds
    // (3 s), and by then they have still not become Ready.
    for name in [&by_annotation, &by_image] {
        within(
            "ProgressDeadlineExceeded",
            DEADLINE,
            await_condition(deployments.clone(), name, |d: Option<&Deployment>| {
                d.and_then(|d| d.status.as_ref())
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_.as_deref() == Some("Progressing")
                                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                        })
                    })
            }),
            || format!("deployment {name}"),
        )
        .await
        .unwrap();
    }
    for watch in [&annotated, &imaged] {
        assert!(
            watch.pods().iter().all(|p| !is_ready(p)),
            "{}",
            describe(&watch.pods())
        );
    }
    let status = deployments.get(&by_image).await.unwrap().status.unwrap();
    assert_eq!(status.ready_replicas.unwrap_or(0), 0, "{status:?}");

    drop((annotated, imaged, good_pods));
    for name in [&by_annotation, &by_image, &good] {
        deployments
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// The HTTP status of a refused call, or a failure saying it was allowed.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("{what}: expected a refusal from the API server, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_are_refused_outside_their_role() {
    let env = KubeEnv::get();
    let slipway = env.client(Account::Slipway).await;
    let limited = env.client(Account::Limited).await;
    let lp = ListParams::default();

    // Inside the Role: its namespace's Secrets and Deployments.
    Api::<Secret>::namespaced(slipway.clone(), &env.namespace)
        .list(&lp)
        .await
        .expect("the Role grants listing Secrets in its namespace");
    Api::<Deployment>::namespaced(limited.clone(), &env.namespace)
        .list(&lp)
        .await
        .expect("the limited Role grants listing Deployments");

    // Outside it: cluster-scoped nodes, another namespace, and for the
    // limited account, Secrets.
    assert_eq!(
        refused(
            "list nodes",
            Api::<Node>::all(slipway.clone()).list(&lp).await
        ),
        403
    );
    assert_eq!(
        refused(
            "list Secrets in kube-system",
            Api::<Secret>::namespaced(slipway.clone(), "kube-system")
                .list(&lp)
                .await
        ),
        403
    );
    assert_eq!(
        refused(
            "list Pods in default",
            Api::<Pod>::namespaced(slipway, "default").list(&lp).await
        ),
        403
    );
    assert_eq!(
        refused(
            "the limited account lists Secrets",
            Api::<Secret>::namespaced(limited, &env.namespace)
                .list(&lp)
                .await
        ),
        403
    );

    // The admin kubeconfig reaches nodes: the refusals above are the Role's,
    // not a broken control plane.
    let admin = env.client(Account::Admin).await;
    let nodes = Api::<Node>::all(admin).list(&lp).await.unwrap();
    assert!(
        nodes
            .items
            .iter()
            .filter(|n| n.name_any().starts_with("kwok-node-"))
            .count()
            >= 2,
        "{:?}",
        nodes.items.iter().map(|n| n.name_any()).collect::<Vec<_>>()
    );
}
