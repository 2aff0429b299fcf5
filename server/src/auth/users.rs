//! User accounts.

use sqlx::{Sqlite, SqlitePool};

use crate::db::now_ms;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    User,
    /// Reads pipelines and logs and pulls images; changes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
        }
    }

    /// Whether a credential of this role may carry `scope`.
    pub fn allows(self, scope: super::Scope) -> bool {
        match self {
            Role::Admin => true,
            Role::User => scope != super::Scope::Admin,
            Role::Viewer => scope == super::Scope::Pull,
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("username {0:?} is invalid: use 1-64 characters of a-z, 0-9, '.', '_' and '-'")]
    InvalidName(String),
    #[error("password must be at least 8 characters")]
    WeakPassword,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

pub async fn create(
    pool: &SqlitePool,
    username: &str,
    password: &str,
    role: Role,
) -> Result<User, UserError> {
    if !valid_username(username) {
        return Err(UserError::InvalidName(username.to_owned()));
    }
    if password.chars().count() < 8 {
        return Err(UserError::WeakPassword);
    }
    let password = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || super::password::hash(&password))
        .await
        .expect("hashing does not panic");
    let result = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
    )
    .bind(username)
    .bind(hash)
    .bind(role.as_str())
    .bind(now_ms())
    .execute(pool)
    .await;
    match result {
        Ok(done) => Ok(User {
            id: done.last_insert_rowid(),
            username: username.to_owned(),
            role,
        }),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(UserError::Exists(username.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn count(pool: &SqlitePool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar::<Sqlite, i64>("SELECT count(*) FROM users")
        .fetch_one(pool)
        .await
}

/// The user, if `password` is theirs.
pub async fn check_password(
    pool: &SqlitePool,
    username: &str,
    password: &str,
) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query_as::<Sqlite, (i64, String, String)>(
        "SELECT id, password_hash, role FROM users WHERE username = ?",
    )
    .bind(username)
    .fetch_optional(pool)
    .await?;
    let Some((id, stored, role)) = row else {
        return Ok(None);
    };
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || super::password::verify(&password, &stored))
        .await
        .unwrap_or(false);
    Ok(ok.then(|| User {
        id,
        username: username.to_owned(),
        role: Role::parse(&role).unwrap_or(Role::User),
    }))
}
