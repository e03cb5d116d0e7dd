-- Human review: the review queue projection, the labels reviewers give, escalations, and review totals
-- per batch. ReviewTaskWorkflow is the authority on a task; these rows are written by its activities.

-- One row per review task (= ReviewTaskWorkflow id), kept current by the workflow so the queue is one
-- indexed query. `version` only grows: a late or retried write of an older state never wins. No foreign
-- keys: the projection must accept a task whatever order the batch rows arrive in.
CREATE TABLE review_tasks (
    review_id         text PRIMARY KEY,
    version           bigint NOT NULL,
    run_id            text NOT NULL,
    frame_id          text NOT NULL,
    batch_id          text NOT NULL,
    object_key        text NOT NULL,
    camera_id         text NOT NULL,
    site_id           text NOT NULL DEFAULT '',
    reason            text NOT NULL,                      -- low_confidence, qa_sample
    predicted_label   text NOT NULL,
    confidence        double precision NOT NULL,
    model_version     text,
    classes           text[] NOT NULL,
    reviews_required  smallint NOT NULL DEFAULT 1,
    status            text NOT NULL CHECK (status IN ('pending', 'claimed', 'decided')),
    stage             text NOT NULL DEFAULT 'review',     -- review, adjudication
    priority          smallint NOT NULL,                  -- 0 low .. 3 urgent; escalation raises it
    escalated         boolean NOT NULL DEFAULT false,
    escalated_at      timestamptz,
    claimed_by        text,                               -- API key id of the claim holder
    claimed_by_name   text,
    claim_expires_at  timestamptz,
    sla_due_at        timestamptz,
    decided_by        text[] NOT NULL DEFAULT '{}',       -- reviewers who gave a decision (consensus)
    final_label       text,
    corrected         boolean,                            -- final label is another class than predicted
    created_at        timestamptz NOT NULL,
    decided_at        timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Written only by the API: a seconds-long reservation while it confirms a claim with the workflow,
    -- so two concurrent "next task" requests never try the same task. The workflow still decides.
    reserved_by       text,
    reserved_until    timestamptz
);
CREATE INDEX review_tasks_queue ON review_tasks (priority DESC, created_at) WHERE status <> 'decided';
CREATE INDEX review_tasks_batch ON review_tasks (batch_id);
CREATE INDEX review_tasks_frame ON review_tasks (frame_id);
CREATE INDEX review_tasks_decided ON review_tasks (decided_at) WHERE status = 'decided';

-- One row per reviewer decision: the ground truth retraining reads (with the view below).
CREATE TABLE review_labels (
    label_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    review_id         text NOT NULL,
    frame_id          text NOT NULL,
    batch_id          text NOT NULL,
    object_key        text NOT NULL,
    label             text NOT NULL,                      -- one of the model's classes, or 'unusable'
    reviewer_id       text NOT NULL,                      -- API key id
    reviewer_name     text NOT NULL DEFAULT '',
    decided_at        timestamptz NOT NULL,
    predicted_label   text NOT NULL,
    model_confidence  double precision NOT NULL,
    model_version     text,
    is_correction     boolean NOT NULL,
    note              text,
    stage             text NOT NULL DEFAULT 'review',     -- review, adjudication
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (review_id, reviewer_id)                       -- a retried write is a no-op
);
CREATE INDEX review_labels_frame ON review_labels (frame_id, decided_at DESC);
CREATE INDEX review_labels_decided ON review_labels (decided_at);

-- One row per task whose SLA passed.
CREATE TABLE review_escalations (
    review_id         text PRIMARY KEY,
    frame_id          text NOT NULL,
    batch_id          text NOT NULL,
    camera_id         text NOT NULL,
    site_id           text NOT NULL DEFAULT '',
    reason            text NOT NULL,
    priority_before   smallint NOT NULL,
    priority_after    smallint NOT NULL,
    sla_due_at        timestamptz NOT NULL,
    escalated_at      timestamptz NOT NULL,
    webhook_workflow_id text                              -- the escalation webhook delivery, when configured
);

-- Review totals on the batch, recomputed from review_tasks by every projection write.
ALTER TABLE batches
    ADD COLUMN reviews_pending     integer NOT NULL DEFAULT 0,
    ADD COLUMN reviews_decided     integer NOT NULL DEFAULT 0,
    ADD COLUMN review_corrections  integer NOT NULL DEFAULT 0,
    ADD COLUMN reviews_escalated   integer NOT NULL DEFAULT 0;

-- The reviewed label of each frame, as training snapshots take it: final decisions only, latest first,
-- frames reviewers marked unusable left out.
CREATE VIEW reviewed_frame_labels AS
SELECT DISTINCT ON (t.frame_id)
       t.frame_id, t.batch_id, t.object_key, t.camera_id, t.site_id, t.final_label AS label,
       t.predicted_label, t.confidence AS model_confidence, t.model_version, t.corrected, t.decided_at,
       t.review_id
  FROM review_tasks t
 WHERE t.status = 'decided' AND t.final_label IS NOT NULL AND t.final_label <> 'unusable'
 ORDER BY t.frame_id, t.decided_at DESC;
