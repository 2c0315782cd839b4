"""Pure selection logic: rank by score, take the top k, draw a random subset matched on strata.

Non-finite scores rank last (never silently zeroed). Matching: every row gets a stratum
(outcome x length-quantile bin over the whole pool); the random arm draws, for each stratum, as many
rows as the top-k holds there, from the rows not in the top-k (unless overlap is allowed). When a
stratum runs short, the shortfall is filled from the remaining rows at random and counted.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

from playpen_attribution.errors import UserError


def rank_ids(scores: dict[str, float]) -> list[str]:
    """example_ids from highest to lowest score; NaN/inf last; ties broken by id for determinism."""

    def key(item: tuple[str, float]):
        eid, score = item
        finite = score is not None and math.isfinite(score)
        return (0 if finite else 1, -score if finite else 0.0, eid)

    return [eid for eid, _ in sorted(scores.items(), key=key)]


def top_k(scores: dict[str, float], k: int) -> list[str]:
    if k > len(scores):
        raise UserError(f"select.k = {k} is larger than the pool ({len(scores)} rows)")
    return rank_ids(scores)[:k]


def length_bins(lengths: dict[str, int], n_bins: int) -> dict[str, int]:
    """Quantile bin (0..n_bins-1) of each row's token length, over the whole pool."""
    ordered = sorted(lengths, key=lambda eid: (lengths[eid], eid))
    n = len(ordered)
    return {eid: min(n_bins - 1, (i * n_bins) // max(n, 1)) for i, eid in enumerate(ordered)}


def strata(outcomes: dict[str, str], lengths: dict[str, int], n_bins: int) -> dict[str, str]:
    """example_id -> 'outcome|bin'."""
    bins = length_bins(lengths, n_bins)
    return {eid: f"{outcomes[eid]}|{bins[eid]}" for eid in outcomes}


def matched_random(
    chosen: list[str], stratum: dict[str, str], seed: int, allow_overlap: bool = False
) -> tuple[list[str], dict]:
    """A random subset with the same size and, as far as the pool allows, the same strata as `chosen`."""
    rng = random.Random(seed)
    chosen_set = set(chosen)
    candidates = sorted(eid for eid in stratum if allow_overlap or eid not in chosen_set)
    if len(candidates) < len(chosen):
        raise UserError(
            f"the pool outside the top-k has {len(candidates)} rows, fewer than k = {len(chosen)}; "
            "lower select.k or set select.allow_overlap"
        )
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for eid in candidates:
        by_stratum[stratum[eid]].append(eid)
    wanted = Counter(stratum[eid] for eid in chosen)
    picked: list[str] = []
    shortfall = {}
    for name in sorted(wanted):
        pool = by_stratum.get(name, [])
        take = min(wanted[name], len(pool))
        picked += rng.sample(pool, take)
        if take < wanted[name]:
            shortfall[name] = wanted[name] - take
    missing = len(chosen) - len(picked)
    if missing:
        picked_set = set(picked)
        rest = [eid for eid in candidates if eid not in picked_set]
        picked += rng.sample(rest, missing)
    return picked, {"matched": len(chosen) - missing, "unmatched_filled": missing, "shortfall_by_stratum": shortfall}
