"""Pure selection logic: named rankings (example_id -> score, higher first) and arm kinds.

Non-finite scores rank last (never silently zeroed). Arm kinds (`build_arms`): `top` (the n best of
a ranking), `window` (ranks a..b, 1-based, both included), `random_beyond` (n random rows ranked
below `beyond`), `matched_random` (a random subset of the whole pool matched on strata to the top n,
which it may share rows with: the counterfactual, what a user would otherwise have picked),
`matched_random_rest` (the same drawn from the rows outside the top n: the seed's control, which
measures partly what the top n removed), `random` (n rows drawn uniformly from the pool) and `full_pool`.

Matching: every row gets a stratum (outcome x length-quantile bin over the whole pool); the random
arm draws, for each stratum, as many rows as the top n holds there. When a stratum runs short, the
shortfall is filled from the remaining rows at random and counted. Every random draw is seeded by
the sweep seed and the arm's name, so arms draw independently and a seed reproduces its draws.

Token matching (`match_tokens`, with `select.match_tokens`): after the stratum draw, rows are swapped
for unpicked rows of the *same stratum* until the arm's total completion tokens is within a
tolerance (2%) of its target's; the strata counts do not change. The `label` kind draws n random
rows among those whose label passes the filter (e.g. quality in {good, excellent}) and token-matches
them to the top n of its ranking the same way. Each records target, reached total and swaps.

Stratified top (`stratified_top`, with `select.stratify_by`): the top n taken within each value of a column
(e.g. category), each value's quota proportional to its share of the rows drawn from (largest remainders, ties
by value), the best-ranked rows of each value first; the quotas are recorded. Proportional to the pool, as the
authors' category-stratified arms, so a stratified top n has the pool's category mix and differs from the plain
top n only in which rows of each category it takes.

The length arm (`longest_to_tokens`, kind `longest_label`): among the rows passing the label filter, the longest
(by completion tokens) first, a row taken while it keeps the total within tolerance above the target, until the
total is within tolerance of the target (the top n's completion tokens; per stratify_by value when stratified,
as the authors' per-category targets, then topped up from the other values' rows if a value runs short).
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
    chosen: list[str], stratum: dict[str, str], seed: int | str, allow_overlap: bool = False
) -> tuple[list[str], dict]:
    """A random subset with the same size and, as far as the pool allows, the same strata as `chosen`."""
    rng = random.Random(seed)
    chosen_set = set(chosen)
    candidates = sorted(eid for eid in stratum if allow_overlap or eid not in chosen_set)
    if len(candidates) < len(chosen):
        raise UserError(
            f"the pool outside the top-k has {len(candidates)} rows, fewer than k = {len(chosen)}; "
            "lower select.k or use the matched_random control (drawn from the whole pool)"
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


def match_tokens(
    picked: list[str], allowed: list[str], stratum: dict[str, str], tokens: dict[str, int], target: int,
    tolerance: float,
) -> tuple[list[str], dict]:
    """Swap rows of `picked` for rows of `allowed` (not picked) in the same stratum, each swap the one that
    brings the total completion tokens closest to `target`, until within `tolerance` (relative) or no swap
    helps. Returns the new ids (picked order, swapped rows in place) and what was done."""
    import bisect

    ids = list(picked)
    position = {eid: i for i, eid in enumerate(ids)}
    free: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for eid in sorted(set(allowed) - set(ids)):
        free[stratum[eid]].append((tokens[eid], eid))
    for lst in free.values():
        lst.sort()
    total, swaps = sum(tokens[e] for e in ids), 0
    while abs(total - target) > tolerance * target:
        gap, best = target - total, None
        for eid in ids:
            options = free.get(stratum[eid])
            if not options:
                continue
            want = tokens[eid] + gap  # the replacement's ideal length
            j = bisect.bisect_left(options, (want, ""))
            for cand in options[max(0, j - 1): j + 1]:
                after = abs(gap - (cand[0] - tokens[eid]))
                if after < abs(gap) and (best is None or after < best[0]):
                    best = (after, eid, cand)
        if best is None:
            break
        _, out_id, (n_in, in_id) = best
        lst = free[stratum[out_id]]
        lst.remove((n_in, in_id))
        bisect.insort(lst, (tokens[out_id], out_id))
        i = position.pop(out_id)
        ids[i], position[in_id] = in_id, i
        total += n_in - tokens[out_id]
        swaps += 1
    return ids, {"tokens_target": target, "tokens": total, "relative_gap": (total - target) / max(target, 1),
                 "within_tolerance": abs(total - target) <= tolerance * target, "swaps": swaps}


def proportional_quotas(groups: dict[str, str], n: int) -> dict[str, int]:
    """Rows per value of `groups` (example_id -> value) summing to n, proportional to each value's share of the
    rows: floor(n x share), the rest one each to the largest remainders (ties: by value). A quota never exceeds
    its value's rows when n <= len(groups)."""
    counts = Counter(groups.values())
    total = sum(counts.values())
    split = {value: divmod(n * count, total) for value, count in counts.items()}
    quotas = {value: whole for value, (whole, _) in split.items()}
    for value in sorted(split, key=lambda v: (-split[v][1], v))[: n - sum(quotas.values())]:
        quotas[value] += 1
    return dict(sorted(quotas.items()))


