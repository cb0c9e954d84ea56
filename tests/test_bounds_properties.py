"""Property tests (hypothesis) of rab.bounds: monotonicity, scaling and consistency."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from rab.bounds import (
    ABSTAIN,
    certify_hard_votes,
    certify_soft_votes,
    clopper_pearson_lower,
    clopper_pearson_upper,
    gaussian_radius,
    hoeffding_lower,
    joint_gaussian_margin,
    per_sample_radius,
    uniform_max_magnitude,
    uniform_patterns_certified,
)
from rab.confidence import cp_lower_bound, cp_upper_bound

SETTINGS = settings(max_examples=60, deadline=None)
alphas = st.floats(1e-9, 0.5)
probs = st.floats(0.0, 1.0)
sigmas = st.floats(1e-3, 1e3)


@st.composite
def binomial_pair(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 10**6))
    k1 = draw(st.integers(0, n))
    k2 = draw(st.integers(k1, n))
    return k1, k2, n


@SETTINGS
@given(binomial_pair(), alphas)
def test_clopper_pearson_monotone_in_counts(pair: tuple[int, int, int], alpha: float) -> None:
    k1, k2, n = pair
    assert clopper_pearson_lower(k1, n, alpha) <= clopper_pearson_lower(k2, n, alpha)
    assert clopper_pearson_upper(k1, n, alpha) <= clopper_pearson_upper(k2, n, alpha)
    assert clopper_pearson_lower(k1, n, alpha) <= k1 / n <= clopper_pearson_upper(k1, n, alpha)


@SETTINGS
@given(binomial_pair(), alphas, alphas)
def test_clopper_pearson_monotone_in_alpha(
    pair: tuple[int, int, int], alpha1: float, alpha2: float
) -> None:
    _, k, n = pair
    lo, hi = sorted((alpha1, alpha2))
    # a larger alpha (less confidence) gives a narrower interval
    assert clopper_pearson_lower(k, n, lo) <= clopper_pearson_lower(k, n, hi) * (1 + 1e-12)
    assert clopper_pearson_upper(k, n, lo) >= clopper_pearson_upper(k, n, hi) * (1 - 1e-12)


@SETTINGS
@given(binomial_pair(), alphas)
def test_clopper_pearson_complements_are_consistent(
    pair: tuple[int, int, int], alpha: float
) -> None:
    _, k, n = pair
    k_arr, n_arr = np.array(k), np.array(n)
    for bound in (cp_lower_bound(k_arr, n_arr, alpha), cp_upper_bound(k_arr, n_arr, alpha)):
        assert 0.0 <= bound.complement <= 1.0
        assert math.isclose(float(bound.value) + float(bound.complement), 1.0, abs_tol=1e-12)


@SETTINGS
@given(probs, probs, st.integers(1, 10**6), st.integers(1, 10**6), alphas)
def test_hoeffding_monotone(m1: float, m2: float, n1: int, n2: int, alpha: float) -> None:
    lo_m, hi_m = sorted((m1, m2))
    lo_n, hi_n = sorted((n1, n2))
    assert hoeffding_lower(lo_m, lo_n, alpha) <= hoeffding_lower(hi_m, lo_n, alpha)
    assert hoeffding_lower(lo_m, lo_n, alpha) <= hoeffding_lower(lo_m, hi_n, alpha)
    assert hoeffding_lower(lo_m, lo_n, alpha) <= lo_m


@SETTINGS
@given(probs, probs, probs, sigmas)
def test_radius_monotone_and_zero_at_equality(
    a1: float, a2: float, p_b: float, sigma: float
) -> None:
    lo, hi = sorted((a1, a2))
    assert gaussian_radius(lo, p_b, sigma) <= gaussian_radius(hi, p_b, sigma)
    assert gaussian_radius(p_b, hi, sigma) <= gaussian_radius(p_b, lo, sigma)
    assert gaussian_radius(lo, lo, sigma) == 0.0
    assert gaussian_radius(lo, hi, sigma) == 0.0  # p_a <= p_b abstains


@SETTINGS
@given(st.floats(1e-12, 1.0 - 1e-12), st.floats(1e-12, 1.0 - 1e-12), sigmas)
def test_radius_linear_in_sigma_and_symmetric(p_a: float, p_b: float, sigma: float) -> None:
    # round-trip so that 1 - p is exact in float64 for both (the inputs, not the code, round)
    p_a, p_b = 1 - (1 - p_a), 1 - (1 - p_b)
    assume(p_a > p_b)
    r1 = float(gaussian_radius(p_a, p_b, 1.0))
    assert math.isclose(float(gaussian_radius(p_a, p_b, sigma)), sigma * r1, rel_tol=1e-12)
    # Phi^-1(1 - p) = -Phi^-1(p): relabelling the two tails gives the same radius
    assert math.isclose(
        float(gaussian_radius(1 - p_b, 1 - p_a, 1.0)), r1, rel_tol=1e-9, abs_tol=1e-12
    )


@SETTINGS
@given(st.floats(0.0, 1e6), st.integers(1, 10**9))
def test_per_sample_radius_scaling(radius: float, r: int) -> None:
    scaled = float(per_sample_radius(radius, r))
    assert math.isclose(scaled * math.sqrt(r), radius, rel_tol=1e-12, abs_tol=1e-300)
    assert scaled <= radius


@SETTINGS
@given(
    st.lists(st.integers(0, 500), min_size=2, max_size=5),
    st.floats(1e-6, 0.2),
    sigmas,
    st.sampled_from(["complement", "bonferroni", "majority"]),
)
def test_certify_hard_votes_properties(
    counts: list[int], alpha: float, sigma: float, rule: str
) -> None:
    assume(sum(counts) > 0)
    row = np.array(counts)
    batch = certify_hard_votes(row[None, :], sigma=sigma, alpha=alpha, rule=rule)  # type: ignore[arg-type]
    top = int(np.argmax(row))
    assert batch.top_class[0] == top
    assert batch.prediction[0] in (top, ABSTAIN)
    assert (batch.radius[0] > 0) == (batch.prediction[0] != ABSTAIN)
    # one more vote moved from another class to the top class never shrinks the radius
    donor = next((c for c in range(len(row)) if c != top and row[c] > 0), None)
    if donor is not None:
        moved = row.copy()
        moved[donor] -= 1
        moved[top] += 1
        better = certify_hard_votes(moved[None, :], sigma=sigma, alpha=alpha, rule=rule)  # type: ignore[arg-type]
        assert better.radius[0] >= batch.radius[0] * (1 - 1e-12)
    # larger alpha (less confidence) never shrinks it; sigma scales it
    looser = certify_hard_votes(row[None, :], sigma=sigma, alpha=min(2 * alpha, 0.5), rule=rule)  # type: ignore[arg-type]
    assert looser.radius[0] >= batch.radius[0] * (1 - 1e-12)
    double = certify_hard_votes(row[None, :], sigma=2 * sigma, alpha=alpha, rule=rule)  # type: ignore[arg-type]
    assert math.isclose(double.radius[0], 2 * batch.radius[0], rel_tol=1e-12)


@SETTINGS
@given(st.floats(0.0, 1.0), st.integers(1, 5000), st.floats(1e-6, 0.2))
def test_certify_soft_votes_two_classes(top: float, n: int, alpha: float) -> None:
    batch = certify_soft_votes([[top, 1 - top]], num_models=n, sigma=1.0, alpha=alpha)
    eps = math.sqrt(math.log(2 / alpha) / (2 * n))  # complement rule, alpha / C with C = 2
    p_top = max(top, 1 - top)
    assert math.isclose(batch.p_a[0], max(p_top - eps, 0.0), abs_tol=1e-12)
    assert (batch.prediction[0] == ABSTAIN) == (p_top - eps <= 0.5)


@SETTINGS
@given(
    st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=6),
    st.floats(0.0, 1.0),
    st.floats(0.5, 1.0),
    st.floats(0.0, 0.5),
)
def test_uniform_certificate_monotone_in_pattern(
    pattern: list[float], shrink: float, p_a: float, p_b: float
) -> None:
    delta = np.array(pattern)[None, :]
    if uniform_patterns_certified(p_a, p_b, delta, a=0.0, b=1.0):
        assert uniform_patterns_certified(p_a, p_b, shrink * delta, a=0.0, b=1.0)


@SETTINGS
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.integers(1, 1000), st.integers(1, 10**6))
@example(5e-324, 0.0, 1, 1)  # (pA - pB) / 2 underflows: t = 0, and +0.0 (it gave -0.0)
def test_uniform_max_magnitude_monotone(p_a: float, p_b: float, m: int, r: int) -> None:
    t = float(uniform_max_magnitude(p_a, p_b, a=0.0, b=1.0, num_coords=m, r=r))
    assert t >= 0.0 and math.copysign(1.0, t) == 1.0
    # positive exactly when pA > pB, unless t_max (about (pA - pB) / (2 sqrt(m) r)) underflows
    assert (t > 0.0) == (p_a > p_b) or 0.0 < p_a - p_b < 2e-300 * m * r
    assert float(uniform_max_magnitude(p_a, p_b, a=0.0, b=1.0, num_coords=m, r=r + 1)) <= t
    assert (
        float(uniform_max_magnitude(min(p_a + 0.01, 1.0), p_b, a=0.0, b=1.0, num_coords=m, r=r))
        >= t
    )


@SETTINGS
@given(st.floats(0.0, 10.0), st.floats(0.0, 10.0), st.floats(0.01, 10.0), st.floats(0.01, 10.0))
def test_joint_margin_monotone(dx: float, dd: float, sx: float, sd: float) -> None:
    def margin(dx: float, dd: float, sx: float, sd: float) -> float:
        return float(
            joint_gaussian_margin(
                0.9, 0.05, test_shift_norm=dx, train_shift_norm=dd, sigma_test=sx, sigma_train=sd
            )
        )

    base = margin(dx, dd, sx, sd)
    assert margin(dx * 1.5, dd, sx, sd) <= base
    assert margin(dx, dd * 1.5, sx, sd) <= base
    assert margin(dx, dd, sx * 1.5, sd) >= base
    assert margin(dx, dd, sx, sd * 1.5) >= base
