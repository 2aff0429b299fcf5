-- Git polling: the default branch's head as last seen, and when.
ALTER TABLE git_repos ADD COLUMN last_polled_at INTEGER;
ALTER TABLE git_repos ADD COLUMN last_polled_sha TEXT;

-- Cron schedules from `.slipway.yml`: the last occurrence that started (or was
-- deliberately passed over), so each occurrence runs at most once, also across
-- restarts.
CREATE TABLE cron_runs (
    repo_id      INTEGER NOT NULL REFERENCES git_repos(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    last_run_at  INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
);
