"""rab.metrics against direct loops, and rab.plots writing a real PNG."""

from __future__ import annotations

import numpy as np
import pytest

from rab.metrics import certified_accuracy, certified_rate, prediction_accuracy, summarize
from rab.plots import _bar_figure, _pyplot, accuracy_bars, certified_accuracy_curve


def _loop_certified_accuracy(pred, lab, rad, r):
    return sum(1 for p, y, q in zip(pred, lab, rad, strict=True) if p == y and q > r) / len(pred)


def test_metrics_match_direct_loops() -> None:
    rng = np.random.default_rng(7)
    pred = rng.integers(-1, 3, size=500)
    lab = rng.integers(0, 3, size=500)
    rad = rng.exponential(0.5, size=500)
    rad[pred == -1] = 0.0
    radii = [0.0, 0.1, 0.5, 1.0, 3.0]
    expected_acc = [_loop_certified_accuracy(pred, lab, rad, r) for r in radii]
    expected_rate = [sum(q > r for q in rad) / 500 for r in radii]
    np.testing.assert_allclose(certified_accuracy(pred, lab, rad, radii), expected_acc)
    np.testing.assert_allclose(certified_rate(rad, radii), expected_rate)
    assert prediction_accuracy(pred, lab) == pytest.approx(np.mean(pred == lab))


def test_radius_equal_to_r_is_not_certified() -> None:
    # eq. 14 is a strict inequality: a point with radius exactly R is not certified at R.
    assert certified_accuracy([1], [1], [0.5], [0.5])[0] == 0.0
    assert certified_accuracy([1], [1], [0.5], [0.4999])[0] == 1.0


def test_abstain_never_counts_as_correct() -> None:
    s = summarize([-1, 0, 1], [0, 0, 0], [0.0, 1.0, 2.0], radii=[0.0, 1.5])
    assert s.accuracy == pytest.approx(1 / 3)
    assert s.abstain_rate == pytest.approx(1 / 3)
    assert s.certified_accuracy == pytest.approx((1 / 3, 0.0))
    assert s.certified_rate == pytest.approx((2 / 3, 1 / 3))
    assert s.as_dict()["certified_rate"] == {"0": pytest.approx(2 / 3), "1.5": pytest.approx(1 / 3)}


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        certified_accuracy([0, 1], [0], [1.0, 1.0], [0.0])
    with pytest.raises(ValueError, match="at least one"):
        summarize([], [], [])


def test_curve_png_is_written(tmp_path) -> None:
    import matplotlib.image

    out = certified_accuracy_curve(
        {"clean": ([0, 1, 1], [0, 1, 0], [0.2, 0.7, np.inf]), "backdoor": ([1], [1], [0.1])},
        tmp_path / "curve.png",
    )
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100
    with pytest.raises(ValueError, match="at least one curve"):
        certified_accuracy_curve({}, tmp_path / "empty.png")


def test_accuracy_bars_legend_never_covers_the_axes(tmp_path) -> None:
    """Figure 3's bars: the legend lies outside the axes (beside the bars, not on them)."""
    import matplotlib.image

    groups = {f"attack {i} |d|=0.1 r_p=0.02": {"vanilla": 0.99, "RAB σ = 1": 1.0,
                                                  "RAB σ = 2": 0.2} for i in range(3)}
    plt = _pyplot("test")
    fig, ax = _bar_figure(plt, groups, title="bars", ylabel="accuracy")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1 and not legend.overlaps(axes)
    figure = fig.get_window_extent(renderer)
    for artist in (legend, *(t.get_window_extent(renderer) for t in ax.get_xticklabels())):
        assert figure.x0 <= artist.x0 and artist.x1 <= figure.x1  # nothing cut off
    plt.close(fig)
    image = matplotlib.image.imread(accuracy_bars(groups, tmp_path / "bars.png"))
    assert image.shape[1] > image.shape[0] > 100
