"""Bottom layer: settings, logging, Postgres, object storage, the local stack and the CLI."""
