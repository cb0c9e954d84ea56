"""Tests for rab.attacks: exact trigger geometry and norms, clipping, poisoning protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import unavailable

from rab.attacks import (
    AdditiveTrigger,
    additive,
    apply_trigger,
    backdoor_test_set,
    badnets_patch,
    blended_image,
    blending,
    four_pixel,
    label_map,
    make_trigger,
    one_pixel,
    poison_training_set,
    shift_permutation,
)
from rab.data import PIXELS, Dataset, from_arrays, load_npz

# REFERENCE section 4: (row, col) of each pixel, every channel; flat inputs use (feature,).
SPAM_ONE: list[tuple[int, ...]] = [(25,)]
SPAM_FOUR: list[tuple[int, ...]] = [(25,), (26,), (27,), (50,)]
EXPECTED: dict[tuple[str, tuple[int, ...]], list[tuple[int, ...]]] = {
    ("one_pixel", (1, 28, 28)): [(23, 23)],
    ("four_pixel", (1, 28, 28)): [(18, 20), (19, 19), (20, 18), (20, 20)],
    ("one_pixel", (3, 32, 32)): [(15, 15)],
    ("four_pixel", (3, 32, 32)): [(14, 16), (15, 15), (16, 14), (16, 16)],
    ("one_pixel", (3, 224, 224)): [(112, 112)],
    ("four_pixel", (3, 224, 224)): [(112, 112), (111, 113), (113, 111), (113, 113)],
    ("one_pixel", (57,)): SPAM_ONE,
    ("four_pixel", (57,)): SPAM_FOUR,
    ("one_pixel", (56,)): SPAM_ONE,
    ("four_pixel", (56,)): SPAM_FOUR,
}
# Per-entry value in units of delta, as written in the REFERENCE table.
PER_ENTRY = {
    ("one_pixel", 1): 1.0,
    ("four_pixel", 1): 0.5,
    ("one_pixel", 3): 1 / np.sqrt(3),
    ("four_pixel", 3): 1 / np.sqrt(12),
    ("one_pixel", 0): 1.0,
    ("four_pixel", 0): 0.5,  # spambase: no channel axis
}
BUILDERS: dict[str, Callable[..., AdditiveTrigger]] = {
    "one_pixel": one_pixel,
    "four_pixel": four_pixel,
}


@pytest.mark.parametrize(("kind", "shape"), sorted(EXPECTED))
def test_pixel_triggers_exact_positions_and_norms(kind: str, shape: tuple[int, ...]) -> None:
    delta = 0.7
    trigger = BUILDERS[kind](shape, delta)
    channels = shape[0] if len(shape) == 3 else 0
    expected = np.zeros(shape)
    for pos in EXPECTED[kind, shape]:
        index: tuple[slice | int, ...] = (slice(None), *pos) if channels else pos
        expected[index] = PER_ENTRY[kind, channels] * delta
    np.testing.assert_allclose(trigger.pattern, expected, rtol=1e-12, atol=0)
    assert np.isclose(np.linalg.norm(trigger.pattern), delta, rtol=1e-12)
    # applied to a zero batch, nothing is clipped: the effective norm is the requested one
    result = apply_trigger(trigger, np.zeros((2, *shape), np.float32), (0.0, 1.0))
    np.testing.assert_allclose(result.X[1], expected, rtol=1e-6)
    np.testing.assert_allclose(result.effective_norms, delta, rtol=1e-6)


def test_shapes_without_default_positions() -> None:
    with pytest.raises(ValueError, match=r"no default one_pixel position for input shape \(1, 8"):
        one_pixel((1, 8, 8), 1.0)
    with pytest.raises(ValueError, match="no default four_pixel position"):
        four_pixel((30,), 1.0)
    custom = one_pixel((1, 8, 8), 2.0, position=(6, 6))
    assert custom.pattern[0, 6, 6] == 2.0 and np.count_nonzero(custom.pattern) == 1
    with pytest.raises(ValueError, match="outside input shape"):
        one_pixel((1, 8, 8), 1.0, position=(8, 0))
    with pytest.raises(ValueError, match="repeat"):
        four_pixel((1, 8, 8), 1.0, positions=[(1, 1), (1, 1)])
    with pytest.raises(ValueError, match="positive and finite"):
        one_pixel((1, 28, 28), 0.0)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 224, 224), (57,), (56,)])
def test_blending_pattern(shape: tuple[int, ...]) -> None:
    noise = np.random.default_rng(0).standard_normal(shape)
    trigger = blending(shape, 1.5)
    np.testing.assert_allclose(trigger.pattern, noise / np.linalg.norm(noise) * 1.5, rtol=1e-12)
    assert np.isclose(np.linalg.norm(trigger.pattern), 1.5)
    legacy = np.random.RandomState(0).randn(*shape)
    np.testing.assert_allclose(
        blending(shape, 1.5, legacy=True).pattern, legacy / np.linalg.norm(legacy) * 1.5
    )
    assert not np.allclose(blending(shape, 1.5, seed=1).pattern, trigger.pattern)


def test_clipping_shrinks_the_effective_norm_and_reports_it() -> None:
    X = np.zeros((3, 1, 28, 28), np.float32)
    X[:, 0, 23, 23] = [0.0, 0.5, 0.9]
    result = apply_trigger(one_pixel((1, 28, 28), 1.0), X, (0.0, 1.0))
    expected = np.float32(1.0).astype(np.float64) - X[:, 0, 23, 23].astype(np.float64)
    np.testing.assert_allclose(result.effective_norms, expected, rtol=1e-12)
    assert result.X[:, 0, 23, 23].tolist() == [1.0, 1.0, 1.0]
    unclipped = apply_trigger(one_pixel((1, 28, 28), 1.0), X, (0.0, 1.0), clip=False)
    np.testing.assert_allclose(unclipped.effective_norms, 1.0, rtol=1e-6)
    # no feature range (raw tabular data): nothing is clipped
    spam = apply_trigger(four_pixel((57,), 0.1), np.full((2, 57), 20.0, np.float32), None)
    np.testing.assert_allclose(spam.effective_norms, 0.1, rtol=1e-4)


def test_unclipped_poisoning_declares_no_feature_range() -> None:
    # The authors did not clip their blending trigger: the poisoned features leave [0, 1], so
    # the poisoned set must not claim that range (the clean set keeps it).
    rng = np.random.default_rng(0)
    clean = from_arrays(rng.integers(0, 256, (40, 1, 4, 4), dtype=np.uint8),
                        np.repeat([0, 1], 20), rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8),
                        np.repeat([0, 1], 3), name="tiny", preprocessing=PIXELS)
    trigger = blending((1, 4, 4), 2.0)
    result = poison_training_set(clean, trigger, rate=0.25, target=0, seed=0, clip=False)
    poisoned = result.dataset
    assert clean.feature_range == (0.0, 1.0) and poisoned.feature_range is None
    rows = result.poisoned_indices
    assert poisoned.X_train[rows].min() < 0.0 or poisoned.X_train[rows].max() > 1.0
    np.testing.assert_allclose(
        np.linalg.norm((poisoned.X_train[rows] - clean.X_train[rows]).reshape(len(rows), -1),
                       axis=1), 2.0, rtol=1e-6)  # the whole pattern, nothing clipped away
    clipped = poison_training_set(clean, trigger, rate=0.25, target=0, seed=0).dataset
    assert clipped.feature_range == (0.0, 1.0)


@pytest.fixture(scope="module")
def mnist01(shared_data: Path) -> Dataset:
    path = shared_data / "mnist_01.npz"
    if not path.is_file():
        unavailable(f"{path} not found")
    return load_npz(path)


def test_blending_on_real_mnist_is_clipped(mnist01: Dataset) -> None:
    trigger = blending((1, 28, 28), 1.0)
    X = mnist01.X_train[:50]
    result = apply_trigger(trigger, X, mnist01.feature_range)
    brute = np.clip(X.astype(np.float64) + trigger.pattern, 0.0, 1.0).astype(np.float32)
    assert np.array_equal(result.X, brute)
    norms = np.linalg.norm((brute.astype(np.float64) - X).reshape(50, -1), axis=1)
    np.testing.assert_allclose(result.effective_norms, norms, rtol=1e-12)
    assert (result.effective_norms < 0.9).all()  # about half the pattern is negative on black


def _toy(n: int = 40, classes: int = 3) -> Dataset:
    rng = np.random.default_rng(4)
    return Dataset(
        X_train=rng.uniform(0, 1, (n, 1, 28, 28)),
        y_train=np.arange(n) % classes,
        X_test=rng.uniform(0, 1, (12, 1, 28, 28)),
        y_test=np.arange(12) % classes,
        input_shape=(1, 28, 28),
        feature_range=(0.0, 1.0),
        class_names=tuple("abcdefghij"[:classes]),
        name="toy",
    )


@pytest.mark.parametrize("mode", ["replace", "append"])
def test_poisoning_sizes_labels_and_total_norm(mode: str) -> None:
    clean = _toy()
    trigger = four_pixel((1, 28, 28), 1.0)
    res = poison_training_set(clean, trigger, rate=0.25, target=0, seed=3, mode=mode)  # type: ignore[arg-type]
    n, r = len(clean.y_train), 10  # floor(0.25 * 40)
    poisoned = res.dataset
    assert res.num_poisoned == r
    assert len(poisoned.y_train) == (n if mode == "replace" else n + r)
    assert np.array_equal(poisoned.X_test, clean.X_test)
    assert (clean.y_train[res.source_indices] != 0).all()
    assert np.array_equal(res.original_labels, clean.y_train[res.source_indices])
    assert (poisoned.y_train[res.poisoned_indices] == 0).all()
    brute = np.clip(clean.X_train[res.source_indices].astype(np.float64) + trigger.pattern, 0, 1)
    assert np.array_equal(poisoned.X_train[res.poisoned_indices], brute.astype(np.float32))
    untouched = np.setdiff1d(np.arange(n), res.poisoned_indices)
    assert np.array_equal(poisoned.X_train[untouched], clean.X_train[untouched])
    assert np.array_equal(poisoned.y_train[untouched], clean.y_train[untouched])
    if mode == "replace":
        diff = poisoned.X_train.astype(np.float64) - clean.X_train
        assert np.isclose(res.total_norm, np.linalg.norm(diff), rtol=1e-12)
    else:
        assert res.poisoned_indices.tolist() == list(range(n, n + r))
    np.testing.assert_allclose(
        res.total_norm, np.sqrt(np.sum(res.patterns.astype(np.float64) ** 2)), rtol=1e-6
    )
    assert res.total_norm <= np.sqrt(r) * 1.0 + 1e-9
    assert (res.effective_norms < 1.0).any()  # uniform(0, 1) pixels near 1 get clipped
    record = poisoned.meta["poisoning"]
    assert record["seed"] == 3 and record["mode"] == mode and record["num_poisoned"] == r
    assert record["clean_sha256"] == clean.sha256 and record["total_norm"] == res.total_norm


def test_poisoning_determinism_and_seed_dependence() -> None:
    clean, trigger = _toy(200), one_pixel((1, 28, 28), 0.5)
    a = poison_training_set(clean, trigger, rate=0.1, target=1, seed=7)
    b = poison_training_set(clean, trigger, rate=0.1, target=1, seed=7)
    c = poison_training_set(clean, trigger, rate=0.1, target=1, seed=8)
    assert np.array_equal(a.source_indices, b.source_indices)
    assert a.dataset.sha256 == b.dataset.sha256
    assert not np.array_equal(a.source_indices, c.source_indices)
    assert a.dataset.sha256 != c.dataset.sha256


def test_poisoned_rows_come_only_from_non_target_classes() -> None:
    clean = _toy(300, classes=3)
    for target in range(3):
        res = poison_training_set(
            clean, blending((1, 28, 28), 1.0), rate=0.6, target=target, seed=target
        )
        assert (clean.y_train[res.source_indices] != target).all()
        assert len(np.unique(res.source_indices)) == res.num_poisoned == 180
    with pytest.raises(ValueError, match="only 200 training points are outside the target"):
        poison_training_set(clean, blending((1, 28, 28), 1.0), rate=0.7, target=0, seed=0)


def test_all_to_all() -> None:
    clean = _toy(60, classes=3)
    perm = shift_permutation(3)
    assert perm.tolist() == [1, 2, 0]
    res = poison_training_set(clean, one_pixel((1, 28, 28), 1.0), rate=0.5, target=perm, seed=1)
    assert np.array_equal(res.dataset.y_train[res.poisoned_indices], perm[res.original_labels])
    assert set(res.original_labels.tolist()) == {0, 1, 2}
    test = backdoor_test_set(clean, one_pixel((1, 28, 28), 1.0), target=perm)
    assert len(test.y_true) == len(clean.y_test)
    assert np.array_equal(test.y_attack, perm[test.y_true])
    with pytest.raises(ValueError, match="identity"):
        label_map([0, 1, 2], 3)
    with pytest.raises(ValueError, match=r"permutation of 0..2"):
        label_map([1, 1, 0], 3)
    with pytest.raises(ValueError, match=r"outside 0..2"):
        label_map(3, 3)


def test_backdoor_test_set_views() -> None:
    clean = _toy()
    trigger = four_pixel((1, 28, 28), 1.0)
    test = backdoor_test_set(clean, trigger, target=2)
    non_target = np.flatnonzero(clean.y_test != 2)
    assert np.array_equal(test.source_indices, non_target)
    assert np.array_equal(test.y_true, clean.y_test[non_target])
    assert (test.y_attack == 2).all()
    brute = np.clip(clean.X_test[non_target].astype(np.float64) + trigger.pattern, 0, 1)
    assert np.array_equal(test.X, brute.astype(np.float32))


def test_other_toolkits_triggers() -> None:
    X = np.full((2, 3, 32, 32), 0.25, np.float32)
    patch = badnets_patch((3, 32, 32), size=3, value=1.0)
    out = apply_trigger(patch, X, (0.0, 1.0))
    changed = np.argwhere(out.X[0] != X[0])
    assert {tuple(p[1:]) for p in changed} == {(r, c) for r in (28, 29, 30) for c in (28, 29, 30)}
    np.testing.assert_allclose(out.effective_norms, np.sqrt(27 * 0.75**2), rtol=1e-6)
    placed = apply_trigger(badnets_patch((3, 32, 32), size=2, position=(0, 5), value=0.0), X, None)
    assert (placed.X[:, :, 0:2, 5:7] == 0).all() and placed.X[:, :, 2, 5].min() == 0.25
    with pytest.raises(ValueError, match="does not fit"):
        badnets_patch((3, 32, 32), size=4, position=(30, 0))
    with pytest.raises(ValueError, match="needs image inputs"):
        badnets_patch((57,))
    image = np.random.default_rng(0).uniform(0, 1, (3, 32, 32))
    blend = apply_trigger(blended_image(image, alpha=0.2), X, (0.0, 1.0))
    np.testing.assert_allclose(blend.X[1], 0.8 * 0.25 + 0.2 * image, rtol=1e-6)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\]"):
        blended_image(image, alpha=0.0)
    user = additive(np.ones((3, 32, 32)), norm=2.0)
    assert np.isclose(np.linalg.norm(user.pattern), 2.0) and user.requested_norm == 2.0
    with pytest.raises(ValueError, match="all zeros"):
        additive(np.zeros(5))
    with pytest.raises(ValueError, match=r"for inputs of shape \(3, 32, 32\)"):
        apply_trigger(user, np.zeros((2, 57), np.float32), None)


def test_make_trigger_and_argument_errors() -> None:
    support = make_trigger("four_pixel", (3, 32, 32), norm=1.0).describe()["support"]
    assert sorted(map(tuple, support)) == sorted(
        (c, r, k) for c in range(3) for r, k in [(14, 16), (15, 15), (16, 14), (16, 16)]
    )
    with pytest.raises(ValueError, match=r"bad options \['norm'\] for a badnets_patch trigger"):
        make_trigger("badnets_patch", (3, 32, 32), norm=1.0)
    with pytest.raises(ValueError, match="bad options"):
        make_trigger("one_pixel", (1, 28, 28))
    assert make_trigger("badnets_patch", (3, 32, 32), size=2).describe()["top"] == 29
    with pytest.raises(ValueError, match="unknown trigger kind 'sticker'"):
        make_trigger("sticker", (3, 32, 32))
    with pytest.raises(ValueError, match=r"has shape \(5,\), inputs have \(57,\)"):
        make_trigger("additive", (57,), pattern=np.ones(5))
    clean = _toy()
    with pytest.raises(ValueError, match=r"rate r_p must lie in \[0, 1\]"):
        poison_training_set(clean, one_pixel((1, 28, 28), 1.0), rate=1.5, target=0, seed=0)
    with pytest.raises(ValueError, match="mode must be"):
        poison_training_set(
            clean,
            one_pixel((1, 28, 28), 1.0),
            rate=0.1,
            target=0,
            seed=0,
            mode="insert",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="data set has"):
        poison_training_set(clean, one_pixel((3, 32, 32), 1.0), rate=0.1, target=0, seed=0)


def test_a_rate_that_poisons_no_point_is_rejected() -> None:
    X = np.zeros((10, 57), dtype=np.float32)
    data = from_arrays(X, np.repeat([0, 1], 5), X[:2], np.array([0, 1]), name="tiny")
    trigger = make_trigger("one_pixel", (57,), norm=0.1)
    with pytest.raises(ValueError, match="poisons none"):
        poison_training_set(data, trigger, rate=0.05, target=0, seed=0)
