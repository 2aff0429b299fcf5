//! Authentication for every route: users with passwords, API tokens, and the
//! registry's signed tokens.
//!
//! - [`Auth::principal`] turns `Authorization` credentials (Basic user:password,
//!   Basic any:API-token, Bearer API-token) into a [`Principal`]; the REST API
//!   and the token endpoint use it.
//! - `registry_auth` implements the registry's `Authenticator` on top of it, plus
//!   the scoped bearer tokens `token_endpoint` issues.

pub mod api_tokens;
pub mod password;
pub mod registry_auth;
pub mod registry_token;
pub mod sessions;
pub mod token_endpoint;
pub mod users;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use base64::Engine;
use sha2::{Digest, Sha256};
use slipway_registry::access::{Action, Grant, RepoPattern};
use sqlx::SqlitePool;

use self::registry_token::RegistryTokens;
use self::users::{Role, User};

/// What an API token (or a password session) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pull,
    Push,
    Delete,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Pull, Scope::Push, Scope::Delete, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pull => "pull",
            Scope::Push => "push",
            Scope::Delete => "delete",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    fn action(self) -> Option<Action> {
        match self {
            Scope::Pull => Some(Action::Pull),
            Scope::Push => Some(Action::Push),
            Scope::Delete => Some(Action::Delete),
            Scope::Admin => None,
        }
    }
}

/// An authenticated user and what this credential lets them do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    pub scopes: Vec<Scope>,
    pub repositories: RepoPattern,
}

impl Principal {
    /// A user signed in with their password (or a web session): everything
    /// their role allows.
    pub fn with_password(user: User) -> Principal {
        let scopes = Scope::ALL
            .into_iter()
            .filter(|s| user.role.allows(*s))
            .collect();
        Principal {
            user,
            scopes,
            repositories: RepoPattern::all(),
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin && self.has(Scope::Admin)
    }

    pub fn grants(&self) -> Vec<Grant> {
        vec![Grant {
            repositories: self.repositories.clone(),
            actions: self.scopes.iter().filter_map(|s| s.action()).collect(),
        }]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadPassword,
    #[error("invalid or expired API token")]
    BadToken,
    #[error("malformed Authorization header")]
    Malformed,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Credentials as sent in `Authorization`.
pub enum Credentials {
    Basic { username: String, password: String },
    Bearer(String),
}

pub fn credentials(headers: &HeaderMap) -> Result<Option<Credentials>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (username, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        Ok(Some(Credentials::Basic {
            username: username.to_owned(),
            password: password.to_owned(),
        }))
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(Credentials::Bearer(rest.trim().to_owned())))
    } else {
        Err(AuthError::Malformed)
    }
}

/// A repository pattern as people write it (tokens, pull allowlists, runner
/// limits): `*`, `prefix/*` or a repository name.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    slipway_registry::name::check_name(pattern.strip_suffix("/*").unwrap_or(pattern))
}

/// Successful password checks are remembered this long, so clients that send
/// Basic auth on every request do not pay for Argon2 each time.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);
const PASSWORD_CACHE_MAX: usize = 1024;

pub struct Auth {
    pub db: SqlitePool,
    pub registry_tokens: RegistryTokens,
    pub anonymous_pull: bool,
    pub public_url: Option<String>,
    /// The server speaks HTTPS: URLs made from `Host` use https.
    pub https: bool,
    password_cache: Mutex<HashMap<[u8; 32], (User, Instant)>>,
}

impl Auth {
    pub fn new(
        db: SqlitePool,
        registry_tokens: RegistryTokens,
        anonymous_pull: bool,
        public_url: Option<String>,
    ) -> Auth {
        Auth {
            db,
            registry_tokens,
            anonymous_pull,
            public_url,
            https: false,
            password_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The principal behind Basic or API-token credentials. `Ok(None)` for a bearer
    /// value that is not an API token (the registry checks those as signed tokens).
    pub async fn principal(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Principal>, AuthError> {
        match credentials {
            Credentials::Basic { password, .. } | Credentials::Bearer(password)
                if password.starts_with(api_tokens::PREFIX) =>
            {
                let record = api_tokens::lookup(&self.db, password)
                    .await?
                    .ok_or(AuthError::BadToken)?;
                let scopes = record
                    .scopes
                    .into_iter()
                    .filter(|s| record.user.role.allows(*s))
                    .collect();
                Ok(Some(Principal {
                    user: record.user,
                    scopes,
                    repositories: RepoPattern::new(record.repository_pattern),
                }))
            }
            Credentials::Basic { username, password } => {
                let key: [u8; 32] = Sha256::new_with_prefix(username)
                    .chain_update([0])
                    .chain_update(password)
                    .finalize()
                    .into();
                if let Some((user, at)) = self.password_cache.lock().unwrap().get(&key) {
                    if at.elapsed() < PASSWORD_CACHE_TTL {
                        return Ok(Some(Principal::with_password(user.clone())));
                    }
                }
                let user = users::check_password(&self.db, username, password)
                    .await?
                    .ok_or(AuthError::BadPassword)?;
                let mut cache = self.password_cache.lock().unwrap();
                if cache.len() >= PASSWORD_CACHE_MAX {
                    cache.retain(|_, (_, at)| at.elapsed() < PASSWORD_CACHE_TTL);
                    if cache.len() >= PASSWORD_CACHE_MAX {
                        cache.clear();
                    }
                }
                cache.insert(key, (user.clone(), Instant::now()));
                Ok(Some(Principal::with_password(user)))
            }
            Credentials::Bearer(_) => Ok(None),
        }
    }

    /// Base URL for links and token realms: the configured public URL, or what
    /// the request's `Host` header says.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{host}")
    }
}
