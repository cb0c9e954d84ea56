r"""Class probabilities of the smoothed K-NN from per-point level CDFs (Theorem 3, eq. 73-80).

Ranking: noisy training point j precedes i if S_j < S_i, or S_j = S_i and j < i (eq. 65); the
top K are the K first points (eq. 66) and the prediction is the argmax of their class tally,
ties to the smallest class index (eq. 67, 68).

Boundary decomposition (eq. 74-76): exactly one point i is the K-th ranked one.  Given that i
is at level l, the points ranked before it are the j < i with S_j <= l and the j > i with
S_j < l, independently of each other, so

    P(tally gamma, boundary i at l)
        = p_i^l * prod_c P(#{j in class c before i} = gamma_c - [y_i = c])

where, for class c, the count is the sum of independent Bernoullis with success probabilities
a_j = P(S_j <= l) (j < i) and b_j = P(S_j <= l - 1) (j > i).  Its distribution truncated at K
is the product of the class's prefix polynomial prod_{j < i} (1 - a_j + a_j z) (eq. 79) and its
suffix polynomial prod_{j > i} (1 - b_j + b_j z) (eq. 78).  All prefixes of one class at one
level come from a single pass (a blocked scan: sqrt(n) vectorised steps twice plus one pass over
block totals), so the whole computation is O(n L K^2 C) per test point plus the tally
combination, instead of the O(K^(C+2) n^2 L C) of the paper's proof.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from rab.knn.backend import ArrayOps

# Values per array in the combination step (one chunk of boundary points), to stay in cache.
_CHUNK_VALUES = 1 << 17


def truncated_product(x: Any, y: Any) -> Any:
    """Coefficients 0..K-1 of the product of polynomials with K coefficients on axis 0."""
    k = x.shape[0]
    out = y * x[0]
    for j in range(1, k):
        out[j:] += x[j] * y[: k - j]
    return out


def _bernoulli_step(state: Any, prob: Any) -> Any:
    """Multiply count polynomials (coefficients on axis 0) by (1 - prob + prob z), truncated."""
    new = state * (1.0 - prob)
    new[1:] += state[:-1] * prob
    return new


@dataclass(frozen=True)
class PrefixPolys:
    """Count distributions of all prefixes, stored block-major as the blocked scan makes them.

    ``table[t, :, j]`` (coefficients, then the batch axes) is the distribution of the prefix
    that ends just before position j * block + t; ``table[0, :, num_blocks]`` is the total.
    """

    table: Any  # (block, k, num_blocks + 1, ...)
    block: int
    length: int

    def gather(self, positions: np.ndarray, ops: ArrayOps) -> Any:
        """(k, len(positions), ...): distributions of the first ``positions[i]`` Bernoullis."""
        positions = np.asarray(positions, dtype=np.int64)
        total = positions == self.length
        t = np.where(total, 0, positions % self.block)
        j = np.where(total, self.table.shape[2] - 1, positions // self.block)
        return ops.moveaxis(self.table[ops.index(t), :, ops.index(j)], 1, 0)


def _block_scan(prob: Any, k: int, ops: ArrayOps) -> tuple[Any, Any, Any]:
    """Blocks of about sqrt(m) positions: (steps (block, blocks, ...), starts, totals).

    starts[:, j] / totals[:, j] (coefficients first) are the count distributions of all points
    before block j / of block j, truncated at k - 1.  Padding positions have probability 0.
    """
    m, *lead = prob.shape
    block = max(1, math.isqrt(max(m - 1, 0)) + 1)
    num_blocks = max(1, -(-m // block))
    padded = ops.zeros((num_blocks * block, *lead))
    padded[:m] = prob
    steps = ops.moveaxis(padded.reshape(num_blocks, block, *lead), 1, 0)
    totals = ops.zeros((k, num_blocks, *lead))
    totals[0] = 1.0
    for t in range(block):
        totals = _bernoulli_step(totals, steps[t])
    starts = ops.zeros((k, num_blocks, *lead))
    starts[0, 0] = 1.0
    for j in range(1, num_blocks):
        starts[:, j] = truncated_product(starts[:, j - 1], totals[:, j - 1])
    return steps, starts, totals


def exclusive_prefix_polys(prob: Any, k: int, ops: ArrayOps) -> PrefixPolys:
    """Count distributions of every prefix of independent Bernoullis, truncated at k - 1.

    prob has shape (m, ...); entry [r, s, ...] of ``gather`` at s is P(exactly r successes
    among the first s).  Blocked scan: the sqrt(m) positions of all blocks are stepped in
    parallel, the block totals are chained, then the blocks are rescanned from their start
    distributions.  Coefficients lead so every step works on contiguous arrays.
    """
    steps, state, _ = _block_scan(prob, k, ops)
    block, num_blocks = steps.shape[0], steps.shape[1]
    table = ops.zeros((block, k, num_blocks + 1, *steps.shape[2:]))
    for t in range(block):
        table[t, :, :num_blocks] = state
        state = _bernoulli_step(state, steps[t])
    table[0, :, num_blocks] = state[:, -1]
    return PrefixPolys(table, block, prob.shape[0])


def compositions(total: int, parts: int) -> np.ndarray:
    """All vectors of ``parts`` non-negative integers summing to ``total`` (rows)."""
    rows = [
        np.diff(np.concatenate(([-1], bars, [total + parts - 1]))) - 1
        for bars in itertools.combinations(range(total + parts - 1), parts - 1)
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, parts)


def tally_winners(k: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Compositions g of k - 1 over the classes and winner[y, t] = argmax(g_t + e_y).

    The tally of the top k is g plus the boundary point's own class y; the winner is the
    smallest class index among the maxima (numpy argmax).
    """
    comps = compositions(k - 1, num_classes)
    tallies = comps[None, :, :] + np.eye(num_classes, dtype=np.int64)[:, None, :]
    return comps, np.argmax(tallies, axis=2)


