"""The evaluation pipeline (rab.evaluation) against independent recomputation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rab.bounds import ABSTAIN
from rab.evaluation import (
    AttackSpec,
    DatasetSpec,
    EnsembleMethod,
    KnnMethod,
    TestSet,
    certify_test_sets,
    concat,
    evaluate,
    load_dataset,
    method_from_dict,
    prepare,
    set_metrics,
    summary,
    take,
)
from rab.knn import certify_knn


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetSpec("digits", classes=(0, 1), train_size=120, test_size=40))


@pytest.fixture(scope="module")
def cancer():
    return load_dataset(DatasetSpec("breast_cancer", train_size=150, test_size=50, subset_seed=3))


def _brute_knn(X_train, y_train, X, k, num_classes):
    """Plain K-NN written out: sort distances, majority of the K nearest, ties to smallest class."""
    out = []
    for x in X.reshape(len(X), -1):
        d = np.sum((X_train.reshape(len(X_train), -1) - x) ** 2, axis=1)
        nearest = np.argsort(d, kind="stable")[:k]
        counts = np.bincount(y_train[nearest], minlength=num_classes)
        out.append(int(np.argmax(counts)))
    return np.array(out)


# ---- attack specs ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "laser"}, "unknown attack kind"),
        ({"kind": "one_pixel"}, "norm > 0"),
        ({"kind": "blending", "norm": -1.0}, "norm > 0"),
        ({"kind": "blending", "norm": float("nan")}, "norm > 0"),
        ({"kind": "blending", "norm": 1.0, "rate": 0.0}, "rate"),
        ({"kind": "blending", "norm": 1.0, "rate": 1.5}, "rate"),
        ({"kind": "blending", "norm": 1.0, "target": -1}, "target"),
        ({"kind": "blending", "norm": 1.0, "seed": -2}, "seed"),
        ({"kind": "blending", "norm": 1.0, "mode": "swap"}, "mode"),
        ({"kind": "badnets_patch", "norm": 1.0}, "takes no norm"),
        ({"kind": "blending", "norm": 1.0, "options": {"norm": 2.0}}, "not as an option"),
        ({"kind": "blending", "norm": 1.0, "positions": [[1]]}, "takes no positions"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [[1], [2]]}, "exactly 1 position"),
        ({"kind": "four_pixel", "norm": 1.0, "positions": [[1, 1]] * 3}, "exactly 4 position"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [[-1]]}, "non-negative"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [[True]]}, "non-negative"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [[]]}, "non-negative"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [3]}, "index tuples"),
        ({"kind": "one_pixel", "norm": 1.0, "positions": [[3]], "options": {"position": (2,)}},
         "not as options"),
    ],
)
def test_attack_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttackSpec(**kwargs)


def test_attack_spec_round_trip_and_unknown_keys():
    spec = AttackSpec("four_pixel", norm=0.5, rate=0.1, target=1, seed=7, options={"legacy": 0})
    assert AttackSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown attack keys"):
        AttackSpec.from_dict({"kind": "blending", "norm": 1.0, "poison_fraction": 0.1})
    with pytest.raises(ValueError, match="needs a 'kind'"):
        AttackSpec.from_dict({"norm": 1.0})


def test_attack_spec_positions_round_trip():
    spec = AttackSpec("four_pixel", norm=1.0, positions=[[0, 0], [0, 7], [7, 0], [7, 7]])
    assert spec.positions == ((0, 0), (0, 7), (7, 0), (7, 7))
    record = spec.to_dict()
    assert record["positions"] == [[0, 0], [0, 7], [7, 0], [7, 7]]
    assert AttackSpec.from_dict(record) == spec
    assert "positions" not in AttackSpec("four_pixel", norm=1.0).to_dict()  # result keys kept


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ([[8, 0]], r"position \(8, 0\) is outside input shape \(1, 8, 8\)"),
        ([[3]], r"position \(3,\) has 1 indices; inputs of shape \(1, 8, 8\) take 2"),
        ([[1, 2, 3]], "has 3 indices"),
    ],
)
def test_attack_positions_that_do_not_fit_the_inputs(digits, positions, message):
    with pytest.raises(ValueError, match=message):
        prepare(digits, AttackSpec("one_pixel", norm=1.0, rate=0.1, positions=positions))


def test_attack_that_does_not_fit_the_data(digits):
    with pytest.raises(ValueError, match="target class 2 is outside"):
        prepare(digits, AttackSpec("blending", norm=1.0, target=2))
    with pytest.raises(ValueError, match="position"):
        prepare(digits, AttackSpec("one_pixel", norm=1.0))  # no default position for (1, 8, 8)
    with pytest.raises(ValueError, match="poisons none"):
        prepare(digits, AttackSpec("blending", norm=1.0, rate=0.001))


# ---- prepare ----------------------------------------------------------------------------------

def test_prepare_poisons_and_builds_backdoor_test_set(digits):
    attack = AttackSpec("blending", norm=1.0, rate=0.1, target=0, seed=5)
    ev = prepare(digits, attack)
    n = len(digits.y_train)
    changed = np.flatnonzero(np.any(
        ev.train.X_train.reshape(n, -1) != digits.X_train.reshape(n, -1), axis=1))
    relabelled = np.flatnonzero(ev.train.y_train != digits.y_train)
    assert len(relabelled) == int(np.floor(0.1 * n))
    assert set(changed) <= set(relabelled)
    assert np.all(digits.y_train[relabelled] == 1) and np.all(ev.train.y_train[relabelled] == 0)
    # the blending pattern, recomputed: default_rng(0) standard normal scaled to norm 1, clipped
    noise = np.random.default_rng(0).standard_normal(digits.input_shape)
    pattern = noise / np.linalg.norm(noise)
    source = np.flatnonzero(digits.y_test == 1)
    expected = np.clip(digits.X_test[source].astype(np.float64) + pattern, 0.0, 1.0)
    backdoor = ev.test("backdoor")
    np.testing.assert_allclose(backdoor.X, expected, atol=1e-6)
    assert np.all(backdoor.labels == 1) and np.all(backdoor.attack_labels == 0)
    np.testing.assert_array_equal(ev.test("clean").X, digits.X_test)
    assert ev.poisoning["num_poisoned"] == len(relabelled)
    assert ev.poisoning["seed"] == 5


@pytest.mark.parametrize(
    ("kind", "positions"),
    [("four_pixel", [(0, 0), (0, 7), (7, 0), (7, 7)]), ("one_pixel", [(7, 0)])],
)
def test_prepare_puts_the_trigger_at_the_given_positions(digits, kind, positions):
    ev = prepare(digits, AttackSpec(kind, norm=0.8, rate=0.1, target=0, positions=positions))
    n = len(digits.y_train)
    poisoned = np.flatnonzero(ev.train.y_train != digits.y_train)
    assert len(poisoned) == int(np.floor(0.1 * n))
    pattern = np.zeros(digits.input_shape)
    for row, col in positions:
        pattern[0, row, col] = 0.8 / np.sqrt(len(positions))
    low, high = digits.feature_range
    expected = np.array(digits.X_train, dtype=np.float64)
    expected[poisoned] = np.clip(expected[poisoned] + pattern, low, high)
    np.testing.assert_allclose(ev.train.X_train, expected, atol=1e-6)
    changed = np.argwhere(ev.train.X_train != digits.X_train)
    assert set(changed[:, 0]) <= set(poisoned)
    assert {(r, c) for r, c in changed[:, 2:]} <= set(positions)
    assert ev.poisoning["trigger"]["support"] == [[0, *p] for p in positions]
    source = digits.X_test[digits.y_test == 1].astype(np.float64)
    np.testing.assert_allclose(ev.test("backdoor").X, np.clip(source + pattern, low, high),
                               atol=1e-6)


def test_prepare_without_attack_and_num_test(digits):
    ev = prepare(digits, None, num_test=7)
    assert [t.subset for t in ev.tests] == ["clean"] and len(ev.tests[0]) == 7
    assert ev.train is digits and ev.poisoning is None
    with pytest.raises(ValueError, match="num_test"):
        prepare(digits, None, num_test=0)


# ---- metrics ----------------------------------------------------------------------------------

def test_set_metrics_against_a_loop(digits):
    rng = np.random.default_rng(0)
    m = 50
    labels = rng.integers(0, 2, m)
    proba = rng.dirichlet([1.0, 1.0], size=m)
    from rab.bounds import certify_exact

    batch = certify_exact(proba, sigma=1.0)
    test = TestSet("backdoor", np.zeros((m, 1)), labels, np.zeros(m, dtype=np.int64))
    radii = [0.0, 0.1, 0.3, 1.0]
    got = set_metrics(test, batch, radii)
    for r in radii:
        acc = sum(1 for i in range(m) if batch.prediction[i] == labels[i] and batch.radius[i] > r)
        rate = sum(1 for i in range(m) if batch.radius[i] > r)
        assert got["certified_accuracy"][f"{r:g}"] == pytest.approx(acc / m)
        assert got["certified_rate"][f"{r:g}"] == pytest.approx(rate / m)
    assert got["accuracy"] == pytest.approx(np.mean(batch.prediction == labels))
    assert got["attack_success_rate"] == pytest.approx(np.mean(batch.prediction == 0))
    assert got["abstain_rate"] == pytest.approx(np.mean(batch.prediction == ABSTAIN))
    top = summary({"backdoor": (test, batch)}, radii)
    assert top["backdoor_accuracy"] == got["accuracy"]
    assert top["attack_success_rate"] == got["attack_success_rate"]


def test_chunked_certificates_equal_one_call(digits):
    method = KnnMethod(sigma=0.5, k=3)
    test = TestSet("clean", digits.X_test, digits.y_test)
    chunked = certify_test_sets(digits, [test], method)["clean"].certificates
    whole = certify_knn(digits.X_train, digits.y_train, digits.X_test, sigma=0.5, k=3,
                        num_classes=2, backend="numpy")
    for name in ("prediction", "top_class", "p_a", "p_b", "radius"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-9,
                                   atol=1e-12)
    halves = concat([whole, whole])
    assert len(halves) == 2 * len(whole) and halves.sigma == whole.sigma
    with pytest.raises(ValueError, match="at least one"):
        concat([])



def test_many_test_sets_certified_in_one_pass_equal_each_alone(digits):
    """A worker's batch of certify jobs (many small test sets, one pass) gives every set the
    certificates and poison counts it gets alone."""
    method = KnnMethod(sigma=0.5, k=3)
    sizes = [1, 3, 1, 20, 2]
    cuts = np.cumsum([0, *sizes])
    tests = [TestSet(f"job{i}", digits.X_test[a:b], None)
             for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    together = certify_test_sets(digits, tests, method)
    for test in tests:
        alone = certify_test_sets(digits, [test], method)[test.subset]
        got = together[test.subset]
        assert len(got.certificates) == len(test)
        for name in ("prediction", "top_class", "p_a", "p_b", "radius"):
            np.testing.assert_allclose(getattr(got.certificates, name),
                                       getattr(alone.certificates, name), rtol=1e-9, atol=1e-12)
        assert got.certificates.sigma == alone.certificates.sigma
        for name in ("prediction", "count", "modifications"):
            np.testing.assert_array_equal(getattr(got.poison_count, name),
                                          getattr(alone.poison_count, name))
        assert got.poison_count.classifier == alone.poison_count.classifier


def test_take_inverts_concat(digits):
    whole = certify_knn(digits.X_train, digits.y_train, digits.X_test[:5], sigma=0.5, k=3,
                        num_classes=2, backend="numpy")
    parts = [take(whole, slice(0, 2)), take(whole, slice(2, 5))]
    assert [len(p) for p in parts] == [2, 3]
    again = concat(parts)
    for name in ("prediction", "top_class", "p_a", "p_b", "radius"):
        np.testing.assert_array_equal(getattr(again, name), getattr(whole, name))
    assert (again.sigma, again.method) == (whole.sigma, whole.method)


# ---- the pipeline -------------------------------------------------------------------------------

def test_evaluate_knn_against_direct_computation(cancer):
    attack = AttackSpec("one_pixel", norm=50.0, rate=0.1, target=1, seed=2,
                        options={"position": (3,)})
    sigma, k = 100.0, 5  # radii far below the float-rounding regime of pB ~ 1e-16
    result = evaluate(cancer, KnnMethod(sigma=sigma, k=k, spread=1.0), attack,
                      radii=[0.0, 10.0, 50.0])
    ev = prepare(cancer, attack)
    np.testing.assert_array_equal(result.evaluation.train.X_train, ev.train.X_train)
    for test in ev.tests:
        direct = certify_knn(ev.train.X_train, ev.train.y_train, test.X, sigma=sigma, k=k,
                             num_classes=2, backend="numpy")
        got = result.certified[test.subset].certificates
        np.testing.assert_allclose(got.radius, direct.radius, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(got.prediction, direct.prediction)
        for r in result.radii:
            expected = np.mean((direct.prediction == test.labels) & (direct.radius > r))
            assert result.metrics[test.subset]["certified_accuracy"][f"{r:g}"] == \
                pytest.approx(expected)
        plain = _brute_knn(ev.train.X_train, ev.train.y_train, test.X, k, 2)
        assert result.vanilla[test.subset]["accuracy"] == pytest.approx(
            np.mean(plain == test.labels))
        if test.attack_labels is not None:
            assert result.vanilla[test.subset]["attack_success_rate"] == pytest.approx(
                np.mean(plain == test.attack_labels))
    diff = ev.train.X_train.astype(np.float64) - cancer.X_train.astype(np.float64)
    total = np.sqrt(np.sum(diff**2))  # eq. 14's left side, from the data itself
    assert result.metrics["attack_total_norm"] == pytest.approx(total, rel=1e-6)
    backdoor = result.certified["backdoor"].certificates
    labels = ev.test("backdoor").labels
    assert result.metrics["backdoor"]["certified_accuracy_at_attack_norm"] == pytest.approx(
        np.mean((backdoor.prediction == labels) & (backdoor.radius > total)))
    record = result.to_dict()
    assert record["attack"] == attack.to_dict()
    assert record["certificates"]["backdoor"]["radius"] == \
        result.certified["backdoor"].certificates.radius.tolist()


def test_evaluate_small_ensemble_abstains_as_the_bound_forces(digits):
    """With N = 3 hard votes and alpha = 0.001, pA <= (alpha / C)^(1/N) < 1/2: all abstain."""
    method = EnsembleMethod(sigma=0.5, num_models=3, epochs=1, alpha=0.001)
    result = evaluate(digits, method, AttackSpec("blending", norm=1.0, rate=0.1), radii=[0.0])
    for subset, cert in result.certified.items():
        assert np.all(cert.certificates.p_a <= (0.001 / 2) ** (1 / 3) + 1e-12)
        assert np.all(cert.certificates.prediction == ABSTAIN)
        assert result.metrics[subset]["certified_accuracy"]["0"] == 0.0
        assert cert.expected is not None  # point estimates, labelled as not certified
    assert "expected_not_certified" in result.to_dict(certificates=False)["metrics"]
    vanilla = method.config((1, 8, 8), 2, vanilla=True)
    assert vanilla.sigma == 0.0 and vanilla.num_models == 1 and vanilla.arch == "mlp"


def test_method_validation():
    with pytest.raises(ValueError, match="sigma"):
        KnnMethod(sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        EnsembleMethod(sigma=-1.0)
    with pytest.raises(ValueError, match="k must"):
        KnnMethod(sigma=1.0, k=0)
    with pytest.raises(ValueError, match="alpha"):
        EnsembleMethod(sigma=1.0, alpha=1.0)
    with pytest.raises(ValueError, match="unknown method"):
        method_from_dict({"name": "svm", "sigma": 1.0})
    with pytest.raises(ValueError, match="unknown knn parameters"):
        method_from_dict({"name": "knn", "sigma": 1.0, "alpha": 0.1})
    assert method_from_dict({"name": "knn", "sigma": 2, "k": 3}) == KnnMethod(sigma=2.0, k=3)


def test_dataset_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data set"):
        load_dataset(DatasetSpec("no-such-set"))
    with pytest.raises(FileNotFoundError):
        load_dataset(DatasetSpec(str(tmp_path / "missing.npz")))
    with pytest.raises(ValueError, match="train_size"):
        load_dataset(DatasetSpec("digits", classes=(0, 1), train_size=10_000))
    with pytest.raises(ValueError, match="unknown data set keys"):
        DatasetSpec.from_dict({"source": "digits", "colour": "red"})


def test_authors_spambase_split(shared_data):
    """The authors' loader: train = first 80 % of the rows, test = the first 921 rows (spam)."""
    spec = DatasetSpec("spambase", variant="authors", split="authors")
    data = load_dataset(spec, shared_data)
    table = np.loadtxt(shared_data / "spambase.data", delimiter=",")
    assert data.X_train.shape == (3680, 56) and data.X_test.shape == (921, 56)
    np.testing.assert_allclose(data.X_test[:, :54], table[:921, :54], rtol=1e-6)
    np.testing.assert_allclose(data.X_test[:, 54], table[:921, 54] / table[:921, 56], rtol=1e-6)
    np.testing.assert_array_equal(data.X_test, data.X_train[:921])
    assert np.all(data.y_test == 1)  # the file lists spam first
    with pytest.raises(ValueError, match="Spambase loader only"):
        DatasetSpec("digits", split="authors")


