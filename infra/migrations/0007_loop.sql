-- The loop, part 1: novelty on every prediction, drift reports, retraining runs and their decisions,
-- dataset snapshots, model cards and signatures.

-- How unfamiliar the frame was to the version that classified it (1.0 at the version's calibrated
-- threshold; NULL for rows written before this column), and whether it was past that threshold.
ALTER TABLE predictions
    ADD COLUMN novelty     real,
    ADD COLUMN unfamiliar  boolean NOT NULL DEFAULT false;

-- A version's model card (also in its signed artifact set), the retraining run that made it (one version
-- per run: a retried registration finds it), and the key that signed its manifest.
ALTER TABLE model_versions
    ADD COLUMN card              jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN training_run_id   text UNIQUE,
    ADD COLUMN signature_key_id  text;

-- One row per DriftCheckWorkflow run that checked a site: the verdict, where the HTML report is, and
-- what the drift policy decided.
CREATE TABLE drift_reports (
    report_id              text PRIMARY KEY,            -- the DriftCheckWorkflow id
    run_id                 text NOT NULL DEFAULT '',
    site_id                text NOT NULL,
    model_version          text,                        -- the production version whose reference was used
    status                 text NOT NULL CHECK (status IN ('drift', 'no_drift', 'insufficient_data')),
    drift_share            double precision,            -- share of columns whose drift test fired
    drifted_columns        integer NOT NULL DEFAULT 0,
    total_columns          integer NOT NULL DEFAULT 0,
    reference_frames       integer NOT NULL DEFAULT 0,
    current_frames         integer NOT NULL DEFAULT 0,
    current_from           timestamptz,                 -- the oldest and newest frame in the current window
    current_until          timestamptz,
    unfamiliar_rate_reference  double precision,
    unfamiliar_rate_current    double precision,
    html_key               text,                        -- the Evidently HTML report in the object store
    requested_by           text NOT NULL DEFAULT '',    -- 'schedule' or the key that asked
    decision               text,                        -- retrain, wait_for_labels, cooldown, ... (see below)
    decision_reason        text,
    retraining_workflow_id text,
    webhook_workflow_id    text,
    checked_at             timestamptz NOT NULL,        -- workflow time of the check
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drift_reports_site_checked ON drift_reports (site_id, checked_at DESC);
CREATE INDEX drift_reports_checked ON drift_reports (checked_at DESC);

-- Evidently's result per column of a report.
CREATE TABLE drift_report_columns (
    report_id    text NOT NULL REFERENCES drift_reports (report_id) ON DELETE CASCADE,
    column_name  text NOT NULL,
    column_type  text NOT NULL,                         -- numerical or categorical
    stattest     text NOT NULL,
    threshold    double precision,
    score        double precision,
    drifted      boolean NOT NULL,
    PRIMARY KEY (report_id, column_name)
);

-- Every drift policy decision with its reason: retrain, or wait (send drift.detected and wait for labels).
CREATE TABLE retraining_decisions (
    report_id              text PRIMARY KEY REFERENCES drift_reports (report_id) ON DELETE CASCADE,
    site_id                text NOT NULL,
    decision               text NOT NULL CHECK (decision IN ('retrain', 'wait_for_labels', 'cooldown',
                                                             'already_retraining')),
    reason                 text NOT NULL,
    labels_available       integer NOT NULL,
    labels_required        integer NOT NULL,
    last_retraining_at     timestamptz,
    cooldown_seconds       double precision NOT NULL,
    snapshot_id            text,
    retraining_workflow_id text,
    webhook_workflow_id    text,
    decided_at             timestamptz NOT NULL
);

-- Dataset snapshots: content-addressed manifests in the object store (datasets/<id>/manifest.json).
CREATE TABLE dataset_snapshots (
    snapshot_id      text PRIMARY KEY,
    manifest_key     text NOT NULL,
    manifest_sha256  text NOT NULL,
    counts           jsonb NOT NULL,
    labels_until     timestamptz,                       -- reviewed labels decided up to this time
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per RetrainingWorkflow (id retraining-<snapshot id>), kept current by its activities.
CREATE TABLE retraining_runs (
    workflow_id          text PRIMARY KEY,
    snapshot_id          text NOT NULL,
    status               text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    phase                text NOT NULL DEFAULT 'starting',
    trigger_kind         text NOT NULL,                 -- drift, manual (API), cli
    drift_report_id      text,
    requested_by         text NOT NULL DEFAULT '',
    note                 text NOT NULL DEFAULT '',
    parameters           jsonb NOT NULL DEFAULT '{}'::jsonb,
    production_version   text,                          -- the version it was measured against
    candidate_version    text,
    outcome              text,                          -- candidate (handed to rollout) or rejected
    outcome_reason       text,
    evaluation           jsonb NOT NULL DEFAULT '{}'::jsonb,
    epochs_run           integer,
    resumed_from_epoch   integer,
    error                text,
    started_at           timestamptz NOT NULL,          -- workflow time: drift cooldowns compare with it
    finished_at          timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retraining_runs_started ON retraining_runs (started_at DESC);
