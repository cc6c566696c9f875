-- Retention policies (a view of `v1.policy.set` and `v1.policy.removed`): the policy whose prefix is the longest
-- prefix of a package's name governs its versions.
CREATE TABLE retention_policies (
    name        TEXT    PRIMARY KEY,
    prefix      TEXT    NOT NULL,
    keep_last   INTEGER,
    keep_days   INTEGER,
    sequence    INTEGER  NOT NULL
);
