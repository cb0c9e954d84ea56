"""What both anchors do, as the service does it: the key check (SHA-256 of ``X-API-Key``, an
unrevoked key) and the certificate read joined with its job's owner, on the service's schema;
and the certificate's JSON fields (``contract.api.Certificate``)."""

from __future__ import annotations

import hashlib
from typing import Any

KEY_SQL = "SELECT id FROM api_keys WHERE key_hash = {} AND revoked_at IS NULL"
CERTIFICATE_SQL = (
    "SELECT c.sample_index, c.subset, c.label, c.prediction, c.top_class, c.p_a, c.p_b, "
    "c.radius, c.abstain, c.correct FROM certificates c JOIN jobs j ON j.id = c.job_id "
    "WHERE c.job_id = {} AND c.subset = 'clean' AND c.sample_index = {} AND j.owner_id = {}"
)
PATH = "/v1/jobs/{job_id}/certificates/{index}"


def key_hash(secret: str) -> str:
    """The stored form of a key (as ``app.auth.hash_key``)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def certificate(row: dict[str, Any]) -> dict[str, Any]:
    """A certificate row as the API's JSON object."""
    return {
        "index": row["sample_index"], "subset": row["subset"], "label": row["label"],
        "prediction": row["prediction"], "top_class": row["top_class"], "p_a": row["p_a"],
        "p_b": row["p_b"], "radius": row["radius"], "abstain": row["abstain"],
        "correct": row["correct"],
    }
