"""One module per Postgres table: the only code that writes that table, with the reads that belong to
it. Activities, the API services and the CLI call these; none of them holds SQL of its own."""
