"""Content-addressed artefact store (datasets, models, result arrays) keyed by SHA-256."""

from models_store.store import (
    CorruptObjectError,
    ObjectMissingError,
    ObjectStore,
    PendingObject,
    StoreError,
    TooLargeError,
)

__all__ = [
    "CorruptObjectError",
    "ObjectMissingError",
    "ObjectStore",
    "PendingObject",
    "StoreError",
    "TooLargeError",
]
