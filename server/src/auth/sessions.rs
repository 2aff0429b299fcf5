//! Web UI sessions: a random cookie (`slipway_session`, HttpOnly, SameSite=Lax)
//! whose sha256 is the row's key, so a database dump holds no usable session,
//! and a CSRF token per session that every form and every cookie-authenticated
//! API write must carry.

use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use super::users::{Role, User};

pub const COOKIE: &str = "slipway_session";
/// Set on the sign-in page; the form must send the same value back (login CSRF).
pub const LOGIN_COOKIE: &str = "slipway_login";
pub const LIFETIME_MS: i64 = 12 * 3600 * 1000;

pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Start a session; returns (cookie value, CSRF token).
pub async fn create(db: &SqlitePool, user: &User) -> Result<(String, String), sqlx::Error> {
    let token = random_token();
    let csrf = random_token();
    let now = now_ms();
    sqlx::query("DELETE FROM web_sessions WHERE expires_at < ?")
        .bind(now)
        .execute(db)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(hash(&token))
    .bind(user.id)
    .bind(&csrf)
    .bind(now)
    .bind(now + LIFETIME_MS)
    .execute(db)
    .await?;
    Ok((token, csrf))
}

/// The user and CSRF token of a live session.
pub async fn lookup(db: &SqlitePool, token: &str) -> Result<Option<(User, String)>, sqlx::Error> {
    let row: Option<(i64, String, String, String)> = sqlx::query_as(
        "SELECT u.id, u.username, u.role, s.csrf FROM web_sessions s
         JOIN users u ON u.id = s.user_id
         WHERE s.token_hash = ? AND s.expires_at > ?",
    )
    .bind(hash(token))
    .bind(now_ms())
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(id, username, role, csrf)| {
        (
            User {
                id,
                username,
                role: Role::parse(&role).unwrap_or(Role::Viewer),
            },
            csrf,
        )
    }))
}

pub async fn delete(db: &SqlitePool, token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM web_sessions WHERE token_hash = ?")
        .bind(hash(token))
        .execute(db)
        .await?;
    Ok(())
}

/// A cookie's value from a `Cookie` header.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Constant-time comparison of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
