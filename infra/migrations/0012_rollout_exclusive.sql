-- One rollout at a time per model line, and every alias or split move a compare-and-set (issue 21).

-- A model line: the production alias, the shadow alias and the live split serving follows for it
-- (there is one today, 'default'). Its revision moves, in the same transaction, with every change of
-- any of the three, so a mover that read revision N can apply its move only if the line is still at N.
CREATE TABLE model_lines (
    name        text PRIMARY KEY CHECK (name = 'default'),
    revision    bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO model_lines (name) VALUES ('default');

-- What moved the line to each revision, and by whom: a refused move names the changes it missed. A
-- move named by its mover (`move_id`, e.g. a rollout activity's) is recorded even when it changed
-- nothing, so a retry after it committed finds it applied instead of failing the compare-and-set.
CREATE TABLE model_line_changes (
    id          bigserial PRIMARY KEY,
    line        text NOT NULL DEFAULT 'default' REFERENCES model_lines (name),
    revision    bigint NOT NULL,                  -- the line's revision after this change
    move_id     text UNIQUE,
    changes     jsonb NOT NULL DEFAULT '[]',      -- [{"alias": "production", "from": "v1", "to": "v2"}, ...]
    details     jsonb NOT NULL DEFAULT '{}',      -- what the mover recorded with it
    changed_by  text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_line_changes_revision ON model_line_changes (line, revision);

-- The rollout that holds a model line: taken by its first activity, let go when it finishes. A holder
-- whose workflow no longer runs (terminated, failed) is released by the next rollout that asks.
CREATE TABLE rollout_leases (
    line               text PRIMARY KEY REFERENCES model_lines (name),
    rollout_id         text NOT NULL,
    run_id             text NOT NULL DEFAULT '',
    candidate_version  text NOT NULL,
    taken_at           timestamptz NOT NULL DEFAULT now()
);

-- A rollout that found the line held by another ends `skipped`, the holder named in its reason.
ALTER TABLE rollouts DROP CONSTRAINT rollouts_status_check;
ALTER TABLE rollouts ADD CONSTRAINT rollouts_status_check
    CHECK (status IN ('running', 'paused', 'awaiting_approval', 'promoted', 'rolled_back', 'aborted', 'failed',
                      'skipped'));
