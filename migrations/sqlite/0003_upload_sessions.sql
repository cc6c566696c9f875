-- Upload sessions: data-plane bookkeeping, not registry state. No event describes them and replay never touches them.
-- Times are Unix milliseconds so both backends compare them alike.

CREATE TABLE upload_sessions (
    id              BLOB    PRIMARY KEY,
    actor           TEXT    NOT NULL,
    created_ms      INTEGER NOT NULL,
    expires_ms      INTEGER NOT NULL,
    offset_bytes    INTEGER NOT NULL,
    declared_size   INTEGER,
    declared_blake3 TEXT,
    declared_sha256 TEXT,
    media_type      TEXT,
    hasher          BLOB    NOT NULL,
    staging         TEXT    NOT NULL,
    lease           BLOB,
    lease_until_ms  INTEGER
);
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_ms);
