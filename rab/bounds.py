r"""From votes to certified radii: the statistics of RAB (paper sections 4-6, eq. 10-19).

A smoothed classifier (eq. 6, 7) is certified at x when bounds pA <= q(y_A | x, D) and
pB >= max_{y != y_A} q(y | x, D) with pA > pB are known (eq. 10, 13).  Then every backdoor
with sqrt(sum_i ||delta_i||^2) < sigma/2 (Phi^-1(pA) - Phi^-1(pB)) leaves the prediction
unchanged (eq. 14; ``rab.radius``).  The bounds come from N models trained on independently
noised training sets (Algorithm 1):

- ``certify_hard_votes``: counts of class votes, one-sided Clopper-Pearson bounds;
- ``certify_soft_votes``: mean class probabilities, Hoeffding bounds;
- ``certify_exact``: exactly computed q (the smoothed K-NN, Theorem 3), optionally widened by a
  slack that bounds neglected mass and float error.  ``certify_exact(counts / N, ...)`` gives
  the point-estimate ("expected") radius, which is NOT a certificate.

Joint validity: why alpha is split
----------------------------------
The predicted class y_A = argmax of the votes is selected on the SAME votes that give the
bounds, so "the lower bound of the class we picked" is a bound on a randomly chosen class and
its marginal 1 - alpha coverage does not apply (with two classes at q = (1/2, 1/2), an unsplit
lower bound of the picked class exceeds its true 1/2 with probability about 2 alpha).  A
union bound restores a guarantee that holds whatever class is selected:

- ``rule="complement"`` (default): a one-sided lower bound L_c of EVERY class c at level
  1 - alpha/C.  P(some L_c > q_c) <= sum_c alpha/C = alpha, so with probability >= 1 - alpha all
  C bounds hold at once, in particular pA = L_{y_A} <= q(y_A) for the selected y_A.  Then
  pB = 1 - pA >= 1 - q(y_A) >= sum_{y != y_A} q(y) >= max_{y != y_A} q(y), because the class
  probabilities sum to (at most) 1.  Only L_{y_A} needs computing; the others enter the proof.
- ``rule="bonferroni"``: a lower AND an upper bound of every class, each at level
  1 - alpha/(2C); all 2C bounds hold jointly with probability >= 1 - alpha (union bound), so
  pA = L_{y_A} and pB = max_{y != y_A} U_y are valid together.  Tighter than "complement"
  when the mass outside y_A is spread over several classes (C > 2).  As U is increasing in
  the count or mean, pB is the upper bound of the runner-up.
- ``rule="majority"`` (rigorous, tighter than "complement" for C > 2): the complement rule at
  level alpha' = alpha/2 whatever C (Clopper-Pearson), or alpha' = alpha / (2 + C e^{-N/2})
  (Hoeffding, N the smallest number of votes).  Argument: a certificate needs pA > pB = 1 - pA,
  i.e. L_{y_A} > 1/2, so it is wrong only on F_c = {L_c > max(q_c, 1/2)} for some c.  At most
  one class has q_c > 1/2 and for it P(F_c) <= alpha'.  For q_c <= 1/2, P(F_c) <= f(q_c) with
  f(q) = P_q(L > 1/2).  With Clopper-Pearson, f(q) = P(Binomial(N, q) >= t) for the smallest
  count t > N/2 with L(t) > 1/2; f'(q) = N binom(N-1, t-1) q^(t-1) (1-q)^(N-t) increases on
  [0, (t-1)/(N-1)] which contains [0, 1/2], so f is convex there with f(0) = 0 and
  f(1/2) <= alpha' (coverage at q = 1/2), hence f(q) <= 2 q alpha' (chord).  Summing,
  P(wrong certificate) <= 2 alpha' sum_c q_c <= 2 alpha' if no class exceeds 1/2, and
  <= alpha' + 2 alpha' (1 - q_max) <= 2 alpha' otherwise.  With Hoeffding, f(q) <= g(q) =
  exp(-2N (1/2 + eps - q)^2), convex on [0, 1/2] because 4N eps^2 = 2 ln(1/alpha') >= 1, so
  g(q) <= g(0) + 2 q alpha' with g(0) <= alpha' e^{-N/2}, giving <= alpha' (2 + C e^{-N/2}).
  Under this rule the reported p_a of an ABSTAIN row is not covered (an abstention claims
  nothing); under the other two rules every reported bound is.

The guarantee is per test point: for each row, with probability >= 1 - alpha over the
training noise, the certificate is correct.  If p_a <= p_b the row abstains: prediction =
ABSTAIN, radius 0, top_class still reported.  Ties for the top class go to the smallest class
index (numpy argmax); the tied runner-up then has the same count, so the row abstains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from rab._validate import (
    check_alpha,
    check_integers,
    check_matrix,
    check_nonnegative,
    check_positive_scalar,
    check_probability,
    per_row,
)
from rab.confidence import (
    Bound,
    clopper_pearson_lower,
    clopper_pearson_upper,
    cp_lower_bound,
    cp_upper_bound,
    hoeffding_epsilon,
    hoeffding_lower,
    hoeffding_lower_bound,
    hoeffding_upper,
    hoeffding_upper_bound,
)
from rab.radius import (
    gaussian_radius,
    joint_gaussian_certified,
    joint_gaussian_margin,
    per_sample_radius,
    radius_from_bounds,
)
from rab.uniform import (
    uniform_max_magnitude,
    uniform_pattern_certified,
    uniform_patterns_certified,
)

__all__ = [
    "ABSTAIN",
    "RULES",
    "Certificate",
    "CertificateBatch",
    "Rule",
    "certify_exact",
    "certify_hard_votes",
    "certify_soft_votes",
    "class_alpha",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "gaussian_radius",
    "hoeffding_epsilon",
    "hoeffding_lower",
    "hoeffding_upper",
    "joint_gaussian_certified",
    "joint_gaussian_margin",
    "per_sample_radius",
    "uniform_max_magnitude",
    "uniform_pattern_certified",
    "uniform_patterns_certified",
]

ABSTAIN: int = -1
Rule = Literal["complement", "bonferroni", "majority"]
RULES: tuple[str, ...] = ("complement", "bonferroni", "majority")
_ROW_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Certificate:
    """The certificate of one test point (see ``CertificateBatch``)."""

    prediction: int
    top_class: int
    p_a: float
    p_b: float
    radius: float

    @property
    def abstain(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True, eq=False)
class CertificateBatch:
    """Certificates of m test points; the arrays have shape (m,) and are read-only.

    prediction: class index, ABSTAIN where p_a <= p_b.  top_class: the argmax class even when
    abstaining.  p_a / p_b: lower bound of q(top_class) / upper bound of the best other class
    (exact values for method "exact").  radius: eq. 14, 0 where abstaining.  num_votes: N
    actually used (an (m,) array if it differs between rows; None for "exact").  rule: the
    joint-validity rule (module docstring); None for "exact".
    """

    prediction: np.ndarray
    top_class: np.ndarray
    p_a: np.ndarray
    p_b: np.ndarray
    radius: np.ndarray
    sigma: float
    method: str
    alpha: float | None
    num_votes: int | np.ndarray | None
    rule: str | None = None

    def __post_init__(self) -> None:
        fields = {
            "prediction": np.int64,
            "top_class": np.int64,
            "p_a": np.float64,
            "p_b": np.float64,
            "radius": np.float64,
        }
        m = np.shape(self.prediction)[0] if np.ndim(self.prediction) == 1 else -1
        for name, dtype in fields.items():
            arr = np.array(getattr(self, name), dtype=dtype)
            if arr.ndim != 1 or arr.shape[0] != m:
                raise ValueError(
                    f"{name} must be 1-D with the length of prediction, got shape {arr.shape}"
                )
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if isinstance(self.num_votes, np.ndarray):
            votes = np.array(self.num_votes, dtype=np.int64)
            votes.setflags(write=False)
            object.__setattr__(self, "num_votes", votes)

    def per_sample_radius(self, r: int) -> np.ndarray:
        """Eq. 15: largest ||delta|| of one pattern on r poisoned training points."""
        return per_sample_radius(self.radius, r)

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def __getitem__(self, i: int) -> Certificate:
        if not isinstance(i, int | np.integer):
            raise TypeError(f"CertificateBatch indices must be integers, got {type(i).__name__}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} certificates")
        return Certificate(
            prediction=int(self.prediction[i]),
            top_class=int(self.top_class[i]),
            p_a=float(self.p_a[i]),
            p_b=float(self.p_b[i]),
            radius=float(self.radius[i]),
        )


def class_alpha(alpha: float, num_classes: int, rule: str, *, hoeffding_votes: int | None) -> float:
    """Per-bound level for a joint guarantee at 1 - alpha (module docstring).

    hoeffding_votes: the smallest N for Hoeffding bounds, None for Clopper-Pearson.
    """
    if rule == "complement":
        return alpha / num_classes
    if rule == "bonferroni":
        return alpha / (2 * num_classes)
    if rule == "majority":
        if hoeffding_votes is None:
            return alpha / 2
        return alpha / (2 + num_classes * math.exp(-hoeffding_votes / 2))
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def _top_two(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Argmax class (smallest index on ties), its value and the largest value among the others."""
    top = np.argmax(values, axis=1)
    top_value = values[np.arange(values.shape[0]), top]
    runner_up = np.partition(values, -2, axis=1)[:, -2]
    return top, top_value, runner_up


