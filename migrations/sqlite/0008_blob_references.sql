-- Collection reads its garbage from the views (ADR 0027). `apply` keeps, for each blob:
--   refs              how many files of live package versions name it;
--   idle_since_ms     when it last became unreferenced (or was ingested, if never referenced), in Unix ms of the
--                     event's time, so replay gives the same value;
--   removed_sequence  the `v1.file.removed` that removed it, while it stays removed.
-- The partial index holds only the blobs that are garbage candidates, so a run's cost follows the garbage.
ALTER TABLE artifact_files ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE artifact_files ADD COLUMN idle_since_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE artifact_files ADD COLUMN removed_sequence INTEGER;
CREATE INDEX artifact_files_unreferenced ON artifact_files (idle_since_ms, blake3)
    WHERE refs = 0 AND removed_sequence IS NULL;

-- Bytes whose `v1.file.removed` committed and whose deletion has not finished. Not a view: it is written with the
-- removal event and emptied as the bytes go, so a run after a crash finishes the deletions.
CREATE TABLE blob_deletions (
    blake3      TEXT    PRIMARY KEY,
    sequence    INTEGER  NOT NULL
);

-- A database with blobs from before this migration gets its counts from a replay, run by the next start.
UPDATE views_status SET stale = TRUE, reason = 'migration 0008: blob reference counts are rebuilt by replay'
    WHERE EXISTS (SELECT 1 FROM artifact_files);
