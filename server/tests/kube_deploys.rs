//! Deploys to a cluster of kind `kubernetes`, on the real control plane of
//! `scripts/kube-env.sh` (kwok's fake nodes make pods Ready; a deploy whose
//! `env` names `SLIPWAY_TEST_NEVER_READY` runs pods that never are). The
//! server drives it as the service account bound to the README's Role; the
//! tests watch the namespace as admin and prove what the strategies promise:
//! - rolling: never more than N+1 pods, never fewer than N Ready, the new
//!   digest in every pod, and the objects labelled and shown by `env list`;
//! - the deadline acts: Slipway reverts to its own previous spec and says
//!   which pods were not ready and why;
//! - a rollback restores replicas and configuration (the hashed Secret);
//! - blue/green: the live Service's selector changes in one update once all
//!   new pods are Ready, the old set is kept for `keep` then scaled to 0,
//!   and a rollback inside the window changes only the selector;
//! - a server killed mid-rollout finds its objects by label and ends it;
//! - a blue/green set that never becomes Ready is never switched to, and goes;
//! - one spec deploys dev on a local node and, promoted, prod on Kubernetes;
//! - unreferenced configuration Secrets go; the pull Secret is renewed.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::deploy_peers::{
    api, deployment, deployments, join_local_node, run_pipeline_pushing, serve_until,
};
use common::kube_env::{Account, KubeEnv};
use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use reqwest::Method;
use serde_json::{json, Value};

/// How long a deploy may take here (kwok's pods are Ready in well under a
/// second; the server's reconciler and watches add little).
const WAIT: Duration = Duration::from_secs(90);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &random_hex(4))
}

/// A spec deploying `app` (image `app` too) to `prod`.
fn spec(app: &str, strategy: &str, replicas: u32, env: &[(&str, &str)], extra: &str) -> String {
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!(
        "jobs:\n  image:\n    steps:\n      - name: build\n        build:\n          image: {app}\n\
         deploy:\n  app: {app}\n  image: {app}\n  port: 8080\n  health: /healthz\n  replicas: {replicas}\n\
         \x20 env: {{ {} }}\n{extra}\
         \x20 environments:\n    prod: {{ strategy: {strategy} }}\n",
        env.join(", ")
    )
}

struct World {
    kube: KubeEnv,
    server: TestServer,
    runner: Auth,
    /// The repository, its image and its app have this name.
    app: String,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    admin: kube::Client,
}

impl World {
    /// A server with cluster `k8s` (the Role's kubeconfig) and a repository
    /// whose spec is `spec(app)`.
    fn new(prefix: &str, spec: impl Fn(&str) -> String) -> World {
        let kube = KubeEnv::get();
        let server = TestServer::start();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let admin = rt.block_on(kube.client(Account::Admin));
        let r = api(
            &server,
            &server.admin_auth(),
            Method::POST,
            "/api/v1/clusters",
            Some(json!({"name": "k8s", "kind": "kubernetes",
                        "kubeconfig": kube.kubeconfig_text(Account::Slipway),
                        "namespace": kube.namespace})),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.describe());
        let runner = Auth::Bearer(server.register_runner("r"));
        let app = unique(prefix);
        let dir = scratch_dir("kube-deploys");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let world = World {
            kube,
            server,
            runner,
            app,
            dir,
            rt,
            admin,
        };
        world.commit(&spec(&world.app));
        let r = api(
            &world.server,
            &world.server.admin_auth(),
            Method::POST,
            "/api/v1/repos",
            Some(json!({"name": world.app, "url": world.dir.path().to_str().unwrap()})),
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.describe());
        world
    }

    fn commit(&self, spec: &str) {
        std::fs::write(self.dir.path().join(".slipway.yml"), spec).unwrap();
        git(self.dir.path(), &["add", "."]);
        git(self.dir.path(), &["commit", "-q", "-m", "spec"]);
    }

