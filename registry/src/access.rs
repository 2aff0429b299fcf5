//! Who is calling and what they may do. The registry decides which action a
//! request needs; identifying the caller (passwords, API tokens, signed registry
//! tokens) is the server's job, behind [`Authenticator`].

use async_trait::async_trait;
use axum::http::HeaderMap;

use crate::error::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// See the repository's name in `_catalog`, nothing more: what a
    /// `registry:catalog:*` token grants (pulling implies it too). Never
    /// parsed from a requested scope.
    List,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::List => "list",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// A repository pattern: `*` (all), `prefix/*` (everything below a prefix), or an
/// exact name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern(String);

impl RepoPattern {
    pub fn new(pattern: impl Into<String>) -> RepoPattern {
        RepoPattern(pattern.into())
    }

    pub fn all() -> RepoPattern {
        RepoPattern("*".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*`: every repository.
    pub fn is_all(&self) -> bool {
        self.0 == "*"
    }

    pub fn matches(&self, repository: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some("") => true,
            Some(prefix) if prefix.ends_with('/') => repository.starts_with(prefix),
            Some(_) => false,
            None => self.0 == repository,
        }
    }

    /// Every repository `other` matches, this pattern matches too: `a/*`
    /// covers `a/b`, `a/b/*` and `a/*`, not `a`, `b/*` or `*`.
    pub fn covers(&self, other: &RepoPattern) -> bool {
        match (self.0.strip_suffix('*'), other.0.strip_suffix('*')) {
            (Some(""), _) => true,
            (Some(mine), Some(theirs)) if mine.ends_with('/') => {
                theirs.ends_with('/') && theirs.starts_with(mine)
            }
            (Some(_), None) => self.matches(&other.0),
            // `team*` matches nothing, and an exact name no wildcard.
            (Some(_), Some(_)) | (None, Some(_)) => false,
            (None, None) => self.0 == other.0,
        }
    }
}

/// One permission: these actions on repositories matching the pattern.
#[derive(Debug, Clone)]
pub struct Grant {
    pub repositories: RepoPattern,
    pub actions: Vec<Action>,
}

/// How the caller proved who they are. It decides what a refusal looks like: a
/// scoped bearer token that lacks an action gets a 401 challenge (Docker clients
/// then ask for a token with the scope), full credentials get 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerKind {
    Anonymous,
    ScopedToken,
    Credentials,
}

#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Option<String>,
    pub kind: CallerKind,
    pub grants: Vec<Grant>,
}

impl Caller {
    pub fn anonymous(grants: Vec<Grant>) -> Caller {
        Caller {
            name: None,
            kind: CallerKind::Anonymous,
            grants,
        }
    }

    pub fn may(&self, repository: &str, action: Action) -> bool {
        self.grants
            .iter()
            .any(|g| g.actions.contains(&action) && g.repositories.matches(repository))
    }

    /// `_catalog` shows the repositories the caller may pull, or list.
    pub fn may_list(&self, repository: &str) -> bool {
        self.may(repository, Action::Pull) || self.may(repository, Action::List)
    }

    /// `/v2/` and `_catalog` need a caller who may do something at all.
    pub fn may_use_registry(&self) -> bool {
        self.grants.iter().any(|g| !g.actions.is_empty())
    }
}

/// The server's side of access control.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Identify the caller from the request headers. No credentials gives the
    /// anonymous caller (with pull grants when anonymous pull is on); credentials
    /// that are present but wrong are an error.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, RegistryError>;

    /// The `WWW-Authenticate` value asking for a token with `scope`
    /// (e.g. `repository:team/app:pull,push`), or for no scope at all.
    fn challenge(&self, headers: &HeaderMap, scope: Option<&str>, insufficient: bool) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(RepoPattern::all().matches("a/b"));
        assert!(RepoPattern::new("team/*").matches("team/app"));
        assert!(!RepoPattern::new("team/*").matches("teamx/app"));
        assert!(!RepoPattern::new("team/*").matches("team"));
        assert!(RepoPattern::new("team/app").matches("team/app"));
        assert!(!RepoPattern::new("team/app").matches("team/app2"));
        assert!(!RepoPattern::new("team*").matches("team/app"));
    }

    #[test]
    fn covering() {
        let covers = |a: &str, b: &str| RepoPattern::new(a).covers(&RepoPattern::new(b));
        for (a, b) in [
            ("*", "*"),
            ("*", "x/*"),
            ("a/*", "a/*"),
            ("a/*", "a/b"),
            ("a/*", "a/b/*"),
            ("a/b", "a/b"),
        ] {
            assert!(covers(a, b), "{a} covers {b}");
        }
        for (a, b) in [
            ("a/*", "*"),
            ("a/*", "b/*"),
            ("a/*", "a"),
            ("a/*", "ab/*"),
            ("a/*", "a*"),
            ("a/b", "a/b/*"),
            ("a/b", "a/*"),
            ("a/b", "*"),
            ("a*", "a/b"),
        ] {
            assert!(!covers(a, b), "{a} does not cover {b}");
        }
    }
}