def _votes_record(n: np.ndarray) -> int | np.ndarray:
    return int(n[0]) if np.all(n == n[0]) else n.copy()


def _batch(
    top: np.ndarray,
    a: Bound,
    b: Bound,
    *,
    sigma: float,
    method: str,
    alpha: float | None,
    num_votes: int | np.ndarray | None,
    rule: str | None,
) -> CertificateBatch:
    radius = radius_from_bounds(a, b, sigma)
    certified = (a.value > b.value) & (radius > 0)
    return CertificateBatch(
        prediction=np.where(certified, top, ABSTAIN),
        top_class=top,
        p_a=a.value,
        p_b=b.value,
        radius=np.where(certified, radius, 0.0),
        sigma=sigma,
        method=method,
        alpha=alpha,
        num_votes=num_votes,
        rule=rule,
    )


def certify_hard_votes(
    counts: ArrayLike,
    *,
    sigma: float,
    alpha: float,
    rule: Rule = "complement",
    num_votes: ArrayLike | None = None,
) -> CertificateBatch:
    """Certify m test points from hard-vote counts (m, C) with Clopper-Pearson bounds.

    num_votes: N per row (scalar or (m,)), at least the row's count total; default the row
    totals.  A larger N covers models whose vote is not any of the C classes; models whose
    vote is missing must be left out of N.
    """
    k = check_matrix(check_integers(counts, "counts", minimum=0), "counts")
    m, num_classes = k.shape
    totals = k.sum(axis=1)
    if num_votes is None:
        if np.any(totals == 0):
            raise ValueError(f"row {int(np.argmin(totals))} of counts has no votes")
        n = totals
    else:
        n = per_row(check_integers(num_votes, "num_votes", minimum=1), m, "num_votes")
        if np.any(totals > n):
            raise ValueError("counts of a row sum to more than num_votes")
    s = check_positive_scalar(sigma, "sigma")
    level = class_alpha(check_alpha(alpha), num_classes, rule, hoeffding_votes=None)
    top, k_top, k_runner = _top_two(k)
    a = cp_lower_bound(k_top, n, level)
    b = cp_upper_bound(k_runner, n, level) if rule == "bonferroni" else Bound(a.complement, a.value)
    return _batch(
        top,
        a,
        b,
        sigma=s,
        method="clopper-pearson",
        alpha=float(alpha),
        num_votes=_votes_record(n),
        rule=rule,
    )


