"""The FastAPI application: routes by resource, auth dependencies, the reviewer pages."""
