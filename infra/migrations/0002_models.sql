-- Model registry: versions (artifact sets in the object store), the aliases that name which version does
-- what, and the history of every alias change. Plus the predictions each version made.
CREATE SEQUENCE model_version_number;

CREATE TABLE model_versions (
    version              text PRIMARY KEY,             -- v1, v2, ... from model_version_number
    number               integer NOT NULL UNIQUE,
    architecture         text NOT NULL,
    manifest_key         text NOT NULL,                -- object key of manifest.json
    manifest_sha256      text NOT NULL,                -- the manifest itself is checked too
    parent_version       text REFERENCES model_versions (version),
    dataset_snapshot_id  text,
    metrics              jsonb NOT NULL DEFAULT '{}',
    created_by           text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_aliases (
    alias       text PRIMARY KEY CHECK (alias IN ('production', 'candidate', 'shadow')),
    version     text NOT NULL REFERENCES model_versions (version),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE model_alias_history (
    id            bigserial PRIMARY KEY,
    alias         text NOT NULL,
    from_version  text,                                -- NULL: the alias was unset before
    to_version    text,                                -- NULL: the alias was cleared
    changed_by    text NOT NULL DEFAULT '',
    reason        text NOT NULL DEFAULT '',
    changed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_alias_history_alias ON model_alias_history (alias, changed_at DESC);

-- One row per frame and model version: a retried activity upserts the same row, and shadow or canary
-- versions can predict the same frame side by side.
CREATE TABLE predictions (
    frame_id       text NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
    model_version  text NOT NULL,
    label          text NOT NULL,
    confidence     real NOT NULL,
    probabilities  jsonb NOT NULL,
    quality        jsonb NOT NULL DEFAULT '{}',
    timings        jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (frame_id, model_version)
);
CREATE INDEX predictions_version_created ON predictions (model_version, created_at DESC);
CREATE INDEX predictions_label_created ON predictions (label, created_at DESC);
