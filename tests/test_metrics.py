"""Metric functions against hand-computed cases, edge cases included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmtriage import metrics as m


def test_pgr_endpoints():
    assert m.pgr(0.6, weak=0.6, strong=0.8) == 0.0
    assert m.pgr(0.8, weak=0.6, strong=0.8) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        m.pgr(0.7, 0.7, 0.7)


def test_apgr_and_cpt_of_a_random_router():
    share = np.linspace(0, 1, 11)
    quality = 0.6 + 0.2 * share  # quality rises linearly with strong calls
    assert m.apgr(share, quality, 0.6, 0.8) == pytest.approx(0.5)
    assert m.cpt(share, quality, 0.6, 0.8, 0.5) == pytest.approx(0.5)
    assert m.cpt(share, quality, 0.6, 0.8, 0.8) == pytest.approx(0.8)


def test_apgr_single_operating_point():
    # One point at 30% strong calls recovering 60% of the gap, completed by (0,0) and (1,1):
    # area = 0.3 * (0 + 0.6) / 2 + 0.7 * (0.6 + 1) / 2 = 0.09 + 0.56
    assert m.apgr([0.3], [0.6 + 0.2 * 0.6], 0.6, 0.8) == pytest.approx(0.65)
    assert m.cpt([0.3], [0.72], 0.6, 0.8, 0.5) == pytest.approx(0.25)
    assert m.cpt([0.3], [0.72], 0.6, 0.8, 0.8) == pytest.approx(0.65)


def test_policy_that_never_calls_the_strong_model():
    # Only the all-weak point: the curve is the straight line to all-strong, like random.
    assert m.apgr([0.0], [0.6], 0.6, 0.8) == pytest.approx(0.5)
    assert m.cpt([0.0], [0.6], 0.6, 0.8, 0.2) == pytest.approx(0.2)


def test_ties_at_one_share_keep_the_best_quality():
    share = [0.5, 0.5]
    quality = [0.7, 0.8]  # PGR 0.5 and 1.0 at the same share
    # (0,0) -> (0.5,1) -> (1,1): 0.25 + 0.5
    assert m.apgr(share, quality, 0.6, 0.8) == pytest.approx(0.75)
    assert m.cpt(share, quality, 0.6, 0.8, 1.0) == pytest.approx(0.5)


def test_cpt_beyond_the_strong_model():
    # A router better than the strong model reaches 100% PGR before 100% calls.
    assert m.cpt([0.4], [0.85], 0.6, 0.8, 1.0) == pytest.approx(0.4 * 1.0 / 1.25)


def test_upper_hull_drops_points_below_it_and_flattens():
    hx, hy = m.upper_hull([1, 2, 3, 4], [0.5, 0.55, 0.9, 0.8])
    assert hx.tolist() == [1, 3] and hy.tolist() == [0.5, 0.9]


def test_aiq_hand_computed():
    # Hull (1,.5)-(2,.9) then flat at .9 to cost 3: (0.7 + 0.9) / 2
    assert m.aiq([1, 2, 3], [0.5, 0.9, 0.8]) == pytest.approx(0.8)
    # (2,.55) lies under the chord from (1,.5) to (3,.9): mean height 0.7
    assert m.aiq([1, 2, 3], [0.5, 0.55, 0.9]) == pytest.approx(0.7)


def test_aiq_single_point():
    assert m.aiq([2.0], [0.7]) == pytest.approx(0.7)
    # Over a common range [1, 3]: nothing below cost 2, 0.7 above it.
    assert m.aiq([2.0], [0.7], cost_range=(1.0, 3.0)) == pytest.approx(0.35)
    assert m.aiq([5.0], [0.7], cost_range=(1.0, 3.0)) == 0.0


def test_aiq_ties_in_cost_take_the_better_point():
    assert m.aiq([1, 1, 2], [0.2, 0.6, 0.6]) == pytest.approx(0.6)


def test_pareto_front():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 0.5])
    quality = np.array([0.6, 0.7, 0.65, 0.7, 0.4])
    assert m.pareto_front(cost, quality).tolist() == [4, 0, 1]


@pytest.mark.parametrize(
    ("accuracy", "cost_per_1k", "published"),
    [(0.6688, 0.15, 0.6689), (0.7396, 10.02, 0.6432)],  # MIRT-BERT, GPT-5 on RouterArena
)
def test_routerarena_score_reproduces_the_leaderboard(accuracy, cost_per_1k, published):
    assert m.routerarena_score(accuracy, cost_per_1k) == pytest.approx(published, abs=6e-4)


def test_routerarena_score_bounds():
    # Below c_min the cost score is 1: S = 1.1 * A / (0.1 * A + 1)
    assert m.routerarena_score(0.8, 0.001) == pytest.approx(1.1 * 0.8 / 1.08)
    assert m.routerarena_score(0.8, 1000.0) == 0.0


def test_inference_efficiency():
    ref = {"cost": 2.0, "latency": 100.0}
    assert m.inference_efficiency(0.9, ref, ref) == pytest.approx(0.9)
    half = {"cost": 1.0, "latency": 50.0}
    assert m.inference_efficiency(0.9, half, ref) == pytest.approx(1.8)
    assert math.isnan(m.inference_efficiency(0.9, {"energy": 1.0}, ref))
