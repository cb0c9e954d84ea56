"""Certificates of a DNN-RAB ensemble from its stored votes (Algorithm 1 lines 7-18).

- hard votes (majority vote, eq. 19): class counts with one-sided Clopper-Pearson bounds;
- soft votes (mean class probability, as in the authors' code): Hoeffding bounds;

both through :mod:`rab.bounds`, with N = the number of models that actually voted, ABSTAIN when
pA <= pB, the radius of eq. 14 and, via ``CertificateBatch.per_sample_radius(r)``, eq. 15.
:func:`expected_certificates` gives the point-estimate ("expected") radius from the raw vote
shares: it is NOT a certificate (no confidence bound) and is reported only beside one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal, get_args

from rab.bounds import (
    CertificateBatch,
    Rule,
    certify_exact,
    certify_hard_votes,
    certify_soft_votes,
)
from rab.ensemble.vote import VoteMatrices

VoteKind = Literal["hard", "soft"]
VOTE_KINDS: tuple[str, ...] = get_args(VoteKind)
#: The confidence bound of each vote kind, as users name it: Clopper-Pearson bounds the
#: hard-vote counts, Hoeffding the soft-vote mean probabilities.
Bound = Literal["clopper-pearson", "hoeffding"]
BOUNDS: tuple[str, ...] = get_args(Bound)
VOTES_OF_BOUND: dict[str, VoteKind] = {"clopper-pearson": "hard", "hoeffding": "soft"}
POINT_ESTIMATE = "point-estimate"  # the method label of expected_certificates: not certified


def _check_kind(votes: VoteKind) -> None:
    if votes not in VOTE_KINDS:
        raise ValueError(f"votes must be one of {VOTE_KINDS}, got {votes!r}")


def certify_votes(
    matrices: VoteMatrices,
    *,
    alpha: float,
    votes: VoteKind = "hard",
    rule: Rule = "complement",
) -> CertificateBatch:
    """Certified predictions and radii (eq. 14) at confidence 1 - alpha per test point.

    ``votes="hard"``: Clopper-Pearson on the vote counts; ``"soft"``: Hoeffding on the mean
    probabilities. ``rule`` is the joint-validity rule of :mod:`rab.bounds`.
    """
    _check_kind(votes)
    if votes == "hard":
        return certify_hard_votes(matrices.counts(), sigma=matrices.sigma, alpha=alpha, rule=rule)
    return certify_soft_votes(matrices.mean_proba(), num_models=matrices.num_models,
                              sigma=matrices.sigma, alpha=alpha, rule=rule)


def expected_certificates(matrices: VoteMatrices, *, votes: VoteKind = "hard") -> CertificateBatch:
    """Point-estimate ("expected") radii from the vote shares: NOT certified (no alpha).

    pA and pB are the empirical top and runner-up shares (counts / N for hard votes, mean
    probabilities for soft votes), as the paper's MNIST rows at R = 2.0 most likely used.
    The batch's ``method`` is ``"point-estimate"``, never a certification method's name.
    """
    _check_kind(votes)
    shares = matrices.counts() / matrices.num_models if votes == "hard" else matrices.mean_proba()
    return replace(certify_exact(shares, sigma=matrices.sigma), method=POINT_ESTIMATE)
