-- The subject index covers the kinds of subject whose ids are made in time order (ADR 0023): packages (UUIDv7),
-- their retention, and the system. File and storage subjects are named by their blob's digest, so each of their
-- events would land on a random page of the index; reads filtered by them scan the sequence range instead.
-- `store::INDEXED_SUBJECTS` in the event log repeats this predicate word for word, so the planner can match it.
-- The new index is built first, under another name: building it holds appends off but not reads, and the table's
-- exclusive lock for the drop and the rename is taken only at the end, for as long as the commit takes.
CREATE INDEX events_by_subject_ordered ON events (subject_kind, subject_id, sequence)
    WHERE subject_kind IN ('package', 'retention', 'system');
DROP INDEX events_by_subject;
ALTER INDEX events_by_subject_ordered RENAME TO events_by_subject;
