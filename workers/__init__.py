"""Celery app and tasks: run certification jobs, report progress, write results."""
