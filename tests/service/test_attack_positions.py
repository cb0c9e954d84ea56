"""Pixel triggers at explicit positions through the real service (``attack.positions`` of
``POST /v1/jobs``): jobs on input shapes without the paper's default positions run, certify the
backdoored test set exactly as rab does in-process, poison the training set at exactly those
positions and record them; bad positions answer 422 problem+json."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

import rab.data as rd
from rab.attacks import additive, poison_training_set

from .flow import run_knn_flow
from .helpers import is_problem

pytestmark = [pytest.mark.services, pytest.mark.slow]

KNN = {"sigma": 1, "k": 3, "num_test": 10}
CORNERS = [[0, 0], [0, 7], [7, 0], [7, 7]]
DATASETS: dict[str, tuple[dict[str, Any], Callable[[], rd.Dataset]]] = {
    "digits": (  # (1, 8, 8)
        {"builtin": "digits", "classes": [0, 1]},
        lambda: rd.select_classes(rd.load_sklearn("digits"), [0, 1]),
    ),
    "breast_cancer": ({"builtin": "breast_cancer"}, lambda: rd.load_sklearn("breast_cancer")),
}


def _dataset(client: httpx.Client, name: str) -> tuple[str, rd.Dataset]:
    """The built-in dataset ``name`` on the service (its id) and the same one in-process."""
    body, load = DATASETS[name]
    response = client.post("/v1/datasets", json=body)
    assert response.status_code in (200, 201), response.text
    local = load()
    assert response.json()["sha256"] == local.sha256
    return response.json()["id"], local


@pytest.mark.parametrize(
    ("name", "attack"),
    [
        ("digits", {"kind": "four_pixel", "norm": 1.0, "rate": 0.1, "target": 0,
                    "positions": CORNERS}),
        ("breast_cancer", {"kind": "one_pixel", "norm": 5.0, "rate": 0.05,
                           "target": 1, "positions": [[3]]}),
    ],
)
def test_knn_job_with_trigger_positions(
    client_a: httpx.Client, name: str, attack: dict[str, Any]
) -> None:
    dataset_id, local = _dataset(client_a, name)
    seed = 3
    # certificates of both subsets against rab in-process (backdoor p_a included), the attack
    # success rate, the model and its certify route
    job = run_knn_flow(client_a, dataset_id, local, KNN, attack, seed=seed)
    recorded = {"mode": "replace", "clip": True, "options": {}, **attack, "seed": seed}
    assert job["attack"] == recorded
    model = client_a.get(job["links"]["model"]).json()
    assert model["attack"] == recorded
    summary = client_a.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["backdoor"]["accuracy"] is not None
    assert 0.0 <= summary["attack_success_rate"] <= 1.0
    positions = [tuple(p) for p in attack["positions"]]
    channels = [[0]] if len(local.input_shape) > 1 else [[]]
    assert summary["poisoning"]["trigger"]["support"] == [
        [*c, *p] for p in positions for c in channels
    ]
    # the service's training set is the clean one with the pattern added at exactly those
    # positions (every channel) of the poisoned rows: built here without the position options
    pattern = np.zeros(local.input_shape)
    for position in positions:
        pattern[(..., *position)] = attack["norm"] / np.sqrt(len(positions))
    poisoned = poison_training_set(
        local, additive(pattern), rate=attack["rate"], target=attack["target"],
        seed=seed,
    )
    assert model["train_sha256"] == poisoned.dataset.sha256
    changed = np.argwhere(poisoned.dataset.X_train != local.X_train)
    spatial = len(positions[0])
    assert {(int(i[0]), *map(int, i[-spatial:])) for i in changed} == {
        (int(row), *p) for row in poisoned.source_indices for p in positions
    }


def test_bad_trigger_positions_answer_422(client_a: httpx.Client) -> None:
    digits, _ = _dataset(client_a, "digits")
    cancer, _ = _dataset(client_a, "breast_cancer")
    base = {"norm": 1.0, "rate": 0.1, "target": 0}
    cases: dict[str, tuple[str, dict[str, Any], str | None]] = {
        "four_pixel, 3 positions": (
            digits, {"kind": "four_pixel", "positions": CORNERS[:3]}, "exactly 4 position"
        ),
        "one_pixel, 2 positions": (
            digits, {"kind": "one_pixel", "positions": CORNERS[:2]}, "exactly 1 position"
        ),
        "5 positions": (digits, {"kind": "four_pixel", "positions": CORNERS * 2}, None),
        "row out of range": (
            digits, {"kind": "four_pixel", "positions": [*CORNERS[:3], [8, 0]]}, "(8, 0)"
        ),
        "feature out of range": (cancer, {"kind": "one_pixel", "positions": [[30]]}, "(30,)"),
        "negative index": (digits, {"kind": "one_pixel", "positions": [[0, -1]]}, "(0, -1)"),
        "one index for an image": (
            digits, {"kind": "one_pixel", "positions": [[3]]}, "(3,) has 1 indices"
        ),
        "two indices for a vector": (
            cancer, {"kind": "one_pixel", "positions": [[1, 2]]}, "(1, 2) has 2 indices"
        ),
        "positions with blending": (
            digits, {"kind": "blending", "positions": [[3, 3]]}, "takes no positions"
        ),
        "no default position": (digits, {"kind": "one_pixel"}, "pass positions explicitly"),
    }
    for case, (dataset_id, attack, detail) in cases.items():
        body = {"dataset_id": dataset_id, "method": "knn", "params": KNN,
                "attack": {**base, **attack}}
        response = client_a.post("/v1/jobs", json=body)
        assert is_problem(response, 422), (case, response.text)
        if detail is not None:
            assert detail in response.json()["detail"], (case, response.text)
