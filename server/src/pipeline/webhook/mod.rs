//! Incoming forge webhooks: [`parse`] checks a delivery's signature and turns its
//! payload into a [`WebhookEvent`], the same shape whichever forge sent it.
//!
//! - `github.rs`, `gitea.rs`, `gitlab.rs`: each forge's headers, signature scheme
//!   and payloads (private serde mirrors of the JSON, never exposed).
//! - here: the domain types, the order of the checks, and what the forges share:
//!   HMAC verification and the validation of what goes on to the scheduler.
//!
//! The checks run cheapest and least trusting first: body size, forge, signature,
//! event type, JSON, fields. Nothing is parsed before the signature holds, and
//! neither the secret nor the body goes into an error message (a field value that
//! fails validation is quoted, cut to a few dozen characters).

mod gitea;
mod github;
mod gitlab;

use std::collections::BTreeSet;
use std::fmt;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Largest payload accepted, checked before anything else.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    Gitea,
    GitLab,
}

impl Forge {
    /// The header that authenticates a delivery.
    pub fn signature_header(self) -> &'static str {
        match self {
            Forge::GitHub => github::SIGNATURE_HEADER,
            Forge::Gitea => gitea::SIGNATURE_HEADER,
            Forge::GitLab => gitlab::TOKEN_HEADER,
        }
    }
}

impl fmt::Display for Forge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Forge::GitHub => "GitHub",
            Forge::Gitea => "Gitea",
            Forge::GitLab => "GitLab",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Push,
    Tag,
    PullRequest,
}

/// One delivery, normalised: what to check out and what `when` conditions see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub forge: Forge,
    pub kind: EventKind,
    /// `owner/name` (GitLab: `group/subgroup/name`).
    pub repository: String,
    /// Where to fetch [`Self::git_ref`] from: for a pull request the base
    /// repository, which also holds the head of a fork's pull request.
    pub clone_url: Option<String>,
    /// `refs/heads/main`, `refs/tags/v1`, or a pull request's head:
    /// `refs/pull/7/head` (GitHub, Gitea), `refs/merge-requests/7/head` (GitLab).
    pub git_ref: String,
    /// 40 lowercase hex digits: the pushed commit (for a tag, the commit it
    /// points at), or a pull request's head commit.
    pub commit: String,
    /// The pushed branch; for a pull request the branch it targets.
    pub branch: Option<String>,
    pub tag: Option<String>,
    /// The pull (GitLab: merge) request's number within its repository.
    pub pull_request: Option<u64>,
    /// The pull request's head lives in another repository than its base. When
    /// the payload cannot tell (a deleted fork), it counts as a fork: the side
    /// that withholds secrets.
    pub from_fork: bool,
    /// Files added, modified or removed by the pushed commits, sorted. `None`
    /// when the forge does not say: pull requests, pushes listing no commits,
    /// and lists the forge cut short.
    pub changed_files: Option<Vec<String>>,
    /// The head commit's message; a pull request's title.
    pub message: Option<String>,
    /// The head commit's author (else the pusher); a pull request's author.
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("payload is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "none of the headers X-GitHub-Event, X-Gitea-Event, X-Gitlab-Event is set: \
         not a webhook from GitHub, Gitea or GitLab"
    )]
    UnknownForge,
    #[error(
        "{header} header is missing: set a secret on the webhook, unsigned deliveries are refused"
    )]
    MissingSignature { header: &'static str },
    #[error("{}", signature_mismatch(.forge))]
    BadSignature { forge: Forge },
    #[error("malformed payload: {detail}")]
    Malformed { detail: String },
    /// Authentic, but nothing to run (a ping, a deletion, a closed pull request).
    #[error("{reason}")]
    Ignored { reason: String },
}

fn signature_mismatch(forge: &Forge) -> String {
    let header = forge.signature_header();
    match forge {
        // A token is the secret itself, not a signature of the payload.
        Forge::GitLab => format!("{header} is not the webhook secret (is the secret right?)"),
        Forge::GitHub | Forge::Gitea => {
            format!("{header} does not match the payload (is the webhook secret right?)")
        }
    }
}

impl WebhookError {
    /// The HTTP status a handler should answer with. Ignored deliveries get a
    /// success status so that forges do not mark the hook as failing.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::TooLarge { .. } => 413,
            WebhookError::MissingSignature { .. } | WebhookError::BadSignature { .. } => 401,
            WebhookError::UnknownForge | WebhookError::Malformed { .. } => 400,
            WebhookError::Ignored { .. } => 202,
        }
    }
}

