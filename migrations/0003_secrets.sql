-- Pipeline secrets, per repository, encrypted with ChaCha20-Poly1305 under the
-- server's secrets key (never stored in the database); the repository id and
-- name are the associated data, so a ciphertext cannot be moved to another row.
CREATE TABLE secrets (
    id                   INTEGER PRIMARY KEY,
    repo_id              INTEGER NOT NULL REFERENCES git_repos(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    nonce                BLOB NOT NULL,
    ciphertext           BLOB NOT NULL,
    allow_pull_requests  INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    UNIQUE (repo_id, name)
);

-- Whether a pull request came from a fork (its runs get no secrets unless a
-- secret allows pull requests).
ALTER TABLE pipelines ADD COLUMN from_fork INTEGER NOT NULL DEFAULT 0;
