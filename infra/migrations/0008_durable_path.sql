-- The durable path: the API records a batch and its frames before the workflow starts (the workflow
-- carries no frame list), admission counts a site's batches in flight, a batch records how many of
-- its frames were unfamiliar and why it failed, and a resubmission is compared by its fingerprint.
ALTER TABLE batches
    ADD COLUMN unfamiliar_count integer NOT NULL DEFAULT 0,
    ADD COLUMN failure_reason text,
    ADD COLUMN request_fingerprint text;
CREATE INDEX batches_in_flight ON batches (site_id) WHERE status IN ('received', 'running');

-- A prediction's novelty score and whether it passed the model's calibrated threshold.
ALTER TABLE predictions
    ADD COLUMN IF NOT EXISTS novelty real,
    ADD COLUMN IF NOT EXISTS unfamiliar boolean NOT NULL DEFAULT false;
