"""Which planned (arm, seed) units of a sweep have no finished evaluation: what a report must name.

A report over part of a sweep would compare over the seeds that happen to exist while its setup lists
them all; the report stage refuses one with missing units, or (asked to) names every one of them. The
plan comes from the config; without one, from what the run folder shows (`planned_from_folders`).
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.run import artifacts
from playpen_attribution.run.seeds import seed_folders


def missing_units(run_dir: Path, seeds: list[int], arms: list[str]) -> list[tuple[str, int]]:
    """(arm, seed) of every planned unit without a finished `seed_<s>/eval_<arm>/`, by seed, in plan order."""
    out = []
    for seed in seeds:
        folder = Path(run_dir) / artifacts.seed_dir(seed)
        out += [(arm, seed) for arm in arms if not artifacts.is_stage_folder(folder / artifacts.eval_dir(arm))]
    return out


def planned_from_folders(run_dir: Path) -> tuple[list[int], list[str]]:
    """The sweep as the run folder shows it when no config says: its seed folders, and every arm a seed's
    selection lists (in the order first seen)."""
    seeds = seed_folders(run_dir)
    arms: dict[str, None] = {}
    for folder in seeds.values():
        if artifacts.is_stage_folder(folder / artifacts.SELECT):
            arms |= dict.fromkeys(artifacts.load_selections(folder / artifacts.SELECT))
    return list(seeds), list(arms)


def describe_units(units: list[tuple[str, int]]) -> str:
    """'top_k (seed 2), matched_random_k (seed 3)'."""
    return ", ".join(f"{arm} (seed {seed})" for arm, seed in units)
