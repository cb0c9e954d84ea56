"""Routers of the /v1 API and the operational endpoints."""
