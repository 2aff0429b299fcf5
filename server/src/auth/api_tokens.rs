//! API tokens: `slp_` followed by 256 random bits, stored as a sha256 hash.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqlitePool};

use super::users::{Role, User};
use super::Scope;
use crate::db::now_ms;

pub const PREFIX: &str = "slp_";

pub struct NewToken {
    pub id: i64,
    pub token: String,
}

pub struct TokenRecord {
    pub user: User,
    pub scopes: Vec<Scope>,
    pub repository_pattern: String,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub async fn create(
    pool: &SqlitePool,
    user_id: i64,
    name: &str,
    scopes: &[Scope],
    pattern: &str,
) -> Result<NewToken, sqlx::Error> {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let scopes_text = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let id = sqlx::query(
        "INSERT INTO api_tokens (user_id, name, token_hash, scopes, repository_pattern, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(user_id)
    .bind(name)
    .bind(hash(&token))
    .bind(scopes_text)
    .bind(pattern)
    .bind(now_ms())
    .execute(pool)
    .await?
    .last_insert_rowid();
    Ok(NewToken { id, token })
}

/// The token's owner and grants, if it exists and has not expired.
pub async fn lookup(pool: &SqlitePool, token: &str) -> Result<Option<TokenRecord>, sqlx::Error> {
    let row = sqlx::query_as::<Sqlite, (i64, String, String, String, String, Option<i64>)>(
        "SELECT u.id, u.username, u.role, t.scopes, t.repository_pattern, t.expires_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
    )
    .bind(hash(token))
    .fetch_optional(pool)
    .await?;
    Ok(
        row.and_then(|(id, username, role, scopes, pattern, expires_at)| {
            if expires_at.is_some_and(|e| e < now_ms()) {
                return None;
            }
            let role = Role::parse(&role).unwrap_or(Role::User);
            let scopes = scopes.split_whitespace().filter_map(Scope::parse).collect();
            Some(TokenRecord {
                user: User { id, username, role },
                scopes,
                repository_pattern: pattern,
            })
        }),
    )
}
