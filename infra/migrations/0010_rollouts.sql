-- Model rollout (issue 12): the live traffic split serving follows, its history, the shadow version's
-- predictions (stored apart: never routed, never alerted on), the per-frame failures of a version other
-- than production, and one row per ModelRolloutWorkflow.

-- The split of live traffic (requests for the `production` alias) between versions, and the shadow
-- version that also classifies a share of frames. One row; no row means all traffic to production.
CREATE TABLE model_traffic (
    name            text PRIMARY KEY DEFAULT 'live' CHECK (name = 'live'),
    weights         jsonb NOT NULL DEFAULT '[]',   -- [{"version": "v2", "weight": 0.05}, ...] in bucket order
    shadow_version  text REFERENCES model_versions (version),
    shadow_share    real NOT NULL DEFAULT 0 CHECK (shadow_share >= 0 AND shadow_share <= 1),
    rollout_id      text,
    changed_by      text NOT NULL DEFAULT '',
    reason          text NOT NULL DEFAULT '',
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_traffic_history (
    id              bigserial PRIMARY KEY,
    weights         jsonb NOT NULL,
    shadow_version  text,
    shadow_share    real NOT NULL,
    rollout_id      text,
    changed_by      text NOT NULL DEFAULT '',
    reason          text NOT NULL DEFAULT '',
    changed_at      timestamptz NOT NULL DEFAULT now()
);

-- What the shadow version said about a frame production classified: compared, never acted on.
CREATE TABLE shadow_predictions (
    frame_id       text NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
    model_version  text NOT NULL,
    label          text NOT NULL,
    confidence     real NOT NULL,
    novelty        real,
    unfamiliar     boolean NOT NULL DEFAULT false,
    infer_ms       real,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (frame_id, model_version)
);
CREATE INDEX shadow_predictions_version_created ON shadow_predictions (model_version, created_at DESC);

-- A frame a canary or shadow version failed to classify (production answered it instead, or, for the
-- shadow, nothing was needed): the rollout gates' error rate.
CREATE TABLE prediction_errors (
    frame_id       text NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
    model_version  text NOT NULL,
    shadow         boolean NOT NULL DEFAULT false,
    error          text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (frame_id, model_version)
);
CREATE INDEX prediction_errors_version_created ON prediction_errors (model_version, created_at DESC);

-- One row per ModelRolloutWorkflow run, kept current by its activities.
CREATE TABLE rollouts (
    rollout_id          text PRIMARY KEY,                 -- the workflow id: rollout-<candidate version>
    candidate_version   text NOT NULL,
    previous_version    text,                             -- production when the rollout began
    status              text NOT NULL CHECK (status IN ('running', 'paused', 'awaiting_approval', 'promoted',
                                                        'rolled_back', 'aborted', 'failed')),
    stage               text NOT NULL DEFAULT 'starting',
    split               jsonb NOT NULL DEFAULT '{}',
    gates               jsonb NOT NULL DEFAULT '[]',
    reason              text,
    requested_by        text NOT NULL DEFAULT '',
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollouts_started ON rollouts (started_at DESC);
