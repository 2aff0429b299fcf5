//! Short-lived registry tokens (JWT, HS256) in the Docker token format: the claims
//! carry `access: [{type, name, actions}]`. The signing key is generated at first
//! start and kept in `server_keys`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sqlx::{Sqlite, SqlitePool};

use crate::db::now_ms;

pub const SERVICE: &str = "slipway";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
    /// Slipway's own, on `registry:catalog` entries only: the pattern of
    /// repositories whose names `_catalog` may show (what the token's
    /// requester may pull). The catalog scope grants nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<String>,
}

impl AccessEntry {
    /// `actions` on the repositories matching `pattern` (a name, `prefix/*`
    /// or `*`).
    pub fn repository(pattern: impl Into<String>, actions: &[&str]) -> AccessEntry {
        AccessEntry {
            kind: "repository".into(),
            name: pattern.into(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            repositories: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub access: Vec<AccessEntry>,
}

pub struct RegistryTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl: Duration,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: SystemTime,
}

impl RegistryTokens {
    /// Load the signing key, creating it on first start.
    pub async fn load(pool: &SqlitePool, ttl: Duration) -> Result<RegistryTokens, sqlx::Error> {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        sqlx::query("INSERT INTO server_keys (name, value, created_at) VALUES ('registry_token', ?, ?) ON CONFLICT DO NOTHING")
            .bind(key.as_slice())
            .bind(now_ms())
            .execute(pool)
            .await?;
        let key = sqlx::query_scalar::<Sqlite, Vec<u8>>(
            "SELECT value FROM server_keys WHERE name = 'registry_token'",
        )
        .fetch_one(pool)
        .await?;
        Ok(RegistryTokens::from_key(&key, ttl))
    }

    pub fn from_key(key: &[u8], ttl: Duration) -> RegistryTokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[SERVICE]);
        validation.set_issuer(&[SERVICE]);
        validation.leeway = 5;
        RegistryTokens {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            ttl,
        }
    }

    pub fn issue(&self, subject: &str, access: Vec<AccessEntry>) -> IssuedToken {
        self.issue_for(subject, access, self.ttl)
    }

    /// Like [`issue`](Self::issue), valid for `ttl` (runners get pull tokens
    /// that last a whole job).
    pub fn issue_for(&self, subject: &str, access: Vec<AccessEntry>, ttl: Duration) -> IssuedToken {
        let issued_at = SystemTime::now();
        let now = issued_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: SERVICE.into(),
            sub: subject.into(),
            aud: SERVICE.into(),
            exp: now + ttl.as_secs(),
            nbf: now.saturating_sub(1),
            iat: now,
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding cannot fail");
        IssuedToken {
            token,
            expires_in: ttl.as_secs(),
            issued_at,
        }
    }

    /// The claims of a valid, unexpired token signed by this server.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let tokens = RegistryTokens::from_key(b"k1", Duration::from_secs(60));
        let access = vec![AccessEntry {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
            repositories: None,
        }];
        let issued = tokens.issue("alice", access.clone());
        let claims = tokens.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, access);
        let other = RegistryTokens::from_key(b"k2", Duration::from_secs(60));
        assert!(
            other.verify(&issued.token).is_none(),
            "a token signed with another key is refused"
        );
        let mut tampered = issued.token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(tokens.verify(&tampered).is_none());
    }
}
