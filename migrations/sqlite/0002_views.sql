-- Materialised views over the event log. Every row carries `sequence`, the event that last changed it.
-- Digests are stored as their strings (`blake3:<hex>`, `sha256:<hex>`).

CREATE TABLE artifact_files (
    blake3              TEXT    PRIMARY KEY,
    sha256              TEXT    NOT NULL,
    size                INTEGER NOT NULL,
    media_type          TEXT,
    file_id             BLOB    NOT NULL,
    ingested_sequence   INTEGER NOT NULL,
    sequence            INTEGER NOT NULL
);
CREATE INDEX artifact_files_by_sha256 ON artifact_files (sha256);

CREATE TABLE artifact_packages (
    package_id          BLOB    PRIMARY KEY,
    name                TEXT    NOT NULL,
    version             TEXT    NOT NULL,
    metadata            BLOB    NOT NULL,
    created_by          TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    created_sequence    INTEGER NOT NULL,
    sequence            INTEGER NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE artifact_package_files (
    package_id  BLOB    NOT NULL REFERENCES artifact_packages (package_id) ON DELETE CASCADE,
    path        TEXT    NOT NULL,
    blake3      TEXT    NOT NULL,
    sha256      TEXT    NOT NULL,
    size        INTEGER NOT NULL,
    media_type  TEXT,
    sequence    INTEGER NOT NULL,
    PRIMARY KEY (package_id, path)
);
CREATE INDEX artifact_package_files_by_blake3 ON artifact_package_files (blake3);

CREATE TABLE retention_state (
    package_id  BLOB    PRIMARY KEY REFERENCES artifact_packages (package_id) ON DELETE CASCADE,
    until       TEXT,
    hold        INTEGER NOT NULL,
    reason      TEXT,
    expired     INTEGER NOT NULL,
    sequence    INTEGER NOT NULL
);

CREATE TABLE storage_locations (
    blake3      TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    tier        TEXT    NOT NULL,
    sequence    INTEGER NOT NULL,
    PRIMARY KEY (blake3, location)
);