/// Authenticate and normalise one delivery. `secret` is the webhook's secret as
/// configured on the forge; it must not be empty (anyone can sign with an empty
/// key), which the caller guarantees by generating one per repository.
pub fn parse(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<WebhookEvent, WebhookError> {
    if body.len() > MAX_BODY {
        return Err(WebhookError::TooLarge {
            bytes: body.len(),
            max: MAX_BODY,
        });
    }
    let forge = detect(headers)?;
    match forge {
        Forge::GitHub => github::verify(headers, body, secret)?,
        Forge::Gitea => gitea::verify(headers, body, secret)?,
        Forge::GitLab => gitlab::verify(headers, secret)?,
    }
    match forge {
        Forge::GitHub => github::parse(event_name(headers, github::EVENT_HEADER)?, body),
        Forge::Gitea => gitea::parse(event_name(headers, gitea::EVENT_HEADER)?, body),
        Forge::GitLab => gitlab::parse(event_name(headers, gitlab::EVENT_HEADER)?, body),
    }
}

/// Which forge sent the delivery, by its event header. Gitea also sends GitHub's
/// headers (`X-GitHub-Event`, `X-Hub-Signature-256`) for compatibility, and
/// Forgejo sends Gitea's, so Gitea has to be recognised before GitHub.
fn detect(headers: &HeaderMap) -> Result<Forge, WebhookError> {
    [
        (gitea::EVENT_HEADER, Forge::Gitea),
        (gitlab::EVENT_HEADER, Forge::GitLab),
        (github::EVENT_HEADER, Forge::GitHub),
    ]
    .into_iter()
    .find(|(header, _)| headers.contains_key(*header))
    .map(|(_, forge)| forge)
    .ok_or(WebhookError::UnknownForge)
}

fn event_name<'h>(headers: &'h HeaderMap, header: &'static str) -> Result<&'h str, WebhookError> {
    headers
        .get(header)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| WebhookError::Malformed {
            detail: format!("the {header} header is not visible ASCII"),
        })
}

fn unsupported(event: &str) -> WebhookError {
    WebhookError::Ignored {
        reason: format!("unsupported event {}", quoted(event)),
    }
}

// --- Signatures ---

type HmacSha256 = Hmac<Sha256>;

/// The value of a signature header; a value that is not text cannot match.
fn signature_value(headers: &HeaderMap, forge: Forge) -> Result<&str, WebhookError> {
    let header = forge.signature_header();
    headers
        .get(header)
        .ok_or(WebhookError::MissingSignature { header })?
        .to_str()
        .map_err(|_| WebhookError::BadSignature { forge })
}

/// Check `hex_tag`, a hex HMAC-SHA256 of `body` keyed with `secret`, in constant
/// time. Malformed hex is a mismatch like any other.
fn verify_hmac(forge: Forge, hex_tag: &str, body: &[u8], secret: &str) -> Result<(), WebhookError> {
    let bad = WebhookError::BadSignature { forge };
    let tag = hex::decode(hex_tag).map_err(|_| bad.clone())?;
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    // `verify_slice` compares in constant time and refuses a tag of the wrong length.
    mac.verify_slice(&tag).map_err(|_| bad)
}

/// Whether `given` equals `secret`, in time that depends on neither their
/// contents nor the secret's length: both are MACed under one fixed key, and
/// the tags compared in constant time (equal tags mean equal inputs).
fn same_token(given: &str, secret: &str) -> bool {
    const KEY: &[u8] = b"slipway webhook token comparison";
    let tag = |value: &str| {
        let mut mac = HmacSha256::new_from_slice(KEY).expect("HMAC takes keys of any length");
        mac.update(value.as_bytes());
        mac
    };
    let expected = tag(secret).finalize().into_bytes();
    tag(given).verify_slice(&expected).is_ok()
}

// --- Payload parts the forges share ---

