//! GitHub: `X-GitHub-Event` names the event, `X-Hub-Signature-256` carries
//! `sha256=<hex HMAC-SHA256 of the body>`. Tags arrive as `push` events.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    changed_files, commit_id, deleted, from_json, git_ref, is_zero_id, non_empty, pull_ref,
    pull_request_action, push_target, repository, signature_value, unsupported, verify_hmac,
    EventKind, Forge, PushCommit, WebhookError, WebhookEvent,
};

pub(super) const EVENT_HEADER: &str = "X-GitHub-Event";
pub(super) const SIGNATURE_HEADER: &str = "X-Hub-Signature-256";

/// GitHub lists at most this many commits in a push; a list this long may have
/// been cut short.
const MAX_LISTED_COMMITS: usize = 2048;

pub(super) fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), WebhookError> {
    let value = signature_value(headers, Forge::GitHub)?;
    // Unlike Gitea's, GitHub's header names the algorithm.
    let hex_tag = value
        .strip_prefix("sha256=")
        .ok_or(WebhookError::BadSignature {
            forge: Forge::GitHub,
        })?;
    verify_hmac(Forge::GitHub, hex_tag, body, secret)
}

pub(super) fn parse(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    match event {
        "push" => push(from_json(body)?),
        "pull_request" => pull_request(from_json(body)?),
        // "ping" is sent once when the hook is created; it has nothing to run.
        _ => Err(unsupported(event)),
    }
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    /// GitHub says so for a deleted branch or tag (then `after` is all zeros
    /// and `head_commit` null).
    #[serde(default)]
    deleted: bool,
    commits: Option<Vec<PushCommit>>,
    head_commit: Option<PushCommit>,
    repository: Repository,
    pusher: Option<Pusher>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Pusher {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    pull_request: PullRequest,
    /// The base repository.
    repository: Repository,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    number: u64,
    title: Option<String>,
    user: Option<User>,
    head: Branch,
    base: Branch,
}

#[derive(Debug, Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    /// Null when the head's repository (a fork) has been deleted.
    repo: Option<Repository>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: Option<String>,
}

fn push(p: Push) -> Result<WebhookEvent, WebhookError> {
    if p.deleted || is_zero_id(&p.after) {
        return Err(deleted(&p.git_ref));
    }
    let repository = repository("repository.full_name", &p.repository.full_name)?;
    let git_ref = git_ref("ref", &p.git_ref)?;
    let target = push_target("ref", &git_ref)?;
    // For an annotated tag `after` is the tag object; `head_commit` is the
    // commit it points at, which is what runs.
    let commit = match &p.head_commit {
        Some(head) => commit_id("head_commit.id", &head.id)?,
        None => commit_id("after", &p.after)?,
    };
    let commits = p.commits.unwrap_or_default();
    let changed_files = changed_files(&commits, commits.len() < MAX_LISTED_COMMITS);
    let head = p.head_commit.as_ref();
    Ok(WebhookEvent {
        forge: Forge::GitHub,
        kind: target.kind,
        repository,
        clone_url: non_empty(p.repository.clone_url),
        git_ref,
        commit,
        branch: target.branch,
        tag: target.tag,
        pull_request: None,
        from_fork: false,
        changed_files,
        message: head.and_then(|c| non_empty(c.message.clone())),
        author: head
            .and_then(PushCommit::author_name)
            .or_else(|| non_empty(p.pusher.and_then(|p| p.name))),
    })
}

