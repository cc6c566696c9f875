-- The append-only event log and its head.
-- Timestamps are RFC 3339 text in UTC with microseconds; UUIDs are 16-byte blobs; digests are 32-byte blobs.

CREATE TABLE log_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    log_id      BLOB    NOT NULL,
    sequence    INTEGER NOT NULL,
    chain_hash  BLOB    NOT NULL,
    created_at  TEXT    NOT NULL
);

CREATE TABLE events (
    sequence        INTEGER PRIMARY KEY,
    created_at      TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    subject_kind    TEXT    NOT NULL,
    subject_id      BLOB,
    actor           TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    payload_digest  BLOB    NOT NULL,
    chain_hash      BLOB    NOT NULL
);

CREATE INDEX events_by_subject ON events (subject_kind, subject_id, sequence);
CREATE INDEX events_by_type ON events (event_type, sequence);

CREATE TRIGGER events_are_immutable BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are immutable');
END;

CREATE TRIGGER events_are_append_only BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;
