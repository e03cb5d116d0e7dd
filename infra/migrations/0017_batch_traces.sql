-- The trace of a batch (issue 23): the OpenTelemetry trace id of the request that submitted it, so the
-- API's answer, GET /v1/batches/{id} and `sightline trace` lead to its spans. NULL when it was not traced
-- (tracing off, sampled out, or a batch a camera stream recorded).
ALTER TABLE batches ADD COLUMN trace_id text;
