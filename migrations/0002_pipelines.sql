-- Pipelines (owned by the server's pipeline module). Times are unix milliseconds.

-- Git repositories whose commits run pipelines (not to be confused with the
-- registry's `repositories`). The server keeps a bare mirror of each under
-- <data>/git/<id>.git.
CREATE TABLE git_repos (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    url                TEXT NOT NULL,
    default_branch     TEXT NOT NULL,
    webhook_secret     TEXT NOT NULL,
    poll_interval_ms   INTEGER,
    max_concurrent     INTEGER,
    created_at         INTEGER NOT NULL
);

-- One run of a repository's `.slipway.yml` at one commit.
-- status: pending (nothing started) | running | success | failure | cancelled | error
CREATE TABLE pipelines (
    id             INTEGER PRIMARY KEY,
    repo_id        INTEGER NOT NULL REFERENCES git_repos(id) ON DELETE CASCADE,
    number         INTEGER NOT NULL,
    commit_sha     TEXT NOT NULL,
    git_ref        TEXT NOT NULL,
    event          TEXT NOT NULL,
    triggered_by   TEXT NOT NULL,
    message        TEXT,
    author         TEXT,
    status         TEXT NOT NULL,
    error          TEXT,
    created_at     INTEGER NOT NULL,
    started_at     INTEGER,
    finished_at    INTEGER,
    UNIQUE (repo_id, number)
);

-- A job of a pipeline; what runners lease. `attempt` is the fencing token: it
-- goes up with every lease, and reports carrying an older one are refused.
-- status: blocked (waiting for needs) | queued | leased | success | failure |
--         cancelled | skipped | error
CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    pipeline_id       INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    definition        TEXT NOT NULL,
    needs             TEXT NOT NULL,
    labels            TEXT NOT NULL,
    status            TEXT NOT NULL,
    attempt           INTEGER NOT NULL DEFAULT 0,
    runner_id         INTEGER REFERENCES runners(id) ON DELETE SET NULL,
    lease_expires_at  INTEGER,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    reason            TEXT,
    queued_at         INTEGER,
    started_at        INTEGER,
    finished_at       INTEGER,
    UNIQUE (pipeline_id, name)
);
CREATE INDEX jobs_by_status ON jobs (status, queued_at);

-- Steps of a job, in order. Results carry the job attempt that produced them.
-- status: pending | running | success | failure | skipped | cancelled
CREATE TABLE steps (
    id           INTEGER PRIMARY KEY,
    job_id       INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    name         TEXT NOT NULL,
    status       TEXT NOT NULL,
    exit_code    INTEGER,
    attempt      INTEGER,
    started_at   INTEGER,
    finished_at  INTEGER,
    UNIQUE (job_id, position)
);

-- Runners, registered with a one-time registration token; they authenticate
-- with their own token (sha256 at rest, like API tokens).
CREATE TABLE runners (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    labels        TEXT NOT NULL,
    capacity      INTEGER NOT NULL,
    last_seen_at  INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE runner_registration_tokens (
    token_hash  TEXT PRIMARY KEY,
    created_by  INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);
