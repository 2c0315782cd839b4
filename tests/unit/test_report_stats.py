"""The report's statistics against values computed independently (by hand or from published tables)."""

import math

import numpy as np
import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.report.stats import (
    across_seed_test,
    bootstrap_mean,
    fixed_sequence,
    mcnemar_exact,
    paired,
    wilson_interval,
)


@pytest.mark.parametrize("correct, total, low, high", [
    # Wilson 95% intervals as published (e.g. Newcombe 1998, Table I; R binom::binom.wilson)
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),
])
def test_wilson_interval_at_known_points(correct, total, low, high):
    got = wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_upper_bound_for_zero_successes_has_a_closed_form():
    z = 1.959963984540054
    assert wilson_interval(0, 10)[1] == pytest.approx(z * z / (10 + z * z))


@pytest.mark.parametrize("total", [1, 3, 7, 13, 24, 240, 1000])
def test_wilson_interval_contains_the_rate_exactly_at_the_edges(total):
    # 0/n and n/n: the bound is the rate itself, never float dust past it (a plot's error bar would go negative)
    assert wilson_interval(0, total)[0] == 0.0
    assert wilson_interval(total, total)[1] == 1.0


def test_mcnemar_on_a_hand_made_table():
    # 2x2 table: both right 20, only a right 8, only b right 2, both wrong 10
    a = [True] * 20 + [True] * 8 + [False] * 2 + [False] * 10
    b = [True] * 20 + [False] * 8 + [True] * 2 + [False] * 10
    result = mcnemar_exact(a, b)
    assert (result["both"], result["a_only"], result["b_only"], result["neither"]) == (20, 8, 2, 10)
    # exact two-sided: 2 * P(X <= 2 | n = 10, p = 1/2) = 2 * (1 + 10 + 45) / 1024
    assert result["p_value"] == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_mcnemar_symmetric_and_without_discordant_pairs():
    a = [True, False, True, False, True, False]
    b = [False, True, True, False, False, True]
    assert mcnemar_exact(a, b)["p_value"] == pytest.approx(1.0)  # 2 vs 2 discordant
    assert mcnemar_exact(a, a)["p_value"] == 1.0
    # one-sided extreme: 6 discordant all one way -> 2 * (1/2)^6
    assert mcnemar_exact([True] * 6, [False] * 6)["p_value"] == pytest.approx(2 / 64)


def test_bootstrap_interval_covers_a_known_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        diffs = 0.3 + rng.normal(0.0, 1.0, 200)
        result = bootstrap_mean(diffs, draws=1000)
        covered += result["ci_low"] < 0.3 < result["ci_high"]
    assert 0.89 <= covered / 200 <= 0.99


def test_bootstrap_interval_matches_the_normal_width():
    diffs = 0.3 + np.random.default_rng(1).normal(0.0, 1.0, 400)
    result = bootstrap_mean(diffs)
    half_normal = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert (result["ci_high"] - result["ci_low"]) / 2 == pytest.approx(half_normal, rel=0.1)
    assert result["mean"] == pytest.approx(diffs.mean())


def test_bootstrap_interval_excludes_zero_for_a_clear_paired_accuracy_gain():
    a = np.array([1] * 70 + [0] * 30)
    b = np.array([1] * 40 + [0] * 60)
    result = bootstrap_mean(a - b)
    assert result["mean"] == pytest.approx(0.3) and result["ci_low"] > 0


def test_across_seed_test_covers_the_true_difference_and_widens_with_seed_spread():
    rng = np.random.default_rng(3)
    rows = 300
    steady = np.stack([0.1 + rng.normal(0, 0.5, rows) for _ in range(3)])
    spread = np.stack([s + rng.normal(0, 0.5, rows) for s in (-0.4, 0.1, 0.6)])
    a, b = across_seed_test(steady), across_seed_test(spread)
    assert a["ci_low"] < 0.1 < a["ci_high"] and b["ci_low"] < 0.1 < b["ci_high"]
    assert b["ci_high"] - b["ci_low"] > 2 * (a["ci_high"] - a["ci_low"]) and b["df"] == pytest.approx(2, rel=0.01)
    assert a["mean"] == pytest.approx(steady.mean()) and a["status"] == b["status"] == "tested"


