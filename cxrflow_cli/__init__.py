"""The `cxrflow` command line. Each module here defines `register(app)` and is picked up automatically."""
