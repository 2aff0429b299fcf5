-- Deploys: clusters and their nodes, each repository's environments, the
-- deployments made to them and the instances that run them.

-- Where environments run. Kind `local`: nodes (`slipway node`) join it.
-- The cluster `local` always exists.
CREATE TABLE clusters (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL DEFAULT 'local',
    created_at  INTEGER NOT NULL
);
INSERT INTO clusters (name, kind, created_at) VALUES ('local', 'local', 0);

-- Tokens a node presents once to join a cluster (sha256 at rest).
CREATE TABLE cluster_join_tokens (
    id          INTEGER PRIMARY KEY,
    cluster_id  INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- A node agent. `revision` goes up with every change of what it must run;
-- its long-poll answers when it passes the revision the node has.
CREATE TABLE nodes (
    id                INTEGER PRIMARY KEY,
    cluster_id        INTEGER NOT NULL REFERENCES clusters(id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    router_host       TEXT NOT NULL,
    router_port_from  INTEGER NOT NULL,
    router_port_to    INTEGER NOT NULL,
    revision          INTEGER NOT NULL DEFAULT 1,
    last_seen         INTEGER,
    created_at        INTEGER NOT NULL,
    UNIQUE (cluster_id, name)
);

-- A repository's environment, created when a deploy section first names it.
-- The cluster is server-side configuration (a commit cannot move prod);
-- the node and router ports are chosen when it is first placed.
CREATE TABLE environments (
    id            INTEGER PRIMARY KEY,
    repo_id       INTEGER NOT NULL REFERENCES git_repos(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    app           TEXT NOT NULL,
    -- Place in the promotion chain of the latest spec that named it.
    position      INTEGER NOT NULL,
    cluster_id    INTEGER NOT NULL REFERENCES clusters(id),
    node_id       INTEGER REFERENCES nodes(id) ON DELETE SET NULL,
    port          INTEGER,
    preview_port  INTEGER,
    created_at    INTEGER NOT NULL,
    UNIQUE (repo_id, name)
);

-- Secrets scoped to one environment (same sealing as pipeline secrets, with
-- the environment in the associated data): a prod secret never reaches dev.
CREATE TABLE environment_secrets (
    id              INTEGER PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    nonce           BLOB NOT NULL,
    ciphertext      BLOB NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (environment_id, name)
);

-- A deployment: (environment, digest, configuration snapshot).
-- state: pending | progressing | succeeded | failed | superseded
-- kind:  deploy (a pipeline) | promote | rollback
CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    repository      TEXT NOT NULL,
    digest          TEXT NOT NULL,
    pipeline_id     INTEGER REFERENCES pipelines(id) ON DELETE SET NULL,
    commit_sha      TEXT,
    -- JSON: strategy, replicas, port, health, env, secrets (names), memory,
    -- cpus, deadline_ms, keep_ms.
    config          TEXT NOT NULL,
    -- Hash of what an instance of this deployment runs (digest + config):
    -- instances with the same hash are interchangeable.
    spec_hash       TEXT NOT NULL,
    state           TEXT NOT NULL,
    -- Where the rollout is, for people (`2/3 instances ready`, `swapped`).
    progress        TEXT,
    -- Blue/green: when the node's preview router first served the whole new set.
    preview_since   INTEGER,
    reason          TEXT,
    requested_by    TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);
CREATE INDEX deployments_by_environment ON deployments (environment_id, id);

-- An instance the controller wants on a node, and what the node last said.
-- goal: run | stop;  routed: none | live | preview
-- observed: pending (not yet reported) | starting | ready | unhealthy |
--           crashed | stopping | gone | failed
CREATE TABLE instances (
    -- AUTOINCREMENT: an id (and the instance name made from it) is never
    -- given again, so no log or node state of a removed instance is inherited.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    deployment_id   INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    node_id         INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    spec_hash       TEXT NOT NULL,
    goal            TEXT NOT NULL DEFAULT 'run',
    routed          TEXT NOT NULL DEFAULT 'none',
    -- The route the node's router gives it now (what `routed` asked, once applied).
    node_route      TEXT NOT NULL DEFAULT 'none',
    observed        TEXT NOT NULL DEFAULT 'pending',
    -- Until when an unrouted, running instance is kept warm (blue/green's
    -- rollback window); then it is stopped.
    warm_until      INTEGER,
    container_id    TEXT,
    restarts        INTEGER NOT NULL DEFAULT 0,
    health          TEXT,
    log_tail        TEXT,
    created_at      INTEGER NOT NULL,
    ready_at        INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX instances_by_environment ON instances (environment_id);
CREATE INDEX instances_by_node ON instances (node_id);

-- Pipelines that succeeded and may deploy: written in the transaction that
-- ends the pipeline, consumed by the deploy controller (so a restart between
-- the two loses no deploy).
CREATE TABLE deploy_outbox (
    pipeline_id  INTEGER PRIMARY KEY REFERENCES pipelines(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL
);
