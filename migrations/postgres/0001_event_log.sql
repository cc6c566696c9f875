-- The append-only event log and its head.

CREATE TABLE log_head (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    log_id      UUID        NOT NULL,
    sequence    BIGINT      NOT NULL,
    chain_hash  BYTEA       NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

-- The sequence is not a BIGSERIAL: appenders take it from log_head under its row lock, so numbers are gapless and in commit order.
CREATE TABLE events (
    sequence        BIGINT      PRIMARY KEY,
    created_at      TIMESTAMPTZ NOT NULL,
    event_type      TEXT        NOT NULL,
    subject_kind    TEXT        NOT NULL,
    subject_id      UUID,
    actor           TEXT        NOT NULL,
    payload         BYTEA       NOT NULL,
    payload_digest  BYTEA       NOT NULL,
    chain_hash      BYTEA       NOT NULL
);

CREATE INDEX events_by_subject ON events (subject_kind, subject_id, sequence);
CREATE INDEX events_by_type ON events (event_type, sequence);

CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only and immutable';
END;
$$;

CREATE TRIGGER events_are_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();
