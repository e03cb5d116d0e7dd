-- Frame batches and their frames. Every write is keyed so a retried activity upserts, never duplicates.
CREATE TABLE batches (
    batch_id         text PRIMARY KEY,            -- equals the FrameBatchWorkflow id
    camera_id        text NOT NULL,
    site_id          text NOT NULL DEFAULT '',
    idempotency_key  text NOT NULL,
    status           text NOT NULL DEFAULT 'received',  -- received, running, completed, failed
    frame_count      integer NOT NULL,
    accepted_count   integer NOT NULL DEFAULT 0,
    rejected_count   integer NOT NULL DEFAULT 0,
    model_version    text,
    webhook_url      text,
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX batches_camera_created ON batches (camera_id, created_at DESC);
CREATE INDEX batches_site_created ON batches (site_id, created_at DESC);
CREATE INDEX batches_status_created ON batches (status, created_at DESC);

CREATE TABLE frames (
    frame_id       text PRIMARY KEY,              -- <batch_id>:<position>, see workflows.batch_types.frame_id
    batch_id       text NOT NULL REFERENCES batches (batch_id) ON DELETE CASCADE,
    position       integer NOT NULL,
    object_key     text NOT NULL,                 -- content-addressed: frames/sha256/..
    sha256         text NOT NULL,
    filename       text NOT NULL DEFAULT '',
    content_type   text NOT NULL DEFAULT '',
    size_bytes     integer NOT NULL,
    status         text NOT NULL DEFAULT 'pending',  -- pending, accepted, rejected
    reject_reason  text,
    width          integer,
    height         integer,
    image_format   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch_id, position)
);
CREATE INDEX frames_sha256 ON frames (sha256);