    /// The first pipeline: it makes `prod` (on cluster `local`), which an
    /// admin then binds to `k8s`; its deployment goes there. Its id and
    /// digest, once it succeeded.
    fn first_deploy(&self) -> (i64, String) {
        let digest = run_pipeline_pushing(&self.server, &self.runner, &self.app);
        self.until("environment prod exists", || {
            let r = api(
                &self.server,
                &self.server.admin_auth(),
                Method::GET,
                &format!("/api/v1/environments?repo={}", self.app),
                None,
                &[],
            );
            r.status == 200 && r.json().as_array().is_some_and(|a| !a.is_empty())
        });
        let r = api(
            &self.server,
            &self.server.admin_auth(),
            Method::POST,
            "/api/v1/environments/cluster",
            Some(json!({"repo": self.app, "env": "prod", "cluster": "k8s"})),
            &[],
        );
        assert_eq!(r.status, 204, "{}", r.describe());
        let id = self.deployment_of(&digest);
        let d = self.ended(id);
        assert_eq!(d["state"], "succeeded", "{d}");
        (id, digest)
    }

    /// A pipeline at the head, and the id of the deployment of its digest.
    fn deploy(&self) -> (i64, String) {
        let digest = run_pipeline_pushing(&self.server, &self.runner, &self.app);
        (self.deployment_of(&digest), digest)
    }

    fn deployment_of(&self, digest: &str) -> i64 {
        let mut id = None;
        self.until(&format!("a deployment of {digest}"), || {
            id = deployments(&self.server, &self.app)
                .into_iter()
                .find(|d| d["digest"] == digest)
                .and_then(|d| d["id"].as_i64());
            id.is_some()
        });
        id.unwrap()
    }

    /// Deployment `id` once it ended. Deadline [`WAIT`]; action: fail with
    /// its last view.
    fn ended(&self, id: i64) -> Value {
        let mut last = Value::Null;
        self.until(&format!("deployment {id} ending"), || {
            last = deployment(&self.server, id);
            !matches!(last["state"].as_str(), Some("pending" | "progressing"))
        });
        last
    }