class EnumeratedTallies:
    """Winner probabilities by enumerating every tally: O(T C) per boundary, T = #compositions."""

    def __init__(self, k: int, num_classes: int, ops: ArrayOps) -> None:
        comps, winners = tally_winners(k, num_classes)
        self.ops = ops
        self.num_classes = num_classes
        self.comps = comps
        self.comp_index = [ops.index(comps[:, c]) for c in range(num_classes)]
        self.winners = ops.asarray(np.eye(num_classes)[winners])  # (y, T, C)

    def _part(self, counts: Any, c: int) -> Any:
        """counts[comps[:, c]] (T, n, B, R); with two classes a view or a flip (k - 1 = T - 1)."""
        column = self.comps[:, c]
        if np.array_equal(column, np.arange(column.size)):
            return counts
        if np.array_equal(column, np.arange(column.size)[::-1]):
            return self.ops.flip(counts, 0)
        return counts[self.comp_index[c]]

    def __call__(self, counts: list[Any], labels: np.ndarray, weight: Any) -> Any:
        """counts[c]: (k, n, B, R) class-c count distributions; weight: (n, B, R) p_i^l."""
        joint = self._part(counts[0], 0)
        for c in range(1, self.num_classes):
            joint = joint * self._part(counts[c], c)  # (T, n, B, R)
        mass = (joint * weight).sum(-1)  # (T, n, B)
        onehot = self.ops.asarray(np.eye(self.num_classes)[labels])  # (n, y)
        return self.ops.einsum("tnb,ny,ytc->bc", mass, onehot, self.winners)


