//! Release governance through the API, with a runner and a node that only
//! report (`common::deploy_peers`): approvals bound to the exact digest,
//! separation of duties, expiry, rejection, who may deploy, freeze windows
//! with the admin's break glass, rollbacks that skip the gates, and the
//! append-only audit of all of it.

mod common;

use common::deploy_peers::{
    api, deploy_to_dev, deployment, deployments, join_local_node, run_pipeline_pushing,
    serve_until, serve_until_ended,
};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const REPO: &str = "team/web";

fn add_user(server: &TestServer, name: &str, role: &str) -> Auth {
    let password = format!("{name}-password-1");
    let r = api(
        server,
        &server.admin_auth(),
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": name, "password": password, "role": role})),
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    Auth::Basic(name.to_owned(), password)
}

fn protect(server: &TestServer, env: &str, policy: Value) -> Value {
    let r = api(
        server,
        &server.admin_auth(),
        Method::PUT,
        "/api/v1/environments/protection",
        Some(json!({"repo": REPO, "env": env, "policy": policy})),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

fn promote(server: &TestServer, who: &Auth, body: Value) -> HttpResponse {
    api(
        server,
        who,
        Method::POST,
        "/api/v1/deployments/promote",
        Some(body),
        &[],
    )
}

fn decide(
    server: &TestServer,
    who: &Auth,
    id: i64,
    verb: &str,
    comment: Option<&str>,
) -> HttpResponse {
    api(
        server,
        who,
        Method::POST,
        &format!("/api/v1/deployments/{id}/{verb}"),
        Some(json!({ "comment": comment })),
        &[],
    )
}

fn error_message(r: &HttpResponse) -> String {
    r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Build a new digest and bring `dev` to run it; the digest.
fn new_dev_digest(server: &TestServer, runner: &Auth, node: &Auth) -> String {
    let digest = run_pipeline_pushing(server, runner, REPO);
    serve_until(server, node, &format!("dev running {digest}"), || {
        deployments(server, REPO).iter().any(|d| {
            d["environment"] == "dev" && d["digest"] == digest.as_str() && d["state"] == "succeeded"
        })
    });
    digest
}

fn audit(server: &TestServer, who: &Auth, query: &str) -> HttpResponse {
    api(
        server,
        who,
        Method::GET,
        &format!("/api/v1/audit?{query}"),
        None,
        &[],
    )
}

#[test]
fn approvals_are_bound_to_the_digest_and_never_the_requesters_own() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("gates-approvals");
    let first = deploy_to_dev(&server, &runner, &node, REPO, work.path());
    let alice = add_user(&server, "alice", "user");
    let bob = add_user(&server, "bob", "user");
    let carol = add_user(&server, "carol", "user");
    let vera = add_user(&server, "vera", "viewer");

    let view = protect(
        &server,
        "staging",
        json!({"required_approvals": 2, "approvers": {"role": "user"}, "approval_ttl_s": 3600}),
    );
    assert_eq!(
        view["policy"]["separation_of_duties"], true,
        "on by default: {view}"
    );

    // Alice asks; the request waits for two approvals.
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    assert_eq!(r.status, 202, "{}", r.describe());
    let a = r.json()["deployment"].clone();
    let a_id = a["id"].as_i64().unwrap();
    assert_eq!(a["state"], "awaiting_approval", "{a}");
    assert_eq!(a["approvals"], json!({"approved_by": [], "required": 2}));
    assert_eq!(a["digest"], first.digest.as_str());

    // Not her own; not a viewer's.
    let r = decide(&server, &alice, a_id, "approve", None);
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(
        error_message(&r).contains("separation of duties"),
        "{}",
        r.describe()
    );
    let r = decide(&server, &vera, a_id, "approve", None);
    assert_eq!(r.status, 403, "{}", r.describe());

    // Bob approves digest A: one of two.
    let r = decide(&server, &bob, a_id, "approve", Some("looks good"));
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(
        r.json()["deployment"]["approvals"]["approved_by"],
        json!(["bob"])
    );

    // A new digest B: Alice's new request supersedes A's, and Bob's approval
    // of A does not count for B.
    let b_digest = new_dev_digest(&server, &runner, &node);
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    assert_eq!(r.status, 202, "{}", r.describe());
    let b = r.json()["deployment"].clone();
    let b_id = b["id"].as_i64().unwrap();
    assert_eq!(b["digest"], b_digest.as_str());
    assert_eq!(b["approvals"]["approved_by"], json!([]), "{b}");
    assert_eq!(deployment(&server, a_id)["state"], "superseded");
    let r = decide(&server, &bob, a_id, "approve", None);
    assert_eq!(
        r.status,
        409,
        "a superseded request takes no approval: {}",
        r.describe()
    );

    // Bob approves B, then his approval expires: Carol's alone is one of two.
    assert_eq!(decide(&server, &bob, b_id, "approve", None).status, 200);
    sql(
        &server,
        "UPDATE approvals SET expires_at = 1 WHERE username = 'bob'",
    );
    let r = decide(&server, &carol, b_id, "approve", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    let after = r.json()["deployment"].clone();
    assert_eq!(after["state"], "awaiting_approval", "{after}");
    assert_eq!(
        after["approvals"]["approved_by"],
        json!(["carol"]),
        "{after}"
    );

    // Bob approves again: two, and the deployment proceeds.
    let r = decide(&server, &bob, b_id, "approve", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json()["deployment"]["state"], "pending");
    let ended = serve_until_ended(&server, &node, b_id);
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(ended["approved_by"], json!(["bob", "carol"]), "{ended}");

    // Traceability: from staging (or its instance) back to the pipeline
    // that built B and every environment B went through, with approvers.
    let admin = server.admin_auth();
    let trace = api(
        &server,
        &admin,
        Method::GET,
        &format!("/api/v1/trace?repo={REPO}&env=staging"),
        None,
        &[],
    );
    assert_eq!(trace.status, 200, "{}", trace.describe());
    let trace = trace.json();
    assert_eq!(trace["digest"], b_digest.as_str());
    assert_eq!(
        trace["provenance"],
        Value::Null,
        "the fake runner pushed no provenance"
    );
    assert_eq!(trace["pipeline"]["repo"], REPO);
    assert_eq!(
        trace["pipeline"]["jobs"][0]["steps"][0]["status"], "success",
        "{trace:#}"
    );
    let job = trace["pipeline"]["jobs"][0]["id"].as_i64().unwrap();
    assert_eq!(
        trace["pipeline"]["jobs"][0]["steps"][0]["log"],
        format!("/api/v1/jobs/{job}/steps/0/log")
    );
    let through: Vec<(&str, &str, Value)> = trace["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["environment"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
                e["approved_by"].clone(),
            )
        })
        .collect();
    assert_eq!(
        through,
        [
            ("dev", "succeeded", json!([])),
            ("staging", "succeeded", json!(["bob", "carol"]))
        ],
        "{trace:#}"
    );
    let envs = api(
        &server,
        &admin,
        Method::GET,
        &format!("/api/v1/environments?repo={REPO}"),
        None,
        &[],
    )
    .json();
    let instance = envs[1]["instances"][0]["name"].as_str().unwrap().to_owned();
    let by_instance = api(
        &server,
        &vera,
        Method::GET,
        &format!("/api/v1/instances/{instance}/trace"),
        None,
        &[],
    );
    assert_eq!(by_instance.status, 200, "{}", by_instance.describe());
    assert_eq!(by_instance.json(), trace);
    let neither = api(
        &server,
        &admin,
        Method::GET,
        &format!("/api/v1/trace?repo={REPO}"),
        None,
        &[],
    );
    assert_eq!(neither.status, 400, "{}", neither.describe());

    // A rejection needs a comment, and ends the request.
    new_dev_digest(&server, &runner, &node);
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    let c_id = r.json()["deployment"]["id"].as_i64().unwrap();
    let r = decide(&server, &carol, c_id, "reject", None);
    assert_eq!(r.status, 400, "{}", r.describe());
    let r = decide(&server, &carol, c_id, "reject", Some("breaks the checkout"));
    assert_eq!(r.status, 200, "{}", r.describe());
    let c = r.json()["deployment"].clone();
    assert_eq!(c["state"], "rejected");
    assert_eq!(c["reason"], "rejected by carol: breaks the checkout");

    // Who may deploy at all.
    protect(&server, "staging", json!({"deployers": {"users": ["bob"]}}));
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    assert_eq!(r.status, 403, "{}", r.describe());
    assert_eq!(
        error_message(&r),
        "alice may not deploy to staging: its deployers are bob"
    );

    // The audit holds each action once, with actor, digest and reason.
    let entries = audit(
        &server,
        &server.admin_auth(),
        &format!("repo={REPO}&env=staging"),
    )
    .json();
    let entries = entries.as_array().unwrap();
    let count = |action: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["actor"] == actor)
            .count()
    };
    assert_eq!(count("protect", "admin"), 2, "{entries:#?}");
    assert_eq!(count("promote", "alice"), 3, "{entries:#?}");
    assert_eq!(count("approve", "bob"), 3, "{entries:#?}");
    assert_eq!(count("approve", "carol"), 1, "{entries:#?}");
    assert_eq!(count("reject", "carol"), 1, "{entries:#?}");
    assert_eq!(count("refused", "alice"), 1, "{entries:#?}");
    let approve = entries
        .iter()
        .find(|e| e["action"] == "approve" && e["reason"] == "looks good")
        .unwrap();
    assert_eq!(approve["digest"], first.digest.as_str());
    assert_eq!(approve["deployment_id"], a_id);
    assert!(approve["at"].as_i64().unwrap() > 0);
    // A protection change shows before and after.
    let protects: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "protect")
        .collect();
    assert_eq!(protects[0]["before"]["required_approvals"], 0);
    assert_eq!(protects[0]["after"]["required_approvals"], 2);
    assert_eq!(protects[1]["before"]["required_approvals"], 2);
    assert_eq!(protects[1]["after"]["deployers"], json!({"users": ["bob"]}));
}