def test_without_a_row_effect_it_is_the_t_test_of_the_per_seed_means():
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.8, 240)  # +noise, -noise, 0: every row's mean over the seeds is the same (no row effect)
    real = np.stack([0.30 + noise, 0.35 - noise, 0.28 + 0 * noise])
    test = across_seed_test(real)
    assert test["variance"]["row"] == 0.0 and test["df"] == 2
    assert test["p_value"] == pytest.approx(ttest_1samp(real.mean(axis=1), 0.0).pvalue)
    assert test["p_value"] < 0.05 and test["ci_low"] > 0.1


def test_a_row_effect_widens_the_interval_with_satterthwaite_degrees_of_freedom():
    """Rows one arm gets right in every seed: the verdict must hold for new eval rows too, so their spread counts."""
    rng = np.random.default_rng(8)
    row_effect = rng.normal(0, 0.6, 60)
    diffs = np.stack([row_effect + rng.normal(0.05 * s, 0.3, 60) for s in range(4)])
    test = across_seed_test(diffs)
    seeds_only = math.sqrt(diffs.mean(axis=1).var(ddof=1) / 4)
    assert test["variance"]["row"] > 0 and test["se"] > 2 * seeds_only
    assert 3 < test["df"] < 59  # between the seeds' and the rows' degrees of freedom


def test_one_seed_and_seeds_that_did_not_vary_give_no_p_value():
    rng = np.random.default_rng(5)
    one = across_seed_test((rng.random((1, 240)) < 0.5).astype(float))
    assert one["status"] == "one_seed" and one["p_value"] is None and one["df"] == 239
    assert one["ci_low"] < one["mean"] < one["ci_high"]
    rows = rng.normal(0.1, 0.5, 240)
    same = across_seed_test(np.stack([rows, rows, rows]))  # the seed changed nothing
    assert same["status"] == "no_replication" and same["p_value"] is None
    rounded = np.stack([rows, rows * 3 / 3, (rows + 0.1) - 0.1])  # the same rows, up to float rounding
    assert 0 < np.ptp(rounded, axis=0).max() < 1e-15
    assert across_seed_test(rounded)["status"] == "no_replication"
    assert across_seed_test(np.zeros((3, 5)))["status"] == "no_replication"
    # seeds whose means agree by chance, on other rows: the rows' noise stands in for the seeds' spread, with the
    # seeds' degrees of freedom (not p = 0, not a bolder test)
    chance = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])  # every seed +0.25
    test = across_seed_test(chance)
    assert test["status"] == "tested" and test["df"] == pytest.approx(2) and 0.05 < test["p_value"] < 1
    with pytest.raises(ValueError):
        across_seed_test(np.zeros(3))


def test_intervals_are_cut_to_the_metric_range_and_say_so():
    diffs = np.array([[1.0] * 9 + [0.0], [1.0] * 2 + [0.0] * 8, [1.0] * 10])  # mean 0.7, wide over 3 seeds
    free, cut = across_seed_test(diffs), across_seed_test(diffs, bounds=(-1.0, 1.0))
    assert free["ci_high"] > 1 and cut["ci_high"] == 1.0 and cut["clipped"] and not free["clipped"]
    assert cut["ci_low"] == free["ci_low"] and cut["p_value"] == free["p_value"]


def test_the_detectable_difference_shrinks_with_seeds():
    rng = np.random.default_rng(2)
    few = across_seed_test(rng.normal(0, 0.1, (3, 1)) + rng.normal(0, 1, (3, 200)))
    many = across_seed_test(rng.normal(0, 0.1, (10, 1)) + rng.normal(0, 1, (10, 200)))
    assert many["mde"] < few["mde"] and few["mde"] > abs(few["mean"])


def test_the_primary_test_is_not_adjusted_by_the_secondary_ones():
    holds, adjusted = fixed_sequence(0.04, [0.01, 0.02, 0.03, 0.2])
    assert holds and adjusted == pytest.approx([0.04, 0.06, 0.06, 0.2])
    assert fixed_sequence(0.04, [0.001] * 20)[0]  # twenty secondaries change nothing for the primary
    assert not fixed_sequence(0.06, [])[0] and not fixed_sequence(None, [0.001])[0]