class ClasswiseTallies:
    """Winner probabilities by a DP over classes: O(C K^3) per boundary, for many classes.

    In tally space tau_c = g_c + [c = y_i] (sum K), class w wins with tau_w = v iff every
    c < w has tau_c < v and every c > w has tau_c <= v.  For each v, prefix products over
    classes of the "< v" parts and suffix products of the "<= v" parts give, for every w, the
    coefficient of z^K of prefix_w * (tau_w = v part) * suffix_w.
    """

    def __init__(self, k: int, num_classes: int, ops: ArrayOps) -> None:
        self.k, self.num_classes, self.ops = k, num_classes, ops

    def __call__(self, counts: list[Any], labels: np.ndarray, weight: Any) -> Any:
        ops, k, num = self.ops, self.k, self.num_classes
        zero = ops.zeros((1, *counts[0].shape[1:]))
        tau = []
        for c in range(num):
            plain = ops.concatenate([counts[c], zero], axis=0)  # degrees 0..k
            shifted = ops.concatenate([zero, counts[c]], axis=0)  # own class: one more
            own = ops.asarray((labels == c).astype(float)).reshape(-1, 1, 1)
            tau.append(plain + (shifted - plain) * own)
        degree = np.arange(k + 1).reshape(-1, *([1] * (counts[0].ndim - 1)))
        unit = ops.zeros(tau[0].shape)
        unit[0] = 1.0
        out = ops.zeros((weight.shape[1], num))
        for v in range(1, k + 1):
            less = ops.asarray((degree < v).astype(float))
            upto = ops.asarray((degree <= v).astype(float))
            prefix = [unit]
            for c in range(num - 1):
                prefix.append(truncated_product(prefix[-1], tau[c] * less))
            suffix = unit
            for w in range(num - 1, -1, -1):
                rest = (prefix[w][: k - v + 1] * ops.flip(suffix[: k - v + 1], 0)).sum(0)
                out[:, w] += (rest * tau[w][v] * weight).sum(-1).sum(0)
                suffix = truncated_product(suffix, tau[w] * upto)
        return out


def boundary_class_probabilities(
    cdf: Any, labels: np.ndarray, k: int, num_classes: int, ops: ArrayOps, *, method: str = "auto"
) -> Any:
    """Sum over boundary levels and points of the tally probabilities, mapped to classes.

    cdf: backend array (B, R + 1, n); cdf[b, r, j] = P(S_j <= l_b + r - 1) for R consecutive
    boundary levels l_b .. l_b + R - 1 of batch entry b (0 for level -1, 1 for the last level).
    labels: (n,) classes of the points in index order.  Returns (B, C): the probability that
    the boundary lies in the given levels and the K-NN predicts each class.  ``method``:
    "enumerate" the tallies, "classwise" DP, or "auto" (the DP once it is cheaper).
    """
    labels = np.asarray(labels, dtype=np.int64)
    points_first = ops.moveaxis(cdf, -1, 0)  # (n, B, R + 1)
    at_most = points_first[:, :, 1:]  # a_j = P(S_j <= l)
    below = points_first[:, :, :-1]  # b_j = P(S_j <= l - 1)
    scans = []
    for c in range(num_classes):
        member = labels == c
        idx = ops.index(np.flatnonzero(member))
        before = np.cumsum(member) - member  # class-c points with index < i
        after = int(member.sum()) - np.cumsum(member)  # class-c points with index > i
        scans.append(
            (
                exclusive_prefix_polys(at_most[idx], k, ops),
                exclusive_prefix_polys(ops.flip(below[idx], 0), k, ops),
                before,
                after,
            )
        )
    if method == "auto":
        method = "classwise" if math.comb(k + num_classes - 2, k - 1) > 2 * k**3 else "enumerate"
    if method not in ("enumerate", "classwise"):
        raise ValueError(f"method must be 'auto', 'enumerate' or 'classwise', got {method!r}")
    combine = (EnumeratedTallies if method == "enumerate" else ClasswiseTallies)(
        k, num_classes, ops
    )
    n = labels.size
    chunk = max(64, _CHUNK_VALUES // (k * cdf.shape[0] * (cdf.shape[1] - 1)))
    out = ops.zeros((cdf.shape[0], num_classes))
    for s in range(0, n, chunk):  # chunks of boundary points, sized to stay in cache
        e = min(n, s + chunk)
        counts = [
            truncated_product(
                prefix.gather(before[s:e], ops), reversed_suffix.gather(after[s:e], ops)
            )
            for prefix, reversed_suffix, before, after in scans
        ]
        out = out + combine(counts, labels[s:e], at_most[s:e] - below[s:e])
    return out
