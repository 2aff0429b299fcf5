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
-- Why verification failed or was cancelled, for people.
ALTER TABLE deployments ADD COLUMN verify_reason TEXT;
CREATE INDEX deployments_verifying ON deployments (verification) WHERE verification IN ('soaking', 'verifying');

-- A verify pipeline's deployment (NULL for every other pipeline).
ALTER TABLE pipelines ADD COLUMN verifies_deployment INTEGER REFERENCES deployments(id) ON DELETE SET NULL;
