"""The report's `benchmarks` section: lm-eval results of every evaluated model, and arms paired on items.

Reads `benchmarks.json` / `benchmark_samples.jsonl` of every evaluation folder that has them
(`artifacts.load_benchmarks`). `results`: one entry per (model, seed, task, metric, filter) with the
harness's value, its own stderr and the item count, in the report's model order. Comparisons pair each arm with each of its
`versus` arms (as the word accuracy does) on the same items, joined on (doc_id, filter), for every task's
main metric (the first per-item metric the task logs): per seed the mean per-item difference with a
bootstrap interval; across seeds the mean with the across-seed test (`stats.across_seed_test`: crossed
seed x item variance), whose p-value joins the report's secondary tests (Holm).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playpen_attribution.report import stats
from playpen_attribution.run import artifacts
from playpen_attribution.run.seeds import seed_folders


def _eval_folders(run_dir: Path) -> dict[tuple[str, int | None], Path]:
    places = [(run_dir, None)] + [(f, s) for s, f in seed_folders(run_dir).items()]
    out: dict[tuple[str, int | None], Path] = {}
    for place, seed in places:
        for path in sorted(place.iterdir()):
            kind, model = artifacts.stage_kind(path.name)
            if (kind == "eval" and model is not None and artifacts.is_stage_folder(path)
                    and artifacts.has_benchmarks(path)):
                out[(model, seed)] = path
    return out


def _primary(samples: list[dict]) -> dict[str, str]:
    """task -> its primary per-item metric (the first one it logs)."""
    out: dict[str, str] = {}
    for s in samples:
        if s["task"] not in out and s["scores"]:
            out[s["task"]] = next(iter(s["scores"]))
    return out


def _scores(samples: list[dict], task: str, metric: str) -> dict[str, float]:
    return {f"{s['doc_id']}|{s['filter']}": s["scores"][metric] for s in samples
            if s["task"] == task and metric in s["scores"]}


def collect_benchmarks(run_dir: Path, versus: dict[tuple[str, int | None], list[str]]) -> dict | None:
    """The `benchmarks` section (None when no evaluation ran benchmarks); `versus`: (model, seed) -> the arms it
    is tested against, for every model of the report in its order."""
    folders = _eval_folders(Path(run_dir))
    if not folders:
        return None
    loaded = {key: artifacts.load_benchmarks(path) for key, path in folders.items()}
    results: list[dict] = []
    for (model, seed), (raw, _) in loaded.items():
        for task, res in raw["tasks"].items():
            for m in res["metrics"]:
                results.append({"name": model, "seed": seed, "task": task, "n": res["n"]} | m)
    comparisons: list[dict] = []
    pairs: dict[tuple[str, str, str, str], list[tuple[int | None, np.ndarray]]] = {}
    for (model, seed), (_, samples), ref in ((key, value, ref) for key, value in loaded.items()
                                              for ref in versus.get(key, [])):
        if (ref, seed) not in loaded:
            continue
        ref_samples = loaded[(ref, seed)][1]
        for task, metric in _primary(samples).items():
            what = f"benchmark {task}: {model} vs {ref} (seed {seed})"
            _, a, b = stats.paired(_scores(samples, task, metric), _scores(ref_samples, task, metric), what)
            diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
            comparisons.append({"arm": model, "versus": ref, "seed": seed, "task": task, "metric": metric,
                                "items": int(diff.size), "difference": stats.bootstrap_mean(diff)})
            pairs.setdefault((model, ref, task, metric), []).append((seed, diff))
    aggregate = []
    for (model, ref, task, metric), per_seed in pairs.items():
        diffs = np.stack([d for _, d in per_seed])
        means, test = diffs.mean(axis=1), stats.across_seed_test(diffs)
        aggregate.append({
            "arm": model, "versus": ref, "task": task, "metric": metric, "seeds": [s for s, _ in per_seed],
            "items": int(diffs.shape[1]), "difference": {k: v for k, v in test.items() if k != "p_value"},
            "per_seed_difference": [float(m) for m in means], "seeds_favouring_arm": int((means > 0).sum()),
            "seeds_favouring_versus": int((means < 0).sum()),
            "test": "t-test over seeds and items (crossed variance, Satterthwaite degrees of freedom)",
            "p_value": test["p_value"],
        })
    order = {name: i for i, name in enumerate(dict.fromkeys(name for name, _ in versus))}

    def place(name: str) -> int:  # the report's model order (base, base adapter, the config's arms)
        return order.get(name, len(order))

    results.sort(key=lambda r: (r["seed"] is not None, r["seed"] or 0, place(r["name"])))
    comparisons.sort(key=lambda c: (c["seed"] or 0, place(c["arm"])))
    aggregate.sort(key=lambda a: place(a["arm"]))
    switches = {f"{m}" + (f" (seed {s})" if s is not None else ""): raw["switches"] for (m, s), (raw, _) in loaded.items()}
    shared = {k: v for k, v in next(iter(switches.values())).items() if k != "batch_size_used"}
    same = all({k: v for k, v in sw.items() if k != "batch_size_used"} == shared for sw in switches.values())
    return {"results": results, "comparisons": comparisons, "aggregate": aggregate,
            "switches": shared if same else switches}
