-- A deployment's timeline, for people: state changes, each instance's
-- start, readiness and health, routing, blue/green's swap, drain and stop
-- of old instances, approvals and rejections (deploy/events.rs). Written in
-- the transaction of the change it records; gone with its deployment.
CREATE TABLE deployment_events (
    id              INTEGER PRIMARY KEY,
    deployment_id   INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    -- Unix milliseconds.
    at              INTEGER NOT NULL,
    -- requested, awaiting_approval, approved, rejected, expired, superseded,
    -- held, progressing, instance_started, instance_ready,
    -- instance_unhealthy, routed, swapped, drain, succeeded, failed, ...
    kind            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    -- The instance it is about, if any (by name: it outlives the row).
    instance        TEXT
);
CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, id);

-- Someone asked to abort a deployment in progress (their words, for its
-- reason): the reconciler fails it and reverts, as for a failure.
ALTER TABLE deployments ADD COLUMN abort_requested TEXT;
