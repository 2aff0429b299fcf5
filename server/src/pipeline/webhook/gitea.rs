//! Gitea (and Forgejo, which sends the same headers): `X-Gitea-Event` names the
//! event, `X-Gitea-Signature` is the bare hex HMAC-SHA256 of the body. The
//! payloads copy GitHub's, with the differences noted where they are read.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    changed_files, commit_id, deleted, from_json, git_ref, is_zero_id, non_empty, pull_ref,
    pull_request_action, push_target, repository, signature_value, unsupported, verify_hmac,
    EventKind, Forge, PushCommit, WebhookError, WebhookEvent,
};

pub(super) const EVENT_HEADER: &str = "X-Gitea-Event";
pub(super) const SIGNATURE_HEADER: &str = "X-Gitea-Signature";

pub(super) fn verify(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), WebhookError> {
    // No "sha256=" prefix, unlike GitHub's header.
    let hex_tag = signature_value(headers, Forge::Gitea)?;
    verify_hmac(Forge::Gitea, hex_tag, body, secret)
}

pub(super) fn parse(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    match event {
        "push" => push(from_json(body)?),
        // Gitea sends "pull_request" for opening, syncing, labelling, assigning...
        // alike (the finer type is in X-Gitea-Event-Type); `action` tells them apart.
        "pull_request" => pull_request(from_json(body)?),
        // "create" and "delete" duplicate what pushes already say.
        _ => Err(unsupported(event)),
    }
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    /// All zeros when the ref was deleted: Gitea has no `deleted` flag.
    after: String,
    /// `null` rather than `[]` when there are none (a Go nil slice).
    commits: Option<Vec<PushCommit>>,
    /// How many commits were pushed; `commits` lists at most a configured
    /// number of them (five by default).
    total_commits: Option<usize>,
    head_commit: Option<PushCommit>,
    repository: Repository,
    pusher: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    login: Option<String>,
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
    /// Gitea, unlike GitHub, gives the repository's id on the branch itself.
    repo_id: Option<i64>,
    repo: Option<Repository>,
}

fn push(p: Push) -> Result<WebhookEvent, WebhookError> {
    if is_zero_id(&p.after) {
        return Err(deleted(&p.git_ref));
    }
    let repository = repository("repository.full_name", &p.repository.full_name)?;
    let git_ref = git_ref("ref", &p.git_ref)?;
    let target = push_target("ref", &git_ref)?;
    // As on GitHub, `head_commit` is the commit an annotated tag points at.
    let commit = match &p.head_commit {
        Some(head) => commit_id("head_commit.id", &head.id)?,
        None => commit_id("after", &p.after)?,
    };
    let commits = p.commits.unwrap_or_default();
    let complete = p.total_commits.is_none_or(|total| total <= commits.len());
    let changed_files = changed_files(&commits, complete);
    let head = p.head_commit.as_ref();
    Ok(WebhookEvent {
        forge: Forge::Gitea,
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
            .or_else(|| non_empty(p.pusher.and_then(|u| u.login))),
    })
}