/// A pushed commit. GitHub's shape, which Gitea copies and GitLab matches for
/// these fields. The file lists are `Option`s because Gitea sends `null` for an
/// empty list, and older Gitea and GitLab versions leave them out.
#[derive(Debug, Deserialize)]
struct PushCommit {
    id: String,
    message: Option<String>,
    author: Option<Person>,
    added: Option<Vec<String>>,
    modified: Option<Vec<String>>,
    removed: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Person {
    name: Option<String>,
}

impl PushCommit {
    fn author_name(&self) -> Option<String> {
        self.author.as_ref().and_then(|a| non_empty(a.name.clone()))
    }
}

/// The union of the commits' file lists, sorted; `None` when that would not be
/// every changed file: no commits listed (a new branch at an existing commit, a
/// tag), a list the forge cut short (`complete` false), or a commit that carries
/// no file lists. `None` lets `paths` conditions pass, an empty list would not.
fn changed_files(commits: &[PushCommit], complete: bool) -> Option<Vec<String>> {
    if commits.is_empty() || !complete {
        return None;
    }
    let mut files = BTreeSet::new();
    for commit in commits {
        let lists = [&commit.added, &commit.modified, &commit.removed];
        if lists.iter().all(|list| list.is_none()) {
            return None;
        }
        files.extend(lists.into_iter().flatten().flatten().cloned());
    }
    Some(files.into_iter().collect())
}

/// Deserialize a payload; serde's message names the line and column.
fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde quotes the offending value ("invalid type: string \"...\""), which
        // may be long: keep the message short and the position intact.
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(position.as_str()).unwrap_or(&full);
        let position = if e.line() == 0 { "" } else { position.as_str() };
        WebhookError::Malformed {
            detail: format!("{}{position}", truncate(message, 120)),
        }
    })
}

// --- Validation of what goes on to the scheduler ---
// `field` is where the value came from in the payload, e.g. `head_commit.id`.

fn malformed(field: &str, value: &str, problem: &str) -> WebhookError {
    WebhookError::Malformed {
        detail: format!("`{field}` is {}, {problem}", quoted(value)),
    }
}

/// A commit id: 40 lowercase hex digits (SHA-1; no forge here serves SHA-256
/// repositories over webhooks yet).
fn commit_id(field: &str, value: &str) -> Result<String, WebhookError> {
    let hex = value.len() == 40
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex {
        Ok(value.to_owned())
    } else {
        Err(malformed(
            field,
            value,
            "not a commit id (40 lowercase hex digits)",
        ))
    }
}

/// A full ref name: `refs/...`, without what `git check-ref-format` forbids in
/// any ref (control characters, space, `~^:?*[\`, `..`), as it goes to git.
fn git_ref(field: &str, value: &str) -> Result<String, WebhookError> {
    let problem = if !value.starts_with("refs/") || value.len() == "refs/".len() {
        Some("not a full ref name (refs/...)")
    } else if value
        .chars()
        .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
        || value.contains("..")
        || value.ends_with('/')
    {
        Some("not a valid ref name")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(malformed(field, value, problem)),
        None => Ok(value.to_owned()),
    }
}

/// A repository path: `owner/name`, or `group/subgroup/name` on GitLab.
fn repository(field: &str, value: &str) -> Result<String, WebhookError> {
    let parts: Vec<&str> = value.split('/').collect();
    if parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_control))
    {
        Ok(value.to_owned())
    } else if value.is_empty() {
        Err(WebhookError::Malformed {
            detail: format!("`{field}` is empty"),
        })
    } else {
        Err(malformed(field, value, "not of the form owner/name"))
    }
}

/// What a push to `git_ref` (already validated) is about: a branch or a tag. A
/// push to any other ref (notes, a forge's own refs) is ignored.
struct PushTarget {
    kind: EventKind,
    branch: Option<String>,
    tag: Option<String>,
}

fn push_target(field: &str, git_ref: &str) -> Result<PushTarget, WebhookError> {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        Ok(PushTarget {
            kind: EventKind::Push,
            branch: Some(branch.to_owned()),
            tag: None,
        })
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        Ok(PushTarget {
            kind: EventKind::Tag,
            branch: None,
            tag: Some(tag.to_owned()),
        })
    } else {
        Err(WebhookError::Ignored {
            reason: format!(
                "`{field}` {} is neither a branch nor a tag",
                quoted(git_ref)
            ),
        })
    }
}

/// An id of all zeros: the "before" of a creation, the "after" of a deletion.
fn is_zero_id(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b == b'0')
}

fn deleted(git_ref: &str) -> WebhookError {
    WebhookError::Ignored {
        reason: format!("{} was deleted", quoted(git_ref)),
    }
}

fn pull_request_action(action: &str) -> WebhookError {
    WebhookError::Ignored {
        reason: format!(
            "pull request action {} does not change the code",
            quoted(action)
        ),
    }
}

