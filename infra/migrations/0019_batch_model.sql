-- The model a batch asked for (issue 26): an alias (production, candidate, shadow) or a version name,
-- as POST /v1/batches named it; its workflow classifies with it, whoever starts the workflow (the API,
-- a resubmission, the stale-batch sweep). NULL for batches recorded before it: production answered them.
ALTER TABLE batches ADD COLUMN model text;