    /// Re-checks `done` (every 50 ms: these are API reads of the server,
    /// which has no watch to offer) until it holds. Deadline [`WAIT`];
    /// action: the test fails naming `what`.
    fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rollback(&self) -> i64 {
        let r = api(
            &self.server,
            &self.server.admin_auth(),
            Method::POST,
            "/api/v1/deployments/rollback",
            Some(json!({"repo": self.app, "env": "prod"})),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.describe());
        r.json()["deployment"]["id"].as_i64().unwrap()
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.kube.namespace)
    }

    fn get<K>(&self, name: &str) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.rt
            .block_on(self.api::<K>().get(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn pods(&self) -> Vec<Pod> {
        let list = self.rt.block_on(
            self.api::<Pod>().list(
                &kube::api::ListParams::default()
                    .labels(&format!("app.kubernetes.io/name={}", self.app)),
            ),
        );
        list.unwrap().items
    }

    /// The environment's objects' common name (objects.rs: e{id}-{app}-{env}).
    fn base(&self) -> String {
        let d = self
            .rt
            .block_on(
                self.api::<Deployment>().list(
                    &kube::api::ListParams::default()
                        .labels(&format!("app.kubernetes.io/name={}", self.app)),
                ),
            )
            .unwrap();
        let name = d.items[0].name_any();
        name.trim_end_matches("-blue")
            .trim_end_matches("-green")
            .to_owned()
    }

    /// Waits on the admin's watch of Deployment `name` until `cond`.
    fn await_deployment(&self, name: &str, what: &str, cond: impl Fn(&Deployment) -> bool) {
        let wait = kube::runtime::wait::await_condition(
            self.api::<Deployment>(),
            name,
            move |d: Option<&Deployment>| d.is_some_and(&cond),
        );
        self.rt
            .block_on(async { tokio::time::timeout(WAIT, wait).await })
            .unwrap_or_else(|_| panic!("{what}: not within {WAIT:?}"))
            .unwrap();
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn digest_of(d: &Deployment) -> String {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// What the admin's watch saw, event by event: the app's pods, and the
/// selector of each Service.
#[derive(Default)]
struct Seen {
    pods: BTreeMap<String, Pod>,
    /// Both watches have listed: counting starts.
    listed: u8,
    /// After each event once both listed: (pods not being deleted, of them
    /// Ready).
    counts: Vec<(usize, usize)>,
    /// Every pod name ever seen.
    names: Vec<String>,
    /// Every change of a Service's `slipway.dev/slot` selector: (service,
    /// new slot, how many pods of that slot were Ready then, when).
    switches: Vec<(String, String, usize, Instant)>,
    selectors: BTreeMap<String, String>,
}

impl Seen {
    fn alive(&self) -> impl Iterator<Item = &Pod> {
        self.pods
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
    }
}

/// Watches the app's pods and Services as admin from now on.
fn watch(world: &World) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let labels = format!("app.kubernetes.io/name={}", world.app);
    let pods = watcher(
        world.api::<Pod>(),
        watcher::Config::default().labels(&labels),
    )
    .map(|e| e.map(Either::Pod))
    .boxed();
    let services = watcher(
        world.api::<Service>(),
        watcher::Config::default().labels(&labels),
    )
    .map(|e| e.map(Either::Service))
    .boxed();
    let mut events = futures_util::stream::select(pods, services);
    let s = seen.clone();
    let (started, mut started_rx) = tokio::sync::watch::channel(0u8);
    let task = world.rt.spawn(async move {
        while let Some(event) = events.next().await {
            let event = event.expect("the admin's watch failed");
            let mut s = s.lock().unwrap();
            match event {
                Either::Pod(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    let name = p.name_any();
                    if !s.names.contains(&name) {
                        s.names.push(name.clone());
                    }
                    s.pods.insert(name, p);
                }
                Either::Pod(watcher::Event::Delete(p)) => {
                    s.pods.remove(&p.name_any());
                }
                Either::Pod(watcher::Event::InitDone)
                | Either::Service(watcher::Event::InitDone) => {
                    s.listed += 1;
                    started.send_modify(|n| *n += 1);
                }
                Either::Pod(watcher::Event::Init) | Either::Service(watcher::Event::Init) => {}
                Either::Service(watcher::Event::Apply(svc) | watcher::Event::InitApply(svc)) => {
                    let name = svc.name_any();
                    let slot = svc
                        .spec
                        .as_ref()
                        .and_then(|s| s.selector.as_ref())
                        .and_then(|s| s.get("slipway.dev/slot"))
                        .cloned()
                        .unwrap_or_default();
                    if s.selectors.get(&name) != Some(&slot) {
                        let ready_in_slot = s
                            .alive()
                            .filter(|p| p.labels().get("slipway.dev/slot") == Some(&slot))
                            .filter(|p| ready(p))
                            .count();
                        s.switches.push((
                            name.clone(),
                            slot.clone(),
                            ready_in_slot,
                            Instant::now(),
                        ));
                        s.selectors.insert(name, slot);
                    }
                }
                Either::Service(watcher::Event::Delete(svc)) => {
                    s.selectors.remove(&svc.name_any());
                }
            }
            if s.listed >= 2 {
                let alive = s.alive().count();
                let ready_now = s.alive().filter(|p| ready(p)).count();
                s.counts.push((alive, ready_now));
            }
        }
    });
    world
        .rt
        .block_on(async { tokio::time::timeout(WAIT, started_rx.wait_for(|n| *n >= 2)).await })
        .expect("the admin's watches did not list within the deadline")
        .unwrap();
    (seen, task)
}

// One event at a time passes through: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Either {
    Pod(watcher::Event<Pod>),
    Service(watcher::Event<Service>),
}

#[test]
fn rolling_keeps_n_ready_and_never_more_than_n_plus_one_pods() {
    let w = World::new("roll", |app| spec(app, "rolling", 3, &[("A", "1")], ""));
    let (first, d1) = w.first_deploy();
    let base = w.base();
    let (seen, task) = watch(&w);
    {
        let s = seen.lock().unwrap();
        assert_eq!(
            s.alive().filter(|p| ready(p)).count(),
            3,
            "v1 runs 3 Ready pods"
        );
    }
    let (second, d2) = w.deploy();
    let d = w.ended(second);
    assert_eq!(d["state"], "succeeded", "{d}");
    eprintln!(
        "rolling 3 replicas on kwok: {} ms from start to succeeded",
        d["finished_at"].as_i64().unwrap() - d["started_at"].as_i64().unwrap()
    );
    task.abort();

    let s = seen.lock().unwrap();
    let most = s.counts.iter().map(|c| c.0).max().unwrap();
    let fewest_ready = s.counts.iter().map(|c| c.1).min().unwrap();
    assert!(
        most <= 4,
        "at most N+1 = 4 pods at once, saw {most}: {:?}",
        s.counts
    );
    assert!(
        fewest_ready >= 3,
        "never fewer than N = 3 Ready, saw {fewest_ready}: {:?}",
        s.counts
    );
    assert!(
        s.names.len() >= 6,
        "the watch saw the rollout (3 old and 3 new pods): {:?}",
        s.names
    );
    drop(s);

    // The Deployment: the strategy's parameters, labels, annotations.
    let dep: Deployment = w.get(&base);
    let spec = dep.spec.clone();
    let ru = spec.strategy.clone().unwrap().rolling_update.unwrap();
    assert_eq!(
        (ru.max_surge, ru.max_unavailable),
        (
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        )
    );
    assert_eq!(
        spec.progress_deadline_seconds,
        Some(120),
        "the default deadline"
    );
    let probe = spec.template.spec.as_ref().unwrap().containers[0]
        .readiness_probe
        .clone()
        .unwrap();
    assert_eq!(probe.http_get.unwrap().path.as_deref(), Some("/healthz"));
    let labels = dep.labels();
    assert_eq!(labels["app.kubernetes.io/name"], w.app);
    assert_eq!(labels["slipway.dev/environment"], "prod");
    assert_eq!(labels["slipway.dev/deployment"], second.to_string());
    assert_eq!(dep.annotations()["slipway.dev/digest"], d2);
    assert_ne!(first, second);

    // Every pod runs the new digest, by digest only.
    let pods = w.pods();
    assert_eq!(pods.len(), 3, "{pods:?}");
    for p in &pods {
        assert!(ready(p));
        let img = image(p);
        assert!(
            img.ends_with(&format!("/{}@{d2}", w.app)),
            "pod {} runs {img}, not {d2}",
            p.name_any()
        );
        assert!(!img.contains(&d1));
    }

    // The pull Secret: a registry token limited to pulling this repository.
    let pull: Secret = w.get(&format!("{base}-pull"));
    assert_eq!(
        pull.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let config: Value =
        serde_json::from_slice(&pull.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    let auths = config["auths"].as_object().unwrap();
    let (_, auth) = auths.iter().next().unwrap();
    let token = auth["password"].as_str().unwrap().to_owned();
    let bearer = Auth::Bearer(token);
    let tags = request_as(
        w.server.url(),
        &bearer,
        Method::GET,
        &format!("/v2/{}/tags/list", w.app),
        &[],
        None,
    );
    assert_ne!(tags.status, 401, "{}", tags.describe());
    let other = request_as(
        w.server.url(),
        &bearer,
        Method::GET,
        "/v2/someone-else/tags/list",
        &[],
        None,
    );
    assert!(matches!(other.status, 401 | 403), "{}", other.describe());
    let push = request_as(
        w.server.url(),
        &bearer,
        Method::POST,
        &format!("/v2/{}/blobs/uploads/", w.app),
        &[],
        None,
    );
    assert!(matches!(push.status, 401 | 403), "{}", push.describe());

    // `env list`'s API: the pods, their readiness and restarts.
    let envs = api(
        &w.server,
        &w.server.admin_auth(),
        Method::GET,
        &format!("/api/v1/environments?repo={}", w.app),
        None,
        &[],
    )
    .json();
    let instances = envs[0]["instances"].as_array().unwrap();
    assert_eq!(envs[0]["cluster"], "k8s", "{envs}");
    let shown: Vec<&Value> = instances.iter().filter(|i| i["state"] == "ready").collect();
    assert_eq!(shown.len(), 3, "{envs}");
    for i in shown {
        assert_eq!(i["digest"], d2.as_str(), "{i}");
        assert_eq!(i["restarts"], 0, "{i}");
        assert!(i["name"].as_str().unwrap().starts_with(&base), "{i}");
    }
    // The kubeconfig's token is in no response and no log line.
    let sa_token = w
        .kube
        .kubeconfig_text(Account::Slipway)
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_owned))
        .unwrap();
    assert!(!envs.to_string().contains(&sa_token));
    assert!(!w.server.logs().contains(&sa_token));
}

#[test]
fn a_version_never_ready_is_reverted_when_its_deadline_passes() {
    let extra = "  deadline: 4s\n";
    let w = World::new("late", |app| spec(app, "rolling", 2, &[("A", "1")], extra));
    let (first, d1) = w.first_deploy();
    let base = w.base();
    w.commit(&spec(
        &w.app,
        "rolling",
        2,
        &[("A", "1"), ("SLIPWAY_TEST_NEVER_READY", "1")],
        extra,
    ));
    let (second, _) = w.deploy();
    let d = w.ended(second);
    assert_eq!(d["state"], "failed", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("ProgressDeadlineExceeded") || reason.contains("progressing"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("pod {base}-")),
        "names the pod: {reason}"
    );
    assert!(
        reason.contains("Ready=False ContainersNotReady"),
        "names its condition: {reason}"
    );
    assert!(
        reason.contains(&format!("reverted to deployment {first}")),
        "{reason}"
    );
    let took = d["finished_at"].as_i64().unwrap() - d["started_at"].as_i64().unwrap();
    assert!(took >= 4000, "failed after {took} ms, before its deadline");

    // Back on the old revision: its spec, all Ready, no pod of the bad one.
    w.await_deployment(&base, "the Deployment back on v1", |dep| {
        let s = dep.status.clone().unwrap_or_default();
        dep.annotations().get("slipway.dev/deployment") == Some(&first.to_string())
            && s.observed_generation >= dep.metadata.generation
            && s.updated_replicas == Some(2)
            && s.ready_replicas == Some(2)
            && s.replicas == Some(2)
    });
    let dep: Deployment = w.get(&base);
    assert!(digest_of(&dep).ends_with(&d1), "{}", digest_of(&dep));
    let env = dep.spec.template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    assert!(
        env.iter().all(|e| e.name != "SLIPWAY_TEST_NEVER_READY"),
        "{env:?}"
    );
}

#[test]
fn a_rollback_restores_replicas_and_configuration() {
    let w = World::new("conf", |app| spec(app, "rolling", 2, &[("A", "1")], ""));
    let (first, d1) = w.first_deploy();
    let base = w.base();
    w.commit(&spec(&w.app, "rolling", 3, &[("A", "2")], ""));
    let (second, _) = w.deploy();
    assert_eq!(w.ended(second)["state"], "succeeded");
    let config_of = |dep: &Deployment| -> (i32, String, Secret) {
        let spec = dep.spec.clone();
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let a = env.iter().find(|e| e.name == "A").expect("A is set");
        let secret = a
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap()
            .name
            .clone();
        let s: Secret = w.get(&secret);
        let value = String::from_utf8(s.data.as_ref().unwrap()["A"].0.clone()).unwrap();
        (spec.replicas.unwrap(), value, s)
    };
    let (replicas, a, secret_v2) = config_of(&w.get(&base));
    assert_eq!((replicas, a.as_str()), (3, "2"));
    assert_eq!(secret_v2.immutable, Some(true));

    let rollback = w.rollback();
    let d = w.ended(rollback);
    assert_eq!(d["state"], "succeeded", "{d}");
    let dep: Deployment = w.get(&base);
    let (replicas, a, secret) = config_of(&dep);
    assert_eq!((replicas, a.as_str()), (2, "1"), "v1's replicas and A");
    assert_ne!(secret.name_any(), secret_v2.name_any());
    assert!(secret.name_any().starts_with(&format!("{base}-cfg-")));
    assert_eq!(
        secret.labels()["slipway.dev/deployment"],
        first.to_string(),
        "v1's Secret, made by deployment {first}, is the one used again"
    );
    w.await_deployment(&base, "2 pods of v1 Ready", |dep| {
        let s = dep.status.clone().unwrap_or_default();
        s.observed_generation >= dep.metadata.generation
            && s.ready_replicas == Some(2)
            && s.replicas == Some(2)
            && s.updated_replicas == Some(2)
    });
    assert!(digest_of(&dep).ends_with(&d1));
}

#[test]
fn blue_green_switches_the_selector_once_and_rolls_back_by_switching_back() {
    let keep = Duration::from_secs(8);
    let extra = format!("  keep: {}s\n", keep.as_secs());
    let w = World::new("bg", |app| {
        spec(app, "blue-green", 2, &[("A", "1")], &extra)
    });
    let (_, d1) = w.first_deploy();
    let base = w.base();
    let live: Service = w.get(&base);
    let slot = |s: &Service| s.spec.clone().unwrap().selector.unwrap()["slipway.dev/slot"].clone();
    assert_eq!(slot(&live), "blue");

    let (seen, task) = watch(&w);
    w.commit(&spec(&w.app, "blue-green", 2, &[("A", "2")], &extra));
    let (second, d2) = w.deploy();
    assert_eq!(w.ended(second)["state"], "succeeded");
    {
        let s = seen.lock().unwrap();
        let live_switches: Vec<_> = s.switches.iter().filter(|x| x.0 == base).collect();
        // The first event is the watch's listing of the Service (blue).
        assert_eq!(live_switches.len(), 2, "{:?}", s.switches);
        assert_eq!(live_switches[0].1, "blue");
        assert_eq!(live_switches[1].1, "green");
        assert_eq!(live_switches[1].2, 2, "both green pods Ready at the switch");
        let preview = s
            .switches
            .iter()
            .find(|x| x.0 == format!("{base}-preview") && x.1 == "green");
        assert!(
            preview.is_some(),
            "the preview Service shows green: {:?}",
            s.switches
        );
    }
    // The old set stays up.
    let blue: Deployment = w.get(&format!("{base}-blue"));
    assert_eq!(blue.spec.replicas, Some(2));
    assert!(digest_of(&blue).ends_with(&d1));
    let green: Deployment = w.get(&format!("{base}-green"));
    assert!(digest_of(&green).ends_with(&d2));

    // A rollback inside the window: the selector, and nothing else.
    let pods_before: Vec<String> = seen.lock().unwrap().names.clone();
    let blue_spec = serde_json::to_value(&blue.spec).unwrap();
    let rollback = w.rollback();
    let d = w.ended(rollback);
    assert_eq!(d["state"], "succeeded", "{d}");
    eprintln!(
        "blue/green rollback inside the window: {} ms from start to succeeded",
        d["finished_at"].as_i64().unwrap() - d["started_at"].as_i64().unwrap()
    );
    let switched_back = {
        let s = seen.lock().unwrap();
        let live_switches: Vec<_> = s.switches.iter().filter(|x| x.0 == base).collect();
        assert_eq!(live_switches.len(), 3, "{:?}", s.switches);
        assert_eq!(live_switches[2].1, "blue");
        assert_eq!(
            s.names, pods_before,
            "no pod made or removed by the rollback"
        );
        live_switches[2].3
    };
    let blue: Deployment = w.get(&format!("{base}-blue"));
    // (Its annotations change, which bumps a Deployment's generation.)
    assert_eq!(
        serde_json::to_value(&blue.spec).unwrap(),
        blue_spec,
        "blue's spec untouched"
    );

    // Green is kept for `keep`, then scaled to 0.
    w.await_deployment(&format!("{base}-green"), "green scaled to 0", |d| {
        d.spec.replicas == Some(0)
    });
    let after = switched_back.elapsed();
    assert!(
        after + Duration::from_secs(1) >= keep,
        "green went after {after:?}, before keep ({keep:?})"
    );
    task.abort();
}

#[test]
fn a_server_killed_mid_rollout_ends_it_after_a_restart() {
    let extra = "  deadline: 5s\n";
    let mut w = World::new("kill", |app| spec(app, "rolling", 2, &[("A", "1")], extra));
    let (first, d1) = w.first_deploy();
    let base = w.base();
    w.commit(&spec(
        &w.app,
        "rolling",
        2,
        &[("A", "1"), ("SLIPWAY_TEST_NEVER_READY", "1")],
        extra,
    ));
    let (second, _) = w.deploy();
    // Mid-rollout: the server has written the new spec, and waits.
    w.await_deployment(&base, "the new spec written", |d| {
        d.annotations().get("slipway.dev/deployment") == Some(&second.to_string())
    });
    assert_eq!(deployment(&w.server, second)["state"], "progressing");
    w.server.kill_hard();
    w.server.restart_same_address();
    let d = w.ended(second);
    assert_eq!(d["state"], "failed", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("reverted to deployment {first}")),
        "{d}"
    );
    w.await_deployment(&base, "the Deployment back on v1", |dep| {
        let s = dep.status.clone().unwrap_or_default();
        dep.annotations().get("slipway.dev/deployment") == Some(&first.to_string())
            && s.observed_generation >= dep.metadata.generation
            && s.ready_replicas == Some(2)
            && s.replicas == Some(2)
    });
    assert!(digest_of(&w.get(&base)).ends_with(&d1));

    // Killed again mid-rollout of a good version: it succeeds.
    w.commit(&spec(&w.app, "rolling", 2, &[("A", "3")], extra));
    let (third, d3) = w.deploy();
    w.await_deployment(&base, "the third spec written", |d| {
        d.annotations().get("slipway.dev/deployment") == Some(&third.to_string())
    });
    w.server.kill_hard();
    w.server.restart_same_address();
    assert_eq!(w.ended(third)["state"], "succeeded");
    for p in w
        .pods()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        assert!(image(p).ends_with(&d3), "{}", image(p));
    }
}

