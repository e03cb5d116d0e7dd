"""The edge agent (issue 25): capture beside the line, a durable local queue, uploads shaped by a rate
cap, local decisions from the signed production model. Depends on `vision`, `infra` and an HTTP
client; never on Temporal, Ray or the API's web framework."""
