"""FastAPI application: validate, authenticate, persist, enqueue, query (never imports torch)."""