#[test]
fn one_spec_deploys_dev_on_local_and_promotes_the_digest_to_kubernetes_prod() {
    let w = World::new("one", |app| {
        spec(app, "rolling", 2, &[("A", "1")], "").replace(
            "    prod: {",
            "    dev: { strategy: rolling, replicas: 1 }\n    prod: {",
        )
    });
    let node = Auth::Bearer(join_local_node(&w.server, "n1"));
    let (dev, digest) = w.deploy();
    serve_until(&w.server, &node, "dev on the local node", || {
        deployment(&w.server, dev)["state"] == "succeeded"
    });
    let r = api(
        &w.server,
        &w.server.admin_auth(),
        Method::POST,
        "/api/v1/environments/cluster",
        Some(json!({"repo": w.app, "env": "prod", "cluster": "k8s"})),
        &[],
    );
    assert_eq!(r.status, 204, "{}", r.describe());
    let r = api(
        &w.server,
        &w.server.admin_auth(),
        Method::POST,
        "/api/v1/deployments/promote",
        Some(json!({"repo": w.app, "to": "prod"})),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let prod = r.json()["deployment"]["id"].as_i64().unwrap();
    let d = w.ended(prod);
    assert_eq!(d["state"], "succeeded", "{d}");
    assert_eq!(d["digest"], digest.as_str(), "{d}");
    let pods = w.pods();
    assert_eq!(pods.len(), 2, "prod's 2 replicas: {pods:?}");
    for p in &pods {
        assert!(
            image(p).ends_with(&format!("/{}@{digest}", w.app)),
            "{}",
            image(p)
        );
    }
    let envs = api(
        &w.server,
        &w.server.admin_auth(),
        Method::GET,
        &format!("/api/v1/environments?repo={}", w.app),
        None,
        &[],
    )
    .json();
    let by_name = |n: &str| {
        envs.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{envs}"))
            .clone()
    };
    let (dev_env, prod_env) = (by_name("dev"), by_name("prod"));
    assert_eq!(dev_env["cluster"], "local", "{dev_env}");
    assert_eq!(prod_env["cluster"], "k8s", "{prod_env}");
    assert_eq!(dev_env["current"]["digest"], digest.as_str());
    assert_eq!(prod_env["current"]["digest"], digest.as_str());
    let ready = |e: &Value| {
        e["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready" && i["digest"] == digest.as_str())
            .count()
    };
    assert_eq!((ready(&dev_env), ready(&prod_env)), (1, 2), "{envs}");
}

#[test]
fn blue_green_never_switches_to_a_set_that_is_not_ready() {
    let extra = "  deadline: 3s\n  keep: 10m\n";
    let w = World::new("bgbad", |app| {
        spec(app, "blue-green", 2, &[("A", "1")], extra)
    });
    let (first, d1) = w.first_deploy();
    let base = w.base();
    let (seen, task) = watch(&w);
    w.commit(&spec(
        &w.app,
        "blue-green",
        2,
        &[("A", "1"), ("SLIPWAY_TEST_NEVER_READY", "1")],
        extra,
    ));
    let (second, _) = w.deploy();
    let d = w.ended(second);
    assert_eq!(d["state"], "failed", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("pod {base}-green-")), "{reason}");
    assert!(
        reason.contains(&format!("reverted to deployment {first}")),
        "{reason}"
    );
    // The failed set goes; blue never stopped serving.
    w.await_deployment(&format!("{base}-green"), "green scaled to 0", |d| {
        d.spec.replicas == Some(0)
    });
    task.abort();
    let s = seen.lock().unwrap();
    let live: Vec<_> = s.switches.iter().filter(|x| x.0 == base).collect();
    assert_eq!(
        live.len(),
        1,
        "only the listing, never a switch: {:?}",
        s.switches
    );
    assert_eq!(live[0].1, "blue");
    let blue: Deployment = w.get(&format!("{base}-blue"));
    assert_eq!(blue.spec.replicas, Some(2));
    assert!(digest_of(&blue).ends_with(&d1));
    let fewest_ready = s.counts.iter().map(|c| c.1).min().unwrap();
    assert!(fewest_ready >= 2, "blue's 2 stayed Ready: {:?}", s.counts);
}

