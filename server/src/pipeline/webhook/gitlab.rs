//! GitLab: `X-Gitlab-Event` names the event ("Push Hook", "Tag Push Hook",
//! "Merge Request Hook"), and `X-Gitlab-Token` carries the secret itself: GitLab
//! does not sign the body, so the token is compared, in constant time.

use axum::http::HeaderMap;
use serde::Deserialize;

use super::{
    changed_files, commit_id, deleted, from_json, git_ref, is_zero_id, non_empty, pull_ref,
    pull_request_action, push_target, repository, same_token, signature_value, unsupported,
    EventKind, Forge, PushCommit, WebhookError, WebhookEvent,
};

pub(super) const EVENT_HEADER: &str = "X-Gitlab-Event";
pub(super) const TOKEN_HEADER: &str = "X-Gitlab-Token";

pub(super) fn verify(headers: &HeaderMap, secret: &str) -> Result<(), WebhookError> {
    let token = signature_value(headers, Forge::GitLab)?;
    if same_token(token, secret) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature {
            forge: Forge::GitLab,
        })
    }
}

pub(super) fn parse(event: &str, body: &[u8]) -> Result<WebhookEvent, WebhookError> {
    match event {
        // GitLab, unlike GitHub and Gitea, has its own event for tags; both
        // carry the same payload (`object_kind` "push" or "tag_push").
        "Push Hook" | "Tag Push Hook" => push(from_json(body)?),
        "Merge Request Hook" => merge_request(from_json(body)?),
        _ => Err(unsupported(event)),
    }
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    /// All zeros when the ref was deleted. For an annotated tag, the tag object.
    after: Option<String>,
    /// The commit to check out: for a tag, the commit it points at; `null` when
    /// the ref was deleted.
    checkout_sha: Option<String>,
    /// An annotated tag's message (push events have none).
    message: Option<String>,
    user_name: Option<String>,
    project: Project,
    commits: Option<Vec<PushCommit>>,
    /// How many commits were pushed; `commits` lists at most 20 of them.
    total_commits_count: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Project {
    path_with_namespace: String,
    git_http_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeRequestEvent {
    user: Option<User>,
    /// The target project.
    project: Project,
    object_attributes: MergeRequest,
}

#[derive(Debug, Deserialize)]
struct User {
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeRequest {
    /// The number within the project (`id` is global).
    iid: u64,
    action: String,
    title: Option<String>,
    target_branch: String,
    source_project_id: Option<u64>,
    target_project_id: Option<u64>,
    source: Option<Project>,
    last_commit: LastCommit,
    /// Only present on an "update" that changed the code (new commits pushed, a
    /// suggestion applied); other updates edit the title, labels, reviewers...
    oldrev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LastCommit {
    id: String,
}

fn push(p: Push) -> Result<WebhookEvent, WebhookError> {
    // A deletion shows as `after` all zeros and `checkout_sha` null.
    let gone = |sha: &Option<String>| sha.as_deref().is_none_or(is_zero_id);
    if gone(&p.after) || gone(&p.checkout_sha) {
        return Err(deleted(&p.git_ref));
    }
    let repository = repository(
        "project.path_with_namespace",
        &p.project.path_with_namespace,
    )?;
    let git_ref = git_ref("ref", &p.git_ref)?;
    let target = push_target("ref", &git_ref)?;
    let commit = commit_id(
        "checkout_sha",
        p.checkout_sha.as_deref().unwrap_or_default(),
    )?;
    let commits = p.commits.unwrap_or_default();
    let complete = p
        .total_commits_count
        .is_none_or(|total| total <= commits.len());
    let changed_files = changed_files(&commits, complete);
    // GitLab has no `head_commit`; the head is the listed commit with that id.
    let head = commits.iter().find(|c| c.id == commit);
    Ok(WebhookEvent {
        forge: Forge::GitLab,
        kind: target.kind,
        repository,
        clone_url: non_empty(p.project.git_http_url),
        git_ref,
        commit,
        branch: target.branch,
        tag: target.tag,
        pull_request: None,
        from_fork: false,
        changed_files,
        message: head
            .and_then(|c| non_empty(c.message.clone()))
            .or_else(|| non_empty(p.message)),
        author: head
            .and_then(PushCommit::author_name)
            .or_else(|| non_empty(p.user_name)),
    })
}

fn merge_request(e: MergeRequestEvent) -> Result<WebhookEvent, WebhookError> {
    let mr = e.object_attributes;
    let runs = match mr.action.as_str() {
        "open" | "reopen" => true,
        "update" => mr.oldrev.as_deref().is_some_and(|rev| !rev.is_empty()),
        _ => false,
    };
    if !runs {
        return Err(match mr.action.as_str() {
            "update" => WebhookError::Ignored {
                reason: "merge request update without new commits".into(),
            },
            action => pull_request_action(action),
        });
    }
    let repository = repository(
        "project.path_with_namespace",
        &e.project.path_with_namespace,
    )?;
    let commit = commit_id("object_attributes.last_commit.id", &mr.last_commit.id)?;
    let git_ref = pull_ref("refs/merge-requests/", mr.iid, "object_attributes.iid")?;
    // Compare project ids where both are given, else paths; what cannot be told
    // apart counts as a fork.
    let from_fork = match (mr.source_project_id, mr.target_project_id) {
        (Some(source), Some(target)) => source != target,
        _ => mr
            .source
            .as_ref()
            .is_none_or(|source| source.path_with_namespace != e.project.path_with_namespace),
    };
    Ok(WebhookEvent {
        forge: Forge::GitLab,
        kind: EventKind::PullRequest,
        repository,
        clone_url: non_empty(e.project.git_http_url),
        git_ref,
        commit,
        branch: non_empty(Some(mr.target_branch)),
        tag: None,
        pull_request: Some(mr.iid),
        from_fork,
        changed_files: None,
        message: non_empty(mr.title),
        author: non_empty(e.user.and_then(|u| u.username)),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::tests::{
        headers, json as bytes, oversized, COMMIT_A, COMMIT_B, SECRET, ZEROS,
    };
    use super::super::{parse, EventKind, Forge, WebhookError, MAX_BODY};

    fn deliver(event: &str, body: &[u8], token: &str) -> Result<super::WebhookEvent, WebhookError> {
        parse(
            &headers(&[("X-Gitlab-Event", event), ("X-Gitlab-Token", token)]),
            body,
            SECRET,
        )
    }

    fn project(path: &str) -> Value {
        json!({
            "id": 5,
            "name": "api",
            "path_with_namespace": path,
            "git_http_url": format!("https://gitlab.example.com/{path}.git"),
            "git_ssh_url": format!("git@gitlab.example.com:{path}.git"),
            "default_branch": "main"
        })
    }

    fn push_payload() -> Value {
        json!({
            "object_kind": "push",
            "event_name": "push",
            "before": COMMIT_A,
            "after": COMMIT_B,
            "ref": "refs/heads/main",
            "checkout_sha": COMMIT_B,
            "message": null,
            "user_name": "Sam Doe",
            "user_username": "sam",
            "project_id": 5,
            "project": project("platform/backend/api"),
            "commits": [
                {
                    "id": COMMIT_A,
                    "message": "Bump deps\n",
                    "title": "Bump deps",
                    "author": {"name": "Sam Doe", "email": "sam@example.com"},
                    "added": [],
                    "modified": ["Cargo.lock"],
                    "removed": []
                },
                {
                    "id": COMMIT_B,
                    "message": "Add health check\n",
                    "title": "Add health check",
                    "author": {"name": "Ana Lee", "email": "ana@example.com"},
                    "added": ["src/health.rs"],
                    "modified": ["src/main.rs"],
                    "removed": []
                }
            ],
            "total_commits_count": 2
        })
    }

    fn merge_request_payload(source_project_id: u64) -> Value {
        json!({
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {"name": "Ana Lee", "username": "ana"},
            "project": project("platform/backend/api"),
            "object_attributes": {
                "id": 90210,
                "iid": 31,
                "action": "open",
                "title": "Health check endpoint",
                "state": "opened",
                "source_branch": "health",
                "target_branch": "main",
                "source_project_id": source_project_id,
                "target_project_id": 5,
                "source": project("platform/backend/api"),
                "target": project("platform/backend/api"),
                "last_commit": {
                    "id": COMMIT_B,
                    "message": "Add health check\n",
                    "author": {"name": "Ana Lee", "email": "ana@example.com"}
                }
            }
        })
    }

    #[test]
    fn push() {
        let event = deliver("Push Hook", &bytes(push_payload()), SECRET).unwrap();
        assert_eq!(event.forge, Forge::GitLab);
        assert_eq!(event.kind, EventKind::Push);
        assert_eq!(event.repository, "platform/backend/api");
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://gitlab.example.com/platform/backend/api.git")
        );
        assert_eq!(event.git_ref, "refs/heads/main");
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.branch.as_deref(), Some("main"));
        assert_eq!(event.tag, None);
        assert_eq!(event.pull_request, None);
        assert!(!event.from_fork);
        assert_eq!(
            event.changed_files.unwrap(),
            ["Cargo.lock", "src/health.rs", "src/main.rs"]
        );
        assert_eq!(event.message.as_deref(), Some("Add health check\n"));
        assert_eq!(event.author.as_deref(), Some("Ana Lee"));
    }

    #[test]
    fn more_commits_than_listed_say_nothing_about_files() {
        let mut p = push_payload();
        p["total_commits_count"] = json!(35);
        let event = deliver("Push Hook", &bytes(p), SECRET).unwrap();
        assert_eq!(event.changed_files, None);
    }

    #[test]
    fn tag_push() {
        let p = json!({
            "object_kind": "tag_push",
            "before": ZEROS,
            // An annotated tag: `after` is the tag object, `checkout_sha` its commit.
            "after": "9999999999999999999999999999999999999999",
            "ref": "refs/tags/v2.0.0",
            "checkout_sha": COMMIT_A,
            "message": "Release 2.0",
            "user_name": "Sam Doe",
            "project": project("platform/backend/api"),
            "commits": [],
            "total_commits_count": 0
        });
        let event = deliver("Tag Push Hook", &bytes(p), SECRET).unwrap();
        assert_eq!(event.kind, EventKind::Tag);
        assert_eq!(event.git_ref, "refs/tags/v2.0.0");
        assert_eq!(event.tag.as_deref(), Some("v2.0.0"));
        assert_eq!(event.branch, None);
        assert_eq!(event.commit, COMMIT_A);
        assert_eq!(event.changed_files, None);
        assert_eq!(event.message.as_deref(), Some("Release 2.0"));
        assert_eq!(event.author.as_deref(), Some("Sam Doe"));
    }

    #[test]
    fn merge_request_from_the_same_project() {
        let event = deliver(
            "Merge Request Hook",
            &bytes(merge_request_payload(5)),
            SECRET,
        )
        .unwrap();
        assert_eq!(event.kind, EventKind::PullRequest);
        assert_eq!(event.repository, "platform/backend/api");
        assert_eq!(event.git_ref, "refs/merge-requests/31/head");
        assert_eq!(event.commit, COMMIT_B);
        assert_eq!(event.branch.as_deref(), Some("main"));
        assert_eq!(event.pull_request, Some(31));
        assert!(!event.from_fork);
        assert_eq!(event.changed_files, None);
        assert_eq!(event.message.as_deref(), Some("Health check endpoint"));
        assert_eq!(event.author.as_deref(), Some("ana"));
    }

    #[test]
    fn merge_request_from_a_fork() {
        let mut p = merge_request_payload(77);
        p["object_attributes"]["source"] = project("ana/api");
        let event = deliver("Merge Request Hook", &bytes(p.clone()), SECRET).unwrap();
        assert!(event.from_fork);
        assert_eq!(
            event.clone_url.as_deref(),
            Some("https://gitlab.example.com/platform/backend/api.git")
        );
        // Without project ids, the paths decide.
        p["object_attributes"]
            .as_object_mut()
            .unwrap()
            .remove("source_project_id");
        assert!(
            deliver("Merge Request Hook", &bytes(p), SECRET)
                .unwrap()
                .from_fork
        );
    }

    #[test]
    fn merge_request_actions_that_change_no_code_are_ignored() {
        for (action, oldrev, runs) in [
            ("open", None, true),
            ("reopen", None, true),
            ("update", Some(COMMIT_A), true),
            ("update", None, false),
            ("close", None, false),
            ("merge", None, false),
            ("approved", None, false),
        ] {
            let mut p = merge_request_payload(5);
            p["object_attributes"]["action"] = json!(action);
            if let Some(oldrev) = oldrev {
                p["object_attributes"]["oldrev"] = json!(oldrev);
            }
            let result = deliver("Merge Request Hook", &bytes(p), SECRET);
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
        for event in ["Issue Hook", "Note Hook", "Pipeline Hook", "System Hook"] {
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
    fn wrong_token() {
        for token in ["not-the-secret", &SECRET[1..], &format!("{SECRET} ")] {
            let err = deliver("Push Hook", &bytes(push_payload()), token).unwrap_err();
            assert_eq!(
                err,
                WebhookError::BadSignature {
                    forge: Forge::GitLab
                },
                "{token:?}"
            );
            assert_eq!(err.status(), 401);
        }
    }

    #[test]
    fn missing_token() {
        let err = parse(
            &headers(&[("X-Gitlab-Event", "Push Hook")]),
            &bytes(push_payload()),
            SECRET,
        )
        .unwrap_err();
        assert_eq!(
            err,
            WebhookError::MissingSignature {
                header: "X-Gitlab-Token"
            }
        );
    }

    #[test]
    fn body_modified_in_transit_is_not_detected() {
        // GitLab does not sign the body: the token authenticates the sender only
        // (TLS protects the body). This pins that down, rather than pretending.
        let body = String::from_utf8(bytes(push_payload()))
            .unwrap()
            .replace("Bump deps", "Bump deps!");
        assert!(deliver("Push Hook", body.as_bytes(), SECRET).is_ok());
    }

    #[test]
    fn oversized_body_is_refused_before_the_token_is_checked() {
        let err = deliver("Push Hook", &oversized(), "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::TooLarge {
                bytes: MAX_BODY + 1,
                max: MAX_BODY
            }
        );
    }

    #[test]
    fn malformed_json_names_the_position() {
        let err = deliver("Push Hook", b"{\"ref\": \"refs/heads/main\"", SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed payload: EOF while parsing an object at line 1 column 25"
        );
        // The token comes first.
        let err = deliver("Push Hook", b"{", "not-the-secret").unwrap_err();
        assert_eq!(
            err,
            WebhookError::BadSignature {
                forge: Forge::GitLab
            }
        );
    }

    #[test]
    fn branch_deletion_is_ignored() {
        let mut p = push_payload();
        p["after"] = json!(ZEROS);
        p["checkout_sha"] = Value::Null;
        p["commits"] = json!([]);
        p["total_commits_count"] = json!(0);
        let err = deliver("Push Hook", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err,
            WebhookError::Ignored {
                reason: r#""refs/heads/main" was deleted"#.into()
            }
        );
        assert_eq!(err.status(), 202);
    }

    #[test]
    fn a_commit_that_is_not_40_hex_is_malformed() {
        let mut p = push_payload();
        p["checkout_sha"] = json!("not-a-sha");
        let err = deliver("Push Hook", &bytes(p), SECRET).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"malformed payload: `checkout_sha` is "not-a-sha", not a commit id (40 lowercase hex digits)"#
        );
        let mut p = merge_request_payload(5);
        p["object_attributes"]["last_commit"]["id"] = json!(&COMMIT_B[..12]);
        let err = deliver("Merge Request Hook", &bytes(p), SECRET).unwrap_err();
        assert!(
            err.to_string()
                .contains("`object_attributes.last_commit.id`"),
            "{err}"
        );
    }
}
