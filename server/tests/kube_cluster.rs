//! `slipway cluster add NAME --kind kubernetes --kubeconfig FILE` (and its
//! API route) against the real control plane of `scripts/kube-env.sh`: a
//! kubeconfig whose account has the README's Role is added, sealed at rest
//! and never shown; one with less is refused naming each missing permission
//! (checked by the API server's own SelfSubjectAccessReviews); one that is not
//! self-contained, or whose credentials the API server refuses, is refused
//! naming why.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::deploy_peers::api;
use common::kube_env::{Account, KubeEnv};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The CLI as admin against `server`.
fn slipway(server: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(args)
        .env("SLIPWAY_SERVER", server.url())
        .env("SLIPWAY_USER", "admin")
        .env("SLIPWAY_PASSWORD", server.admin_password())
        .env_remove("SLIPWAY_TOKEN")
        .output()
        .unwrap()
}

/// The bearer token in a kubeconfig that kube-env.sh wrote.
fn token_of(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the kubeconfig has a token")
        .to_string()
}

/// Every file under `dir`, for a search of its bytes.
fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn assert_nowhere(secret: &str, server: &TestServer, outputs: &[&str]) {
    assert!(!secret.is_empty());
    for out in outputs {
        assert!(!out.contains(secret), "the token was shown: {out}");
    }
    assert!(
        !server.logs().contains(secret),
        "the token is in the server's log"
    );
    for (path, bytes) in all_bytes(server.data_dir()) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token is in the clear in {path}"
        );
    }
}

fn add(server: &TestServer, body: Value) -> HttpResponse {
    api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/clusters",
        Some(body),
        &[],
    )
}

#[test]
fn a_kubeconfig_with_the_role_is_added_sealed_and_never_shown() {
    let env = KubeEnv::get();
    let server = TestServer::start();
    let kubeconfig = env.kubeconfig_path(Account::Slipway);
    let token = token_of(&env.kubeconfig_text(Account::Slipway));

    let out = slipway(
        &server,
        &[
            "cluster",
            "add",
            "prod-k8s",
            "--kind",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            &env.namespace,
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("added kubernetes cluster prod-k8s")
            && stdout.contains(&format!("namespace {}", env.namespace))
            && stdout.contains("https://127.0.0.1:"),
        "{stdout}"
    );

    let list = server.get("/api/v1/clusters", &server.admin_auth());
    assert_eq!(list.status, 200, "{}", list.describe());
    let clusters = list.json();
    let prod = clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "prod-k8s")
        .unwrap_or_else(|| panic!("{clusters}"));
    assert_eq!(prod["kind"], "kubernetes", "{prod}");

    // Again with the same kubeconfig, through the API, from the
    // kubeconfig context's namespace: the cluster exists, re-keyed.
    let again = add(
        &server,
        json!({"name": "prod-k8s", "kind": "kubernetes",
               "kubeconfig": env.kubeconfig_text(Account::Slipway)}),
    );
    assert_eq!(again.status, 201, "{}", again.describe());
    let body = again.json();
    assert_eq!(body["created"], false, "{body}");
    assert_eq!(body["namespace"], env.namespace.as_str(), "{body}");
    assert!(body.get("join_token").is_none(), "{body}");

    // A kubernetes cluster takes no nodes.
    let local = slipway(&server, &["cluster", "add", "prod-k8s"]);
    assert!(!local.status.success());
    assert!(
        text(&local.stderr).contains("is of kind \"kubernetes\": nodes do not join it"),
        "{}",
        text(&local.stderr)
    );

    assert_nowhere(
        &token,
        &server,
        &[
            &stdout,
            &stderr,
            &list.body_text(),
            &again.body_text(),
            &text(&local.stdout),
            &text(&local.stderr),
        ],
    );
}