#[test]
fn configuration_secrets_nothing_references_are_removed() {
    let w = World::new("gc", |app| spec(app, "rolling", 1, &[("A", "0")], ""));
    w.first_deploy();
    let base = w.base();
    let secret_of = |w: &World| -> String {
        let dep: Deployment = w.get(&base);
        dep.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()[0]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap()
            .name
    };
    let first = secret_of(&w);
    // Six more configurations: the Deployment keeps 5 old ReplicaSets, so
    // the first configuration's is pruned and nothing references its Secret.
    let mut kept = Vec::new();
    for a in 1..=6 {
        w.commit(&spec(&w.app, "rolling", 1, &[("A", &a.to_string())], ""));
        let (id, _) = w.deploy();
        assert_eq!(w.ended(id)["state"], "succeeded");
        kept.push(secret_of(&w));
    }
    let gone =
        kube::runtime::wait::await_condition(w.api::<Secret>(), &first, |s: Option<&Secret>| {
            s.is_none()
        });
    w.rt.block_on(async { tokio::time::timeout(WAIT, gone).await })
        .unwrap_or_else(|_| panic!("{first} still there after {WAIT:?}"))
        .unwrap();
    for name in &kept {
        let s: Secret = w.get(name);
        assert_eq!(s.immutable, Some(true), "{name}");
    }
}

