-- Artifacts: the tar a job hands to the jobs that need it, stored at
-- <data>/artifacts/<job id>.tar; set once the whole file is in place.
ALTER TABLE jobs ADD COLUMN artifacts_bytes INTEGER;
