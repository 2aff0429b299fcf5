//! Pipeline secrets: per repository, encrypted at rest, handed to the steps
//! that name them when their job is leased, and to no one else.
//!
//! Values are sealed with ChaCha20-Poly1305 under a 32-byte key from the
//! configuration (or `<data>/secrets.key`, generated at first start); the
//! database holds only nonces and ciphertexts. The associated data binds each
//! ciphertext to its repository and name. Values never appear in logs, API
//! responses or job definitions.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sqlx::SqlitePool;

use crate::db::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret name {0:?} must be [A-Za-z_][A-Za-z0-9_]*, at most 100 characters")]
    BadName(String),
    #[error("a secret value may be at most 64 KiB")]
    TooLarge,
    #[error("secrets key: {0}")]
    Key(String),
    #[error("secret {0:?} cannot be decrypted with this server's key (was the key changed?)")]
    Undecryptable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Clone)]
pub struct Secrets {
    db: SqlitePool,
    cipher: ChaCha20Poly1305,
}

/// A secret's name and settings (never its value).
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub name: String,
    pub allow_pull_requests: bool,
    pub updated_at: i64,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 100
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn aad(repo_id: i64, name: &str) -> Vec<u8> {
    format!("slipway-secret\0{repo_id}\0{name}").into_bytes()
}

/// An environment secret's associated data: a ciphertext cannot move to
/// another environment (a prod value never decrypts as dev's).
fn environment_aad(environment_id: i64, name: &str) -> Vec<u8> {
    format!("slipway-environment-secret\0{environment_id}\0{name}").into_bytes()
}

/// A kubernetes cluster's kubeconfig's associated data: it opens only as
/// that cluster's.
fn kubeconfig_aad(cluster: &str) -> Vec<u8> {
    format!("slipway-cluster-kubeconfig\0{cluster}").into_bytes()
}