/// A PR's head ref, as the forge stores it in the base repository.
fn pull_ref(prefix: &str, number: u64, field: &str) -> Result<String, WebhookError> {
    if number == 0 {
        return Err(WebhookError::Malformed {
            detail: format!("`{field}` is 0, not a pull request number"),
        });
    }
    Ok(format!("{prefix}{number}/head"))
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// An untrusted string for a message: quoted, escaped, and cut short.
fn quoted(value: &str) -> String {
    format!("{:?}", truncate(value, 64))
}

fn truncate(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};
    use insta::assert_snapshot;

    use super::*;

    pub(super) const SECRET: &str = "hunter2-but-longer";
    pub(super) const COMMIT_A: &str = "1111111111111111111111111111111111111111";
    pub(super) const COMMIT_B: &str = "abcdef0123456789abcdef0123456789abcdef01";
    pub(super) const ZEROS: &str = "0000000000000000000000000000000000000000";

    /// A hex HMAC-SHA256 of `body`, as forges sign deliveries.
    pub(super) fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    pub(super) fn json(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec_pretty(&value).unwrap()
    }

    /// Larger than accepted, and not JSON at all.
    pub(super) fn oversized() -> Vec<u8> {
        vec![b'x'; MAX_BODY + 1]
    }

    #[test]
    fn a_delivery_from_no_known_forge_is_refused() {
        let err = parse(&headers(&[("X-Event", "push")]), b"{}", SECRET).unwrap_err();
        assert_eq!(err, WebhookError::UnknownForge);
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn gitea_is_recognised_although_it_also_sends_github_headers() {
        let body = json(serde_json::json!({
            "ref": "refs/heads/main",
            "after": COMMIT_A,
            "repository": {"full_name": "ops/site"},
        }));
        let sig = sign(SECRET, &body);
        let both = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", &format!("sha256={sig}")),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", &sig),
        ]);
        assert_eq!(parse(&both, &body, SECRET).unwrap().forge, Forge::Gitea);
    }

    #[test]
    fn the_size_is_checked_before_the_forge() {
        let err = parse(&HeaderMap::new(), &oversized(), SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::TooLarge { .. }), "{err:?}");
        // Exactly the maximum is fine (and then fails later, for lack of a forge).
        let err = parse(&HeaderMap::new(), &vec![b' '; MAX_BODY], SECRET).unwrap_err();
        assert_eq!(err, WebhookError::UnknownForge);
    }

    #[test]
    fn statuses() {
        let cases = [
            (WebhookError::TooLarge { bytes: 2, max: 1 }, 413),
            (WebhookError::MissingSignature { header: "X" }, 401),
            (
                WebhookError::BadSignature {
                    forge: Forge::GitHub,
                },
                401,
            ),
            (WebhookError::Malformed { detail: "x".into() }, 400),
            (WebhookError::UnknownForge, 400),
            (WebhookError::Ignored { reason: "x".into() }, 202),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err:?}");
        }
    }

    #[test]
    fn messages() {
        let msg = |e: WebhookError| e.to_string();
        assert_snapshot!(
            msg(WebhookError::TooLarge { bytes: 2_000_000, max: MAX_BODY }),
            @"payload is 2000000 bytes; at most 1048576 are accepted"
        );
        assert_snapshot!(
            msg(WebhookError::BadSignature { forge: Forge::GitHub }),
            @"X-Hub-Signature-256 does not match the payload (is the webhook secret right?)"
        );
        assert_snapshot!(
            msg(WebhookError::BadSignature { forge: Forge::Gitea }),
            @"X-Gitea-Signature does not match the payload (is the webhook secret right?)"
        );
        assert_snapshot!(
            msg(WebhookError::BadSignature { forge: Forge::GitLab }),
            @"X-Gitlab-Token is not the webhook secret (is the secret right?)"
        );
        assert_snapshot!(
            msg(WebhookError::MissingSignature { header: "X-Hub-Signature-256" }),
            @"X-Hub-Signature-256 header is missing: set a secret on the webhook, unsigned deliveries are refused"
        );
        assert_snapshot!(msg(unsupported("issues")), @r#"unsupported event "issues""#);
        assert_snapshot!(
            msg(commit_id("head_commit.id", "abc").unwrap_err()),
            @r#"malformed payload: `head_commit.id` is "abc", not a commit id (40 lowercase hex digits)"#
        );
        assert_snapshot!(msg(WebhookError::UnknownForge), @"none of the headers X-GitHub-Event, X-Gitea-Event, X-Gitlab-Event is set: not a webhook from GitHub, Gitea or GitLab");
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cre", "s3cret"));
        assert!(!same_token("s3cret!", "s3cret"));
        assert!(!same_token("S3cret", "s3cret"));
        assert!(!same_token("", "s3cret"));
    }

    #[test]
    fn hmac_verification() {
        let sig = sign(SECRET, b"body");
        assert_eq!(verify_hmac(Forge::Gitea, &sig, b"body", SECRET), Ok(()));
        // Hex digits in upper case are the same signature.
        assert_eq!(
            verify_hmac(Forge::Gitea, &sig.to_uppercase(), b"body", SECRET),
            Ok(())
        );
        let bad = Err(WebhookError::BadSignature {
            forge: Forge::Gitea,
        });
        assert_eq!(verify_hmac(Forge::Gitea, &sig[..62], b"body", SECRET), bad);
        assert_eq!(verify_hmac(Forge::Gitea, "zz", b"body", SECRET), bad);
        assert_eq!(verify_hmac(Forge::Gitea, "", b"body", SECRET), bad);
    }

    fn commit(id: &str, added: Option<&[&str]>, modified: Option<&[&str]>) -> PushCommit {
        let list =
            |files: Option<&[&str]>| files.map(|f| f.iter().map(|s| s.to_string()).collect());
        PushCommit {
            id: id.into(),
            message: None,
            author: None,
            added: list(added),
            modified: list(modified),
            removed: None,
        }
    }

    #[test]
    fn changed_files_is_a_sorted_union_or_unknown() {
        let two = [
            commit(COMMIT_A, Some(&["src/b.rs", "README.md"]), None),
            commit(COMMIT_B, Some(&[]), Some(&["src/b.rs", "Cargo.toml"])),
        ];
        assert_eq!(
            changed_files(&two, true),
            Some(vec![
                "Cargo.toml".into(),
                "README.md".into(),
                "src/b.rs".into()
            ])
        );
        assert_eq!(changed_files(&two, false), None, "cut short by the forge");
        assert_eq!(changed_files(&[], true), None, "no commits listed");
        let silent = [
            commit(COMMIT_A, Some(&["a"]), None),
            commit(COMMIT_B, None, None),
        ];
        assert_eq!(changed_files(&silent, true), None, "a commit without lists");
    }

    #[test]
    fn commit_ids_are_40_lowercase_hex_digits() {
        assert!(commit_id("f", COMMIT_B).is_ok());
        assert!(commit_id("f", &COMMIT_B.to_uppercase()).is_err());
        assert!(commit_id("f", &COMMIT_B[..39]).is_err());
        assert!(commit_id("f", &format!("{COMMIT_B}{COMMIT_B}")[..64]).is_err());
        assert!(commit_id("f", "").is_err());
        assert!(commit_id("f", &"g".repeat(40)).is_err());
    }

    #[test]
    fn refs_are_full_and_valid() {
        assert!(git_ref("f", "refs/heads/feature/x-1").is_ok());
        for bad in [
            "main",
            "refs/",
            "",
            "refs/heads/a b",
            "refs/heads/../x",
            "refs/heads/a\n",
            "refs/heads/",
        ] {
            assert!(git_ref("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repositories_are_paths_with_an_owner() {
        assert!(repository("f", "ops/site").is_ok());
        assert!(repository("f", "group/sub/site").is_ok());
        for bad in ["", "site", "ops/", "/site", "ops//site"] {
            assert!(repository("f", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn json_errors_name_the_position_and_stay_short() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Number {
            n: u64,
        }
        let long = format!(r#"{{"n": "{}"}}"#, "y".repeat(10_000));
        let WebhookError::Malformed { detail } = from_json::<Number>(long.as_bytes()).unwrap_err()
        else {
            panic!("not Malformed")
        };
        assert!(detail.len() < 200, "{detail}");
        assert!(detail.ends_with("at line 1 column 10008"), "{detail}");
    }

    #[test]
    fn untrusted_text_is_quoted_and_cut() {
        assert_eq!(quoted("a\"b\n"), r#""a\"b\n""#);
        assert_eq!(
            quoted(&"é".repeat(100)),
            format!("{:?}", format!("{}...", "é".repeat(64)))
        );
    }
}
