"""Bare FastAPI endpoints that the service's read path is measured against (bench_read_path)."""
