-- API keys (stored only as a hash) and the append-only audit log of every mutating call.
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,               -- public part of the key, safe to show and log
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('ingest', 'reviewer', 'ml-engineer', 'ops', 'admin')),
    key_hash      text NOT NULL UNIQUE,           -- sha256 hex of the whole key; the key itself is never stored
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- Who did what to which resource, and when. Rows keep the key's name and role as they were at the time,
-- and no foreign key: the record must outlive any change to the key.
CREATE TABLE audit_log (
    audit_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    key_id       text,
    key_name     text,
    role         text,
    action       text NOT NULL,                   -- e.g. batch.create, review.submit, rollout.abort
    resource     text NOT NULL,                   -- e.g. batches/batch-line-1-abc
    workflow_id  text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    request_id   text
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_workflow ON audit_log (workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX audit_log_key ON audit_log (key_id, at DESC);

-- Append-only in the database itself, not only by convention in the application: an UPDATE, DELETE
-- or TRUNCATE by any client fails. (A superuser can still drop the trigger; that is a visible DDL act.)
CREATE FUNCTION audit_log_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();
