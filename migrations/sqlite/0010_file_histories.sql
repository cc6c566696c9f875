-- A blob's history (ADR 0030): `file_events` lists the sequences of the blob's `v1.file.*` events, oldest first,
-- each followed by one space, so a read of one file subject costs that subject's events, not the log's length.
-- The index finds a blob by its subject id, the UUIDv5 of its BLAKE3 digest.
ALTER TABLE artifact_files ADD COLUMN file_events TEXT NOT NULL DEFAULT '';
CREATE INDEX artifact_files_by_file_id ON artifact_files (file_id);

-- A database with blobs from before this migration gets their histories from a replay, run by the next start.
UPDATE views_status SET stale = TRUE, reason = 'migration 0010: blob histories are rebuilt by replay'
    WHERE EXISTS (SELECT 1 FROM artifact_files);
