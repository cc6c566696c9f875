-- Whether the views are known to be behind the log (after a restore imported events and before the replay that
-- follows it finished). `/readyz` fails while `stale` is set; a completed replay clears it.
CREATE TABLE views_status (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    stale   BOOLEAN NOT NULL,
    reason  TEXT
);
INSERT INTO views_status (id, stale, reason) VALUES (1, FALSE, NULL);
