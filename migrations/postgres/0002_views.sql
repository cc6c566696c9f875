-- Materialised views over the event log. Every row carries `sequence`, the event that last changed it.
-- Digests are stored as their strings (`blake3:<hex>`, `sha256:<hex>`).

CREATE TABLE artifact_files (
    blake3              TEXT    PRIMARY KEY,
    sha256              TEXT    NOT NULL,
    size                BIGINT  NOT NULL,
    media_type          TEXT,
    file_id             UUID    NOT NULL,
    ingested_sequence   BIGINT  NOT NULL,
    sequence            BIGINT  NOT NULL
);
CREATE INDEX artifact_files_by_sha256 ON artifact_files (sha256);

CREATE TABLE artifact_packages (
    package_id          UUID        PRIMARY KEY,
    name                TEXT        NOT NULL,
    version             TEXT        NOT NULL,
    metadata            BYTEA       NOT NULL,
    created_by          TEXT        NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    created_sequence    BIGINT      NOT NULL,
    sequence            BIGINT      NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE artifact_package_files (
    package_id  UUID    NOT NULL REFERENCES artifact_packages (package_id) ON DELETE CASCADE,
    path        TEXT    NOT NULL,
    blake3      TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    media_type  TEXT,
    sequence    BIGINT  NOT NULL,
    PRIMARY KEY (package_id, path)
);
CREATE INDEX artifact_package_files_by_blake3 ON artifact_package_files (blake3);

CREATE TABLE retention_state (
    package_id  UUID        PRIMARY KEY REFERENCES artifact_packages (package_id) ON DELETE CASCADE,
    until       TIMESTAMPTZ,
    hold        BOOLEAN     NOT NULL,
    reason      TEXT,
    expired     BOOLEAN     NOT NULL,
    sequence    BIGINT      NOT NULL
);

CREATE TABLE storage_locations (
    blake3      TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    tier        TEXT    NOT NULL,
    sequence    BIGINT  NOT NULL,
    PRIMARY KEY (blake3, location)
);
