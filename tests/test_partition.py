"""Poison-count certificates (rab.partition): brute force on tiny problems, order invariance,
resumable seeded training, the evaluation method."""

from __future__ import annotations

import io
import itertools
import json

import numpy as np
import pytest

from rab.bounds import ABSTAIN
from rab.partition import (
    NO_VOTE,
    PartitionScheme,
    certify_with_learner,
    dpa_certificate,
    fa_certificate,
    plain_knn_certificate,
    vote_counts,
)
from rab.partition.certificate import plurality
from rab.partition.knn import plain_knn_order


def nearest_neighbour(X: np.ndarray, y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """1-NN base learner (ties to the lower row), cheap enough to retrain every partition."""
    d = ((X_test[:, None, :] - X[None, :, :]) ** 2).sum(axis=2)
    return y[np.argmin(d, axis=1)]


def predict_plurality(votes: np.ndarray, num_classes: int) -> np.ndarray:
    return plurality(vote_counts(votes, num_classes))[0]


def toy(seed: int = 0, n: int = 80, classes: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, 2))
    y = rng.integers(0, classes, n)
    X = (centres[y] + rng.normal(size=(n, 2))).astype(np.float32)
    X_test = (centres[rng.integers(0, classes, 6)] + rng.normal(size=(6, 2))).astype(np.float32)
    return X, y.astype(np.int64), X_test


# ---- hashing ---------------------------------------------------------------------------------

def test_partitions_do_not_depend_on_row_order() -> None:
    X, y, X_test = toy()
    scheme = PartitionScheme(7, "fa", 3)
    perm = np.random.default_rng(1).permutation(len(X))
    a = [(X[r].tobytes(), y[r].tobytes()) for r in scheme.subsets(X, y)]
    b = [(X[perm][r].tobytes(), y[perm][r].tobytes()) for r in scheme.subsets(X[perm], y[perm])]
    assert a == b
    ca, _ = certify_with_learner(X, y, X_test, scheme, nearest_neighbour, 3)
    cb, _ = certify_with_learner(X[perm], y[perm], X_test, scheme, nearest_neighbour, 3)
    assert np.array_equal(ca.count, cb.count) and np.array_equal(ca.prediction, cb.prediction)


def test_hash_is_content_only_and_canonical() -> None:
    X, y, _ = toy()
    dpa = PartitionScheme(5)
    bucket, _ = dpa.buckets(X, y)
    again, _ = dpa.buckets(X.astype(np.float64), y.astype(np.int32))  # canonical dtypes
    assert np.array_equal(bucket, again)
    zero = np.zeros((1, 2), np.float32)
    assert dpa.buckets(zero, np.zeros(1, np.int64))[1] == dpa.buckets(-zero, np.zeros(1))[1]
    sizes = sorted(len(r) for r in dpa.subsets(X, y))
    assert sum(sizes) == len(X) and sizes[0] != sizes[-1]  # unequal partitions happen


def test_fa_spread_each_bucket_feeds_d_classifiers() -> None:
    spread = PartitionScheme(6, "fa", 3).buckets_of_classifiers()
    assert spread.shape == (18, 3)
    assert np.array_equal(spread[:, 0], np.arange(18))
    assert np.array_equal(np.bincount(spread.ravel(), minlength=18), np.full(18, 3))
    with pytest.raises(ValueError, match="applies to"):
        PartitionScheme(3, "dpa", 2)


# ---- vote-level certificates: exhaustive ------------------------------------------------------

def _survives_all(votes: np.ndarray, groups: list[list[int]], r: int, classes: int) -> bool:
    """Every choice of r groups (buckets) whose classifiers take ANY votes keeps the prediction."""
    base = predict_plurality(votes[:, None], classes)[0]
    options = list(range(-1, classes))
    for chosen in itertools.combinations(range(len(groups)), r):
        hit = sorted({i for g in chosen for i in groups[g]})
        for new in itertools.product(options, repeat=len(hit)):
            changed = votes.copy()
            changed[hit] = new
            if predict_plurality(changed[:, None], classes)[0] != base:
                return False
    return True