fn pull_request(e: PullRequestEvent) -> Result<WebhookEvent, WebhookError> {
    // Gitea says "synchronized" where GitHub says "synchronize".
    if !matches!(e.action.as_str(), "opened" | "synchronized" | "reopened") {
        return Err(pull_request_action(&e.action));
    }
    let pr = e.pull_request;
    let repository = repository("repository.full_name", &e.repository.full_name)?;
    let commit = commit_id("pull_request.head.sha", &pr.head.sha)?;
    let git_ref = pull_ref("refs/pull/", pr.number, "pull_request.number")?;
    // Compare ids where both are given, else names; what cannot be told apart
    // counts as a fork.
    let from_fork = match (pr.head.repo_id, pr.base.repo_id) {
        (Some(head), Some(base)) => head != base,
        _ => pr
            .head
            .repo
            .as_ref()
            .is_none_or(|head| head.full_name != e.repository.full_name),
    };
    Ok(WebhookEvent {
        forge: Forge::Gitea,
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
    use super::super::{parse, EventKind, Forge, WebhookError, MAX_BODY};

    fn deliver(
        event: &str,
        body: &[u8],
        signed_with: &str,
    ) -> Result<super::WebhookEvent, WebhookError> {
        let signature = sign(signed_with, body);
        let headers = headers(&[("X-Gitea-Event", event), ("X-Gitea-Signature", &signature)]);
        parse(&headers, body, SECRET)
    }

    fn push_payload() -> Value {
        json!({
            "ref": "refs/heads/develop",
            "before": COMMIT_A,
            "after": COMMIT_B,
            "compare_url": "https://git.example.org/ops/site/compare/1111111111...abcdef0123",
            "commits": [{
                "id": COMMIT_B,
                "message": "Fix the footer\n",
                "url": "https://git.example.org/ops/site/commit/abcdef0123",
                "author": {"name": "Lin", "email": "lin@example.org", "username": "lin"},
                "committer": {"name": "Lin", "email": "lin@example.org", "username": "lin"},
                "verification": null,
                "timestamp": "2025-01-02T03:04:05Z",
                "added": null,
                "removed": null,
                "modified": ["templates/footer.html"]
            }],
            "total_commits": 1,
            "head_commit": {
                "id": COMMIT_B,
                "message": "Fix the footer\n",
                "author": {"name": "Lin", "email": "lin@example.org", "username": "lin"},
                "added": null,
                "removed": null,
                "modified": ["templates/footer.html"]
            },
            "repository": {
                "id": 3,
                "full_name": "ops/site",
                "clone_url": "https://git.example.org/ops/site.git"
            },
            "pusher": {"login": "lin"},
            "sender": {"login": "lin"}
        })
    }

    fn pull_request_payload(head_repo_id: i64, head_repo: Value) -> Value {
        json!({
            "action": "synchronized",
            "number": 12,
            "pull_request": {
                "number": 12,
                "title": "Dark footer",
                "user": {"login": "kim"},
                "head": {"label": "dark", "ref": "dark", "sha": COMMIT_A, "repo_id": head_repo_id, "repo": head_repo},
                "base": {
                    "label": "develop",
                    "ref": "develop",
                    "sha": COMMIT_B,
                    "repo_id": 3,
                    "repo": {"id": 3, "full_name": "ops/site"}
                }
            },
            "repository": {"id": 3, "full_name": "ops/site", "clone_url": "https://git.example.org/ops/site.git"},
            "sender": {"login": "kim"}
        })
    }

    #[test]
    fn push() {
        let event = deliver("push", &bytes(push_payload()), SECRET).unwrap();
        assert_eq!(event.forge, Forge::Gitea);
        assert_eq!(event.kind, EventKind::Push);
        assert_eq!(event.repository, "ops/site");
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://git.example.org/ops/site.git")
        );
        assert_eq!(event.git_ref, "refs/heads/develop");
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.branch.as_deref(), Some("develop"));
        assert_eq!(event.tag, None);
        assert_eq!(event.pull_request, None);
        assert!(!event.from_fork);
        // `null` lists next to a non-null one: the commit does say what it changed.
        assert_eq!(event.changed_files.unwrap(), ["templates/footer.html"]);
        assert_eq!(event.message.as_deref(), Some("Fix the footer\n"));
        assert_eq!(event.author.as_deref(), Some("Lin"));
    }

    #[test]
    fn commit_lists_cut_short_say_nothing_about_files() {
        let mut p = push_payload();
        p["total_commits"] = json!(9);
        let event = deliver("push", &bytes(p), SECRET).unwrap();
        assert_eq!(event.changed_files, None);
    }

    #[test]
    fn null_commits_are_no_commits() {
        let mut p = push_payload();
        p["commits"] = Value::Null;
        let event = deliver("push", &bytes(p), SECRET).unwrap();
        assert_eq!(event.changed_files, None);
    }

    #[test]
    fn tag_push() {
        let mut p = push_payload();
        p["ref"] = json!("refs/tags/2025.1");
        p["before"] = json!(ZEROS);
        p["commits"] = Value::Null;
        p["total_commits"] = json!(0);
        let event = deliver("push", &bytes(p), SECRET).unwrap();
        assert_eq!(event.kind, EventKind::Tag);
        assert_eq!(event.tag.as_deref(), Some("2025.1"));
        assert_eq!(event.branch, None);
        assert_eq!(event.git_ref, "refs/tags/2025.1");
        assert_eq!(event.commit, COMMIT_B);
    }

    #[test]
    fn pull_request_from_the_same_repository() {
        let p = pull_request_payload(3, json!({"id": 3, "full_name": "ops/site"}));
        let event = deliver("pull_request", &bytes(p), SECRET).unwrap();
        assert_eq!(event.kind, EventKind::PullRequest);
        assert_eq!(event.repository, "ops/site");
        assert_eq!(event.git_ref, "refs/pull/12/head");
        assert_eq!(event.commit, COMMIT_A);
        assert_eq!(event.branch.as_deref(), Some("develop"));
        assert_eq!(event.pull_request, Some(12));
        assert!(!event.from_fork);
        assert_eq!(event.changed_files, None);
        assert_eq!(event.message.as_deref(), Some("Dark footer"));
        assert_eq!(event.author.as_deref(), Some("kim"));
    }

    #[test]
    fn pull_request_from_a_fork() {
        let p = pull_request_payload(8, json!({"id": 8, "full_name": "kim/site"}));
        let event = deliver("pull_request", &bytes(p), SECRET).unwrap();
        assert!(event.from_fork);
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://git.example.org/ops/site.git")
        );
        // Without ids, the names decide.
        let mut p = pull_request_payload(8, json!({"full_name": "kim/site"}));
        p["pull_request"]["head"]
            .as_object_mut()
            .unwrap()
            .remove("repo_id");
        assert!(
            deliver("pull_request", &bytes(p), SECRET)
                .unwrap()
                .from_fork
        );
    }

    #[test]
    fn pull_request_actions_that_change_no_code_are_ignored() {
        for (action, runs) in [
            ("opened", true),
            ("synchronized", true),
            ("reopened", true),
            ("synchronize", false),
            ("closed", false),
            ("label_updated", false),
        ] {
            let mut p = pull_request_payload(3, json!({"full_name": "ops/site"}));
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
    fn other_events_are_ignored() {
        for event in ["create", "delete", "issues", "release"] {
            let err = deliver(event, b"{}", SECRET).unwrap_err();
            assert_eq!(
                err,
                WebhookError::Ignored {
                    reason: format!("unsupported event {event:?}")
                }
            );
        }
    }

    #[test]
    fn wrong_secret() {
        let err = deliver("push", &bytes(push_payload()), "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::Gitea
            }
        );
        assert_eq!(
            err.to_string(),
            "X-Gitea-Signature does not match the payload (is the webhook secret right?)"
        );
    }

    #[test]
    fn missing_signature() {
        let body = bytes(push_payload());
        // Gitea sends GitHub's signature header too, but its own is the one checked.
        let github_style = format!("sha256={}", sign(SECRET, &body));
        let headers = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-Hub-Signature-256", &github_style),
        ]);
        let err = parse(&headers, &body, SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::MissingSignature {
                header: "X-Gitea-Signature"
            }
        );
    }

    #[test]
    fn body_modified_after_signing() {
        let body = bytes(push_payload());
        let signature = sign(SECRET, &body);
        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let headers = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &signature)]);
        let err = parse(&headers, &tampered, SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::Gitea
            }
        );
    }

    #[test]
    fn a_prefixed_or_non_hex_signature_is_bad() {
        let body = bytes(push_payload());
        for value in [format!("sha256={}", sign(SECRET, &body)), "xyz".into()] {
            let headers = headers(&[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &value)]);
            let err = parse(&headers, &body, SECRET).unwrap_err();
            assert_eq!(
                err,
                WebhookError::BadSignature {
                    forge: Forge::Gitea
                },
                "{value}"
            );
        }
    }

    #[test]
    fn oversized_body_is_refused_before_the_signature_is_checked() {
        let body = oversized();
        let err = deliver("push", &body, "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::TooLarge {
                bytes: MAX_BODY + 1,
                max: MAX_BODY
            }
        );
        let err = parse(&headers(&[("X-Gitea-Event", "push")]), &body, SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn malformed_json_names_the_position() {
        let body = b"{\"ref\": \"refs/heads/main\",, }";
        let err = deliver("push", body, SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed payload: key must be a string at line 1 column 27"
        );
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn branch_deletion_is_ignored() {
        let mut p = push_payload();
        p["after"] = json!(ZEROS);
        p["commits"] = Value::Null;
        p["head_commit"] = Value::Null;
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::Ignored {
                reason: r#""refs/heads/develop" was deleted"#.into()
            }
        );
    }

    #[test]
    fn a_commit_that_is_not_40_hex_is_malformed() {
        let mut p = push_payload();
        p["head_commit"]["id"] = json!(format!("{COMMIT_B}00"));
        let err = deliver("push", &bytes(p), SECRET).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed payload: `head_commit.id` is "),
            "{err}"
        );
        assert_eq!(err.status(), 400);
    }
}
