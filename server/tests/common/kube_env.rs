//! The Kubernetes control plane that `scripts/kube-env.sh up` starts for the
//! tests (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
//! kwok on loopback ports). `scripts/test.sh` starts it and exports
//! `SLIPWAY_TEST_KUBE_DIR`; a test that needs it and does not find it fails
//! saying how to start it.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// The variable that names the directory `scripts/kube-env.sh up` wrote.
pub const KUBE_DIR_VAR: &str = "SLIPWAY_TEST_KUBE_DIR";

/// One control plane: its directory, with a kubeconfig per account.
pub struct KubeEnv {
    dir: PathBuf,
    /// The namespace the service accounts' Roles are bound in.
    pub namespace: String,
}

/// The accounts `scripts/kube-env.sh up` makes, each with a kubeconfig.
#[derive(Clone, Copy, Debug)]
pub enum Account {
    /// The static admin token (group system:masters): set-up only.
    Admin,
    /// Service account `slipway`, bound to the Role the README documents.
    Slipway,
    /// Service account `slipway-limited`: the same Role without Secrets.
    Limited,
}

impl Account {
    fn file(self) -> &'static str {
        match self {
            Account::Admin => "admin.kubeconfig",
            Account::Slipway => "slipway.kubeconfig",
            Account::Limited => "slipway-limited.kubeconfig",
        }
    }
}

impl KubeEnv {
    /// The control plane of this test run; panics, saying how to start one,
    /// when there is none.
    pub fn get() -> KubeEnv {
        let how = "run the tests with scripts/test.sh, or start a control plane with \
                   `SLIPWAY_KUBE_DIR=/tmp/slipway-kube scripts/kube-env.sh up` and \
                   export SLIPWAY_TEST_KUBE_DIR=/tmp/slipway-kube";
        let dir = match std::env::var_os(KUBE_DIR_VAR) {
            Some(dir) => PathBuf::from(dir),
            None => panic!(
                "this test needs a Kubernetes control plane and {KUBE_DIR_VAR} is not set: {how}"
            ),
        };
        if !dir.join("ready").is_file() {
            panic!(
                "{KUBE_DIR_VAR}={} holds no control plane that came up (no `ready` file): {how}",
                dir.display()
            );
        }
        let namespace = std::fs::read_to_string(dir.join("namespace"))
            .unwrap_or_else(|e| panic!("{}/namespace: {e}", dir.display()))
            .trim()
            .to_string();
        KubeEnv { dir, namespace }
    }

    /// The path of an account's kubeconfig.
    pub fn kubeconfig_path(&self, account: Account) -> PathBuf {
        self.dir.join(account.file())
    }

    /// The text of an account's kubeconfig.
    pub fn kubeconfig_text(&self, account: Account) -> String {
        let path = self.kubeconfig_path(account);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A kube-rs client that speaks as `account`.
    pub async fn client(&self, account: Account) -> kube::Client {
        // The test binary links two rustls providers (reqwest's and kube's):
        // name the one the server uses.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let path = self.kubeconfig_path(account);
        let kubeconfig =
            Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        kube::Client::try_from(config).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// Awaits `fut` for at most `deadline`; past it the test fails naming `what`
/// and whatever `state` says about where things stand.
pub async fn within<T>(
    what: &str,
    deadline: Duration,
    fut: impl Future<Output = T>,
    state: impl FnOnce() -> String,
) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {deadline:?}; {}", state()),
    }
}
