"""Seeded, grouped splitting shared by the sources.

Groups (not rows) are assigned to splits, so no group ever lands in two splits. The order of the
groups is a hash of (seed, group id): the same seed gives the same assignment on every machine and
Python version, and it does not depend on the order the rows arrived in.
"""

from __future__ import annotations

import hashlib
import math
import random


def _order_key(seed: int, group: str) -> str:
    return hashlib.sha1(f"{seed}\x1f{group}".encode()).hexdigest()


def group_counts(n_groups: int, fractions: dict[str, float]) -> dict[str, int]:
    """How many groups each split gets: rounded shares summing to `n_groups`.

    A split with a positive fraction gets at least one group when there are enough groups; a
    shortfall goes to the split with the largest fraction, a surplus comes off the fullest split.
    """
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    counts = {name: round(frac * n_groups) for name, frac in fractions.items()}
    positive = [name for name, frac in fractions.items() if frac > 0]
    if n_groups >= len(positive):
        for name in positive:
            counts[name] = max(counts[name], 1)
    floor = {name: 1 if (name in positive and n_groups >= len(positive)) else 0 for name in fractions}
    largest = max(fractions, key=lambda name: fractions[name])
    while sum(counts.values()) < n_groups:
        counts[largest] += 1
    while sum(counts.values()) > n_groups:
        name = max((n for n in counts if counts[n] > floor[n]), key=lambda n: counts[n])
        counts[name] -= 1
    return counts


def assign_groups(groups: set[str] | list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Group id -> split name, seeded; fractions (of groups) must sum to 1."""
    ordered = sorted(set(groups), key=lambda g: _order_key(seed, g))
    counts = group_counts(len(ordered), fractions)
    assignment: dict[str, str] = {}
    start = 0
    for name in fractions:
        for group in ordered[start : start + counts[name]]:
            assignment[group] = name
        start += counts[name]
    return assignment


def split_by_group(
    rows: list[dict], fractions: dict[str, float], seed: int, group_key: str = "group_id"
) -> dict[str, list[dict]]:
    """Rows split by their group into the named splits (row order kept within each split)."""
    assignment = assign_groups({str(r[group_key]) for r in rows}, fractions, seed)
    out: dict[str, list[dict]] = {name: [] for name in fractions}
    for row in rows:
        out[assignment[str(row[group_key])]].append(row)
    return out


def sample_rows(items: list, n: int, seed: int) -> list:
    """`n` items drawn without replacement, seeded, in their original order (all items if fewer)."""
    if n >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in picked]