fn pull_request(e: PullRequestEvent) -> Result<WebhookEvent, WebhookError> {
    // "synchronize": the head branch moved. Everything else ("closed",
    // "edited", "labeled", ...) leaves the code as it was.
    if !matches!(e.action.as_str(), "opened" | "synchronize" | "reopened") {
        return Err(pull_request_action(&e.action));
    }
    let pr = e.pull_request;
    let repository = repository("repository.full_name", &e.repository.full_name)?;
    let commit = commit_id("pull_request.head.sha", &pr.head.sha)?;
    let git_ref = pull_ref("refs/pull/", pr.number, "pull_request.number")?;
    // A deleted fork leaves `head.repo` null: count it as a fork.
    let from_fork = pr
        .head
        .repo
        .as_ref()
        .is_none_or(|head| head.full_name != e.repository.full_name);
    Ok(WebhookEvent {
        forge: Forge::GitHub,
        kind: EventKind::PullRequest,
        repository,
        clone_url: non_empty(e.repository.clone_url),
        git_ref,
        commit,
        branch: non_empty(Some(pr.base.name)),
        tag: None,
        pull_request: Some(pr.number),
        from_fork,
        changed_files: None,
        message: non_empty(pr.title),
        author: non_empty(pr.user.and_then(|u| u.login)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::tests::{
        headers, json as bytes, oversized, sign, COMMIT_A, COMMIT_B, SECRET, ZEROS,
    };
    use super::super::{parse, EventKind, Forge, WebhookError};

    fn deliver(
        event: &str,
        body: &[u8],
        signed_with: &str,
    ) -> Result<super::WebhookEvent, WebhookError> {
        let signature = format!("sha256={}", sign(signed_with, body));
        let headers = headers(&[
            ("X-GitHub-Event", event),
            ("X-Hub-Signature-256", &signature),
        ]);
        parse(&headers, body, SECRET)
    }

    fn push_payload() -> Value {
        json!({
            "ref": "refs/heads/main",
            "before": COMMIT_A,
            "after": COMMIT_B,
            "created": false,
            "deleted": false,
            "forced": false,
            "commits": [
                {
                    "id": COMMIT_A,
                    "message": "Add the parser",
                    "author": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
                    "added": ["src/parse.rs"],
                    "removed": [],
                    "modified": ["Cargo.toml"]
                },
                {
                    "id": COMMIT_B,
                    "message": "Test the parser",
                    "author": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
                    "added": ["tests/parse.rs"],
                    "removed": ["old.rs"],
                    "modified": ["src/parse.rs"]
                }
            ],
            "head_commit": {
                "id": COMMIT_B,
                "message": "Test the parser",
                "author": {"name": "Ada", "email": "ada@example.com", "username": "ada"},
                "added": ["tests/parse.rs"],
                "removed": ["old.rs"],
                "modified": ["src/parse.rs"]
            },
            "repository": {
                "id": 42,
                "full_name": "octo/widget",
                "clone_url": "https://github.com/octo/widget.git"
            },
            "pusher": {"name": "ada", "email": "ada@example.com"},
            "sender": {"login": "ada"}
        })
    }

    fn pull_request_payload(head_repo: Value) -> Value {
        json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "number": 7,
                "title": "Faster parser",
                "user": {"login": "grace"},
                "head": {"ref": "fast", "sha": COMMIT_A, "repo": head_repo},
                "base": {
                    "ref": "main",
                    "sha": COMMIT_B,
                    "repo": {"full_name": "octo/widget", "clone_url": "https://github.com/octo/widget.git"}
                }
            },
            "repository": {"full_name": "octo/widget", "clone_url": "https://github.com/octo/widget.git"},
            "sender": {"login": "grace"}
        })
    }

    #[test]
    fn push() {
        let event = deliver("push", &bytes(push_payload()), SECRET).unwrap();
        assert_eq!(event.forge, Forge::GitHub);
        assert_eq!(event.kind, EventKind::Push);
        assert_eq!(event.repository, "octo/widget");
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://github.com/octo/widget.git")
        );
        assert_eq!(event.git_ref, "refs/heads/main");
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.branch.as_deref(), Some("main"));
        assert_eq!(event.tag, None);
        assert_eq!(event.pull_request, None);
        assert!(!event.from_fork);
        assert_eq!(
            event.changed_files.unwrap(),
            ["Cargo.toml", "old.rs", "src/parse.rs", "tests/parse.rs"]
        );
        assert_eq!(event.message.as_deref(), Some("Test the parser"));
        assert_eq!(event.author.as_deref(), Some("Ada"));
    }

    #[test]
    fn tag_push_runs_the_tagged_commit() {
        let mut p = push_payload();
        p["ref"] = json!("refs/tags/v1.2.0");
        p["before"] = json!(ZEROS);
        // An annotated tag: `after` is the tag object, `head_commit` the commit.
        p["after"] = json!("9999999999999999999999999999999999999999");
        p["commits"] = json!([]);
        let event = deliver("push", &bytes(p), SECRET).unwrap();
        assert_eq!(event.kind, EventKind::Tag);
        assert_eq!(event.git_ref, "refs/tags/v1.2.0");
        assert_eq!(event.tag.as_deref(), Some("v1.2.0"));
        assert_eq!(event.branch, None);
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.changed_files, None, "no commits listed");
    }

    #[test]
    fn pull_request_from_the_same_repository() {
        let head = json!({"full_name": "octo/widget"});
        let event = deliver("pull_request", &bytes(pull_request_payload(head)), SECRET).unwrap();
        assert_eq!(event.kind, EventKind::PullRequest);
        assert_eq!(event.repository, "octo/widget");
        assert_eq!(event.git_ref, "refs/pull/7/head");
        assert_eq!(event.commit, COMMIT_A);
        assert_eq!(event.branch.as_deref(), Some("main"));
        assert_eq!(event.pull_request, Some(7));
        assert!(!event.from_fork);
        assert_eq!(event.changed_files, None);
        assert_eq!(event.message.as_deref(), Some("Faster parser"));
        assert_eq!(event.author.as_deref(), Some("grace"));
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://github.com/octo/widget.git")
        );
    }

    #[test]
    fn pull_request_from_a_fork() {
        let fork = json!({"full_name": "grace/widget", "clone_url": "https://github.com/grace/widget.git"});
        let event = deliver("pull_request", &bytes(pull_request_payload(fork)), SECRET).unwrap();
        assert!(event.from_fork);
        // Still fetched from the base repository, which holds refs/pull/7/head.
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://github.com/octo/widget.git")
        );
        let gone = deliver(
            "pull_request",
            &bytes(pull_request_payload(Value::Null)),
            SECRET,
        )
        .unwrap();
        assert!(gone.from_fork, "a deleted fork is still a fork");
    }

    #[test]
    fn pull_request_actions_that_change_no_code_are_ignored() {
        for (action, runs) in [
            ("opened", true),
            ("synchronize", true),
            ("reopened", true),
            ("closed", false),
            ("edited", false),
            ("labeled", false),
        ] {
            let mut p = pull_request_payload(json!({"full_name": "octo/widget"}));
            p["action"] = json!(action);
            let result = deliver("pull_request", &bytes(p), SECRET);
            match runs {
                true => assert!(result.is_ok(), "{action}: {result:?}"),
                false => assert!(
                    matches!(result, Err(WebhookError::Ignored { .. })),
                    "{action}: {result:?}"
                ),
            }
        }
    }

    #[test]
    fn ping_and_other_events_are_ignored() {
        let ping = bytes(json!({"zen": "Keep it simple.", "hook_id": 1}));
        let err = deliver("ping", &ping, SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::Ignored {
                reason: r#"unsupported event "ping""#.into()
            }
        );
        assert_eq!(err.status(), 202);
        let err = deliver("issues", b"{}", SECRET).unwrap_err();
        assert_eq!(err.to_string(), r#"unsupported event "issues""#);
    }

    #[test]
    fn wrong_secret() {
        let err = deliver("push", &bytes(push_payload()), "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::GitHub
            }
        );
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn missing_signature() {
        let body = bytes(push_payload());
        let err = parse(&headers(&[("X-GitHub-Event", "push")]), &body, SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::MissingSignature {
                header: "X-Hub-Signature-256"
            }
        );
        assert_eq!(err.status(), 401);
    }

    #[test]
    fn body_modified_after_signing() {
        let body = bytes(push_payload());
        let signature = format!("sha256={}", sign(SECRET, &body));
        let tampered = String::from_utf8(body)
            .unwrap()
            .replace("octo/widget", "evil/widget");
        let headers = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &signature),
        ]);
        let err = parse(&headers, tampered.as_bytes(), SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::GitHub
            }
        );
    }

    #[test]
    fn malformed_signature_headers() {
        let body = bytes(push_payload());
        let hex = sign(SECRET, &body);
        for value in [
            hex.clone(),
            format!("sha1={hex}"),
            "sha256=not-hex".into(),
            "sha256=".into(),
        ] {
            let headers = headers(&[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &value)]);
            let err = parse(&headers, &body, SECRET).unwrap_err();
            assert_eq!(
                err,
                WebhookError::BadSignature {
                    forge: Forge::GitHub
                },
                "{value}"
            );
        }
    }

    #[test]
    fn oversized_body_is_refused_before_the_signature_is_checked() {
        let body = oversized();
        // Signed with the wrong secret, and unsigned: the size is what is reported.
        let err = deliver("push", &body, "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::TooLarge {
                bytes: body.len(),
                max: super::super::MAX_BODY
            }
        );
        assert_eq!(err.status(), 413);
        let err = parse(&headers(&[("X-GitHub-Event", "push")]), &body, SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn malformed_json_names_the_position() {
        let body = b"{\n  \"ref\": \"refs/heads/main\",\n  \"after\": oops\n}";
        let err = deliver("push", body, SECRET).unwrap_err();
        assert_eq!(err.status(), 400);
        assert_eq!(
            err.to_string(),
            "malformed payload: expected value at line 3 column 12"
        );
        // The signature comes first: unsigned garbage is not parsed.
        let err = deliver("push", body, "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::GitHub
            }
        );
    }

    #[test]
    fn missing_fields_are_malformed() {
        let mut p = push_payload();
        p.as_object_mut().unwrap().remove("repository");
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed payload: missing field `repository` at line "),
            "{err}"
        );
    }

    #[test]
    fn branch_deletion_is_ignored() {
        let mut p = push_payload();
        p["ref"] = json!("refs/heads/old-feature");
        p["before"] = json!(COMMIT_B);
        p["after"] = json!(ZEROS);
        p["deleted"] = json!(true);
        p["commits"] = json!([]);
        p["head_commit"] = Value::Null;
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert_eq!(err.to_string(), r#""refs/heads/old-feature" was deleted"#);
        assert_eq!(err.status(), 202);
    }

    #[test]
    fn a_commit_that_is_not_40_hex_is_malformed() {
        let mut p = push_payload();
        p["head_commit"]["id"] = json!("abc123");
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"malformed payload: `head_commit.id` is "abc123", not a commit id (40 lowercase hex digits)"#
        );
        let mut p = pull_request_payload(json!({"full_name": "octo/widget"}));
        p["pull_request"]["head"]["sha"] = json!(COMMIT_B.to_uppercase());
        let err = deliver("pull_request", &bytes(p), SECRET).unwrap_err();
        assert!(err.to_string().contains("`pull_request.head.sha`"), "{err}");
    }

    #[test]
    fn refs_and_repositories_are_validated() {
        let mut p = push_payload();
        p["ref"] = json!("main");
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"malformed payload: `ref` is "main", not a full ref name (refs/...)"#
        );
        let mut p = push_payload();
        p["repository"]["full_name"] = json!("");
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed payload: `repository.full_name` is empty"
        );
        let mut p = push_payload();
        p["ref"] = json!("refs/notes/commits");
        assert!(matches!(
            deliver("push", &bytes(p), SECRET),
            Err(WebhookError::Ignored { .. })
        ));
    }

    #[test]
    fn a_push_without_commit_details_falls_back_to_after_and_the_pusher() {
        let mut p = push_payload();
        p["head_commit"] = Value::Null;
        p["commits"] = json!([]);
        let event = deliver("push", &bytes(p), SECRET).unwrap();
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.changed_files, None);
        assert_eq!(event.message, None);
        assert_eq!(event.author.as_deref(), Some("ada"));
    }
}
