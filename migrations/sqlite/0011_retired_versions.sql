-- Versions deleted since they were published: a version means one manifest forever, so publishing a deleted
-- version again is allowed only with the manifest of its first `v1.package.created` event, which
-- `created_sequence` names. `sequence` is the first `v1.package.deleted` of the version.
CREATE TABLE retired_versions (
    name              TEXT    NOT NULL,
    version           TEXT    NOT NULL,
    created_sequence  INTEGER  NOT NULL,
    sequence          INTEGER  NOT NULL,
    PRIMARY KEY (name, version)
);

-- A database with deleted versions from before this migration gets their rows from a replay, run by the next start.
UPDATE views_status SET stale = TRUE, reason = 'migration 0011: deleted versions are recorded by replay'
    WHERE EXISTS (SELECT 1 FROM events WHERE event_type = 'v1.package.deleted');
