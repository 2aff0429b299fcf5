-- Builds: the commit's time (builds use it as SOURCE_DATE_EPOCH), and the
-- images a pipeline's build steps pushed, one row per image.
ALTER TABLE pipelines ADD COLUMN commit_time INTEGER;

CREATE TABLE pipeline_images (
    id           INTEGER PRIMARY KEY,
    pipeline_id  INTEGER NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    job_id       INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    step         INTEGER NOT NULL,
    repository   TEXT NOT NULL,
    -- JSON array of the tags pushed (the commit sha first).
    tags         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (job_id, step, repository)
);
CREATE INDEX pipeline_images_by_pipeline ON pipeline_images (pipeline_id);