# ---- reproduction settings (issue 14) -------------------------------------------------------

def test_shuffled_training_rows_are_seeded_and_recorded():
    plain = load_dataset(DatasetSpec("digits", classes=(0, 1), train_size=120, test_size=40))
    spec = DatasetSpec("digits", classes=(0, 1), train_size=120, test_size=40, shuffle_seed=5)
    shuffled, again = load_dataset(spec), load_dataset(spec)
    order = np.random.default_rng(5).permutation(120)
    np.testing.assert_array_equal(shuffled.X_train, plain.X_train[order])
    np.testing.assert_array_equal(shuffled.y_train, plain.y_train[order])
    np.testing.assert_array_equal(shuffled.X_test, plain.X_test)
    np.testing.assert_array_equal(again.X_train, shuffled.X_train)
    record = shuffled.meta["train_order"]
    assert record["shuffle_seed"] == 5 and record["num_rows"] == 120
    assert record["permutation_sha256"] == __import__("hashlib").sha256(
        order.astype("<i8").tobytes()).hexdigest()
    assert spec.to_dict()["shuffle_seed"] == 5
    assert "shuffle_seed" not in DatasetSpec("digits").to_dict()  # old cell keys unchanged
    result = evaluate(shuffled, KnnMethod(sigma=1.0, k=3), None, radii=[0.0])
    assert result.to_dict(certificates=False)["train_order"] == dict(record)
    with pytest.raises(ValueError, match="shuffle_seed"):
        DatasetSpec("digits", shuffle_seed=-1)


