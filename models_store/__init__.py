"""Content-addressed artefact store (datasets, models, result arrays) keyed by SHA-256."""
