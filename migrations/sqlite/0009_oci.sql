-- The OCI views (ADR 0028), from the `v1.oci.*` events. Repositories are not rows of their own: a repository exists
-- while it has a manifest or a tag.

-- A manifest of a repository, by its sha256 digest; its bytes are the blob `blake3`.
CREATE TABLE oci_manifests (
    repository      TEXT    NOT NULL,
    digest          TEXT    NOT NULL,
    blake3          TEXT    NOT NULL,
    media_type      TEXT    NOT NULL,
    size            INTEGER  NOT NULL,
    artifact_type   TEXT,
    subject         TEXT,
    annotations     BLOB,
    pushed_ms       INTEGER  NOT NULL,
    sequence        INTEGER  NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX oci_manifests_by_subject ON oci_manifests (repository, subject) WHERE subject IS NOT NULL;

-- What a manifest names, in order: config and layers, or an index's manifests.
CREATE TABLE oci_manifest_refs (
    repository  TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    position    INTEGER  NOT NULL,
    ref_digest  TEXT    NOT NULL,
    blake3      TEXT    NOT NULL,
    size        INTEGER  NOT NULL,
    media_type  TEXT,
    sequence    INTEGER  NOT NULL,
    PRIMARY KEY (repository, digest, position)
);
CREATE INDEX oci_manifest_refs_by_ref ON oci_manifest_refs (repository, ref_digest);

-- A tag and the manifest it names now.
CREATE TABLE oci_tags (
    repository  TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    digest      TEXT    NOT NULL,
    sequence    INTEGER  NOT NULL,
    PRIMARY KEY (repository, tag)
);
CREATE INDEX oci_tags_by_digest ON oci_tags (repository, digest);

-- Blobs deleted from one repository: hidden there, kept in the store for every other.
CREATE TABLE oci_blobs_deleted (
    repository  TEXT    NOT NULL,
    blake3      TEXT    NOT NULL,
    sequence    INTEGER  NOT NULL,
    PRIMARY KEY (repository, blake3)
);
