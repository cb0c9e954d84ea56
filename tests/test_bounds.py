"""Tests of rab.bounds: confidence bounds, joint validity, radii (eq. 14-18), Theorems 1-2.

Every expected value is derived independently (scipy.stats.binomtest, closed forms, Monte
Carlo with seeded generators); simulated rates get a binomial tolerance of 4 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from rab.bounds import (
    ABSTAIN,
    CertificateBatch,
    certify_exact,
    certify_hard_votes,
    certify_soft_votes,
    clopper_pearson_lower,
    clopper_pearson_upper,
    gaussian_radius,
    hoeffding_lower,
    hoeffding_upper,
    joint_gaussian_certified,
    joint_gaussian_margin,
    per_sample_radius,
    uniform_max_magnitude,
    uniform_pattern_certified,
    uniform_patterns_certified,
)


def rate_ceiling(alpha: float, trials: int) -> float:
    """Largest empirical failure rate compatible with a true rate alpha (4 standard errors)."""
    return alpha + 4.0 * math.sqrt(alpha * (1.0 - alpha) / trials)


# --------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.3])
@pytest.mark.parametrize(("k", "n"), [(0, 1), (1, 1), (0, 20), (7, 20), (20, 20), (512, 1000)])
def test_clopper_pearson_matches_scipy_binomtest(k: int, n: int, alpha: float) -> None:
    # one-sided level 1 - alpha = one side of the two-sided exact interval at 1 - 2 alpha
    ci = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert clopper_pearson_lower(k, n, alpha) == pytest.approx(ci.low, rel=1e-9, abs=1e-15)
    assert clopper_pearson_upper(k, n, alpha) == pytest.approx(ci.high, rel=1e-9, abs=1e-15)


def test_clopper_pearson_broadcasts() -> None:
    k = np.array([[0, 3], [5, 10]])
    low = clopper_pearson_lower(k, 10, 0.05)
    assert low.shape == (2, 2)
    for idx in np.ndindex(k.shape):
        assert low[idx] == pytest.approx(clopper_pearson_lower(int(k[idx]), 10, 0.05))


def test_clopper_pearson_extremes_closed_form() -> None:
    # k = n: P(K = n) = p^n, so L = alpha^(1/n); k = 0: U = 1 - alpha^(1/n)
    n, alpha = 10**6, 1e-3
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-14)
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(
        -math.expm1(math.log(alpha) / n), rel=1e-12
    )
    assert clopper_pearson_upper(n, n, alpha) == 1.0
    assert clopper_pearson_lower(0, n, alpha) == 0.0


@pytest.mark.parametrize("p", [0.3, 0.9, 0.99])
def test_clopper_pearson_coverage(p: float) -> None:
    rng = np.random.default_rng(20260101)
    n, alpha, sims = 60, 0.05, 20_000
    k = rng.binomial(n, p, size=sims)
    miss_low = np.mean(clopper_pearson_lower(k, n, alpha) > p)
    miss_up = np.mean(clopper_pearson_upper(k, n, alpha) < p)
    assert miss_low <= rate_ceiling(alpha, sims)
    assert miss_up <= rate_ceiling(alpha, sims)
    # the same check rejects the point estimate k/n, which misses about half the time
    assert np.mean(k / n > p) > rate_ceiling(alpha, sims)


def test_hoeffding_formula_and_coverage() -> None:
    rng = np.random.default_rng(7)
    n, alpha, sims, mean_vote = 40, 0.1, 20_000, 0.7
    # soft votes in [0, 1] with mean 0.7: Beta(7, 3)
    votes = rng.beta(7.0, 3.0, size=(sims, n))
    mu = votes.mean(axis=1)
    eps = math.sqrt(math.log(1 / alpha) / (2 * n))
    np.testing.assert_allclose(hoeffding_lower(mu, n, alpha), np.maximum(mu - eps, 0.0))
    np.testing.assert_allclose(hoeffding_upper(mu, n, alpha), np.minimum(mu + eps, 1.0))
    assert np.mean(hoeffding_lower(mu, n, alpha) > mean_vote) <= rate_ceiling(alpha, sims)
    assert np.mean(hoeffding_upper(mu, n, alpha) < mean_vote) <= rate_ceiling(alpha, sims)
    # per-row N
    np.testing.assert_allclose(
        hoeffding_lower([0.9, 0.9], [100, 400], alpha),
        0.9 - np.sqrt(np.log(1 / alpha) / (2 * np.array([100, 400]))),
    )


def test_hoeffding_radius_cap_reference_section_2() -> None:
    # N = 1000, alpha = 0.001: even a unanimous soft vote gives pA = 1 - eps, radius 1.565 sigma
    eps = math.sqrt(math.log(1000) / 2000)
    cap = norm.isf(eps)
    assert cap == pytest.approx(1.565, abs=5e-4)
    p_a = hoeffding_lower(1.0, 1000, 0.001)
    assert gaussian_radius(p_a, 1 - p_a, 1.0) == pytest.approx(cap, rel=1e-12)
    # the certificate splits alpha over the classes, so it is strictly below the cap
    batch = certify_soft_votes([[1.0, 0.0]], num_models=1000, sigma=1.0, alpha=0.001)
    assert 1.5 < batch.radius[0] < cap
    assert batch.radius[0] == pytest.approx(norm.isf(math.sqrt(math.log(2000) / 2000)))


# ------------------------------------------------------------------------- joint validity


def _joint_failures(batch: CertificateBatch, q: np.ndarray, *, certified_only: bool) -> np.ndarray:
    q_top = q[batch.top_class]
    q_other = np.array([np.max(np.delete(q, c)) for c in range(len(q))])[batch.top_class]
    wrong = (batch.p_a > q_top) | (batch.p_b < q_other)
    return wrong & (batch.prediction != ABSTAIN) if certified_only else wrong


@pytest.mark.parametrize("q", [(0.5, 0.5, 0.0), (0.45, 0.35, 0.2), (0.7, 0.2, 0.1)])
@pytest.mark.parametrize("rule", ["complement", "bonferroni", "majority"])
def test_joint_rule_coverage_multinomial(q: tuple[float, ...], rule: str) -> None:
    rng = np.random.default_rng([round(1000 * x) for x in q] + [len(rule)])
    qv = np.array(q)
    n, alpha, sims = 101, 0.1, 20_000
    counts = rng.multinomial(n, qv, size=sims)
    batch = certify_hard_votes(counts, sigma=1.0, alpha=alpha, rule=rule)  # type: ignore[arg-type]
    # "majority" covers the certified rows only (module docstring); the others cover all rows
    failures = _joint_failures(batch, qv, certified_only=rule == "majority")
    assert failures.mean() <= rate_ceiling(alpha, sims)


def test_unsplit_alpha_fails_the_joint_check() -> None:
    # the bound of the class picked from the same votes is not valid at the unsplit level:
    # at q = (1/2, 1/2, 0) it fails about twice as often as alpha allows
    rng = np.random.default_rng(99)
    qv = np.array([0.5, 0.5, 0.0])
    n, alpha, sims = 101, 0.1, 20_000
    counts = rng.multinomial(n, qv, size=sims)
    unsplit = certify_hard_votes(counts, sigma=1.0, alpha=alpha * 3, rule="complement")
    assert _joint_failures(unsplit, qv, certified_only=True).mean() > rate_ceiling(alpha, sims)


@pytest.mark.parametrize("rule", ["complement", "bonferroni", "majority"])
def test_joint_rule_coverage_soft_votes(rule: str) -> None:
    rng = np.random.default_rng(3)
    n, alpha, sims = 50, 0.1, 4_000
    concentration = np.array([4.0, 4.0, 0.5])  # Dirichlet soft votes, mean q
    qv = concentration / concentration.sum()
    mean = rng.dirichlet(concentration, size=(sims, n)).mean(axis=1)
    batch = certify_soft_votes(mean, num_models=n, sigma=1.0, alpha=alpha, rule=rule)  # type: ignore[arg-type]
    failures = _joint_failures(batch, qv, certified_only=rule == "majority")
    assert failures.mean() <= rate_ceiling(alpha, sims)


def test_rules_use_the_documented_levels() -> None:
    counts = np.array([[80, 15, 5], [40, 35, 25]])
    n, alpha, c = 100, 0.01, 3
    comp = certify_hard_votes(counts, sigma=1.0, alpha=alpha)
    bonf = certify_hard_votes(counts, sigma=1.0, alpha=alpha, rule="bonferroni")
    maj = certify_hard_votes(counts, sigma=1.0, alpha=alpha, rule="majority")
    for i, (k_top, k_b) in enumerate([(80, 15), (40, 35)]):
        ci_c = binomtest(k_top, n).proportion_ci(1 - 2 * alpha / c, method="exact")
        assert comp.p_a[i] == pytest.approx(ci_c.low, rel=1e-9)
        assert comp.p_b[i] == pytest.approx(1 - ci_c.low, rel=1e-9)
        ci_a = binomtest(k_top, n).proportion_ci(1 - alpha / c, method="exact")
        ci_b = binomtest(k_b, n).proportion_ci(1 - alpha / c, method="exact")
        assert bonf.p_a[i] == pytest.approx(ci_a.low, rel=1e-9)
        assert bonf.p_b[i] == pytest.approx(ci_b.high, rel=1e-9)
        ci_m = binomtest(k_top, n).proportion_ci(1 - alpha, method="exact")
        assert maj.p_a[i] == pytest.approx(ci_m.low, rel=1e-9)
    # radius = eq. 14 of the reported bounds
    for batch in (comp, bonf, maj):
        np.testing.assert_allclose(batch.radius, gaussian_radius(batch.p_a, batch.p_b, 1.0))
    assert list(comp.prediction) == [0, ABSTAIN]
    assert list(bonf.top_class) == [0, 0]
    assert bonf.radius[0] > comp.radius[0]  # mass outside the top is spread: Bonferroni wins
    # with two classes "majority" is "complement" (alpha / 2 either way)
    two = np.array([[70, 30], [95, 5]])
    np.testing.assert_array_equal(
        certify_hard_votes(two, sigma=1.0, alpha=alpha, rule="majority").radius,
        certify_hard_votes(two, sigma=1.0, alpha=alpha).radius,
    )


# ------------------------------------------------------------------------- certificates


def test_certificate_batch_fields_and_indexing() -> None:
    batch = certify_hard_votes([[90, 10], [50, 50], [3, 97]], sigma=0.5, alpha=0.001)
    assert len(batch) == 3
    assert batch.method == "clopper-pearson" and batch.alpha == 0.001 and batch.num_votes == 100
    assert batch.prediction.dtype == np.int64 and batch.radius.dtype == np.float64
    assert list(batch.prediction) == [0, ABSTAIN, 1]
    assert list(batch.top_class) == [0, 0, 1]  # the tie goes to the smallest index
    cert = batch[1]
    assert cert.abstain and cert.radius == 0.0 and cert.top_class == 0
    assert batch[-1].prediction == 1 and not batch[-1].abstain
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(ValueError, match="read-only"):
        batch.radius[0] = 1.0
    np.testing.assert_allclose(batch.per_sample_radius(4), batch.radius / 2.0)


def test_num_votes_per_row_and_explicit() -> None:
    batch = certify_hard_votes([[9, 1], [90, 10]], sigma=1.0, alpha=0.05)
    np.testing.assert_array_equal(batch.num_votes, [10, 100])
    # explicit N larger than the counts: models voting for none of the C classes
    wide = certify_hard_votes([[9, 0]], sigma=1.0, alpha=0.05, num_votes=10)
    assert wide.p_a[0] == pytest.approx(clopper_pearson_lower(9, 10, 0.025))
    soft = certify_soft_votes([[0.9, 0.1]] * 2, num_models=[100, 400], sigma=1.0, alpha=0.05)
    np.testing.assert_array_equal(soft.num_votes, [100, 400])
    assert soft.p_a[1] > soft.p_a[0]


def test_certify_exact_slack_and_ties() -> None:
    proba = np.array([[0.6, 0.3, 0.1], [0.4, 0.4, 0.2], [0.05, 0.15, 0.8]])
    batch = certify_exact(proba, sigma=2.0, slack=[0.0, 0.0, 0.05])
    assert batch.method == "exact" and batch.alpha is None and batch.num_votes is None
    assert list(batch.prediction) == [0, ABSTAIN, 2]
    assert list(batch.top_class) == [0, 0, 2]
    assert batch.radius[0] == pytest.approx(norm.ppf(0.6) - norm.ppf(0.3))  # sigma/2 = 1
    assert batch.p_a[2] == pytest.approx(0.75) and batch.p_b[2] == pytest.approx(0.2)
    assert batch.radius[2] == pytest.approx(norm.ppf(0.75) - norm.ppf(0.2))
    # the point-estimate ("expected") radius from counts
    point = certify_exact(np.array([[990, 10]]) / 1000, sigma=1.0)
    assert point.radius[0] == pytest.approx(0.5 * (norm.ppf(0.99) - norm.ppf(0.01)))


# ------------------------------------------------------------------------- numerics


def test_unanimous_million_votes_finite_radius() -> None:
    n, alpha = 10**6, 0.001
    batch = certify_hard_votes([[n, 0]], sigma=1.0, alpha=alpha)
    tail = -math.expm1(math.log(alpha / 2) / n)  # 1 - pA exactly, pA = (alpha/2)^(1/n)
    assert np.isfinite(batch.radius[0])
    assert batch.radius[0] == pytest.approx(norm.isf(tail), rel=1e-12)
    # clipping pA at 1 - 1e-12 would cap any radius at about 7 sigma; nothing caps here
    assert gaussian_radius(1 - 2.0**-52, 2.0**-52, 1.0) > 8.0


def test_radius_near_one_matches_isf() -> None:
    p_a = 1 - 2.0**-52
    expected = 0.5 * (norm.isf(2.0**-52) - norm.ppf(0.25))
    assert gaussian_radius(p_a, 0.25, 1.0) == pytest.approx(expected, rel=1e-14)
    assert gaussian_radius(1 - 2.0**-53, 0.0, 1.0) == np.inf  # pB = 0 exactly
    assert gaussian_radius(1.0, 0.5, 1.0) == np.inf
    assert gaussian_radius(0.0, 0.0, 1.0) == 0.0 and gaussian_radius(1.0, 1.0, 1.0) == 0.0


def test_cp_upper_bound_never_zero() -> None:
    assert clopper_pearson_upper(0, 10**6, 1e-9) > 0
    batch = certify_hard_votes([[10**6, 0, 0]], sigma=1.0, alpha=1e-9, rule="bonferroni")
    assert 0 < batch.p_b[0] < 1e-4 and np.isfinite(batch.radius[0])


# ------------------------------------------------------------------------- Theorem 2


def _worst_case_probs(p_a: float, p_b: float, shift: float, sigma: float) -> tuple[float, float]:
    """Shifted q of the Neyman-Pearson half-space classifier of Theorem 2 (Gaussian case)."""
    top = norm.cdf(norm.ppf(p_a) - shift / sigma)
    runner = norm.cdf(norm.ppf(p_b) + shift / sigma)
    return top, runner


@pytest.mark.parametrize(
    ("p_a", "p_b", "sigma"), [(0.8, 0.2, 1.0), (0.8, 0.15, 0.5), (0.999, 1e-4, 2.0)]
)
def test_radius_is_tight_on_the_linear_classifier(p_a: float, p_b: float, sigma: float) -> None:
    radius = float(gaussian_radius(p_a, p_b, sigma))
    top, runner = _worst_case_probs(p_a, p_b, radius, sigma)
    assert top == pytest.approx(runner, abs=1e-12)
    inside = _worst_case_probs(p_a, p_b, radius * (1 - 1e-6), sigma)
    outside = _worst_case_probs(p_a, p_b, radius * (1 + 1e-6), sigma)
    assert inside[0] > inside[1] and outside[0] < outside[1]
    if math.isclose(p_a + p_b, 1.0):  # two classes: the runner-up is the complement
        assert 1 - top == pytest.approx(runner, abs=1e-12)


def test_radius_tightness_monte_carlo_backdoor() -> None:
    """Base classifier linear in the stacked noisy training set (n = 4 points in R^3)."""
    rng = np.random.default_rng(2026)
    n_points, dim, sigma, p_a, p_b, r = 4, 3, 0.5, 0.8, 0.15, 2
    pattern = rng.standard_normal(dim)
    stacked = np.zeros((n_points, dim))
    stacked[:r] = pattern  # one pattern on r = 2 training points
    w = (stacked / np.linalg.norm(stacked)).ravel()
    t_a, t_b = sigma * norm.ppf(p_a), sigma * norm.ppf(1 - p_b)
    noise = sigma * rng.standard_normal((200_000, n_points * dim))

    def shifted_probs(pattern_norm: float) -> tuple[float, float]:
        shift = (stacked * (pattern_norm / np.linalg.norm(pattern))).ravel()
        proj = (noise + shift) @ w
        return float(np.mean(proj < t_a)), float(np.mean(proj > t_b))

    tol = 4 * math.sqrt(0.25 / noise.shape[0])
    q_a, q_b = shifted_probs(0.0)
    assert q_a == pytest.approx(p_a, abs=tol) and q_b == pytest.approx(p_b, abs=tol)
    # eq. 15: the largest single-pattern norm on r points
    limit = float(per_sample_radius(gaussian_radius(p_a, p_b, sigma), r))
    top, runner = shifted_probs(0.8 * limit)
    assert top - runner > 0.1
    top, runner = shifted_probs(1.2 * limit)
    assert runner - top > 0.1
    top, runner = shifted_probs(limit)
    assert top == pytest.approx(runner, abs=2 * tol)


# ------------------------------------------------------------------------- Theorem 1 (joint)


def test_joint_gaussian_reduces_to_eq14_and_evasion() -> None:
    p_a, p_b, sigma = 0.9, 0.05, 0.7
    radius = float(gaussian_radius(p_a, p_b, sigma))
    kw = {"sigma_test": 0.3, "sigma_train": sigma}
    assert joint_gaussian_certified(
        p_a, p_b, test_shift_norm=0.0, train_shift_norm=0.99 * radius, **kw
    )
    assert not joint_gaussian_certified(
        p_a, p_b, test_shift_norm=0.0, train_shift_norm=1.01 * radius, **kw
    )
    # evasion only (Cohen et al.): radius sigma_x / 2 * gap
    ev = 0.3 / 2 * (norm.ppf(p_a) - norm.ppf(p_b))
    margin = joint_gaussian_margin(p_a, p_b, test_shift_norm=ev, train_shift_norm=0.0, **kw)
    assert margin == pytest.approx(0.0, abs=1e-12)
    # combined: whitened norm of (delta / sigma_x, Delta / sigma_d) against the half gap
    dx, dd = 0.1, 0.4
    rho = math.hypot(dx / 0.3, dd / sigma)
    m = joint_gaussian_margin(p_a, p_b, test_shift_norm=dx, train_shift_norm=dd, **kw)
    assert m == pytest.approx(0.5 * (norm.ppf(p_a) - norm.ppf(p_b)) - rho)
    # no test noise: any test shift is uncertifiable (disjoint supports), none is free
    no_x = {"sigma_test": 0.0, "sigma_train": sigma}
    assert not joint_gaussian_certified(
        p_a, p_b, test_shift_norm=1e-9, train_shift_norm=0.0, **no_x
    )
    assert joint_gaussian_certified(p_a, p_b, test_shift_norm=0.0, train_shift_norm=0.0, **no_x)
    assert not joint_gaussian_certified(0.5, 0.5, test_shift_norm=0.0, train_shift_norm=0.0, **kw)


# ------------------------------------------------------------------------- uniform noise


def test_uniform_overlap_matches_monte_carlo() -> None:
    rng = np.random.default_rng(11)
    a, b = -1.0, 1.0
    patterns = np.array([[0.1, -0.15, 0.0], [0.05, 0.0, 0.3]])
    product = np.prod(1 - np.abs(patterns) / (b - a))
    draws = rng.uniform(a, b, size=(200_000, *patterns.shape))
    inside_shifted = np.all((draws >= a + patterns) & (draws <= b + patterns), axis=(1, 2))
    tol = 4 * math.sqrt(product * (1 - product) / draws.shape[0])
    assert inside_shifted.mean() == pytest.approx(product, abs=tol)
    # eq. 17 certifies exactly when 1 - (pA - pB)/2 < product
    gap_at_limit = 2 * (1 - product)
    assert uniform_patterns_certified(
        0.5 + gap_at_limit / 2 + 1e-6, 0.5 - gap_at_limit / 2, patterns, a=a, b=b
    )
    assert not uniform_patterns_certified(
        0.5 + gap_at_limit / 2 - 1e-6, 0.5 - gap_at_limit / 2, patterns, a=a, b=b
    )


@pytest.mark.parametrize(("p_a", "p_b"), [(0.7, 0.2), (0.5, 0.3), (0.6, 0.25)])
def test_uniform_certificate_agrees_with_worst_case_classifier(p_a: float, p_b: float) -> None:
    """Simulate the Neyman-Pearson worst case of Corollary 2 (Appendix A, eq. 58-63)."""
    rng = np.random.default_rng(5)
    a, b = -1.0, 1.0
    delta = np.array([0.1, -0.15])
    p0 = 1 - np.prod(1 - np.abs(delta) / (b - a))
    frac_a, frac_b = (p_a - p0) / (1 - p0), p_b / (1 - p0)
    lo, hi = np.maximum(a, a + delta), np.minimum(b, b + delta)  # the overlap box

    def classify(v: np.ndarray) -> np.ndarray:
        in_clean = np.all((v >= a) & (v <= b), axis=1)
        in_shift = np.all((v >= a + delta) & (v <= b + delta), axis=1)
        u = (v[:, 0] - lo[0]) / (hi[0] - lo[0])
        overlap = np.where(u < frac_a, 0, np.where(u > 1 - frac_b, 1, 2))
        return np.where(in_clean & ~in_shift, 0, np.where(in_shift & ~in_clean, 1, overlap))

    clean = rng.uniform(a, b, size=(200_000, 2))
    tol = 4 * math.sqrt(0.25 / clean.shape[0])
    labels = classify(clean)
    assert np.mean(labels == 0) == pytest.approx(p_a, abs=tol)
    assert np.mean(labels == 1) == pytest.approx(p_b, abs=tol)
    shifted = classify(clean + delta)
    q_top, q_runner = np.mean(shifted == 0), np.mean(shifted == 1)
    assert q_top == pytest.approx(p_a - p0, abs=tol) and q_runner == pytest.approx(
        p_b + p0, abs=tol
    )
    certified = bool(uniform_patterns_certified(p_a, p_b, delta[None, :], a=a, b=b))
    assert certified == (q_top > q_runner)
    assert certified == bool(uniform_pattern_certified(p_a, p_b, delta, a=a, b=b, r=1))


def test_uniform_max_magnitude_is_the_boundary_of_eq18() -> None:
    p_a, p_b, a, b = 0.9, 0.05, 0.0, 2.0
    for m, r in [(1, 1), (4, 3), (12, 50)]:
        t = float(uniform_max_magnitude(p_a, p_b, a=a, b=b, num_coords=m, r=r))
        assert 0 < t < math.sqrt(m) * (b - a)
        even = np.full(m, 1.0 / math.sqrt(m))
        assert uniform_pattern_certified(p_a, p_b, even * t * (1 - 1e-9), a=a, b=b, r=r)
        assert not uniform_pattern_certified(p_a, p_b, even * t * (1 + 1e-9), a=a, b=b, r=r)
        # closed form of the boundary: (1 - t/(sqrt(m)(b-a)))^(m r) = 1 - (pA - pB)/2
        assert (1 - t / (math.sqrt(m) * (b - a))) ** (m * r) == pytest.approx(1 - (p_a - p_b) / 2)
    assert uniform_max_magnitude(0.4, 0.4, a=a, b=b, num_coords=3) == 0.0
    # r poisoned copies equal r stacked patterns (eq. 18 is eq. 17 with identical rows)
    pattern = np.array([0.01, 0.02])
    assert uniform_pattern_certified(
        0.8, 0.1, pattern, a=a, b=b, r=7
    ) == uniform_patterns_certified(0.8, 0.1, np.tile(pattern, (7, 1)), a=a, b=b)


def test_uniform_log_space_for_huge_d_and_r() -> None:
    # (1 - x)^(d r) with d r = 10^10 and x = 10^-11: exp(-0.1 - 5e-13), no underflow to 1 or 0
    d, r, x = 10**6, 10**4, 1e-11
    pattern = np.full(d, x * 2.0)  # |delta| / (b - a) = x with b - a = 2
    overlap = math.exp(-d * r * x - d * r * x * x / 2)
    gap = 2 * (1 - overlap)
    assert uniform_pattern_certified(gap + 1e-6, 0.0, pattern, a=-1, b=1, r=r)
    assert not uniform_pattern_certified(gap - 1e-6, 0.0, pattern, a=-1, b=1, r=r)
    assert not uniform_pattern_certified(0.9, 0.0, np.array([2.0]), a=-1, b=1, r=1)  # disjoint


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: clopper_pearson_lower(5, 4, 0.05), "must not exceed trials"),
        (lambda: clopper_pearson_lower(-1, 4, 0.05), "successes must be >= 0"),
        (lambda: clopper_pearson_lower(1.5, 4, 0.05), "whole numbers"),
        (lambda: clopper_pearson_lower(1, 0, 0.05), "trials must be >= 1"),
        (lambda: clopper_pearson_lower(1, 4, 0.0), "alpha must lie strictly between 0 and 1"),
        (lambda: clopper_pearson_upper(1, 4, 1.0), "alpha must lie strictly between 0 and 1"),
        (lambda: clopper_pearson_upper([1, 2], [3, 4, 5], 0.1), "incompatible shapes"),
        (lambda: hoeffding_lower(1.2, 10, 0.05), r"mean must lie in \[0, 1\]"),
        (lambda: hoeffding_upper(float("nan"), 10, 0.05), "finite"),
        (lambda: gaussian_radius(0.9, 0.1, 0.0), "sigma must be finite and > 0"),
        (lambda: gaussian_radius(0.9, -0.1, 1.0), "p_b must lie in"),
        (lambda: per_sample_radius(1.0, 0), "r must be >= 1"),
        (lambda: certify_hard_votes([1, 2], sigma=1.0, alpha=0.1), r"shape \(m, C\)"),
        (lambda: certify_hard_votes([[5]], sigma=1.0, alpha=0.1), "at least 2 classes"),
        (lambda: certify_hard_votes([[0, 0]], sigma=1.0, alpha=0.1), "no votes"),
        (lambda: certify_hard_votes([[3, 4]], sigma=1.0, alpha=0.1, num_votes=5), "more than"),
        (lambda: certify_hard_votes([[3, 4]], sigma=1.0, alpha=0.1, rule="x"), "rule must be"),  # type: ignore[arg-type]
        (lambda: certify_hard_votes([[3, 4]], sigma=-1.0, alpha=0.1), "sigma"),
        (lambda: certify_hard_votes([[True, False]], sigma=1.0, alpha=0.1), "integers"),
        (lambda: certify_soft_votes([[0.9, 0.9]], num_models=5, sigma=1.0, alpha=0.1), "sum to"),
        (
            lambda: certify_soft_votes(
                [[0.5, 0.5]] * 2, num_models=[5, 5, 5], sigma=1.0, alpha=0.1
            ),
            r"num_models must be a scalar or have shape \(2,\)",
        ),
        (lambda: certify_exact([[0.5, 0.5]], sigma=1.0, slack=-0.1), "slack must be >= 0"),
        (lambda: certify_exact([[0.5, 0.6]], sigma=1.0), "sum to at most 1"),
        (lambda: uniform_patterns_certified(0.9, 0.1, [0.1], a=1.0, b=1.0), "finite a < b"),
        (lambda: uniform_pattern_certified(0.9, 0.1, [0.1], a=0, b=1, r=[1, 2]), "single integer"),  # type: ignore[arg-type]
        (
            lambda: uniform_max_magnitude(0.9, 0.1, a=0, b=1, num_coords=0),
            "num_coords must be >= 1",
        ),
        (
            lambda: joint_gaussian_certified(
                0.9, 0.1, test_shift_norm=-1.0, train_shift_norm=0.0, sigma_test=1, sigma_train=1
            ),
            "test_shift_norm must be >= 0",
        ),
        (
            lambda: joint_gaussian_margin(
                0.9, 0.1, test_shift_norm=0.0, train_shift_norm=0.0, sigma_test=-1, sigma_train=1
            ),
            "sigma_test must be finite and >= 0",
        ),
    ],
)
def test_validation_errors(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