def _a_a_experiments(rng, n: int, seeds: int = 3, rows: int = 240, seed_sd: float = 0.1, row_sd: float = 0.0):
    """n A/A comparisons shaped like the demo's: per row a paired accuracy difference in {-1, 0, 1} on the
    same eval rows in every seed, per seed a shift of the arms' accuracies (which random rows were drawn, how
    training went) and per row a difficulty both arms share, with no true difference behind any of it."""
    for _ in range(n):
        shifts = rng.normal(0, seed_sd, seeds)
        difficulty = rng.normal(0, row_sd, rows)
        p_a = np.clip(0.45 + shifts[:, None] / 2 + difficulty, 0, 1)
        p_b = np.clip(0.45 - shifts[:, None] / 2 + difficulty, 0, 1)
        yield (rng.random((seeds, rows)) < p_a).astype(float) - (rng.random((seeds, rows)) < p_b).astype(float)


@pytest.mark.parametrize("seeds, row_sd", [(3, 0.0), (5, 0.3), (10, 0.0)])
def test_an_a_a_comparison_is_called_at_the_nominal_rate_not_one_in_four(seeds, row_sd):
    """The reason the across-seed test is over seeds: pooling every (seed, row) pair as independent, as the
    exact McNemar over all seeds did, calls a difference in about a third of A/A comparisons; the across-seed
    test keeps to its 5% (1,000 simulated studies: at most 5% plus two standard errors of the simulation; with 3
    seeds it is conservative, about 2%, because the seed term keeps its 2 degrees of freedom)."""
    from scipy.stats import binomtest

    rng = np.random.default_rng(11)
    called, pooled_called, total = 0, 0, 1000
    for diff in _a_a_experiments(rng, total, seeds=seeds, row_sd=row_sd):
        called += across_seed_test(diff)["p_value"] < 0.05
        a_only, b_only = int((diff > 0).sum()), int((diff < 0).sum())
        pooled_called += binomtest(a_only, a_only + b_only, 0.5).pvalue < 0.05
    assert 0.01 < called / total <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / total)
    assert pooled_called / total > 0.25


def test_paired_joins_on_example_id_and_refuses_different_rows():
    ids, a, b = paired({"x": 1, "y": 2}, {"y": 20, "x": 10}, "top_k vs random")
    assert ids == ["x", "y"] and a == [1, 2] and b == [10, 20]
    with pytest.raises(UserError, match=r"top_k vs random: .*\(1 only in the first"):
        paired({"x": 1, "z": 2}, {"x": 1}, "top_k vs random")


def test_holm_adjusts_step_down_and_keeps_the_order():
    from playpen_attribution.report.stats import holm

    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.2, 0.2]) == pytest.approx([0.4, 0.4]) and holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_pooled_mcnemar_adds_the_seeds_discordant_rows():
    from scipy.stats import binomtest

    from playpen_attribution.report.stats import mcnemar_exact, mcnemar_pooled

    a = [mcnemar_exact([1, 1, 0, 1], [0, 1, 0, 0]), mcnemar_exact([1, 0, 1, 1], [0, 0, 0, 1])]
    pooled = mcnemar_pooled(a)
    assert (pooled["a_only"], pooled["b_only"]) == (4, 0)
    assert pooled["p_value"] == pytest.approx(binomtest(4, 4, 0.5).pvalue)
    assert mcnemar_pooled([mcnemar_exact([1, 0], [1, 0])])["p_value"] == 1.0


def test_sign_flip_p_is_small_for_a_shift_and_large_for_noise():
    import numpy as np

    from playpen_attribution.report.stats import sign_flip_p

    rng = np.random.default_rng(0)
    assert sign_flip_p(rng.normal(0.5, 1.0, (3, 200))) < 0.001
    assert sign_flip_p(rng.normal(0.0, 1.0, (3, 200))) > 0.05
    assert sign_flip_p(np.zeros(10)) == 1.0
