"""The power simulation (`report.power`): variance components read back from a test's mean squares, and the
across-seed test's false-positive rate and power on studies shaped like the demo's primary comparison."""

import math

import numpy as np
import pytest

from playpen_attribution.report.power import components, simulate
from playpen_attribution.report.stats import across_seed_test

DEMO = {"seed": 0.0002, "row": 0.032, "residual": 0.141}
"""Variance components of the demo's top_k vs matched_random_k choice accuracy (5 seeds x 240 rows)."""


def test_components_are_read_back_from_the_mean_squares():
    rng = np.random.default_rng(0)
    seeds, rows = 40, 400
    d = rng.normal(0, 0.3, (seeds, 1)) + rng.normal(0, 0.2, (1, rows)) + rng.normal(0, 0.5, (seeds, rows))
    got = components(across_seed_test(d))
    assert got["seed"] == pytest.approx(0.09, rel=0.35) and got["row"] == pytest.approx(0.04, rel=0.25)
    assert got["residual"] == pytest.approx(0.25, rel=0.05)


@pytest.mark.parametrize("seeds", [3, 5])
def test_a_null_with_row_effects_is_called_at_most_at_the_nominal_rate(seeds):
    """Rows that favour one arm and rows that favour the other, averaging to no difference: still at most 5%."""
    studies = 1000
    assert simulate(0.0, DEMO, seeds, 240, studies, seed=seeds) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / studies)


def test_the_demo_effect_is_found_with_five_seeds():
    assert simulate(0.128, DEMO, 5, 240, 400) > 0.95
    assert simulate(0.064, DEMO, 5, 240, 400) > simulate(0.064, DEMO, 3, 240, 400)  # more seeds, more power
