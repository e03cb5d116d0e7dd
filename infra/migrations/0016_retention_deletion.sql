-- Retention and deletion (issue 24): per-site retention periods, deletion requests with the ledger of the
-- frames each one named, the frames each dataset snapshot trained on (lineage holds), model retirement,
-- and what a deletion left on the records of snapshots, models and drift reports.

-- A site's retention periods in days, overriding the settings' defaults (NULL: the default; 0: kept
-- for ever). Written by PUT /v1/sites/{site}/retention (admin, audited).
CREATE TABLE site_retention (
    site_id              text PRIMARY KEY,
    frames_days          integer CHECK (frames_days >= 0),
    predictions_days     integer CHECK (predictions_days >= 0),
    review_tasks_days    integer CHECK (review_tasks_days >= 0),
    drift_reports_days   integer CHECK (drift_reports_days >= 0),
    updated_by           text NOT NULL DEFAULT '',
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per deletion request (= its DeletionWorkflow id, deletion:<site>:<request id>). The scope is
-- what the request named (camera, site, time range, batches), never the frames' content; counts are
-- what the workflow removed so far, written in the transaction that removed it.
CREATE TABLE deletion_requests (
    deletion_id      text PRIMARY KEY,
    idempotency_key  text NOT NULL,
    fingerprint      text NOT NULL,                -- of the scope: a resubmission naming another is refused
    scope            jsonb NOT NULL,
    force            boolean NOT NULL DEFAULT false,
    reason           text NOT NULL DEFAULT '',
    status           text NOT NULL DEFAULT 'planning'
                     CHECK (status IN ('planning', 'deleting', 'finishing', 'completed', 'failed')),
    frames_total     integer NOT NULL DEFAULT 0,
    frames_deleted   integer NOT NULL DEFAULT 0,
    counts           jsonb NOT NULL DEFAULT '{}',
    aborted_rollouts text[] NOT NULL DEFAULT '{}',
    verified         boolean,                      -- the verifier's verdict once finished
    verification     jsonb NOT NULL DEFAULT '{}',
    requested_by     text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- The frames a deletion named, fixed when it was planned: what its chunks remove and what the verifier
-- proves gone. Identifiers only (id, digest, key), never bytes; `purged_at` marks a chunk's progress.
CREATE TABLE deletion_frames (
    deletion_id  text NOT NULL REFERENCES deletion_requests (deletion_id),
    frame_id     text NOT NULL,
    batch_id     text NOT NULL,
    sha256       text NOT NULL DEFAULT '',
    object_key   text NOT NULL,
    site_id      text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL,            -- the frame's: which drift reports' windows held it
    purged_at    timestamptz,
    PRIMARY KEY (deletion_id, frame_id)
);
CREATE INDEX deletion_frames_pending ON deletion_frames (deletion_id) WHERE purged_at IS NULL;

-- The reviewed frames each dataset snapshot's manifest lists (indexed from the manifest on first need):
-- what a model trained on the snapshot holds against retention.
CREATE TABLE snapshot_frames (
    snapshot_id  text NOT NULL,
    frame_id     text NOT NULL,
    sha256       text NOT NULL DEFAULT '',
    PRIMARY KEY (snapshot_id, frame_id)
);
CREATE INDEX snapshot_frames_frame ON snapshot_frames (frame_id);
ALTER TABLE dataset_snapshots
    ADD COLUMN frames_indexed_at timestamptz,
    -- Deletions that removed frames this snapshot names: its manifest stays (a model's lineage), the
    -- frames are gone, and a rebuild skips them.
    ADD COLUMN deleted_frames integer NOT NULL DEFAULT 0,
    ADD COLUMN deletions text[] NOT NULL DEFAULT '{}';

-- A retired model version holds no frames any more (POST /v1/models/{version}/retire).
CREATE TABLE model_retirements (
    version     text PRIMARY KEY REFERENCES model_versions (version),
    retired_by  text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    retired_at  timestamptz NOT NULL DEFAULT now()
);

-- What a deletion removed of a model's training data: shown on its model card.
CREATE TABLE model_data_deletions (
    version       text NOT NULL REFERENCES model_versions (version),
    deletion_id   text NOT NULL REFERENCES deletion_requests (deletion_id),
    frames        integer NOT NULL,
    requested_by  text NOT NULL DEFAULT '',
    deleted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (version, deletion_id)
);

-- A drift report whose current window held deleted frames: its HTML (their features) is removed.
ALTER TABLE drift_reports
    ADD COLUMN samples_removed_by text;

CREATE INDEX frames_created ON frames (created_at);
