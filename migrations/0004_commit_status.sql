-- Where a repository's pipeline states are reported: a forge's commit-status
-- API (its token is a secret, not stored here) and a generic outgoing webhook.
ALTER TABLE git_repos ADD COLUMN forge_kind TEXT;
ALTER TABLE git_repos ADD COLUMN forge_api TEXT;
ALTER TABLE git_repos ADD COLUMN forge_repository TEXT;
ALTER TABLE git_repos ADD COLUMN notify_url TEXT;

-- State changes waiting to be reported, written in the same transaction as the
-- change itself, so a restart loses none. Delivered rows are deleted.
CREATE TABLE status_outbox (
    id               INTEGER PRIMARY KEY,
    pipeline_id      INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT
);
CREATE INDEX status_outbox_due ON status_outbox (next_attempt_at);
