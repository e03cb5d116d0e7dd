-- Where each classified frame went (human review, QA sample, alert), and the batch totals the API shows.
ALTER TABLE batches
    ADD COLUMN started_at     timestamptz,
    ADD COLUMN sent_to_review integer NOT NULL DEFAULT 0,
    ADD COLUMN defect_count   integer NOT NULL DEFAULT 0,
    ADD COLUMN alert_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN label_counts   jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Objects named by JSON submissions are not content-addressed; validation fills in the digest.
ALTER TABLE frames ALTER COLUMN sha256 SET DEFAULT '';

CREATE TABLE frame_routes (
    frame_id    text NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
    route       text NOT NULL,          -- review or alert
    reason      text NOT NULL,          -- low_confidence, qa_sample, defect
    workflow_id text,                   -- the review task or alert delivery started for it
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (frame_id, route)
);
