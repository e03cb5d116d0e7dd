-- Privacy settings and redaction before storage (issue 24).

-- Every change of a site's default or of one camera's privacy settings is a new revision: the settings in
-- force for a camera are its own latest revision, else its site's latest default (camera_id ''). A revision
-- is never changed or deleted: a frame's record names the revision it was redacted under (and its stored
-- object's key carries it, infra.store.redacted_frame_key), so that revision must keep saying what ran.
CREATE TABLE privacy_revisions (
    revision    bigserial PRIMARY KEY,
    site_id     text NOT NULL,
    camera_id   text NOT NULL DEFAULT '',          -- '': the site's default
    faces       boolean NOT NULL DEFAULT false,
    regions     jsonb NOT NULL DEFAULT '[]',       -- [{"mode": "blur"|"fill", "rect": [x0, y0, x1, y1]} | {"polygon": ...}]
    changed_by  text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX privacy_revisions_current ON privacy_revisions (site_id, camera_id, revision DESC);

CREATE FUNCTION privacy_revisions_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'privacy_revisions is append-only: % is not allowed; put a new revision', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER privacy_revisions_no_update_delete BEFORE UPDATE OR DELETE ON privacy_revisions
    FOR EACH ROW EXECUTE FUNCTION privacy_revisions_reject_change();

-- The revision a frame was redacted under; null: stored as received, byte for byte. The frame's sha256
-- stays that of the bytes received.
ALTER TABLE frames ADD COLUMN redaction_revision bigint REFERENCES privacy_revisions (revision);