@pytest.mark.parametrize("seed", range(25))
def test_dpa_certificate_is_exact_on_votes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes, k = 3, 7
    votes = rng.choice([-1, 0, 0, 1, 2], size=k)
    cert = dpa_certificate(votes[:, None], classes)
    if cert.prediction[0] == ABSTAIN:
        assert cert.count[0] == -1
        return
    r = int(cert.count[0])
    groups = [[i] for i in range(k)]
    assert _survives_all(votes, groups, r, classes)
    assert not _survives_all(votes, groups, r + 1, classes)  # tight
    assert cert.modifications[0] == r // 2


@pytest.mark.parametrize("seed", range(25))
def test_fa_certificate_holds_exhaustively_and_equals_dpa_at_d1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = 3
    scheme = PartitionScheme(3, "fa", 2)
    spread = scheme.buckets_of_classifiers()
    votes = rng.choice([-1, 0, 0, 1, 2], size=scheme.num_classifiers)
    cert = fa_certificate(votes[:, None], spread, classes)
    groups = [[i for i, row in enumerate(spread) if b in row] for b in range(scheme.num_buckets)]
    if cert.prediction[0] != ABSTAIN:
        assert _survives_all(votes, groups, int(cert.count[0]), classes)
    one = fa_certificate(votes[:, None], np.arange(len(votes))[:, None], classes)
    dpa = dpa_certificate(votes[:, None], classes)
    assert np.array_equal(one.count, dpa.count) and np.array_equal(one.prediction, dpa.prediction)


def test_fa_at_d1_equals_dpa_on_many_votes() -> None:
    rng = np.random.default_rng(3)
    votes = rng.integers(-1, 4, size=(40, 300))
    spread = PartitionScheme(40, "fa", 1).buckets_of_classifiers()
    assert np.array_equal(fa_certificate(votes, spread, 4).count, dpa_certificate(votes, 4).count)


def test_dpa_formula_and_tie_rule() -> None:
    # 5 votes for class 1, 3 for class 0: gap = 5 - (3 + 1) = 1 -> 0; class 0 wins ties.
    votes = np.array([1] * 5 + [0] * 3)[:, None]
    assert dpa_certificate(votes, 2).count[0] == 0
    votes = np.array([0] * 5 + [1] * 3 + [NO_VOTE] * 2)[:, None]
    assert dpa_certificate(votes, 2).count[0] == 1  # (5 - 3) / 2
    tie = np.array([0, 1])[:, None]
    assert dpa_certificate(tie, 2).prediction[0] == 0
    assert dpa_certificate(np.full((3, 1), NO_VOTE), 2).prediction[0] == ABSTAIN


# ---- retrained brute force: DPA / FA with a 1-NN base learner ---------------------------------

