"""The report's data, gathered from a run folder's finished stage folders alone.

Reads every `eval_*/` (shared models) and `seed_<s>/eval_*/` (metrics and per-row predictions),
each seed's `select/` (arm specs: kind, ranking, size, the arm each is tested against), the
attribution summary and the predictor metrics (with the number of candidates the predict stage
ranked), the stage configs (for the setup) and every manifest (for wall times and throughput).

Statistics (`report.stats`): per model and seed word accuracy with a Wilson 95% interval; per seed,
each arm against its `versus` arm (default matched_random_k) on the same eval rows joined by
example_id: exact McNemar on word correctness and a paired bootstrap interval of the eval-loss
difference; across seeds, the mean paired difference with a t interval and t-test over seeds
(`stats.seed_t_test`), and how many seeds favour each side. Holm: the verdicts' family (every across-seed
test, word accuracy or eval loss and benchmarks) and, apart, the per-seed tests (descriptive).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.report import stats
from playpen_attribution.report.benchmarks import collect_benchmarks
from playpen_attribution.run import artifacts
from playpen_attribution.run.artifacts import ArmSelection, Prediction
from playpen_attribution.run.seeds import seed_folders

SPEC_FIELDS = ("kind", "ranking", "n", "family", "k", "versus", "rows", "tokens")
"""Fields of an arm's selection copied into its report entry."""
ALPHA = 0.05
"""Level of the report's verdicts, after the Holm adjustment."""


def favoured(agg: dict) -> str:
    """The verdict of an across-seeds comparison: 'arm' or 'versus' (the side reliably better: an interval
    that excludes zero and p_holm < ALPHA, over at least two seeds), 'none', or 'one_seed'. On word accuracy
    when the run generated, else on eval loss (lower is better)."""
    if len(agg["seeds"]) < 2:
        return "one_seed"
    p_holm = agg.get("p_holm", 1.0)
    if "accuracy_difference" in agg:
        d, sign = agg["accuracy_difference"], 1
    elif agg.get("loss_difference"):
        d, sign = agg["loss_difference"], -1
    else:
        return "none"
    if p_holm >= ALPHA:
        return "none"
    low, high = sorted((sign * d["ci_low"], sign * d["ci_high"]))
    return "arm" if low > 0 else "versus" if high < 0 else "none"


def data_efficiency(report: dict) -> dict | None:
    """top_k at k against the random arms (kind random: `random_k`, `random_2x_k`, `random_4x_k`, at n / k
    times k): each one's mean over seeds, rows and tokens, and for the multiples tested against top_k the
    difference and verdict. `worth_at_least`: the largest multiple m such that random rows at no tested
    multiple up to m are reliably better than top_k ("top_k at k matches random at m x k"); `beats_up_to`:
    the largest multiple at which top_k is reliably better. None when no random arm is tested against top_k."""
    entries = [e for e in report["arms"] if e["seed"] is not None]
    top = next((e for e in entries if e["name"] == "top_k"), None)
    multiples = {e["name"]: e["n"] / e["k"] for e in entries  # random arms of top_k's k: n rows = n / k times k
                 if top is not None and e.get("kind") == "random" and e.get("n") and e.get("k") == top.get("k")}
    multiples = {name: int(m) if float(m).is_integer() else m for name, m in multiples.items()}
    names = {e["name"] for e in entries}
    if not multiples:
        return None
    use_accuracy = any(e.get("accuracy") is not None for e in entries if e["name"] == "top_k")
    key = "accuracy" if use_accuracy else "eval_loss"

    def summary(name: str) -> dict:
        values = [e[key] for e in entries if e["name"] == name and e.get(key) is not None]
        first = next(e for e in entries if e["name"] == name)
        return {"arm": name, "rows": first.get("rows"), "tokens": first.get("tokens"),
                "mean": float(np.mean(values)) if values else None, "seeds": len(values)}

    tested = {a["arm"]: a for a in report["aggregate"] if a["versus"] == "top_k"}
    out = {"metric": key, "top_k": summary("top_k"), "random": []}
    worth, beats, blocked = None, None, False
    for name, m in sorted(multiples.items(), key=lambda item: item[1]):
        if name not in names:
            continue
        entry = summary(name) | {"multiple": m}
        agg = tested.get(name)
        if agg is not None:
            entry["difference"] = agg.get("accuracy_difference" if use_accuracy else "loss_difference")
            entry["p_holm"] = agg.get("p_holm")
            entry["verdict"] = {"arm": "random better", "versus": "top_k better", "none": "no reliable difference",
                                "one_seed": "one seed"}[favoured(agg)]
            if entry["verdict"] == "top_k better":
                beats = m
            if entry["verdict"] == "random better" or entry["verdict"] == "one seed":
                blocked = True
            elif not blocked:
                worth = m
        out["random"].append(entry)
    if not any("verdict" in r for r in out["random"]):
        return None  # random_k alone is only tested against matched_random_k: no multiple of k to answer with
    out["worth_at_least"], out["beats_up_to"] = worth, beats
    return out


