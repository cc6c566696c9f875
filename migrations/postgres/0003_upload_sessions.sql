-- Upload sessions: data-plane bookkeeping, not registry state. No event describes them and replay never touches them.
-- Times are Unix milliseconds so both backends compare them alike.

CREATE TABLE upload_sessions (
    id              UUID    PRIMARY KEY,
    actor           TEXT    NOT NULL,
    created_ms      BIGINT  NOT NULL,
    expires_ms      BIGINT  NOT NULL,
    offset_bytes    BIGINT  NOT NULL,
    declared_size   BIGINT,
    declared_blake3 TEXT,
    declared_sha256 TEXT,
    media_type      TEXT,
    hasher          BYTEA   NOT NULL,
    staging         TEXT    NOT NULL,
    lease           UUID,
    lease_until_ms  BIGINT
);
CREATE INDEX upload_sessions_by_expiry ON upload_sessions (expires_ms);
