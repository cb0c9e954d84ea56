"""The service's contract, shared by the API (``app``), the workers and the typed client:

- ``api``: the request and response documents of the /v1 API (pydantic models);
- ``messaging``: task names, queues and the one routing table, and the Celery app built from
  a broker URL on demand;
- ``jobs``: how a job's stored fields map to the library's :class:`EvaluationRequest`.

It imports the library (``rab``) for its constants and rules, never ``app``, ``workers`` or
torch (enforced by import-linter, ``.importlinter``).
"""