def certify_soft_votes(
    mean_proba: ArrayLike,
    *,
    num_models: ArrayLike,
    sigma: float,
    alpha: float,
    rule: Rule = "complement",
) -> CertificateBatch:
    """Certify m test points from mean class probabilities (m, C) with Hoeffding bounds.

    mean_proba[i, c] is the mean over num_models models (scalar or (m,)) of their probability
    for class c, so each row sums to at most 1.
    """
    mu = check_matrix(check_probability(mean_proba, "mean_proba"), "mean_proba")
    m, num_classes = mu.shape
    if np.any(mu.sum(axis=1) > 1.0 + _ROW_SUM_TOLERANCE):
        raise ValueError("each row of mean_proba must sum to at most 1 (mean of probabilities)")
    n = per_row(check_integers(num_models, "num_models", minimum=1), m, "num_models")
    s = check_positive_scalar(sigma, "sigma")
    level = class_alpha(check_alpha(alpha), num_classes, rule, hoeffding_votes=int(n.min()))
    eps = hoeffding_epsilon(n, level)
    top, mu_top, mu_runner = _top_two(mu)
    a = hoeffding_lower_bound(mu_top, eps)
    b = (
        hoeffding_upper_bound(mu_runner, eps)
        if rule == "bonferroni"
        else Bound(a.complement, a.value)
    )
    return _batch(
        top,
        a,
        b,
        sigma=s,
        method="hoeffding",
        alpha=float(alpha),
        num_votes=_votes_record(n),
        rule=rule,
    )


def certify_exact(proba: ArrayLike, *, sigma: float, slack: ArrayLike = 0.0) -> CertificateBatch:
    """Certify from exact class probabilities q (m, C), e.g. the smoothed K-NN (Theorem 3).

    pA = q_top - slack and pB = max_{y != top} q_y + slack (clipped to [0, 1]); slack >= 0
    (scalar or (m,)) bounds the neglected probability mass plus float error.  With slack = 0
    a row with q_top = 1 or runner-up q = 0 exactly gets an infinite radius, the correct value
    for exact probabilities (Gaussian noise has full support, so no shift changes them); give
    a positive slack when those values come out of a floating-point computation.
    """
    q = check_matrix(check_probability(proba, "proba"), "proba")
    if np.any(q.sum(axis=1) > 1.0 + _ROW_SUM_TOLERANCE):
        raise ValueError("each row of proba must sum to at most 1")
    slack_rows = per_row(check_nonnegative(slack, "slack"), q.shape[0], "slack")
    s = check_positive_scalar(sigma, "sigma")
    top, q_top, q_runner = _top_two(q)
    a = Bound(np.maximum(q_top - slack_rows, 0.0), np.minimum((1.0 - q_top) + slack_rows, 1.0))
    b = Bound(
        np.minimum(q_runner + slack_rows, 1.0), np.maximum((1.0 - q_runner) - slack_rows, 0.0)
    )
    return _batch(top, a, b, sigma=s, method="exact", alpha=None, num_votes=None, rule=None)
