-- Release governance, kept by the server only (nothing here comes from a
-- commit): environments' protection, approvals bound to a digest, and the
-- append-only audit.
--
-- deployments.state gains: awaiting_approval (a protected environment's
-- request, before its approvals; the reconciler does not see it), rejected
-- and expired (not approved in time).

-- Who approved a deployment (JSON array of names), set when its approvals
-- counted and it moved on.
ALTER TABLE deployments ADD COLUMN approved_by TEXT;
-- An admin's break-glass reason: the deployment may start during a freeze.
ALTER TABLE deployments ADD COLUMN freeze_override TEXT;

-- No row: unprotected. `policy` is JSON (deploy/gates.rs `Policy`): required
-- approvals, who may approve, separation of duties, how long an approval
-- lasts, who may deploy, freeze windows.
CREATE TABLE environment_protection (
    environment_id  INTEGER PRIMARY KEY REFERENCES environments(id) ON DELETE CASCADE,
    policy          TEXT NOT NULL,
    updated_by      TEXT NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- An approval or a rejection of one digest for one environment, by a user
-- (by name: the row outlives the account), valid until `expires_at`.
CREATE TABLE approvals (
    id              INTEGER PRIMARY KEY,
    environment_id  INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    deployment_id   INTEGER REFERENCES deployments(id) ON DELETE SET NULL,
    digest          TEXT NOT NULL,
    username        TEXT NOT NULL,
    decision        TEXT NOT NULL,
    comment         TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
CREATE INDEX approvals_by_digest ON approvals (environment_id, digest);

-- Every deploy, approval, rejection, freeze override, rollback and
-- protection change. Names, not foreign keys: deleting a user, a repository
-- or an environment never rewrites it. Append-only, enforced below.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    repo           TEXT,
    environment    TEXT,
    digest         TEXT,
    deployment_id  INTEGER,
    reason         TEXT,
    before         TEXT,
    after          TEXT
);
CREATE INDEX audit_log_by_repo ON audit_log (repo, environment, id);
CREATE TRIGGER audit_log_is_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_is_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
-- INSERT OR REPLACE of an existing id deletes without the DELETE trigger.
CREATE TRIGGER audit_log_is_append_only_replace BEFORE INSERT ON audit_log
WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