def stratified_top(order: list[str], n: int, groups: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """The best-ranked rows of `order` within each value of `groups`, `proportional_quotas(groups, n)` of each;
    (ids in rank order, the quotas)."""
    quotas = proportional_quotas(groups, n)
    left, picked = dict(quotas), []
    for eid in order:
        if left[groups[eid]] > 0:
            picked.append(eid)
            left[groups[eid]] -= 1
            if len(picked) == n:
                break
    return picked, quotas


def _take_longest(candidates: list[str], tokens: dict[str, int], total: int, target: int,
                  tolerance: float) -> tuple[list[str], int]:
    """Rows of `candidates` (longest first) added to a running `total` while it stays within tolerance above
    `target`, until it is within tolerance below it."""
    taken = []
    for eid in candidates:
        if total >= target * (1 - tolerance):
            break
        if total + tokens[eid] <= target * (1 + tolerance):
            taken.append(eid)
            total += tokens[eid]
    return taken, total


def longest_to_tokens(eligible: list[str], tokens: dict[str, int], targets: dict[str, int],
                      groups: dict[str, str] | None, tolerance: float) -> tuple[list[str], dict]:
    """The length arm: the longest `eligible` rows (by `tokens`, ties by id) until their total is within
    `tolerance` of the target. `targets` holds one target per value of `groups` (example_id -> value; None =
    one target, key ""): each value's rows first fill its own target, then, if the total is still short, the
    remaining eligible rows top it up. Returns (ids, what was done: target, reached total, rows filled from
    other values, eligible rows)."""
    def value(eid: str) -> str:
        return groups[eid] if groups is not None else ""

    longest = sorted(eligible, key=lambda e: (-tokens[e], e))
    picked: list[str] = []
    for name, target in sorted(targets.items()):
        taken, _ = _take_longest([e for e in longest if value(e) == name], tokens, 0, target, tolerance)
        picked += taken
    goal, total = sum(targets.values()), sum(tokens[e] for e in picked)
    chosen = set(picked)
    filled, total = _take_longest([e for e in longest if e not in chosen], tokens, total, goal, tolerance)
    return picked + filled, {
        "tokens_target": goal, "tokens": total, "relative_gap": (total - goal) / max(goal, 1),
        "within_tolerance": abs(total - goal) <= tolerance * goal, "filled_from_other_values": len(filled),
        "eligible": len(eligible)}


def rank_window(ranked: list[str], first: int, last: int, arm: str = "window") -> list[str]:
    """Rows at ranks first..last (1-based, both included) of a ranked list."""
    if last > len(ranked):
        raise UserError(f"arm {arm!r}: ranks {first}..{last} reach beyond the pool ({len(ranked)} rows)")
    return ranked[first - 1 : last]


def random_beyond(ranked: list[str], beyond: int, n: int, seed: int | str, arm: str = "random_beyond") -> list[str]:
    """n rows drawn at random from the rows ranked below `beyond` (ranks beyond+1 ..)."""
    rest = ranked[beyond:]
    if len(rest) < n:
        raise UserError(f"arm {arm!r}: only {len(rest)} rows rank beyond {beyond}, fewer than n = {n}")
    return random.Random(seed).sample(rest, n)


def build_arms(
    plan: list, rankings: dict[str, dict[str, float]], pool_ids: list[str], stratum: dict[str, str],
    seed: int, tokens: dict[str, int] | None = None, tolerance: float = 0.02,
    labelled: set[str] | None = None, groups: dict[str, str] | None = None,
    completion: dict[str, int] | None = None,
) -> dict[str, dict]:
    """arm name -> {"example_ids": [...] in rank/draw order, plus "matching" for matched random arms}.

    `plan` holds `config.PlannedArm`s; `rankings` every ranking they name, over exactly `pool_ids`.
    `tokens` (completion tokens per row) turns on token matching of matched random and label arms;
    `labelled` is the set the label and length arms draw from; `groups` (example_id -> value of
    select.stratify_by) makes every top n a `stratified_top`; `completion` (completion tokens per row) is
    what the length arm (`longest_label`) matches.
    """
    ranked: dict[str, list[str]] = {}
    for name, scores in rankings.items():
        if set(scores) != set(pool_ids):
            raise UserError(f"ranking {name!r} does not score exactly the pool's example_ids "
                            f"({len(scores)} scored, {len(pool_ids)} in the pool)")
        ranked[name] = rank_ids(scores)
    arms: dict[str, dict] = {}

    def top(arm, order: list[str]) -> tuple[list[str], dict | None]:
        """The top n of an arm's ranking (stratified with `groups`) and, stratified, its quotas."""
        if arm.n > len(order):
            raise UserError(f"arm {arm.name!r}: n = {arm.n} is larger than the pool ({len(order)} rows)")
        if groups is None:
            return order[: arm.n], None
        ids, quotas = stratified_top(order, arm.n, groups)
        return ids, {"stratified_quotas": quotas}

    for arm in plan:
        order = ranked.get(arm.ranking) if arm.ranking else None
        if arm.kind not in ("full_pool", "random") and order is None:
            raise UserError(f"arm {arm.name!r}: ranking {arm.ranking!r} was not loaded")
        order = order or []  # only full_pool and random arms read no ranking
        draw_seed = f"{seed}:{arm.name}"
        if arm.kind == "top":
            ids, stratified = top(arm, order)
            arms[arm.name] = {"example_ids": ids} | ({"matching": stratified} if stratified else {})
        elif arm.kind == "window":
            arms[arm.name] = {"example_ids": rank_window(order, arm.ranks[0], arm.ranks[1], arm.name)}
        elif arm.kind == "random_beyond":
            arms[arm.name] = {"example_ids": random_beyond(order, arm.beyond, arm.n, draw_seed, arm.name)}
        elif arm.kind in ("matched_random", "matched_random_rest"):
            target, _ = top(arm, order)
            whole_pool = arm.kind == "matched_random"
            ids, matching = matched_random(target, stratum, draw_seed, whole_pool)
            if tokens is not None:
                allowed = [e for e in pool_ids if whole_pool or e not in set(target)]
                ids, tok = match_tokens(ids, allowed, stratum, tokens, sum(tokens[e] for e in target), tolerance)
                matching |= tok
            arms[arm.name] = {"example_ids": ids, "matching": matching}
        elif arm.kind == "label":
            eligible = sorted(labelled or ())
            if arm.n > len(eligible):
                raise UserError(f"arm {arm.name!r}: n = {arm.n} but only {len(eligible)} rows pass the label filter "
                                "(select.label_column / label_values)")
            ids = random.Random(draw_seed).sample(eligible, arm.n)
            matching = {"eligible": len(eligible)}
            if tokens is not None:
                target, _ = top(arm, order)
                ids, tok = match_tokens(ids, eligible, stratum, tokens, sum(tokens[e] for e in target), tolerance)
                matching |= tok
            arms[arm.name] = {"example_ids": ids, "matching": matching}
        elif arm.kind == "longest_label":
            eligible = sorted(labelled or ())
            if not eligible:
                raise UserError(f"arm {arm.name!r}: no row passes the label filter (select.label_column / label_values)")
            assert completion is not None, "build_selections passes every row's completion tokens"
            target, _ = top(arm, order)
            goals: Counter = Counter()
            for eid in target:
                goals[groups[eid] if groups is not None else ""] += completion[eid]
            ids, matching = longest_to_tokens(eligible, completion, dict(goals), groups, tolerance)
            arms[arm.name] = {"example_ids": ids, "matching": matching}
        elif arm.kind == "random":
            if arm.n > len(pool_ids):
                raise UserError(f"arm {arm.name!r}: n = {arm.n} is larger than the pool ({len(pool_ids)} rows)")
            arms[arm.name] = {"example_ids": random.Random(draw_seed).sample(sorted(pool_ids), arm.n)}
        elif arm.kind == "full_pool":
            arms[arm.name] = {"example_ids": list(pool_ids)}
        else:
            raise UserError(f"arm {arm.name!r}: unknown kind {arm.kind!r}")
    return arms