#[test]
fn freezes_hold_promotions_but_not_rollbacks_and_the_audit_keeps_it_all() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("gates-freeze");
    let first = deploy_to_dev(&server, &runner, &node, REPO, work.path());
    let alice = add_user(&server, "alice", "user");
    let vera = add_user(&server, "vera", "viewer");
    let admin = server.admin_auth();

    // Two digests reach staging unprotected; then a third runs in dev.
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    let v1 = serve_until_ended(
        &server,
        &node,
        r.json()["deployment"]["id"].as_i64().unwrap(),
    );
    assert_eq!(v1["state"], "succeeded", "{v1}");
    let second = new_dev_digest(&server, &runner, &node);
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    let v2 = serve_until_ended(
        &server,
        &node,
        r.json()["deployment"]["id"].as_i64().unwrap(),
    );
    assert_eq!(v2["state"], "succeeded", "{v2}");
    assert_eq!(v2["digest"], second.as_str());
    let third = new_dev_digest(&server, &runner, &node);

    // A freeze that holds now (a window opening every minute, lasting an
    // hour) and approvals that rollbacks skip.
    let view = protect(
        &server,
        "staging",
        json!({"required_approvals": 2, "freezes": [
            {"cron": "* * * * *", "duration_s": 3600, "timezone": "Europe/Paris"}
        ]}),
    );
    let frozen = view["frozen"].as_str().unwrap().to_owned();
    assert!(frozen.starts_with("until "), "{view}");

    // Refused, with the window's end.
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    assert_eq!(r.status, 409, "{}", r.describe());
    let message = error_message(&r);
    assert!(
        message.starts_with(&format!("staging is frozen {frozen}")),
        "{message} / {frozen}"
    );
    // Break glass: not for a developer; an admin needs a reason.
    let glass = json!({"repo": REPO, "to": "staging", "override_freeze": true, "reason": "hotfix"});
    let r = promote(&server, &alice, glass.clone());
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(error_message(&r).contains("only an admin may override a freeze"));
    let r = promote(
        &server,
        &admin,
        json!({"repo": REPO, "to": "staging", "override_freeze": true}),
    );
    assert_eq!(r.status, 400, "{}", r.describe());
    let r = promote(&server, &admin, glass);
    assert_eq!(r.status, 202, "{}", r.describe());
    let overridden = r.json()["deployment"].clone();
    assert_eq!(overridden["digest"], third.as_str());
    // Past the freeze it still needs its approvals: reject it.
    assert_eq!(overridden["state"], "awaiting_approval", "{overridden}");
    let r = decide(
        &server,
        &alice,
        overridden["id"].as_i64().unwrap(),
        "reject",
        Some("not now"),
    );
    assert_eq!(
        r.status,
        403,
        "admins approve here by default: {}",
        r.describe()
    );

    // A rollback works during the freeze, without approvals, and is
    // recorded with who and why (it supersedes the request above).
    let r = api(
        &server,
        &alice,
        Method::POST,
        "/api/v1/deployments/rollback",
        Some(
            json!({"repo": REPO, "env": "staging", "to": first.digest, "reason": "second is slow"}),
        ),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.describe());
    let back = r.json()["deployment"].clone();
    assert_eq!(back["state"], "pending", "{back}");
    let back = serve_until_ended(&server, &node, back["id"].as_i64().unwrap());
    assert_eq!(back["state"], "succeeded", "{back}");
    assert_eq!(back["digest"], first.digest.as_str());
    assert_eq!(
        deployment(&server, overridden["id"].as_i64().unwrap())["state"],
        "superseded"
    );
    // A digest that never ran in staging is no rollback target.
    let r = api(
        &server,
        &alice,
        Method::POST,
        "/api/v1/deployments/rollback",
        Some(json!({"repo": REPO, "env": "staging", "to": third})),
        &[],
    );
    assert_eq!(r.status, 409, "{}", r.describe());

    // The audit: each action once.
    let entries = audit(&server, &admin, &format!("repo={REPO}")).json();
    let entries = entries.as_array().unwrap().clone();
    let of = |action: &str| -> Vec<&Value> {
        entries.iter().filter(|e| e["action"] == action).collect()
    };
    assert_eq!(of("freeze_override").len(), 1, "{entries:#?}");
    assert_eq!(of("freeze_override")[0]["actor"], "admin");
    assert_eq!(of("freeze_override")[0]["reason"], "hotfix");
    assert_eq!(of("freeze_override")[0]["digest"], third.as_str());
    let refused = of("refused");
    let refused_by: Vec<(&str, &str)> = refused
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "frozen, a developer's override, an admin's without a reason, a rollback target: {refused_by:?}"
    );
    assert!(
        refused_by[3].1.contains("was never verified in staging"),
        "{refused_by:?}"
    );
    let superseded = of("supersede");
    assert_eq!(superseded.len(), 1, "{entries:#?}");
    assert_eq!(superseded[0]["deployment_id"], overridden["id"]);
    assert!(
        refused_by[0].1.starts_with("staging is frozen"),
        "{refused_by:?}"
    );
    assert!(
        refused_by[1].1.contains("only an admin may override"),
        "{refused_by:?}"
    );
    let rollback = of("rollback");
    assert_eq!(rollback.len(), 1, "{entries:#?}");
    assert_eq!(rollback[0]["actor"], "alice");
    assert_eq!(rollback[0]["reason"], "second is slow");
    assert_eq!(rollback[0]["environment"], "staging");
    assert_eq!(rollback[0]["digest"], first.digest.as_str());
    assert_eq!(
        of("deploy").len(),
        3,
        "three pipelines deployed to dev: {entries:#?}"
    );
    assert_eq!(of("promote").len(), 3, "{entries:#?}");
    assert!(of("deploy")
        .iter()
        .all(|e| e["actor"].as_str().unwrap().starts_with("pipeline #")));

    // JSON lines export: the same entries, one per line.
    let r = audit(&server, &admin, &format!("repo={REPO}&format=jsonl"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/jsonl"));
    let lines: Vec<Value> = String::from_utf8(r.body.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, entries);

    // Who reads it: a viewer of the repository its entries; only an admin
    // every repository's.
    assert_eq!(audit(&server, &vera, &format!("repo={REPO}")).status, 200);
    assert_eq!(audit(&server, &vera, "").status, 403);
    assert_eq!(
        audit(&server, &Auth::None, &format!("repo={REPO}")).status,
        401
    );

    // Append-only, and deleting the user who acted rewrites nothing.
    let err = try_sql(&server, "UPDATE audit_log SET actor = 'mallory'").unwrap_err();
    assert!(err.contains("the audit log is append-only"), "{err}");
    let err = try_sql(&server, "DELETE FROM audit_log").unwrap_err();
    assert!(err.contains("the audit log is append-only"), "{err}");
    sql(&server, "DELETE FROM users WHERE username = 'alice'");
    let again = audit(&server, &admin, &format!("repo={REPO}")).json();
    assert_eq!(again.as_array().unwrap(), &entries);
}

fn try_sql(server: &TestServer, statement: &str) -> Result<(), String> {
    server.sql(statement)
}

fn sql(server: &TestServer, statement: &str) {
    server
        .sql(statement)
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

#[test]
fn an_abort_ends_a_request_and_is_audited() {
    let server = TestServer::start();
    let runner = Auth::Bearer(server.register_runner("r"));
    let node = Auth::Bearer(join_local_node(&server, "n1"));
    let work = scratch_dir("gates-abort");
    deploy_to_dev(&server, &runner, &node, REPO, work.path());
    let alice = add_user(&server, "alice", "user");
    let vera = add_user(&server, "vera", "viewer");
    protect(
        &server,
        "staging",
        json!({"required_approvals": 1, "deployers": {"users": ["alice", "admin"]}}),
    );
    let r = promote(&server, &alice, json!({"repo": REPO, "to": "staging"}));
    assert_eq!(r.status, 202, "{}", r.describe());
    let id = r.json()["deployment"]["id"].as_i64().unwrap();
    let abort = |who: &Auth, body: Value| {
        api(
            &server,
            who,
            Method::POST,
            &format!("/api/v1/deployments/{id}/abort"),
            Some(body),
            &[],
        )
    };

    // A viewer may not; nor a developer who is not among the deployers.
    assert_eq!(abort(&vera, json!({})).status, 403);
    let bob = add_user(&server, "bob", "user");
    let r = abort(&bob, json!({}));
    assert_eq!(r.status, 403, "{}", r.describe());
    assert!(
        error_message(&r).contains("only its deployers"),
        "{}",
        r.describe()
    );
    assert_eq!(deployment(&server, id)["state"], "awaiting_approval");

    // The CLI, as admin: the request ends at once, failed, saying why.
    let out = common::slipway(
        &server,
        &["abort", &id.to_string(), "--reason", "wrong digest"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("deployment {id} (promote)")),
        "{}",
        text(&out.stdout)
    );
    let d = deployment(&server, id);
    assert_eq!(d["state"], "failed", "{d}");
    assert_eq!(d["reason"], "aborted by admin: wrong digest", "{d}");
    // Once: an ended deployment cannot be aborted.
    let r = abort(&alice, json!({}));
    assert_eq!(r.status, 409, "{}", r.describe());

    let entries = audit(&server, &server.admin_auth(), &format!("repo={REPO}")).json();
    let aborts: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "abort")
        .collect();
    assert_eq!(aborts.len(), 1, "{entries}");
    assert_eq!(aborts[0]["actor"], "admin");
    assert_eq!(aborts[0]["deployment_id"], id);
    assert_eq!(aborts[0]["reason"], "wrong digest");
    assert_eq!(aborts[0]["before"], json!({"state": "awaiting_approval"}));
    let events = api(
        &server,
        &server.admin_auth(),
        Method::GET,
        &format!("/api/v1/deployments/{id}/events"),
        None,
        &[],
    )
    .json();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["requested", "failed"], "{events}");
}
