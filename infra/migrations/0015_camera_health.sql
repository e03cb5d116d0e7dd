-- Camera health (issue 23): each camera's image quality against the range calibrated from its own first
-- frames, and frozen images (the same bytes again and again), as maintenance signals kept apart from
-- model drift. Written by the classification activity, in the transaction that records a chunk's
-- predictions (activities.camera_health); reset by an operator's recalibration (api.services.camera_health).

-- One row per (site, camera): its state, why, since when, and what the next chunk is judged against.
CREATE TABLE camera_health (
    site_id             text NOT NULL,
    camera_id           text NOT NULL,
    state               text NOT NULL DEFAULT 'calibrating' CHECK (state IN ('calibrating', 'healthy', 'degraded')),
    reasons             text[] NOT NULL DEFAULT '{}',     -- blurred, dark, saturated, low_contrast, noisy, frozen
    since               timestamptz NOT NULL DEFAULT now(),
    -- What receivers were last told (camera.degraded or camera.recovered): a webhook goes out only when
    -- this changes, so a recalibration of a degraded camera is announced as recovered once it is seen well.
    announced           text NOT NULL DEFAULT 'healthy' CHECK (announced IN ('healthy', 'degraded')),
    -- While calibrating: {metric: {n, sum, sumsq}} of the frames so far; once calibrated: the same
    -- moments of the calibration frames, which the bands are derived from.
    calibration         jsonb NOT NULL DEFAULT '{}',
    calibration_target  integer NOT NULL,                  -- frames the calibration takes
    calibrated_at       timestamptz,
    recent              jsonb NOT NULL DEFAULT '{}',       -- {metric: moving average over the last frames}
    last_sha256         text NOT NULL DEFAULT '',          -- the camera's last accepted frame
    repeated_frames     integer NOT NULL DEFAULT 0,        -- how many frames in a row had those bytes
    transitions         integer NOT NULL DEFAULT 0,        -- events recorded (the last event's seq)
    last_batch_id       text,
    evaluated_at        timestamptz,
    webhook_url         text,                              -- the camera's batches' webhook, the last named
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, camera_id)
);
CREATE INDEX camera_health_degraded ON camera_health (site_id) WHERE state = 'degraded';

-- One row per classified chunk of a batch: what it was judged on and what it found. Its key makes the
-- evaluation happen once per chunk, however often the activity is retried; `degraded` marks the frames a
-- degraded camera sent.
CREATE TABLE camera_health_samples (
    batch_id         text NOT NULL,
    start_pos        integer NOT NULL,
    end_pos          integer NOT NULL,
    site_id          text NOT NULL,
    camera_id        text NOT NULL,
    frames           integer NOT NULL,                     -- accepted frames
    metrics          jsonb NOT NULL DEFAULT '{}',          -- {metric: {n, sum, sumsq}} of this chunk
    leading_sha256   text NOT NULL DEFAULT '',
    leading_run      integer NOT NULL DEFAULT 0,
    trailing_sha256  text NOT NULL DEFAULT '',
    trailing_run     integer NOT NULL DEFAULT 0,
    single_run       boolean NOT NULL DEFAULT false,       -- every accepted frame had the same bytes
    state            text,
    reasons          text[] NOT NULL DEFAULT '{}',
    degraded         boolean NOT NULL DEFAULT false,
    evaluated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, start_pos)
);
CREATE INDEX camera_health_samples_camera ON camera_health_samples (site_id, camera_id, evaluated_at DESC);

-- Every change of state: healthy -> degraded (with reasons) -> healthy, calibrations and recalibrations,
-- with the webhook deliveries an announcement started.
CREATE TABLE camera_health_events (
    site_id              text NOT NULL,
    camera_id            text NOT NULL,
    seq                  integer NOT NULL,
    from_state           text NOT NULL,
    to_state             text NOT NULL,
    reasons              text[] NOT NULL DEFAULT '{}',
    event                text,                             -- camera.degraded / camera.recovered, or null
    details              jsonb NOT NULL DEFAULT '{}',
    batch_id             text,                             -- the chunk that caused it (null: an operator)
    start_pos            integer,
    actor                text,                             -- the key that recalibrated
    webhook_workflow_ids text[] NOT NULL DEFAULT '{}',
    at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, camera_id, seq),
    UNIQUE (batch_id, start_pos)
);
