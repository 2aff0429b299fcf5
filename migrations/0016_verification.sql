-- Verification: a deployment that rolled out (state succeeded) is verified
-- once it stayed healthy through its environment's soak and its verify job
-- (a pipeline of its own, event 'verify') passed. Only a verified digest is
-- promoted to the next environment, and a rollback goes only to a digest
-- verified in that environment before.
--
-- verification: soaking | verifying | verified | failed | cancelled
--   (NULL: it never rolled out). failed also sets state = 'failed' (the
--   deployment keeps running until a rollback or the next deploy);
--   cancelled: replaced before its verification ended.
ALTER TABLE deployments ADD COLUMN verification TEXT;
ALTER TABLE deployments ADD COLUMN verify_pipeline_id INTEGER REFERENCES pipelines(id) ON DELETE SET NULL;
-- When the soak ends (set when it rolled out).
ALTER TABLE deployments ADD COLUMN soak_until INTEGER;
ALTER TABLE deployments ADD COLUMN verified_at INTEGER;
-- How the verification ended, for people (why it failed or was cancelled).
ALTER TABLE deployments ADD COLUMN verify_reason TEXT;
-- 1: verified, and what follows (the audit entry, an auto-promotion) is
-- still to do; cleared once done, so a restart in between loses neither.
ALTER TABLE deployments ADD COLUMN follow_up INTEGER NOT NULL DEFAULT 0;
CREATE INDEX deployments_verifying ON deployments (verification) WHERE verification IN ('soaking', 'verifying');

-- A verify pipeline's deployment (NULL for every other pipeline).
ALTER TABLE pipelines ADD COLUMN verifies_deployment INTEGER REFERENCES deployments(id) ON DELETE SET NULL;

-- Deployment states reported outward (the forge's deployments API, the
-- outgoing webhook; `deploy/notify.rs`). Written by triggers in the
-- transaction that changes a deployment's state or verification, so no
-- path that changes one can forget to report it.
CREATE TABLE deploy_status_outbox (
    id               INTEGER PRIMARY KEY,
    deployment_id    INTEGER NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT
);
CREATE TRIGGER deploy_status_on_insert AFTER INSERT ON deployments
BEGIN
    INSERT INTO deploy_status_outbox (deployment_id, created_at, next_attempt_at)
    VALUES (NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 0);
END;
CREATE TRIGGER deploy_status_on_change AFTER UPDATE OF state, verification ON deployments
WHEN OLD.state IS NOT NEW.state OR OLD.verification IS NOT NEW.verification
BEGIN
    INSERT INTO deploy_status_outbox (deployment_id, created_at, next_attempt_at)
    VALUES (NEW.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER), 0);
END;
-- The forge's id of this deployment, once created there.
ALTER TABLE deployments ADD COLUMN forge_deployment_id TEXT;