def stage_folders(run_dir: Path) -> dict[str, Path]:
    """'name' or 'seed_<s>/name' -> every finished stage folder except the report (seed links skipped)."""
    out = {}
    dirs = [p for p in sorted(run_dir.iterdir()) if p.name != artifacts.REPORT]
    for folder in seed_folders(run_dir).values():
        dirs += sorted(folder.iterdir())
    for path in dirs:
        if path.is_dir() and not path.is_symlink() and artifacts.is_stage_folder(path):
            out[path.relative_to(run_dir).as_posix()] = path
    return out


def _entry(folder: Path, name: str, seed: int | None, spec: ArmSelection | None) -> dict:
    """A model's report entry. `accuracy` is word accuracy against the target word when every eval row
    has one (Taboo: failed games stay in the eval set, so the transcript's guess is not the answer), else
    against the transcript's guess; `metric` names the prediction field it counts."""
    metrics = artifacts.load_metrics(folder)
    by_target = metrics.target_total is not None and metrics.target_total == metrics.total
    correct, total, accuracy = ((metrics.target_correct, metrics.target_total, metrics.target_accuracy) if by_target
                                else (metrics.correct, metrics.total, metrics.accuracy))
    entry = {"name": name, "seed": seed, "metric": "target_correct" if by_target else "correct", "correct": correct,
             "total": total if total is not None else metrics.loss_rows, "accuracy": accuracy}
    if entry["accuracy"] is not None:
        entry["ci_low"], entry["ci_high"] = stats.wilson_interval(entry["correct"], entry["total"])
    if metrics.accuracy is not None:
        entry |= {"transcript_correct": metrics.correct, "transcript_accuracy": metrics.accuracy}
    optional = ("target_correct", "target_total", "target_accuracy", "no_guess", "eval_loss", "loss_non_finite")
    entry |= {k: getattr(metrics, k) for k in optional if getattr(metrics, k) is not None}
    return entry | ({k: getattr(spec, k) for k in SPEC_FIELDS} if spec is not None else {})


def _predictions(folder: Path) -> dict[str, Prediction]:
    return {p.example_id: p for p in artifacts.load_predictions(folder)}


def load_evaluations(run_dir: Path) -> tuple[list[dict], dict, dict[int, dict[str, ArmSelection]]]:
    """(arm entries in report order, (name, seed) -> predictions by example_id, seed -> selections)."""
    entries, predictions = [], {}
    selections = {s: artifacts.load_selections(f / artifacts.SELECT) for s, f in seed_folders(run_dir).items()
                  if artifacts.is_stage_folder(f / artifacts.SELECT)}
    places = [(run_dir, None)] + [(f, s) for s, f in seed_folders(run_dir).items()]
    for place, seed in places:
        evals = {}
        for path in sorted(place.iterdir()):
            kind, model = artifacts.stage_kind(path.name)
            if kind == "eval" and artifacts.is_stage_folder(path):
                evals[model] = path
        plan = list(selections.get(seed, {}))
        order = [m for m in artifacts.SHARED_MODELS if m in evals] + [m for m in plan if m in evals]
        order += sorted(m for m in evals if m not in order)
        for name in order:
            entries.append(_entry(evals[name], name, seed, selections.get(seed, {}).get(name)))
            predictions[(name, seed)] = _predictions(evals[name])
    return entries, predictions, selections