def test_knn_tie_break_depends_on_row_order():
    """Two training points at the same place, different classes, K = 1: the lower index wins
    every level tie, so swapping the rows flips the smoothed prediction (eq. 65)."""
    X = np.zeros((2, 2))
    x = np.array([[0.1, 0.0]])
    first = certify_knn(X, np.array([0, 1]), x, sigma=1.0, k=1, num_levels=20)
    swapped = certify_knn(X, np.array([1, 0]), x, sigma=1.0, k=1, num_levels=20)
    assert first.top_class[0] == 0 and swapped.top_class[0] == 1


def test_vanilla_success_rate_with_both_denominators(cancer):
    attack = AttackSpec("one_pixel", norm=50.0, rate=0.1, target=1, seed=2,
                        options={"position": (3,)})
    result = evaluate(cancer, KnnMethod(sigma=100.0, k=5), attack, radii=[0.0])
    ev = prepare(cancer, attack)
    backdoor = ev.test("backdoor")
    plain = _brute_knn(ev.train.X_train, ev.train.y_train, backdoor.X, 5, 2)
    hits = np.sum(plain == backdoor.attack_labels)
    entry = result.vanilla["backdoor"]
    assert entry["attack_success_rate"] == pytest.approx(hits / len(backdoor))
    assert entry["attack_success_rate_all_test"] == pytest.approx(hits / len(ev.test("clean")))
    assert len(backdoor) < len(ev.test("clean"))


def test_knn_edge_rule_reaches_the_edges_and_keeps_old_keys(cancer):
    assert "edge_rule" not in KnnMethod(sigma=1.0).to_dict()
    method = method_from_dict({"name": "knn", "sigma": 100.0, "edge_rule": "authors",
                               "spread": 0.1})
    assert method.to_dict()["edge_rule"] == "authors"
    got = evaluate(cancer, method, None, radii=[0.0]).certified["clean"].certificates
    direct = certify_knn(cancer.X_train, cancer.y_train, cancer.X_test, sigma=100.0, k=5,
                         spread=0.1, edge_rule="authors", backend="numpy")
    np.testing.assert_allclose(got.p_a, direct.p_a, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="edge_rule"):
        KnnMethod(sigma=1.0, edge_rule="paper")  # type: ignore[arg-type]