#[test]
fn the_image_pull_secret_is_renewed_before_its_token_expires() {
    let w = World::new("pull", |app| spec(app, "rolling", 1, &[("A", "1")], ""));
    w.first_deploy();
    let name = format!("{}-pull", w.base());
    let token_of = |s: &Secret| -> String {
        let config: Value =
            serde_json::from_slice(&s.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
        let (_, auth) = config["auths"].as_object().unwrap().iter().next().unwrap();
        auth["password"].as_str().unwrap().to_owned()
    };
    let secret: Secret = w.get(&name);
    let expires: i64 = secret.annotations()["slipway.dev/expires-at"]
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        expires > now + 55 * 60_000,
        "an hour's token: {expires} vs {now}"
    );
    // Its token is said to expire in a minute: the server renews it.
    let patch = json!({"metadata": {"annotations": {"slipway.dev/expires-at": (now + 60_000).to_string()}}});
    w.rt.block_on(w.api::<Secret>().patch(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    ))
    .unwrap();
    let renewed = kube::runtime::wait::await_condition(
        w.api::<Secret>(),
        &name,
        move |s: Option<&Secret>| {
            s.and_then(|s| s.annotations().get("slipway.dev/expires-at"))
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > now + 55 * 60_000)
        },
    );
    let secret =
        w.rt.block_on(async { tokio::time::timeout(WAIT, renewed).await })
            .expect("renewed within the deadline")
            .unwrap()
            .unwrap();
    // A token issued now (its `exp` an hour away; two issued within the
    // same second may be identical, so the claims, not the text, say so).
    let token = token_of(&secret);
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        claims["exp"].as_i64().unwrap() * 1000 > now + 55 * 60_000,
        "{claims}"
    );
}
