"""Stage `report`: gather the finished stage folders into files a person reads in a minute.

Reads, from the run directory alone: every `eval_*/` (shared models) and `seed_<s>/eval_*/`
(metrics.json and per-row predictions.jsonl), each seed's `select/selections.json` (arm specs: kind,
ranking, size, the arm each is tested against), `attribute/summary.json` and its plots, the stage
configs (for the setup) and every manifest (for wall times). So `playpen-attribution report --run-dir D`
regenerates it.

Statistics (`playpen_attribution.stats`): per model and seed word accuracy with a Wilson 95% interval;
per seed, each arm against its `versus` arm (default matched_random_k) on the same eval rows joined
by example_id: exact McNemar on word correctness and a paired bootstrap interval of the eval-loss
difference; across seeds, the mean paired difference with a bootstrap interval resampling seeds and
rows, and how many seeds favour each side.

Writes `report/`: `report.json`, `report.md`, `accuracy.png`, `eval_loss.png` (when losses exist),
`accuracy_vs_k.png` (when an arm family ran at several k) and, when the attribute stage drew them,
copies of `score_histogram.png` and `score_vs_length.png`; and copies all of them into the run
directory, its front page.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from playpen_attribution import artifacts, report_plots, stats
from playpen_attribution.report_markdown import render_markdown
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.sweep import seed_folders

SHARED_MODELS = ("base", "base_adapter")
SPEC_FIELDS = ("kind", "ranking", "n", "family", "k", "versus", "rows", "tokens")
ATTRIBUTION_PLOTS = (artifacts.SCORE_HISTOGRAM_PLOT, artifacts.SCORE_VS_LENGTH_PLOT)


def stage_folders(run_dir: Path) -> dict[str, Path]:
    """'name' or 'seed_<s>/name' -> every finished stage folder except the report (seed links skipped)."""
    out = {}
    dirs = [p for p in sorted(run_dir.iterdir()) if p.name != artifacts.REPORT]
    for folder in seed_folders(run_dir).values():
        dirs += sorted(folder.iterdir())
    for path in dirs:
        if path.is_dir() and not path.is_symlink() and (path / artifacts.MANIFEST_FILE).is_file():
            out[path.relative_to(run_dir).as_posix()] = path
    return out


def _entry(folder: Path, name: str, seed: int | None, spec: dict) -> dict:
    metrics = artifacts.load_metrics(folder)
    entry = {"name": name, "seed": seed, "correct": metrics.get("correct"),
             "total": metrics.get("total", metrics.get("loss_rows")), "accuracy": metrics.get("accuracy")}
    if entry["accuracy"] is not None:
        entry["ci_low"], entry["ci_high"] = stats.wilson_interval(entry["correct"], entry["total"])
    entry |= {k: metrics[k] for k in ("target_correct", "target_total", "target_accuracy", "no_guess",
                                      "eval_loss", "loss_non_finite") if k in metrics}
    return entry | {k: spec[k] for k in SPEC_FIELDS if k in spec}


def _predictions(folder: Path) -> dict[str, dict]:
    return {p["example_id"]: p for p in artifacts.load_predictions(folder)}


def load_evaluations(run_dir: Path) -> tuple[list[dict], dict, dict[int, dict]]:
    """(arm entries in report order, (name, seed) -> predictions by example_id, seed -> selections)."""
    entries, predictions = [], {}
    selections = {s: artifacts.load_selections(f / artifacts.SELECT) for s, f in seed_folders(run_dir).items()
                  if (f / artifacts.SELECT / artifacts.SELECTIONS_FILE).is_file()}
    places = [(run_dir, None)] + [(f, s) for s, f in seed_folders(run_dir).items()]
    for place, seed in places:
        evals = {p.name.removeprefix("eval_"): p for p in sorted(place.glob("eval_*"))
                 if (p / artifacts.METRICS_FILE).is_file()}
        plan = list(selections.get(seed, {}))
        order = [m for m in SHARED_MODELS if m in evals] + [m for m in plan if m in evals]
        order += sorted(m for m in evals if m not in order)
        for name in order:
            entries.append(_entry(evals[name], name, seed, selections.get(seed, {}).get(name, {})))
            predictions[(name, seed)] = _predictions(evals[name])
    return entries, predictions, selections


def _paired_values(a: dict, b: dict, field: str, what: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, va, vb = stats.paired({e: p.get(field) for e, p in a.items()}, {e: p.get(field) for e, p in b.items()}, what)
    return ids, np.array(va, dtype=float), np.array(vb, dtype=float)


def compare(arm: dict, ref: dict, preds: dict) -> dict:
    """One seed: arm vs its reference on the same eval rows."""
    a, b = preds[(arm["name"], arm["seed"])], preds[(ref["name"], ref["seed"])]
    what = f"{arm['name']} vs {ref['name']} (seed {arm['seed']})"
    out = {"arm": arm["name"], "versus": ref["name"], "seed": arm["seed"]}
    if arm["accuracy"] is not None and ref["accuracy"] is not None:
        _, ca, cb = _paired_values(a, b, "correct", what)
        out["accuracy_difference"] = arm["accuracy"] - ref["accuracy"]
        out["mcnemar"] = stats.mcnemar_exact(ca.astype(bool), cb.astype(bool))
    _, la, lb = _paired_values(a, b, "loss", what)
    finite = np.isfinite(la) & np.isfinite(lb)
    if finite.any():
        out["loss_difference"] = stats.bootstrap_mean(la[finite] - lb[finite])
        out["loss_rows_excluded"] = int((~finite).sum())
    return out


def aggregate(arm_name: str, ref_name: str, seeds: list[int], preds: dict, accuracy: bool) -> dict:
    """Across seeds: mean paired difference (seeds and rows resampled) and seeds favouring each side."""
    out = {"arm": arm_name, "versus": ref_name, "seeds": seeds}
    what = f"{arm_name} vs {ref_name}"
    rows = [[_paired_values(preds[(arm_name, s)], preds[(ref_name, s)], f, what) for f in ("correct", "loss")]
            for s in seeds]
    if accuracy:
        diff = np.stack([ca - cb for (_, ca, cb), _ in rows])
        per_seed = diff.mean(axis=1)
        out |= {"arm_accuracy_mean": float(np.mean([ca.mean() for (_, ca, _), _ in rows])),
                "versus_accuracy_mean": float(np.mean([cb.mean() for (_, _, cb), _ in rows])),
                "accuracy_difference": stats.seed_bootstrap(diff),
                "per_seed_accuracy_difference": [float(d) for d in per_seed],
                "seeds_favouring_arm": int((per_seed > 0).sum()), "seeds_favouring_versus": int((per_seed < 0).sum()),
                "seeds_tied": int((per_seed == 0).sum())}
    losses = np.stack([la - lb for _, (_, la, lb) in rows])
    finite = np.isfinite(losses).all(axis=0)
    if finite.any():
        out["loss_difference"] = stats.seed_bootstrap(losses[:, finite])
        out["loss_rows_excluded"] = int((~finite).sum())
    return out


def _setup(folders: dict[str, Path], selections: dict[int, dict]) -> dict:
    def config_of(*names: str) -> dict:
        for name in names:
            found = [p for key, p in folders.items() if key == name or key.endswith("/" + name)]
            if found:
                return artifacts.load_stage_config(found[0])
        return {}

    arm_train = next((artifacts.load_stage_config(p) for k, p in folders.items()
                      if "/train_" in k and not k.endswith("/" + artifacts.TRAIN_BASE)), {})
    base = config_of(artifacts.TRAIN_BASE)
    return {"model": base.get("model", {}).get("base"), "train": base.get("train"),
            "arm_train": arm_train.get("train"), "tokenize": base.get("tokenize"),
            "attribute": config_of(artifacts.ATTRIBUTE).get("attribute"),
            "select": config_of(artifacts.SELECT).get("select"),
            "evaluate": config_of("eval_base_adapter", "eval_base").get("evaluate"),
            "seeds": sorted(selections),
            "retrain_base": any(k.startswith("seed_") and k.endswith("/" + artifacts.TRAIN_BASE) for k in folders)}


def _summary_path(run_dir: Path, name: str, stage: str = artifacts.ATTRIBUTE) -> Path | None:
    for place in [run_dir, *seed_folders(run_dir).values()]:
        if (place / stage / name).is_file():
            return place / stage / name
    return None


def collect(run_dir: Path) -> dict:
    """The report's data, from the stage folders alone."""
    run_dir = Path(run_dir)
    folders = stage_folders(run_dir)
    entries, preds, selections = load_evaluations(run_dir)
    by_key = {(e["name"], e["seed"]): e for e in entries}
    comparisons, pairs = [], {}
    for arm in entries:
        ref = by_key.get((arm.get("versus"), arm["seed"]))
        if ref is not None:
            comparisons.append(compare(arm, ref, preds))
            pairs.setdefault((arm["name"], ref["name"]), []).append(arm["seed"])
    accuracy = any(e["accuracy"] is not None for e in entries)
    seconds = {k: artifacts.load_manifest(p)["wall_seconds"] for k, p in folders.items()}
    trainings = [t for k, t in seconds.items() if k.startswith("seed_") and "/train_" in k]
    report = {
        "run_dir": str(run_dir), "setup": _setup(folders, selections), "arms": entries,
        "comparisons": comparisons,
        "aggregate": [aggregate(a, r, seeds, preds, accuracy) for (a, r), seeds in pairs.items()],
        "stage_seconds": seconds, "wall_seconds": round(sum(seconds.values()), 2),
        "stage_speed": {k: v for k, p in folders.items() if (v := _speed(p))},
        "sweep": {"trainings": len(trainings), "mean_training_seconds": float(np.mean(trainings)) if trainings else None},
    }
    summary = _summary_path(run_dir, artifacts.ATTRIBUTION_SUMMARY)
    if summary is not None:
        report["attribution"] = artifacts.load_json(summary)
    predictor = _summary_path(run_dir, artifacts.METRICS_FILE, artifacts.PREDICT)
    if predictor is not None:
        report["predictor"] = artifacts.load_json(predictor)
    if selections:
        report["selection"] = {s: {n: {k: v for k, v in a.items() if k != "example_ids"} for n, a in sel.items()}
                               for s, sel in selections.items()}
    data_manifest = run_dir / artifacts.DATA / artifacts.MANIFEST_FILE
    if data_manifest.is_file():
        manifest = json.loads(data_manifest.read_text())
        report["data"] = {k: manifest.get(k) for k in ("rows", "outcomes", "dropped", "source")}
    return report


