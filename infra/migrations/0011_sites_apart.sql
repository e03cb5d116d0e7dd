-- Sites apart (issue 21): a batch counts its frames by the model version that answered each one (a
-- canary's frames are not production's), and the stale-batch sweep finds batches still 'received'
-- long after their request recorded them.
ALTER TABLE batches
    ADD COLUMN version_counts jsonb NOT NULL DEFAULT '{}';
CREATE INDEX batches_received_updated ON batches (updated_at) WHERE status = 'received';
