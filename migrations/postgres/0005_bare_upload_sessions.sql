-- Bare upload sessions (ADR 0022): a session opened without declarations writes no row until its first bytes; its
-- id carries a tag made with the instance's key, so any instance sharing the database can check it.

-- Keys the instance makes once and keeps: `upload-sessions` tags bare sessions' ids.
CREATE TABLE instance_keys (
    name    TEXT    PRIMARY KEY,
    key     BYTEA   NOT NULL
);

-- A bare session's row, once its first bytes wrote it, remembers when its id expires: only the tagged id reaches it,
-- and its end leaves a closed mark.
ALTER TABLE upload_sessions ADD COLUMN bare_until_ms BIGINT;

-- Sessions committed or aborted before their ids expire, so an id cannot open again; swept once `until_ms` passes.
CREATE TABLE upload_sessions_closed (
    id          UUID    PRIMARY KEY,
    until_ms    BIGINT  NOT NULL
);
CREATE INDEX upload_sessions_closed_by_until ON upload_sessions_closed (until_ms);