def _speed(folder: Path) -> str | None:
    """A stage's throughput in words, from what it recorded: training tokens/s, eval rows/s, Bergson's batch."""
    manifest = artifacts.load_manifest(folder)
    if manifest.get("train_tokens_per_s"):
        return (f"{manifest['train_tokens_per_s']:,.0f} tokens/s in training "
                f"(batch {manifest.get('batch_size')} x accumulation {manifest.get('grad_accum')})")
    if manifest.get("token_batch_size"):
        return f"Bergson token batch {manifest['token_batch_size']}, {manifest.get('precision')}"
    metrics = folder / artifacts.METRICS_FILE
    speed = artifacts.load_json(metrics).get("speed") if metrics.is_file() else None
    if speed:
        parts = [f"loss {speed['loss_rows_per_s']:,.1f} rows/s"] if speed.get("loss_rows_per_s") else []
        if speed.get("generation_rows_per_s"):
            parts.append(f"generation {speed['generation_rows_per_s']:,.1f} rows/s ({speed.get('generation_backend')})")
        return ", ".join(parts) or None
    return None


def draw(report: dict, run_dir: Path, out: Path) -> list[str]:
    """Write the plots into `out`; the file names, in reading order."""
    arms = report["arms"]
    plots = []
    if any(a["accuracy"] is not None for a in arms):
        report_plots.plot_accuracy(arms, out / artifacts.ACCURACY_PLOT)
        plots.append(artifacts.ACCURACY_PLOT)
    if any(a.get("eval_loss") is not None for a in arms):
        report_plots.plot_eval_loss(arms, out / artifacts.EVAL_LOSS_PLOT)
        plots.append(artifacts.EVAL_LOSS_PLOT)
    sizes = {}
    for a in arms:
        if a.get("family") and a.get("k") and a["accuracy"] is not None:
            sizes.setdefault(a["family"], set()).add(a["k"])
    if any(len(ks) > 1 for ks in sizes.values()):
        report_plots.plot_accuracy_vs_k(arms, out / artifacts.ACCURACY_VS_K_PLOT)
        plots.append(artifacts.ACCURACY_VS_K_PLOT)
    for name in ATTRIBUTION_PLOTS:
        source = _summary_path(run_dir, name)
        if source is not None:
            shutil.copy2(source, out / name)
            plots.append(name)
    return plots


def run(run_dir: Path, name: str = "experiment") -> Path:
    """Always rebuilt (the report is cheap, and reflects whatever stage folders and report code exist now)."""
    run_dir = Path(run_dir)
    inputs = stage_folders(run_dir)
    if (run_dir / artifacts.REPORT).is_dir():
        shutil.rmtree(run_dir / artifacts.REPORT)

    def build(out: Path) -> dict:
        report = collect(run_dir)
        report["plots"] = draw(report, run_dir, out)
        (out / artifacts.REPORT_JSON).write_text(json.dumps(report, indent=1) + "\n")
        (out / artifacts.REPORT_MD).write_text(render_markdown(report, name))
        return {"plots": report["plots"]}

    report_dir = run_stage(run_dir, artifacts.REPORT, {"name": name}, inputs, build)
    for path in report_dir.iterdir():  # the run's front page: report.md and its plots beside the stage folders
        if path.name not in (artifacts.CONFIG_FILE, artifacts.MANIFEST_FILE):
            shutil.copy2(path, run_dir / path.name)
    return report_dir
