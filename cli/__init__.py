"""The `sightline` command line and the demo: typer apps, mounted into one root app with plain imports."""
