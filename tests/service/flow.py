"""The end-to-end flows shared by the PostgreSQL/Redis tests and the embedded-mode test: submit,
poll, read every certificate page (K-NN: checked against an in-process computation), check the
filters, the summary, the provenance, new inputs and the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import rab.data as rd
from rab.attacks import backdoor_test_set, make_trigger, poison_training_set
from rab.ensemble.noise import noise_seed_from_digest
from rab.knn import default_edges, exact_knn

from .conftest import wait_for_job
from .helpers import npz_bytes, upload

RADII = ("0", "0.05", "0.1", "0.2", "0.5", "1")
SPAMBASE_SPLIT = {"test_fraction": 0.2, "split_seed": 0}
SPAMBASE_KNN = {"sigma": 1.0, "k": 5, "spread": 0.1, "num_test": 24}
SPAMBASE_ATTACK = {"kind": "one_pixel", "norm": 0.1, "rate": 0.02, "target": 0}
MNIST01_ENSEMBLE = {"sigma": 0.5, "num_models": 6, "epochs": 3, "batch_size": 32,
                    "models_per_task": 2, "alpha": 0.05, "num_test": 16}


def run_spambase_knn_flow(client: httpx.Client, shared_data: Path) -> dict[str, Any]:
    """Upload the real UCI Spambase file over HTTP, then the K-NN flow under a one-pixel
    backdoor; returns the job."""
    path = shared_data / "spambase.data"
    response = upload(client, path.read_bytes(), "spambase.csv", SPAMBASE_SPLIT)
    assert response.status_code in (200, 201), response.text
    dataset = response.json()
    local = rd.load_csv(path, **SPAMBASE_SPLIT)
    assert dataset["sha256"] == local.sha256
    assert dataset["train_size"] == 3680 and dataset["test_size"] == 921
    return run_knn_flow(client, dataset["id"], local, SPAMBASE_KNN, SPAMBASE_ATTACK, seed=7)


def mnist01_subset(shared_data: Path) -> dict[str, np.ndarray]:
    """A seeded, balanced subset of MNIST 0/1: 200 training and 16 test images (uint8)."""
    rng = np.random.default_rng(2024)
    with np.load(shared_data / "mnist_01.npz", allow_pickle=False) as d:
        X_train, y_train, X_test, y_test = (d[k] for k in ("X_train", "y_train", "X_test",
                                                            "y_test"))
    train = np.sort(np.concatenate([rng.choice(np.flatnonzero(y_train == c), 100, replace=False)
                                    for c in (0, 1)]))
    test = rng.choice(len(y_test), 16, replace=False)
    return {"X_train": X_train[train], "y_train": y_train[train],
            "X_test": X_test[test], "y_test": y_test[test]}


def upload_mnist01(client: httpx.Client, shared_data: Path) -> tuple[dict[str, Any], rd.Dataset]:
    """The MNIST 0/1 subset uploaded as an npz, and the same data loaded locally."""
    arrays = mnist01_subset(shared_data)
    response = upload(client, npz_bytes(**arrays), "mnist01.npz")
    assert response.status_code in (200, 201), response.text
    local = rd.from_arrays(*arrays.values(), name="mnist01", preprocessing=rd.PIXELS)
    assert response.json()["sha256"] == local.sha256
    return response.json(), local


def all_certificates(client: httpx.Client, job_id: str, subset: str, **filters: Any) -> list[Any]:
    """Every certificate of a job (optionally filtered), read page by page (keyset cursor)."""
    items: list[Any] = []
    cursor = None
    while True:
        params = {"subset": subset, "limit": 7, **filters}
        if cursor is not None:
            params["after"] = cursor
        response = client.get(f"/v1/jobs/{job_id}/certificates", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def reference(
    dataset: rd.Dataset, params: dict[str, Any], attack: dict[str, Any] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """In-process exact K-NN probabilities and labels of each test subset, from rab directly
    (the attack as the job recorded it: its seed, its trigger at its explicit ``positions``
    when it has them)."""
    n = params["num_test"]
    train, tests = dataset, {"clean": (dataset.X_test[:n], dataset.y_test[:n])}
    if attack is not None:
        positions = attack.get("positions")
        where = {} if positions is None else (
            {"position": positions[0]} if attack["kind"] == "one_pixel"
            else {"positions": positions}
        )
        trigger = make_trigger(
            attack["kind"], dataset.input_shape, norm=attack["norm"], **where
        )
        train = poison_training_set(
            dataset, trigger, rate=attack["rate"], target=attack["target"], seed=attack["seed"]
        ).dataset
        backdoor = backdoor_test_set(dataset, trigger, target=attack["target"])
        tests["backdoor"] = (backdoor.X[:n], backdoor.y_true[:n])
    edges = default_edges(
        int(np.prod(dataset.input_shape)), params["sigma"], params.get("num_levels", 200),
        params.get("spread", 1.0),
    )
    out = {}
    for subset, (X, y) in tests.items():
        result = exact_knn(
            train.X_train, train.y_train, X, sigma=params["sigma"], k=params["k"], edges=edges,
            num_classes=dataset.num_classes, backend="numpy",
        )
        out[subset] = (result.proba, y)
    return out


def run_knn_flow(
    client: httpx.Client,
    dataset_id: str,
    local: rd.Dataset,
    params: dict[str, Any],
    attack: dict[str, Any] | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Submit a K-NN job over HTTP and check everything it serves; returns the job. The
    attack's ``seed`` (None: the service draws one) is checked in the job's record."""
    body: dict[str, Any] = {"dataset_id": dataset_id, "method": "knn", "params": params}
    if attack is not None:
        body["attack"] = attack if seed is None else {**attack, "seed": seed}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    job = wait_for_job(client, submitted.json()["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"]["done"] == job["progress"]["total"] > 0
    assert job["started_at"] and job["finished_at"]
    if attack is not None:
        assert job["seeds"]["poisoning"] == job["attack"]["seed"] is not None
        assert seed is None or job["seeds"]["poisoning"] == seed
    expected = reference(local, params, job["attack"])
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    for subset, (proba, labels) in expected.items():
        certs = all_certificates(client, job["id"], subset)
        assert [c["index"] for c in certs] == list(range(len(labels)))
        pred = np.array([c["prediction"] for c in certs])
        radius = np.array([float(c["radius"]) for c in certs])
        p_a = np.array([c["p_a"] for c in certs])
        assert [c["label"] for c in certs] == labels.tolist()
        top = proba.argmax(axis=1)
        assert np.array_equal(np.array([c["top_class"] for c in certs]), top)
        np.testing.assert_allclose(p_a, proba.max(axis=1), atol=1e-9)
        assert np.array_equal(pred == -1, radius == 0)  # abstain exactly where R = 0 (eq. 14)
        correct = pred == labels
        # the summary agrees with the per-sample rows (metrics recomputed here, not via rab)
        assert summary[subset]["accuracy"] == np.mean(correct)
        for r in RADII:
            want = np.mean(correct & (radius > float(r)))
            assert np.isclose(summary[subset]["certified_accuracy"][r], want), (subset, r)
        # filters
        robust = all_certificates(client, job["id"], subset, min_radius=0.5)
        assert [c["index"] for c in robust] == np.flatnonzero(radius >= 0.5).tolist()
        wrong = all_certificates(client, job["id"], subset, correct="false")
        assert [c["index"] for c in wrong] == np.flatnonzero(~correct).tolist()
        abstained = all_certificates(client, job["id"], subset, abstain="true")
        assert [c["index"] for c in abstained] == np.flatnonzero(pred == -1).tolist()
        one = client.get(f"/v1/jobs/{job['id']}/certificates/3", params={"subset": subset})
        assert one.json() == certs[3]
    if attack is not None:
        proba, _ = expected["backdoor"]
        asr = np.mean(proba.argmax(axis=1) == attack["target"])
        assert np.isclose(summary["attack_success_rate"], asr)
    check_model(client, job, local, all_certificates(client, job["id"], "clean"))
    check_curve(client, job)
    return job


def run_ensemble_flow(
    client: httpx.Client, dataset_id: str, local: rd.Dataset, params: dict[str, Any], seed: int,
    min_accuracy: float,
) -> dict[str, Any]:
    """Submit a small DNN-RAB ensemble job over HTTP and check everything it serves; returns
    the job. Its members' hashes and noise seeds are checked in the model's provenance."""
    body = {"dataset_id": dataset_id, "method": "ensemble", "params": {**params, "seed": seed}}
    submitted = client.post("/v1/jobs", json=body)
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["progress"]["total"] == params["num_models"]
    job = wait_for_job(client, submitted.json()["id"], timeout=400)
    assert job["state"] == "succeeded", job
    assert job["seeds"] == {"poisoning": None, "training": seed}
    certs = all_certificates(client, job["id"], "clean")
    labels = local.y_test[: params["num_test"]]
    assert [c["label"] for c in certs] == labels.tolist()
    summary = client.get(f"/v1/jobs/{job['id']}/summary").json()
    pred = np.array([c["prediction"] for c in certs])
    assert summary["clean"]["accuracy"] == np.mean(pred == labels)
    assert summary["clean"]["accuracy"] >= min_accuracy, summary["clean"]
    assert set(summary["votes_sha256"]) == {"clean"}
    members = client.get(job["links"]["model"]).json()["members"]
    assert [m["index"] for m in members] == list(range(params["num_models"]))
    assert len({m["state_sha256"] for m in members}) == params["num_models"]
    for m in members:  # each test-time noise seed derives from its model's hash
        assert m["noise_seed"] == noise_seed_from_digest(m["state_sha256"])
    check_model(client, job, local, certs)
    check_curve(client, job)
    return job


def check_curve(client: httpx.Client, job: dict[str, Any]) -> None:
    """The job's certified-accuracy plot is a real PNG."""
    png = client.get(f"/v1/jobs/{job['id']}/curve.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and len(png.content) > 2000


def check_model(
    client: httpx.Client, job: dict[str, Any], local: rd.Dataset, expected_certificates: list[Any]
) -> None:
    """Provenance of the job's model, and certifying new inputs with it: the first clean test
    points sent as new inputs get exactly the certificates the evaluation gave them."""
    model = client.get(job["links"]["model"]).json()
    assert model["job_id"] == job["id"] and model["dataset_sha256"] == local.sha256
    assert model["params"] == job["params"] and model["seeds"] == job["seeds"]
    assert model["code_version"]
    inputs = local.X_test[:3]
    flat = inputs.reshape(len(inputs), -1).tolist()
    answer = client.post(f"{job['links']['model']}/certify", json={"inputs": flat})
    assert answer.status_code == 200, answer.text
    got = answer.json()["certificates"]
    for mine, theirs in zip(got, expected_certificates[:3], strict=True):
        assert mine["label"] is None and mine["subset"] == "inputs"
        for field in ("index", "prediction", "top_class", "abstain"):
            assert mine[field] == theirs[field], field
        # the same computation on a different batch of points: equal up to float rounding
        assert np.isclose(mine["p_a"], theirs["p_a"], rtol=0, atol=1e-12)
        assert np.isclose(mine["p_b"], theirs["p_b"], rtol=0, atol=1e-12)
        if min(theirs["p_b"], 1 - theirs["p_a"]) > 1e-9:  # else the radius (eq. 14) turns on
            # probabilities within float rounding of 0 and 1, which differ between batches
            assert np.isclose(float(mine["radius"]), float(theirs["radius"]), rtol=1e-6)
    as_npz = client.post(  # the same inputs as an npz upload
        f"{job['links']['model']}/certify",
        files={"file": ("x.npz", npz_bytes(X=np.asarray(inputs)))},
    )
    assert as_npz.status_code == 200, as_npz.text
    assert [c["prediction"] for c in as_npz.json()["certificates"]] == [
        c["prediction"] for c in got
    ]
    bad = {
        "wrong shape": {"inputs": [[1.0, 2.0]]},
        "ragged": {"inputs": [flat[0], flat[1][:-1]]},
        "NaN": {"inputs": [[float("nan")] * len(flat[0])]},
        "empty": {"inputs": []},
    }
    for case, body in bad.items():
        response = client.post(  # json.dumps writes NaN literals, which Python's parser accepts
            f"{job['links']['model']}/certify", content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500, (case, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), case
    pickled = npz_bytes(X=np.array([list(flat[0])], dtype=object))
    response = client.post(f"{job['links']['model']}/certify", files={"file": ("x.npz", pickled)})
    assert response.status_code == 422 and "pickle" in response.json()["detail"].lower()