def _paired_values(a: dict, b: dict, field: str, what: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    ids, va, vb = stats.paired({e: getattr(p, field) for e, p in a.items()},
                               {e: getattr(p, field) for e, p in b.items()}, what)
    return ids, np.array(va, dtype=float), np.array(vb, dtype=float)


def compare(arm: dict, ref: dict, preds: dict) -> dict:
    """One seed: arm vs its reference on the same eval rows. `p_value` is the test of the verdict metric:
    exact McNemar on word correctness, or (loss-only runs) a sign-flip permutation of the eval-loss difference."""
    a, b = preds[(arm["name"], arm["seed"])], preds[(ref["name"], ref["seed"])]
    what = f"{arm['name']} vs {ref['name']} (seed {arm['seed']})"
    out = {"arm": arm["name"], "versus": ref["name"], "seed": arm["seed"]}
    if arm["accuracy"] is not None and ref["accuracy"] is not None:
        _, ca, cb = _paired_values(a, b, arm["metric"], what)
        out["accuracy_difference"] = arm["accuracy"] - ref["accuracy"]
        out["mcnemar"] = stats.mcnemar_exact(ca.astype(bool), cb.astype(bool))
        out |= {"test": "exact McNemar", "p_value": out["mcnemar"]["p_value"]}
    _, la, lb = _paired_values(a, b, "loss", what)
    finite = np.isfinite(la) & np.isfinite(lb)
    if finite.any():
        out["loss_difference"] = stats.bootstrap_mean(la[finite] - lb[finite])
        out["loss_rows_excluded"] = int((~finite).sum())
        if "p_value" not in out:
            out |= {"test": "sign-flip permutation of eval loss", "p_value": stats.sign_flip_p(la[finite] - lb[finite])}
    return out


SEED_TEST = "t-test over seeds (of the per-seed mean differences)"
"""The across-seed test: `stats.seed_t_test`."""


def _interval(test: dict) -> dict:
    return {k: test[k] for k in ("mean", "ci_low", "ci_high", "se", "df")}


def aggregate(arm_name: str, ref_name: str, seeds: list[int], preds: dict, metric: str | None) -> dict:
    """Across seeds: the mean paired difference with its t interval, seeds favouring each side, the
    discordant rows of all seeds (`mcnemar`, descriptive) and the across-seed test (`p_value`:
    `stats.seed_t_test` on word accuracy, or on eval loss for loss-only runs)."""
    out = {"arm": arm_name, "versus": ref_name, "seeds": seeds}
    what = f"{arm_name} vs {ref_name}"
    fields = (metric or "loss", "loss")
    rows = [[_paired_values(preds[(arm_name, s)], preds[(ref_name, s)], f, what) for f in fields] for s in seeds]
    if metric is not None:
        diff = np.stack([ca - cb for (_, ca, cb), _ in rows])
        per_seed = diff.mean(axis=1)
        tables = [stats.mcnemar_exact(ca.astype(bool), cb.astype(bool)) for (_, ca, cb), _ in rows]
        out |= {"arm_accuracy_mean": float(np.mean([ca.mean() for (_, ca, _), _ in rows])),
                "versus_accuracy_mean": float(np.mean([cb.mean() for (_, _, cb), _ in rows])),
                "accuracy_difference": _interval(stats.seed_t_test(diff)),
                "per_seed_accuracy_difference": [float(d) for d in per_seed],
                "seeds_favouring_arm": int((per_seed > 0).sum()), "seeds_favouring_versus": int((per_seed < 0).sum()),
                "seeds_tied": int((per_seed == 0).sum()), "mcnemar": stats.mcnemar_pooled(tables)}
        out |= {"test": SEED_TEST, "p_value": stats.seed_t_test(diff)["p_value"]}
    losses = np.stack([la - lb for _, (_, la, lb) in rows])
    finite = np.isfinite(losses).all(axis=0)
    if finite.any():
        loss_test = stats.seed_t_test(losses[:, finite])
        out["loss_difference"] = _interval(loss_test)
        out["loss_rows_excluded"] = int((~finite).sum())
        if "p_value" not in out:
            out |= {"test": SEED_TEST + " (eval loss)", "p_value": loss_test["p_value"]}
    return out


def adjust_for_multiple_tests(report: dict) -> None:
    """Holm-Bonferroni, each test gets `p_holm`: over the across-seed tests (word accuracy or eval loss, and
    benchmarks: the ones a verdict is drawn from), and separately over the per-seed tests (descriptive:
    each is conditional on one seed's trainings; in the verdicts' family they would make every added seed
    cost the verdicts power)."""
    verdicts = [t for t in report["aggregate"] + report.get("benchmarks", {}).get("aggregate", []) if "p_value" in t]
    per_seed = [t for t in report["comparisons"] + report.get("benchmarks", {}).get("comparisons", []) if "p_value" in t]
    for family in (verdicts, per_seed):
        for test, adjusted in zip(family, stats.holm([t["p_value"] for t in family])):
            test["p_holm"] = adjusted
    report["multiple_testing"] = {"method": "holm", "tests": len(verdicts), "per_seed_tests": len(per_seed),
                                  "alpha": ALPHA}


def _setup(folders: dict[str, Path], selections: dict[int, dict]) -> dict:
    def config_of(*names: str) -> dict:
        for name in names:
            found = [p for key, p in folders.items() if key == name or key.endswith("/" + name)]
            if found:
                return artifacts.load_stage_config(found[0])
        return {}

    def is_arm_training(key: str) -> bool:
        kind, arm = artifacts.stage_kind(key.rsplit("/", 1)[-1])
        return kind == "train" and arm is not None

    arm_train = next((artifacts.load_stage_config(p) for k, p in folders.items() if is_arm_training(k)), {})
    base = config_of(artifacts.TRAIN_BASE)
    return {"model": base.get("model", {}).get("base"), "train": base.get("train"),
            "arm_train": arm_train.get("train"), "tokenize": base.get("tokenize"),
            "attribute": config_of(artifacts.ATTRIBUTE).get("attribute"),
            "select": config_of(artifacts.SELECT).get("select"),
            "evaluate": config_of(artifacts.eval_dir("base_adapter"), artifacts.eval_dir("base")).get("evaluate"),
            "seeds": sorted(selections),
            "retrain_base": any(k.startswith("seed_") and k.endswith("/" + artifacts.TRAIN_BASE) for k in folders)}


def _find(run_dir: Path, stage: str, loader):
    """`loader(folder)` of the first finished `stage` folder in the run dir or a seed folder (None if none)."""
    for place in [run_dir, *seed_folders(run_dir).values()]:
        if artifacts.is_stage_folder(place / stage):
            return loader(place / stage)
    return None


def attribution_plots(run_dir: Path) -> list[Path]:
    """The attribute stage's plots (the first attribute folder's), to copy into the report."""
    folder = _find(run_dir, artifacts.ATTRIBUTE, lambda f: f)
    names = (artifacts.SCORE_HISTOGRAM_PLOT, artifacts.SCORE_VS_LENGTH_PLOT)
    return [folder / n for n in names if (folder / n).is_file()] if folder is not None else []


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
    metric = next((e["metric"] for e in entries if e["accuracy"] is not None), None)
    manifests = {k: artifacts.load_manifest(p) for k, p in folders.items()}
    seconds = {k: m.wall_seconds for k, m in manifests.items()}
    trainings = [t for k, t in seconds.items()
                 if k.startswith("seed_") and artifacts.stage_kind(k.rsplit("/", 1)[-1])[0] == "train"]
    report = {
        "run_dir": str(run_dir), "setup": _setup(folders, selections), "arms": entries,
        "comparisons": comparisons,
        "aggregate": [aggregate(a, r, seeds, preds, metric) for (a, r), seeds in pairs.items()],
        "stage_seconds": seconds, "wall_seconds": round(sum(seconds.values()), 2),
        "stage_speed": {k: v for k, p in folders.items() if (v := _speed(p, manifests[k]))},
        "sweep": {"trainings": len(trainings), "mean_training_seconds": float(np.mean(trainings)) if trainings else None},
    }
    summary = _find(run_dir, artifacts.ATTRIBUTE, artifacts.load_attribution_summary)
    if summary is not None:
        report["attribution"] = summary
    predictor = _find(run_dir, artifacts.PREDICT, artifacts.load_predictor_metrics)
    if predictor is not None:
        ranked = _find(run_dir, artifacts.PREDICT, lambda f: artifacts.load_manifest(f).fields.get("candidates_ranked"))
        report["predictor"] = predictor | ({"candidates_ranked": ranked} if ranked is not None else {})
    benchmarks = collect_benchmarks(run_dir, entries)
    if benchmarks is not None:
        report["benchmarks"] = benchmarks
    untracked = _find(run_dir, artifacts.ATTRIBUTE, lambda f: artifacts.load_manifest(f).fields.get("untracked_modules"))
    if untracked:
        report["untracked_modules"] = untracked
    planted: dict[str, list[str]] = {}
    if artifacts.is_stage_folder(run_dir / artifacts.DATA):
        manifest = artifacts.load_manifest(run_dir / artifacts.DATA).fields
        source = dict(manifest.get("source") or {})
        planted = source.pop("planted", None) or {}
        if planted:
            source["planted_rows"] = {kind: len(ids) for kind, ids in planted.items()}
        report["data"] = {k: manifest.get(k) for k in ("rows", "outcomes", "dropped")} | {"source": source}
        if manifest.get("candidates"):  # their source's planted rows count for the arms drawn from them
            candidates = dict(manifest["candidates"])
            cand_source = dict(candidates.get("source") or {})
            cand_planted = cand_source.pop("planted", None) or {}
            if cand_planted:
                cand_source["planted_rows"] = {kind: len(ids) for kind, ids in cand_planted.items()}
                planted = {kind: planted.get(kind, []) + cand_planted.get(kind, [])
                           for kind in dict.fromkeys([*planted, *cand_planted])}
            report["data"]["candidates"] = candidates | {"source": cand_source}
    if selections:
        report["selection"] = {s: {n: a.summary() for n, a in sel.items()} for s, sel in selections.items()}
        if artifacts.is_stage_folder(run_dir / artifacts.DATA):
            contents = arm_contents(selections, run_dir / artifacts.DATA, planted)
            for s, arms in contents.items():
                for name, fields in arms.items():
                    report["selection"][s][name] |= fields
    adjust_for_multiple_tests(report)
    efficiency = data_efficiency(report)
    if efficiency is not None:
        report["data_efficiency"] = efficiency
    return report


def arm_contents(selections: dict[int, dict[str, ArmSelection]], data_dir: Path,
                 planted: dict[str, list[str]]) -> dict[int, dict[str, dict]]:
    """Per seed and arm: distinct groups and target words, the share of eval target words the arm's rows
    cover, and (when the source planted harmful rows) how many planted rows of each kind it holds and the
    share of clean rows. Arms drawn from the candidates split are looked up there."""
    pool = {r["example_id"]: r for r in artifacts.load_split(data_dir, "train_base")}
    if artifacts.split_path(data_dir, CANDIDATES).is_file():
        pool |= {r["example_id"]: r for r in artifacts.load_split(data_dir, CANDIDATES)}
    eval_targets = {str(r["target_word"]).lower() for r in artifacts.load_split(data_dir, "eval") if r.get("target_word")}
    planted_sets = {kind: set(ids) for kind, ids in planted.items()}
    out: dict[int, dict[str, dict]] = {}
    for seed, arms in selections.items():
        out[seed] = {}
        for name, arm in arms.items():
            rows = [pool[e] for e in arm.example_ids if e in pool]
            targets = {str(r["target_word"]).lower() for r in rows if r.get("target_word")}
            fields = {"groups": len({r.get("group_id") for r in rows}), "target_words": len(targets)}
            if eval_targets:
                fields["eval_target_coverage"] = len(targets & eval_targets) / len(eval_targets)
            if planted_sets:
                ids = set(arm.example_ids)
                fields["planted"] = {kind: len(ids & s) for kind, s in planted_sets.items()}
                fields["clean_fraction"] = 1 - len(ids & set().union(*planted_sets.values())) / max(len(ids), 1)
            out[seed][name] = fields
    return out


def _speed(folder: Path, manifest: artifacts.Manifest) -> str | None:
    """A stage's throughput in words, from what it recorded: training tokens/s, eval rows/s, Bergson's batch."""
    recorded = manifest.fields
    if recorded.get("train_tokens_per_s"):
        return (f"{recorded['train_tokens_per_s']:,.0f} tokens/s in training "
                f"(batch {recorded.get('batch_size')} x accumulation {recorded.get('grad_accum')})")
    if recorded.get("token_batch_size"):
        return f"Bergson token batch {recorded['token_batch_size']}, {recorded.get('precision')}"
    if artifacts.stage_kind(folder.name)[0] != "eval":
        return None
    speed = artifacts.load_metrics(folder).speed
    if speed:
        parts = [f"loss {speed['loss_rows_per_s']:,.1f} rows/s"] if speed.get("loss_rows_per_s") else []
        if speed.get("generation_rows_per_s"):
            parts.append(f"generation {speed['generation_rows_per_s']:,.1f} rows/s ({speed.get('generation_backend')})")
        return ", ".join(parts) or None
    return None

