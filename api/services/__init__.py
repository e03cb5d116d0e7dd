"""The service layer under the routes: each service holds its clients (Postgres pool, object store,
Temporal client, settings) and does the work a route asks for; routes only translate HTTP."""
