-- Users and API tokens (owned by the server's auth module).
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user')),
    created_at    INTEGER NOT NULL
);

-- `token_hash` is the hex sha256 of the token: tokens are 256 random bits, so a
-- fast hash is enough and lets a lookup go by index. `scopes` is a space-separated
-- list such as "pull" or "pull push delete"; `repository_pattern` limits it to
-- matching repositories ("*" for all, "team/*" for a prefix).
CREATE TABLE api_tokens (
    id                 INTEGER PRIMARY KEY,
    user_id            INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name               TEXT NOT NULL,
    token_hash         TEXT NOT NULL UNIQUE,
    scopes             TEXT NOT NULL,
    repository_pattern TEXT NOT NULL DEFAULT '*',
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER,
    last_used_at       INTEGER
);

-- Server-wide secrets generated at first start (e.g. the registry token key).
CREATE TABLE server_keys (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Registry metadata (owned by the registry crate). Blob bytes live on disk under
-- blobs/sha256/<2 hex>/<digest hex>; a row here exists only once its file is durable.
CREATE TABLE repositories (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- `touched_at` moves on upload, mount and link, and is what the GC grace period
-- is measured from.
CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    touched_at INTEGER NOT NULL
);

-- A blob is visible in a repository only through a link: pushed there, mounted
-- there, or referenced by a manifest there.
CREATE TABLE repository_blobs (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest        TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_by_digest ON repository_blobs(digest);

CREATE TABLE manifests (
    id             INTEGER PRIMARY KEY,
    repository_id  INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest         TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    artifact_type  TEXT,
    subject_digest TEXT,
    annotations    TEXT,
    body           BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    UNIQUE (repository_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(repository_id, subject_digest);

-- manifest -> blob references (layers, config, blob subjects). ON DELETE RESTRICT on
-- the blob side: the database itself refuses to drop a referenced blob.
CREATE TABLE manifest_blobs (
    manifest_id INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    digest      TEXT NOT NULL REFERENCES blobs(digest) ON DELETE RESTRICT,
    PRIMARY KEY (manifest_id, digest)
);
CREATE INDEX manifest_blobs_by_digest ON manifest_blobs(digest);

-- index / manifest list -> child manifests in the same repository.
CREATE TABLE manifest_children (
    manifest_id  INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    child_digest TEXT NOT NULL,
    PRIMARY KEY (manifest_id, child_digest)
);
CREATE INDEX manifest_children_by_child ON manifest_children(child_digest);

CREATE TABLE tags (
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    manifest_id   INTEGER NOT NULL REFERENCES manifests(id) ON DELETE CASCADE,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (repository_id, name)
);
CREATE INDEX tags_by_manifest ON tags(manifest_id);

-- Upload sessions. The bytes are in uploads/<id>; `committed` is how many of them
-- were acknowledged to the client (anything beyond it after a crash is dropped).
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    repository_id INTEGER NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    committed     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