/// The key from configuration (hex), or the one in `<data>/secrets.key`,
/// created if missing.
pub fn load_key(configured: Option<&str>, data_dir: &Path) -> Result<[u8; 32], SecretError> {
    let parse = |text: &str, from: &str| -> Result<[u8; 32], SecretError> {
        let bytes =
            hex::decode(text.trim()).map_err(|_| SecretError::Key(format!("{from} is not hex")))?;
        bytes
            .try_into()
            .map_err(|_| SecretError::Key(format!("{from} must be 64 hex digits (32 bytes)")))
    };
    if let Some(text) = configured {
        return parse(text, "secrets_key");
    }
    let path = data_dir.join("secrets.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| SecretError::Key(format!("creating {}: {e}", path.display())))?;
            f.write_all(hex::encode(key).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| SecretError::Key(format!("writing {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "generated the secrets key");
            Ok(key)
        }
        Err(e) => Err(SecretError::Key(format!("reading {}: {e}", path.display()))),
    }
}

impl Secrets {
    pub fn new(db: SqlitePool, key: [u8; 32]) -> Secrets {
        Secrets {
            db,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// Encrypt `value` (at most 64 KiB) bound to `aad`: a fresh nonce and the
    /// ciphertext.
    fn seal(&self, value: &str, aad: &[u8]) -> Result<([u8; 12], Vec<u8>), SecretError> {
        if value.len() > 64 << 10 {
            return Err(SecretError::TooLarge);
        }
        let nonce: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad,
                },
            )
            .map_err(|_| SecretError::Key("encryption failed".into()))?;
        Ok((nonce, ciphertext))
    }

    /// Decrypt secret `name` sealed with `aad`.
    fn open(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<String, SecretError> {
        let undecryptable = || SecretError::Undecryptable(name.to_owned());
        if nonce.len() != 12 {
            return Err(undecryptable());
        }
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| undecryptable())?;
        String::from_utf8(plain).map_err(|_| undecryptable())
    }

    pub async fn set(
        &self,
        repo_id: i64,
        name: &str,
        value: &str,
        allow_pull_requests: bool,
    ) -> Result<(), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_owned()));
        }
        self.store(repo_id, name, value, allow_pull_requests).await
    }

    /// Store a value under a name of Slipway's own (like the forge token),
    /// which no step can ask for.
    pub async fn set_internal(
        &self,
        repo_id: i64,
        name: &str,
        value: &str,
    ) -> Result<(), SecretError> {
        self.store(repo_id, name, value, false).await
    }

    async fn store(
        &self,
        repo_id: i64,
        name: &str,
        value: &str,
        allow_pull_requests: bool,
    ) -> Result<(), SecretError> {
        let (nonce, ciphertext) = self.seal(value, &aad(repo_id, name))?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO secrets (repo_id, name, nonce, ciphertext, allow_pull_requests, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repo_id, name) DO UPDATE SET nonce = excluded.nonce,
                 ciphertext = excluded.ciphertext, allow_pull_requests = excluded.allow_pull_requests,
                 updated_at = excluded.updated_at",
        )
        .bind(repo_id)
        .bind(name)
        .bind(&nonce[..])
        .bind(ciphertext)
        .bind(allow_pull_requests)
        .bind(now)
        .bind(now)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn delete(&self, repo_id: i64, name: &str) -> Result<bool, SecretError> {
        let done = sqlx::query("DELETE FROM secrets WHERE repo_id = ? AND name = ?")
            .bind(repo_id)
            .bind(name)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn list(&self, repo_id: i64) -> Result<Vec<SecretInfo>, SecretError> {
        let rows: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT name, allow_pull_requests, updated_at FROM secrets
             WHERE repo_id = ? AND name NOT LIKE 'slipway:%' ORDER BY name",
        )
        .bind(repo_id)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, allow_pull_requests, updated_at)| SecretInfo {
                name,
                allow_pull_requests,
                updated_at,
            })
            .collect())
    }

    /// The values of `names` for a run of `repo_id`: a name that is not
    /// defined, or withheld from a fork's pull request, is left out.
    pub async fn values(
        &self,
        repo_id: i64,
        names: &[String],
        fork_pull_request: bool,
    ) -> Result<Vec<(String, String)>, SecretError> {
        let mut out = Vec::new();
        for name in names {
            let row: Option<(Vec<u8>, Vec<u8>, bool)> = sqlx::query_as(
                "SELECT nonce, ciphertext, allow_pull_requests FROM secrets WHERE repo_id = ? AND name = ?",
            )
            .bind(repo_id)
            .bind(name)
            .fetch_optional(&self.db)
            .await?;
            let Some((nonce, ciphertext, allowed)) = row else {
                continue;
            };
            if fork_pull_request && !allowed {
                continue;
            }
            let value = self.open(name, &nonce, &ciphertext, &aad(repo_id, name))?;
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}

/// Secrets scoped to one deploy environment: given only to that
/// environment's instances.
impl Secrets {
    pub async fn set_environment(
        &self,
        environment_id: i64,
        name: &str,
        value: &str,
    ) -> Result<(), SecretError> {
        if !valid_name(name) {
            return Err(SecretError::BadName(name.to_owned()));
        }
        let (nonce, ciphertext) = self.seal(value, &environment_aad(environment_id, name))?;
        sqlx::query(
            "INSERT INTO environment_secrets (environment_id, name, nonce, ciphertext, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (environment_id, name) DO UPDATE SET nonce = excluded.nonce,
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(environment_id)
        .bind(name)
        .bind(&nonce[..])
        .bind(ciphertext)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Names and update times, never values.
    pub async fn list_environment(
        &self,
        environment_id: i64,
    ) -> Result<Vec<(String, i64)>, SecretError> {
        Ok(sqlx::query_as(
            "SELECT name, updated_at FROM environment_secrets WHERE environment_id = ? ORDER BY name",
        )
        .bind(environment_id)
        .fetch_all(&self.db)
        .await?)
    }

    /// The values of `names` in environment `environment_id`; a name not set
    /// there is left out.
    pub async fn environment_values(
        &self,
        environment_id: i64,
        names: &[String],
    ) -> Result<Vec<(String, String)>, SecretError> {
        let mut out = Vec::new();
        for name in names {
            let row: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
                "SELECT nonce, ciphertext FROM environment_secrets WHERE environment_id = ? AND name = ?",
            )
            .bind(environment_id)
            .bind(name)
            .fetch_optional(&self.db)
            .await?;
            let Some((nonce, ciphertext)) = row else {
                continue;
            };
            let value = self.open(
                name,
                &nonce,
                &ciphertext,
                &environment_aad(environment_id, name),
            )?;
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}

/// A sealed value: the nonce and the ciphertext, as the database keeps them.
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The kubeconfigs of kubernetes clusters, sealed the same way, bound to the
/// cluster's name (`deploy/kube/cluster_add.rs` stores them; `deploy/kube/clusters.rs` opens them).
impl Secrets {
    pub fn seal_kubeconfig(&self, cluster: &str, text: &str) -> Result<Sealed, SecretError> {
        let (nonce, ciphertext) = self.seal(text, &kubeconfig_aad(cluster))?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// The kubeconfig of cluster `cluster`, as `seal_kubeconfig` sealed it.
    pub fn open_kubeconfig(
        &self,
        cluster: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<String, SecretError> {
        self.open(
            &format!("the kubeconfig of cluster {cluster}"),
            nonce,
            ciphertext,
            &kubeconfig_aad(cluster),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sealed_at_rest_bound_to_their_row_and_withheld_from_forks() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        sqlx::query("INSERT INTO git_repos (id, name, url, default_branch, webhook_secret, created_at) VALUES (1, 'a', '/a', 'main', 's', 0), (2, 'b', '/b', 'main', 's', 0)")
            .execute(&db)
            .await
            .unwrap();
        let key = load_key(None, dir.path()).unwrap();
        assert_eq!(
            load_key(None, dir.path()).unwrap(),
            key,
            "the generated key is kept"
        );
        let secrets = Secrets::new(db.clone(), key);
        secrets
            .set(1, "TOKEN", "hunter2-value", false)
            .await
            .unwrap();
        secrets.set(1, "OPEN", "for-everyone", true).await.unwrap();
        assert!(matches!(
            secrets.set(1, "bad-name", "x", false).await,
            Err(SecretError::BadName(_))
        ));

        // Not in the database in the clear.
        let raw: Vec<u8> =
            sqlx::query_scalar("SELECT ciphertext FROM secrets WHERE name = 'TOKEN'")
                .fetch_one(&db)
                .await
                .unwrap();
        assert!(!raw.windows(7).any(|w| w == b"hunter2"));

        let names = vec!["TOKEN".to_owned(), "OPEN".to_owned(), "MISSING".to_owned()];
        let all = secrets.values(1, &names, false).await.unwrap();
        assert_eq!(
            all,
            vec![
                ("TOKEN".to_owned(), "hunter2-value".to_owned()),
                ("OPEN".to_owned(), "for-everyone".to_owned())
            ]
        );
        let forked = secrets.values(1, &names, true).await.unwrap();
        assert_eq!(forked, vec![("OPEN".to_owned(), "for-everyone".to_owned())]);

        // A ciphertext moved to another repository does not decrypt.
        sqlx::query("UPDATE secrets SET repo_id = 2 WHERE name = 'TOKEN'")
            .execute(&db)
            .await
            .unwrap();
        assert!(matches!(
            secrets.values(2, &["TOKEN".to_owned()], false).await,
            Err(SecretError::Undecryptable(_))
        ));
        // Another key cannot read them.
        let other = Secrets::new(db.clone(), [7u8; 32]);
        assert!(other.values(1, &["OPEN".to_owned()], false).await.is_err());
        assert_eq!(secrets.list(1).await.unwrap().len(), 1);
    }
}
