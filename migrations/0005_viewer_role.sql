-- Adds the `viewer` role (read-only: pipelines, logs, image pulls). SQLite cannot
-- change a CHECK constraint in place, so `users` is rebuilt. sqlx runs this in a
-- transaction with foreign keys on, where `PRAGMA foreign_keys = OFF` is ignored
-- and dropping `users` cascades to the rows referencing it; so those rows are
-- saved first and put back once the new `users` has taken the old one's name.
CREATE TEMP TABLE saved_api_tokens AS SELECT * FROM api_tokens;
CREATE TEMP TABLE saved_registrations AS
    SELECT token_hash, created_by FROM runner_registration_tokens;

CREATE TABLE users_with_viewer (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'user', 'viewer')),
    created_at    INTEGER NOT NULL
);
INSERT INTO users_with_viewer (id, username, password_hash, role, created_at)
    SELECT id, username, password_hash, role, created_at FROM users;
DROP TABLE users;
ALTER TABLE users_with_viewer RENAME TO users;

INSERT INTO api_tokens SELECT * FROM saved_api_tokens;
UPDATE runner_registration_tokens SET created_by = (
    SELECT s.created_by FROM saved_registrations s
    WHERE s.token_hash = runner_registration_tokens.token_hash
);
DROP TABLE saved_api_tokens;
DROP TABLE saved_registrations;