def _attack(rng: np.random.Generator, X: np.ndarray, y: np.ndarray, x: np.ndarray,
            r: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """r random insertions (many near x), deletions, or modifications (2 each)."""
    X, y = X.copy(), y.copy()
    budget = r
    while budget > 0:
        kind = rng.choice(["insert", "delete", "modify"] if budget >= 2 else ["insert", "delete"])
        point = (x + rng.normal(scale=rng.choice([1e-3, 0.5, 3.0]), size=x.shape)).astype(X.dtype)
        label = rng.integers(0, classes)
        if kind == "insert":
            X, y = np.vstack([X, point[None]]), np.append(y, label)
            budget -= 1
        elif kind == "delete" and len(X) > 1:
            keep = np.arange(len(X)) != rng.integers(len(X))
            X, y = X[keep], y[keep]
            budget -= 1
        elif kind == "modify":
            i = rng.integers(len(X))
            X[i], y[i] = point, label
            budget -= 2
    return X, y


@pytest.mark.parametrize("scheme", [PartitionScheme(9), PartitionScheme(4, "fa", 3)],
                         ids=["dpa", "fa"])
def test_random_poisoning_within_the_count_never_changes_the_prediction(scheme) -> None:
    X, y, X_test = toy(n=60)
    rng = np.random.default_rng(0)
    cert, _ = certify_with_learner(X, y, X_test, scheme, nearest_neighbour, 3)
    assert cert.count.max() >= 1
    for t, x in enumerate(X_test):
        for _ in range(15):
            Xp, yp = _attack(rng, X, y, x, int(cert.count[t]), 3)
            after, _ = certify_with_learner(Xp, yp, x[None], scheme, nearest_neighbour, 3)
            assert after.prediction[0] == cert.prediction[t]


def _insertion_into(bucket: int, scheme: PartitionScheme, x: np.ndarray, label: int,
                    rng: np.random.Generator) -> np.ndarray:
    """A point within 1e-4 of x whose content hashes into ``bucket``."""
    while True:
        point = (x + rng.uniform(-1e-4, 1e-4, size=x.shape)).astype(np.float32)
        if scheme.buckets(point[None], np.array([label]))[0][0] == bucket:
            return point


def test_dpa_one_more_insertion_can_change_the_prediction() -> None:
    X, y, X_test = toy(n=60)
    scheme = PartitionScheme(9)
    cert, votes = certify_with_learner(X, y, X_test, scheme, nearest_neighbour, 3)
    t = int(np.argmax(cert.count))
    c = int(cert.prediction[t])
    counts = vote_counts(votes[:, t : t + 1], 3)[0]
    rival = max((o for o in range(3) if o != c), key=lambda o: (counts[o] + (o < c), -o))
    rng = np.random.default_rng(0)
    Xp, yp = X, y
    for i in np.flatnonzero(votes[:, t] == c)[: int(cert.count[t]) + 1]:
        point = _insertion_into(int(i), scheme, X_test[t], rival, rng)
        Xp, yp = np.vstack([Xp, point[None]]), np.append(yp, rival)
    after, _ = certify_with_learner(Xp, yp, X_test[t : t + 1], scheme, nearest_neighbour, 3)
    assert after.prediction[0] != c


# ---- plain K-NN --------------------------------------------------------------------------------

def plain_knn(X: np.ndarray, y: np.ndarray, x: np.ndarray, k: int, classes: int) -> int:
    """Reference: rank by (distance, index), majority of the first min(k, n), ties to smaller."""
    d = ((X - x) ** 2).sum(axis=1)
    ranked = sorted(range(len(X)), key=lambda i: (d[i], i))[: min(k, len(X))]
    return int(np.argmax(np.bincount(y[ranked], minlength=classes)))


def _neighbours_after(X, y, ops, candidates):
    """Apply ops: ("ins", pos, cand, label) / ("del", i) / ("mod", i, cand, label)."""
    rows = [(X[i], y[i]) for i in range(len(X))]
    for op in ops:
        if op[0] == "ins":
            rows.insert(op[1] % (len(rows) + 1), (candidates[op[2]], op[3]))
        elif op[0] == "del":
            del rows[op[1] % len(rows)]
        else:
            rows[op[1] % len(rows)] = (candidates[op[2]], op[3])
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


@pytest.mark.parametrize("seed", [1, 2, 5, 7])  # seeds with certified counts 1, 1, 2, 1
def test_knn_count_holds_for_every_operation_sequence(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k, classes = 9, 5, 3
    X = rng.integers(0, 4, size=(n, 1)).astype(np.float64)  # integer grid: many distance ties
    y = rng.choice([0, 0, 0, 0, 1, 2], size=n)
    x = np.array([1.0])
    cert = plain_knn_certificate(X, y, x[None], k=k, num_classes=classes)
    c, r = int(cert.prediction[0]), int(cert.count[0])
    assert c == plain_knn(X, y, x, k, classes) and r >= 1
    candidates = np.array([[1.0], [0.0], [2.0], [3.0]])  # ties with existing points included
    single = ([("ins", p, j, lab) for p in (0, n) for j in range(4) for lab in range(classes)]
              + [("del", i) for i in range(n)]
              + [("mod", i, j, lab) for i in range(n) for j in range(2) for lab in range(classes)])
    for ops in itertools.product(single, repeat=r):
        Xp, yp = _neighbours_after(X, y, ops, candidates)
        assert plain_knn(Xp, yp, x, k, classes) == c, ops
    assert cert.modifications[0] == r


def test_knn_one_more_insertion_changes_the_prediction() -> None:
    X = np.array([[0.0], [0.1], [0.2], [0.3], [0.4], [5.0]])
    y = np.array([1, 0, 0, 0, 0, 1])  # the last two of the 5 nearest are of the winning class
    x = np.array([0.0])
    cert = plain_knn_certificate(X, y, x[None], k=5, num_classes=2)
    assert cert.prediction[0] == 0 and cert.count[0] == 1  # tally 4:1, gap 3
    Xp = np.vstack([[[0.0]], [[0.0]], X])  # two points at x, labelled 1, ahead in the order
    yp = np.concatenate([[1, 1], y])
    assert plain_knn(Xp, yp, x, 5, 2) == 1
    assert plain_knn(Xp[1:], yp[1:], x, 5, 2) == 0


def test_knn_tally_equals_the_full_ranking() -> None:
    """The vote from a partition equals the vote of the first K of the whole ranking
    (``plain_knn_order``), with many distance ties and K from 1 to beyond n."""
    rng = np.random.default_rng(11)
    X = rng.integers(0, 3, size=(40, 2)).astype(np.float64)
    y = rng.integers(0, 3, size=40)
    tests = rng.integers(0, 3, size=(25, 2)).astype(np.float64)
    for k in (1, 2, 5, 9, 40, 45):
        cert = plain_knn_certificate(X, y, tests, k=k, num_classes=3)
        for t, x in enumerate(tests):
            tally = np.bincount(y[plain_knn_order(X, x)[:k]], minlength=3)
            assert cert.prediction[t] == np.argmax(tally)
            gaps = tally[cert.prediction[t]] - tally - (np.arange(3) < cert.prediction[t])
            gaps[cert.prediction[t]] = 10**9
            assert cert.count[t] == (gaps.min() // 2 if gaps.min() >= 0 else -1)


def test_knn_count_matches_the_project_tie_break() -> None:
    X = np.array([[1.0], [1.0], [1.0]])
    y = np.array([1, 0, 0])
    cert = plain_knn_certificate(X, y, np.array([[1.0]]), k=1, num_classes=2)
    assert cert.prediction[0] == 1  # equal distances: the lower index wins


# ---- base-model training -----------------------------------------------------------------------

torch = pytest.importorskip("torch")


def _config(k: int = 6, seed: int = 11, **overrides):
    from rab.ensemble.config import preset
    from rab.partition import PartitionConfig

    scheme = PartitionScheme(k)
    settings = {"arch": "mlp", "epochs": 3, "batch_size": 4, **overrides}
    base = preset("tabular", input_shape=(2,), num_classes=3, sigma=0.0,
                  num_models=scheme.num_classifiers, seed=seed, **settings)
    return PartitionConfig(scheme, base)


def _model_bytes(directory) -> list[bytes]:
    return [p.read_bytes() for p in sorted(directory.glob("model_*.pt"))]


def test_batched_training_follows_the_single_model_loop() -> None:
    from rab.partition import train_subset, train_subsets_batched

    X, y, _ = toy(n=40)
    config = _config()
    subsets = config.scheme.subsets(X, y)
    assert len({len(s) for s in subsets}) > 1  # unequal sizes, several steps per epoch
    together = train_subsets_batched(config.base, X, y, subsets, range(6))
    for i, artifact in enumerate(together):
        alone = train_subset(config.base, X, y, subsets[i], i)
        a = torch.load(io.BytesIO(alone.state_dict_bytes), weights_only=True)
        b = torch.load(io.BytesIO(artifact.state_dict_bytes), weights_only=True)
        for name in a:
            assert torch.allclose(a[name], b[name], atol=1e-5), name


def test_interrupted_training_resumes_to_identical_bytes(tmp_path) -> None:
    from rab.partition import read_partition_config, train_partition

    X, y, _ = toy(n=40)
    config = _config()
    train_partition(config, X, y, tmp_path / "whole", chunk=4)

    class StopError(Exception):
        pass

    def stop_after_five(done: int, total: int) -> None:
        if done == 5:
            raise StopError

    with pytest.raises(StopError):  # chunk [4, 5] is cut after model 4
        train_partition(config, X, y, tmp_path / "cut", chunk=4, progress=stop_after_five)
    assert len(list((tmp_path / "cut").glob("model_*.pt"))) == 5
    perm = np.random.default_rng(0).permutation(len(X))  # the row order does not matter
    train_partition(config, X[perm], y[perm], tmp_path / "cut")  # chunk from the manifest
    assert _model_bytes(tmp_path / "whole") == _model_bytes(tmp_path / "cut")
    assert read_partition_config(tmp_path / "cut") == config
    side = json.loads((tmp_path / "cut" / "model_00003.json").read_text())
    assert side["job_seed"] == 11 and side["training_seed"] == [11, 3]
    assert side["train_size"] == len(config.scheme.subsets(X, y)[3])
    with pytest.raises(ValueError, match="another"):
        train_partition(_config(seed=12), X, y, tmp_path / "cut")


def test_empty_partition_abstains(tmp_path) -> None:
    from rab.partition import certify_votes, partition_votes, train_partition

    X, y, X_test = toy(n=5)
    config = _config(k=12)
    assert min(len(s) for s in config.scheme.subsets(X, y)) == 0
    train_partition(config, X, y, tmp_path)
    votes = partition_votes(tmp_path, X_test)
    empty = [i for i, s in enumerate(config.scheme.subsets(X, y)) if not len(s)]
    assert (votes[empty] == NO_VOTE).all() and (votes[[i for i in range(12) if i not in empty]]
                                                >= 0).all()
    cert = certify_votes(votes, config.scheme, 3)
    assert np.array_equal(cert.count, dpa_certificate(votes, 3).count)


def test_partition_method_through_the_pipeline(tmp_path) -> None:
    from rab.data import Dataset
    from rab.evaluation import (
        KnnMethod,
        PartitionMethod,
        certify_test_sets,
        method_from_dict,
    )
    from rab.evaluation.pipeline import evaluation_metrics
    from rab.evaluation.testsets import prepare

    X, y, _ = toy(n=60)
    data = Dataset(X[:48], y[:48], X[48:], y[48:], input_shape=(2,), feature_range=None,
                   class_names=("a", "b", "c"), name="toy")
    method = method_from_dict({"name": "partition", "k": 5, "arch": "mlp", "epochs": 2,
                               "seed": 3})
    assert isinstance(method, PartitionMethod) and method.sigma == 0.0
    ev = prepare(data)
    out = certify_test_sets(ev.train, ev.tests, method, workdir=tmp_path)
    clean = out["clean"]
    assert clean.poison_count is not None and clean.poison_count.method == "dpa"
    assert np.array_equal(clean.poison_count.prediction, clean.certificates.prediction)
    metrics = evaluation_metrics(ev, out)
    assert "0" in metrics["clean"]["poison_count"]["certified_accuracy"]
    knn = certify_test_sets(ev.train, ev.tests, KnnMethod(sigma=1.0, k=3, num_levels=20))
    count = knn["clean"].poison_count
    assert count is not None and count.classifier == "plain K-NN (K=3)"
    with pytest.raises(ValueError, match="unknown partition parameters"):
        method_from_dict({"name": "partition", "sigma": 1.0})


def test_grid_with_methods_and_a_seedless_partition_is_refused() -> None:
    from rab.experiments.config import parse_config
    from rab.experiments.named import named_config

    config = named_config("dpa-mnist-reduced")
    assert [c.method.name for c in config.cells] == ["partition", "knn"]
    assert config.cells[0].method.seed == 0 and config.cells[0].method.k == 1200
    raw = {"name": "x", "sigmas": [1.0], "methods": [{"name": "partition", "k": 3}],
           "datasets": [{"source": "digits"}]}
    with pytest.raises(ValueError, match="seed"):
        parse_config(raw)
