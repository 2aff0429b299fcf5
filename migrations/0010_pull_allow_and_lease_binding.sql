-- What a repository's pipelines may pull from Slipway's registry besides
-- their own repository (and below it): a JSON array of patterns (`name`,
-- `prefix/*`, `*`). Job registry tokens carry exactly these; step and service
-- images outside them fail at pipeline creation.
ALTER TABLE git_repos ADD COLUMN pull_allow TEXT NOT NULL DEFAULT '["library/*"]';

-- Runners limited to repositories: a JSON array of patterns, or NULL for a
-- shared runner that takes every repository's jobs. A registration token's
-- limit passes to the runners registered with it.
ALTER TABLE runner_registration_tokens ADD COLUMN repositories TEXT;
ALTER TABLE runners ADD COLUMN repositories TEXT;

-- The current lease's own secret (sha256 of it), returned only to the
-- connection that leased the job: the job's routes, its secrets and its
-- registry tokens need it beside the runner's token. A new attempt replaces it.
ALTER TABLE jobs ADD COLUMN lease_token_hash TEXT;
