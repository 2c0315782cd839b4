"""The published rank-window ablation is one config: four arms of the intended sizes, overlapping only
where intended (selection logic on a synthetic 1,000-row pool with fake scores; no model)."""

import random

import pytest
from helpers import REPO

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.attribution.selection import build_arms, rank_ids, strata
from playpen_attribution.config import load_config

CONFIG = REPO / "configs" / "taboo_rank_windows.yaml"


def _pool(n=1000):
    rng = random.Random(5)
    ids = [f"row{i:04d}" for i in range(n)]
    scores = {e: rng.gauss(0, 1) for e in ids}
    outcomes = {e: "success" if rng.random() < 0.7 else "failure" for e in ids}
    lengths = {e: rng.randint(20, 400) for e in ids}
    return ids, scores, strata(outcomes, lengths, 5)


def _arms(seed):
    cfg = load_config(CONFIG)
    ids, scores, stratum = _pool()
    return cfg, scores, build_arms(plan_arms(cfg.select), {"attribution": scores}, ids, stratum, seed)


def test_rank_window_config_is_the_published_setup_with_four_arms():
    cfg = load_config(CONFIG)
    assert cfg.model.base == "google/gemma-3-1b-it" and cfg.select.k == 500
    plan = {a.name: a for a in plan_arms(cfg.select)}
    assert list(plan) == ["top500", "top300", "ranks_301_500", "random200_beyond_500"]
    assert plan["top300"].versus == ("top500",) and plan["ranks_301_500"].versus == ("random200_beyond_500",)


def test_rank_window_arms_have_the_intended_sizes_and_overlaps():
    _, scores, arms = _arms(seed=1)
    ranked = rank_ids(scores)
    rank = {e: i + 1 for i, e in enumerate(ranked)}
    top500, top300 = arms["top500"]["example_ids"], arms["top300"]["example_ids"]
    window, beyond = arms["ranks_301_500"]["example_ids"], arms["random200_beyond_500"]["example_ids"]
    assert [len(top500), len(top300), len(window), len(beyond)] == [500, 300, 200, 200]
    assert all(len(set(a)) == len(a) for a in (top500, top300, window, beyond))
    assert top500 == ranked[:500] and top300 == ranked[:300]
    assert sorted(rank[e] for e in window) == list(range(301, 501))
    assert min(rank[e] for e in beyond) > 500
    # intended overlaps only: top300 and the window split top500; the random rows touch none of them
    assert set(top300) | set(window) == set(top500) and not set(top300) & set(window)
    assert not set(beyond) & set(top500)


def test_random_beyond_is_redrawn_per_seed_and_reproducible():
    _, _, a = _arms(seed=1)
    _, _, b = _arms(seed=2)
    _, _, again = _arms(seed=1)
    assert a["random200_beyond_500"]["example_ids"] == again["random200_beyond_500"]["example_ids"]
    assert a["random200_beyond_500"]["example_ids"] != b["random200_beyond_500"]["example_ids"]
    assert a["top500"] == b["top500"]


def test_window_past_the_pool_is_refused():
    from playpen_attribution.attribution.arms import PlannedArm
    from playpen_attribution.errors import UserError

    ids, scores, stratum = _pool(n=400)
    with pytest.raises(UserError, match="ranks 301..500 reach beyond the pool"):
        build_arms([PlannedArm("w", "window", "attribution", 200, ranks=(301, 500))],
                   {"attribution": scores}, ids, stratum, seed=0)