#[test]
fn a_kubeconfig_with_less_than_the_role_is_refused_naming_what_is_missing() {
    let env = KubeEnv::get();
    let server = TestServer::start();
    let limited = env.kubeconfig_path(Account::Limited);
    let token = token_of(&env.kubeconfig_text(Account::Limited));

    // The limited account's Role lacks Secrets.
    let out = slipway(
        &server,
        &[
            "cluster",
            "add",
            "thin",
            "--kind",
            "kubernetes",
            "--kubeconfig",
            limited.to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the kubeconfig's account lacks permissions in namespace {:?}: get secrets, \
             list secrets, watch secrets, create secrets, update secrets, patch secrets, \
             delete secrets; grant it the Role in the README",
            env.namespace
        )),
        "{stderr}"
    );

    // The full account in a namespace where its Role is not bound lacks all
    // of it; the API says so on the kubeconfig field.
    let other = add(
        &server,
        json!({"name": "thin", "kind": "kubernetes", "namespace": "default",
               "kubeconfig": env.kubeconfig_text(Account::Slipway)}),
    );
    assert_eq!(other.status, 400, "{}", other.describe());
    let error = &other.json()["error"];
    assert_eq!(error["field"], "kubeconfig", "{error}");
    let message = error["message"].as_str().unwrap();
    for permission in [
        "get deployments.apps",
        "delete deployments.apps",
        "watch replicasets.apps",
        "list pods",
        "list events",
        "patch services",
        "create secrets",
    ] {
        assert!(
            message.contains(permission) && message.contains("namespace \"default\""),
            "{permission} is not named: {message}"
        );
    }

    // Nothing was stored.
    let list = server.get("/api/v1/clusters", &server.admin_auth()).json();
    assert!(
        list.as_array().unwrap().iter().all(|c| c["name"] != "thin"),
        "{list}"
    );
    assert_nowhere(&token, &server, &[&stderr, &text(&out.stdout)]);
}

#[test]
fn kubeconfigs_that_are_not_self_contained_or_not_accepted_are_refused() {
    let env = KubeEnv::get();
    let server = TestServer::start();
    let good = env.kubeconfig_text(Account::Slipway);
    let token = token_of(&good);
    let token_line = format!("token: {token}");

    let refused = |kubeconfig: String, field: &str, says: &str| {
        let r = add(
            &server,
            json!({"name": "edge", "kind": "kubernetes", "kubeconfig": kubeconfig}),
        );
        assert_eq!(r.status, 400, "{}", r.describe());
        let error = &r.json()["error"];
        assert_eq!(error["field"], field, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        assert!(!r.body_text().contains(&token), "{}", r.body_text());
    };
    refused(
        good.replace(
            &token_line,
            "exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh",
        ),
        "kubeconfig",
        "kubeconfig field users[0].user.exec would run a program on the server's machine",
    );
    refused(
        good.replace(&token_line, "tokenFile: /etc/shadow"),
        "kubeconfig",
        "kubeconfig field users[0].user.tokenFile names a file on the server's machine",
    );
    refused(
        good.replace(
            "certificate-authority-data:",
            "certificate-authority: /etc/ssl/certs/ca-certificates.crt\n    x-data:",
        ),
        "kubeconfig",
        "kubeconfig field clusters[0].cluster.certificate-authority names a file",
    );
    refused(
        format!("{token}: [unclosed"),
        "kubeconfig",
        "is not a valid kubeconfig",
    );
    refused(
        good.replace(&token, "not-a-token-the-api-server-knows"),
        "kubeconfig",
        "does not accept the kubeconfig's credentials",
    );

    // The body's other fields, named.
    for (body, field) in [
        (json!({"name": "edge", "kind": "kubernetes"}), "kubeconfig"),
        (json!({"name": "edge", "kind": "nomad"}), "kind"),
        (json!({"name": "edge", "kubeconfig": good}), "kubeconfig"),
        (
            json!({"name": "edge", "kind": "kubernetes", "namespace": "Not_A_Label", "kubeconfig": good}),
            "namespace",
        ),
    ] {
        let r = add(&server, body);
        assert_eq!(r.status, 400, "{}", r.describe());
        assert_eq!(r.json()["error"]["field"], field, "{}", r.describe());
    }
    assert!(!server.logs().contains(&token));
}
