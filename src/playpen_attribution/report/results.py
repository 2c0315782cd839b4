"""The report's data, gathered from a run folder's finished stage folders alone.

Reads every `eval_*/` (shared models) and `seed_<s>/eval_*/` (metrics and per-row predictions),
each seed's `select/` (arm specs: kind, ranking, size, the arm each is tested against), the
attribution summary and the predictor metrics (with the number of candidates the predict stage
ranked), the stage configs (for the setup) and every manifest (for wall times and throughput).

Statistics (`report.comparisons`): per model and seed word accuracy with a Wilson 95% interval, choice
accuracy and eval loss; each arm against each of its `versus` arms on the same eval rows joined by
example_id, per seed (descriptive) and across seeds (the verdicts' test), for every metric both hold;
the verdicts by a fixed sequence: the primary comparison (`report.primary`) alone, then Holm over the
rest. Each trained model's entry carries its training summary (`report.training`: final loss, token
accuracy, whether the loss had stopped falling), and `warnings` lists what makes a comparison read the
schedule rather than the rows: an arm that did not converge, an arm with more than 10% of its
generations without a guess.

`collect` returns a `records.Report`; report.json is its `records.to_json`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.report import comparisons, stats
from playpen_attribution.report.benchmarks import collect_benchmarks
from playpen_attribution.report.methods import method_table
from playpen_attribution.report.records import (
    Aggregate,
    ArmContents,
    ArmEntry,
    ArmSpec,
    DataEfficiency,
    DataSummary,
    EfficiencyArm,
    Primary,
    RandomMultiple,
    Report,
    ReportWarning,
    SeedComparison,
    SelectedArm,
    Setup,
    Sweep,
    to_json,
)
from playpen_attribution.report.training import training_summary
from playpen_attribution.run import artifacts
from playpen_attribution.run.artifacts import ArmSelection, Prediction
from playpen_attribution.run.seeds import seed_folders

SPEC_FIELDS = ("kind", "ranking", "n", "family", "k", "versus", "rows", "tokens")
"""Fields of an arm's selection copied into its report entry."""
NO_GUESS_WARNING = 0.10
"""An arm with more than this share of generations without a parsable guess is pointed out."""
VERDICT_TEXT = {"arm": "random better", "versus": "top_k better", "none": "no reliable difference",
                "one_seed": "one seed", "no_replication": "no replication", "gated": "not claimed (primary did not hold)"}


def data_efficiency(arms: list[ArmEntry], aggregate: list[Aggregate], primary: Primary | None) -> DataEfficiency | None:
    """top_k at k against the random arms (kind random: `random_k`, `random_2x_k`, `random_4x_k`, at n / k
    times k): each one's mean over seeds, rows and tokens, and for the multiples tested against top_k the
    difference and verdict on the primary metric. `worth_at_least`: the largest multiple m such that random
    rows at no tested multiple up to m are reliably better than top_k ("top_k at k matches random at m x k");
    `beats_up_to`: the largest multiple at which top_k is reliably better. None when no random arm is tested
    against top_k."""
    entries = [e for e in arms if e.seed is not None]
    top = next((e for e in entries if e.name == "top_k"), None)
    multiples = {e.name: e.spec.n / e.spec.k for e in entries  # random arms of top_k's k: n rows = n / k times k
                 if top is not None and e.spec is not None and e.spec.kind == "random" and e.spec.n and e.spec.k
                 and e.spec.k == (top.spec.k if top.spec else None)}
    multiples = {name: int(m) if float(m).is_integer() else m for name, m in multiples.items()}
    names = {e.name for e in entries}
    if not multiples or primary is None:
        return None
    key = primary.metric

    def summary(name: str) -> EfficiencyArm:
        values = [getattr(e, key) for e in entries if e.name == name and getattr(e, key) is not None]
        first = next(e for e in entries if e.name == name)
        return EfficiencyArm(arm=name, rows=first.spec.rows if first.spec else None,
                             tokens=first.spec.tokens if first.spec else None,
                             mean=float(np.mean(values)) if values else None, seeds=len(values))

    tested = {a.arm: a.metrics.get(key) for a in aggregate if a.versus == "top_k"}
    random = []
    worth, beats, blocked = None, None, False
    for name, m in sorted(multiples.items(), key=lambda item: item[1]):
        if name not in names:
            continue
        entry = RandomMultiple(arm=summary(name), multiple=m)
        test = tested.get(name)
        if test is not None:
            entry = replace(entry, tested=True, difference=test, p_holm=test.get("p_holm"),
                            verdict=VERDICT_TEXT[test["verdict"]])
            if test["verdict"] == "versus":
                beats = m
            if test["verdict"] in ("arm", "one_seed", "no_replication"):
                blocked = True
            elif not blocked:
                worth = m
        random.append(entry)
    if not any(r.tested for r in random):
        return None  # random_k alone is only tested against matched_random_k: no multiple of k to answer with
    return DataEfficiency(metric=key, top_k=summary("top_k"), random=random, worth_at_least=worth, beats_up_to=beats)


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


def _entry(folder: Path, name: str, seed: int | None, spec: ArmSelection | None, train_folder: Path | None) -> ArmEntry:
    """A model's report entry. `accuracy` is word accuracy against the target word when every eval row
    has one (Taboo: failed games stay in the eval set, so the transcript's guess is not the answer), else
    against the transcript's guess; `metric` names the prediction field it counts. `training`: the summary
    of its training log (`report.training`), when it was trained."""
    metrics = artifacts.load_metrics(folder)
    by_target = metrics.target_total is not None and metrics.target_total == metrics.total
    correct, total, accuracy = ((metrics.target_correct, metrics.target_total, metrics.target_accuracy) if by_target
                                else (metrics.correct, metrics.total, metrics.accuracy))
    total = total if total is not None else metrics.loss_rows
    ci_low, ci_high = (stats.wilson_interval(correct, total) if accuracy is not None and correct is not None
                       else (None, None))
    optional = ("target_correct", "target_total", "target_accuracy", "no_guess", "eval_loss", "loss_non_finite",
                "choice_correct", "choice_total", "choice_accuracy", "choice_mrr", "choice_skipped")
    trained = train_folder is not None and artifacts.is_stage_folder(train_folder)
    return ArmEntry(
        name=name, seed=seed, metric="target_correct" if by_target else "correct", correct=correct, total=total,
        accuracy=accuracy, ci_low=ci_low, ci_high=ci_high,
        transcript_correct=metrics.correct if metrics.accuracy is not None else None,
        transcript_accuracy=metrics.accuracy, **{k: getattr(metrics, k) for k in optional},
        training=training_summary(artifacts.load_train_log(train_folder)) if trained and train_folder else None,
        spec=ArmSpec(**{k: getattr(spec, k) for k in SPEC_FIELDS}) if spec is not None else None)


def _predictions(folder: Path) -> dict[str, Prediction]:
    return {p.example_id: p for p in artifacts.load_predictions(folder)}


def load_evaluations(run_dir: Path) -> tuple[list[ArmEntry], dict, dict[int, dict[str, ArmSelection]]]:
    """(arm entries in report order, (name, seed) -> predictions by example_id, seed -> selections)."""
    entries, predictions = [], {}
    selections = {s: artifacts.load_selections(f / artifacts.SELECT) for s, f in seed_folders(run_dir).items()
                  if artifacts.is_stage_folder(f / artifacts.SELECT)}
    places = [(run_dir, None)] + [(f, s) for s, f in seed_folders(run_dir).items()]
    for place, seed in places:
        evals = {}
        for path in sorted(place.iterdir()):
            kind, model = artifacts.stage_kind(path.name)
            if kind == "eval" and model is not None and artifacts.is_stage_folder(path):
                evals[model] = path
        chosen = selections.get(seed, {}) if seed is not None else {}  # shared models (seed None) are no arm
        plan = list(chosen)
        order = [m for m in artifacts.SHARED_MODELS if m in evals] + [m for m in plan if m in evals]
        order += sorted(m for m in evals if m not in order)
        for name in order:
            stage = artifacts.training_stage(name)
            entries.append(_entry(evals[name], name, seed, chosen.get(name),
                                  place / stage if stage else None))
            predictions[(name, seed)] = _predictions(evals[name])
    return entries, predictions, selections


def _setup(folders: dict[str, Path], selections: dict[int, dict]) -> Setup:
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
    return Setup(model=base.get("model", {}).get("base"), train=base.get("train"),
                 arm_train=arm_train.get("train"), tokenize=base.get("tokenize"),
                 attribute=config_of(artifacts.ATTRIBUTE).get("attribute"),
                 select=config_of(artifacts.SELECT).get("select"),
                 evaluate=config_of(artifacts.eval_dir("base_adapter"), artifacts.eval_dir("base")).get("evaluate"),
                 seeds=sorted(selections),
                 retrain_base=any(k.startswith("seed_") and k.endswith("/" + artifacts.TRAIN_BASE) for k in folders))


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


def warnings(arms: list[ArmEntry], per_seed: list[SeedComparison]) -> list[ReportWarning]:
    """What makes a comparison read the schedule rather than the rows: an arm (per seed) whose loss was still
    falling when training stopped, and a compared arm with more than `NO_GUESS_WARNING` of its generations
    without a guess (word accuracy then reads whether it learned the format)."""
    out = []
    compared = {(c.arm, c.seed) for c in per_seed} | {(c.versus, c.seed) for c in per_seed}
    for e in arms:
        if e.training is not None and e.training.converged is False:
            out.append(ReportWarning(kind="not_converged", model=e.name, seed=e.seed,
                                     late_drop=e.training.late_drop, final_loss=e.training.final_loss))
        if (e.name, e.seed) in compared and e.no_guess is not None and e.total:
            share = e.no_guess / e.total
            if share > NO_GUESS_WARNING:
                out.append(ReportWarning(kind="no_guess", model=e.name, seed=e.seed, share=share))
    return out


def collect(run_dir: Path, primary: dict | None = None, expect: str | None = None) -> Report:
    """The report's data, from the stage folders alone; `primary` and `expect` are the config's `report`
    section (the declared primary comparison and, for a control, its expected answer)."""
    run_dir = Path(run_dir)
    folders = stage_folders(run_dir)
    entries, preds, selections = load_evaluations(run_dir)
    by_key = {(e.name, e.seed): e for e in entries}
    metric = next((e.metric for e in entries if e.accuracy is not None), "correct")
    per_seed: list[SeedComparison] = []
    pairs: dict[tuple[str, str], list[int]] = {}
    for arm in entries:
        if arm.seed is None:  # a shared model has no selection, so no arm it is tested against
            continue
        for versus in arm.versus:
            if (versus, arm.seed) in by_key:
                per_seed.append(comparisons.per_seed(arm.name, versus, arm.seed, preds, metric))
                pairs.setdefault((arm.name, versus), []).append(arm.seed)
    aggregate = [comparisons.across_seeds(a, r, seeds, preds, metric) for (a, r), seeds in pairs.items()]
    manifests = {k: artifacts.load_manifest(p) for k, p in folders.items()}
    seconds = {k: m.wall_seconds for k, m in manifests.items()}
    trainings = [t for k, t in seconds.items()
                 if k.startswith("seed_") and artifacts.stage_kind(k.rsplit("/", 1)[-1])[0] == "train"]
    predictor = _find(run_dir, artifacts.PREDICT, artifacts.load_predictor_metrics)
    if predictor is not None:
        ranked = _find(run_dir, artifacts.PREDICT, lambda f: artifacts.load_manifest(f).fields.get("candidates_ranked"))
        predictor |= {"candidates_ranked": ranked} if ranked is not None else {}
    benchmarks = collect_benchmarks(run_dir, {(e.name, e.seed): e.versus for e in entries})
    untracked = _find(run_dir, artifacts.ATTRIBUTE, lambda f: artifacts.load_manifest(f).fields.get("untracked_modules"))
    data, planted = _data_summary(run_dir)
    primary_test, multiple_testing = comparisons.decide(aggregate, per_seed, benchmarks, primary)
    return Report(
        run_dir=str(run_dir), setup=_setup(folders, selections), arms=entries, comparisons=per_seed,
        aggregate=aggregate, stage_seconds=seconds, wall_seconds=round(sum(seconds.values()), 2),
        real_model={k: v for k, p in folders.items() if (v := _speed(p, manifests[k]))},
        stage_peak_rss_mb={k: v for k, m in manifests.items() if (v := m.fields.get("peak_rss_mb"))},
        sweep=Sweep(trainings=len(trainings), mean_training_seconds=float(np.mean(trainings)) if trainings else None),
        attribution=_find(run_dir, artifacts.ATTRIBUTE, artifacts.load_attribution_summary),
        methods=method_table(run_dir, to_json(aggregate)), predictor=predictor,
        benchmarks=benchmarks, untracked_modules=untracked or None, data=data,
        selection=_selection(selections, run_dir, planted) if selections else None,
        primary=primary_test, multiple_testing=multiple_testing, control=comparisons.control(primary_test, expect),
        warnings=warnings(entries, per_seed), data_efficiency=data_efficiency(entries, aggregate, primary_test))


def _planted_counts(source: dict | None) -> tuple[dict, dict[str, list[str]]]:
    """A source's manifest entry with its planted row ids replaced by their counts, and those ids by kind."""
    source = dict(source or {})
    planted = source.pop("planted", None) or {}
    if planted:
        source["planted_rows"] = {kind: len(ids) for kind, ids in planted.items()}
    return source, planted


def _data_summary(run_dir: Path) -> tuple[DataSummary | None, dict[str, list[str]]]:
    """The data stage's counts, and the planted row ids by kind (the pool's and the candidates')."""
    if not artifacts.is_stage_folder(run_dir / artifacts.DATA):
        return None, {}
    manifest = artifacts.load_manifest(run_dir / artifacts.DATA).fields
    source, planted = _planted_counts(manifest.get("source"))
    candidates = None
    if manifest.get("candidates"):  # their source's planted rows count for the arms drawn from them
        cand_source, cand_planted = _planted_counts(manifest["candidates"].get("source"))
        planted = {kind: planted.get(kind, []) + cand_planted.get(kind, [])
                   for kind in dict.fromkeys([*planted, *cand_planted])}
        candidates = dict(manifest["candidates"]) | {"source": cand_source}
    summary = DataSummary(rows=manifest["rows"], outcomes=manifest.get("outcomes"), dropped=manifest.get("dropped"),
                          source=source, candidates=candidates)
    return summary, planted


def _selection(selections: dict[int, dict[str, ArmSelection]], run_dir: Path,
               planted: dict[str, list[str]]) -> dict[int, dict[str, SelectedArm]]:
    """Per seed and arm: its selection and (when the data stage is there) what its rows hold."""
    contents = (arm_contents(selections, run_dir / artifacts.DATA, planted)
                if artifacts.is_stage_folder(run_dir / artifacts.DATA) else {})
    return {s: {n: SelectedArm(a, contents.get(s, {}).get(n)) for n, a in sel.items()} for s, sel in selections.items()}


def arm_contents(selections: dict[int, dict[str, ArmSelection]], data_dir: Path,
                 planted: dict[str, list[str]]) -> dict[int, dict[str, ArmContents]]:
    """Per seed and arm: distinct groups and target words, the share of eval target words the arm's rows
    cover, and (when the source planted harmful rows) how many planted rows of each kind it holds and the
    share of clean rows. Arms drawn from the candidates split are looked up there."""
    pool = {r["example_id"]: r for r in artifacts.load_split(data_dir, "train_base")}
    if artifacts.split_path(data_dir, CANDIDATES).is_file():
        pool |= {r["example_id"]: r for r in artifacts.load_split(data_dir, CANDIDATES)}
    eval_targets = {str(r["target_word"]).lower() for r in artifacts.load_split(data_dir, "eval") if r.get("target_word")}
    planted_sets = {kind: set(ids) for kind, ids in planted.items()}
    out: dict[int, dict[str, ArmContents]] = {}
    for seed, arms in selections.items():
        out[seed] = {}
        for name, arm in arms.items():
            rows = [pool[e] for e in arm.example_ids if e in pool]
            targets = {str(r["target_word"]).lower() for r in rows if r.get("target_word")}
            ids = set(arm.example_ids)
            out[seed][name] = ArmContents(
                groups=len({r.get("group_id") for r in rows}), target_words=len(targets),
                eval_target_coverage=len(targets & eval_targets) / len(eval_targets) if eval_targets else None,
                planted={kind: len(ids & s) for kind, s in planted_sets.items()} if planted_sets else None,
                clean_fraction=(1 - len(ids & set().union(*planted_sets.values())) / max(len(ids), 1)
                                if planted_sets else None))
    return out


def _speed(folder: Path, manifest: artifacts.Manifest) -> str | None:
    """A stage's throughput in words, from what it recorded: training tokens/s, eval rows/s, tokens/s and Bergson's
    batch, the tokens/s of any other stage that counted its tokens."""
    recorded = manifest.fields
    if recorded.get("train_tokens_per_s"):
        return (f"{recorded['train_tokens_per_s']:,.0f} tokens/s in training "
                f"(batch {recorded.get('batch_size')} x accumulation {recorded.get('grad_accum')})")
    if recorded.get("token_batch_size"):
        rate = f"{recorded['tokens_per_s']:,.0f} tokens/s, " if recorded.get("tokens_per_s") else ""
        return f"{rate}Bergson token batch {recorded['token_batch_size']}, {recorded.get('precision')}"
    if recorded.get("tokens_per_s"):
        return f"{recorded['tokens_per_s']:,.0f} tokens/s"
    if artifacts.stage_kind(folder.name)[0] != "eval":
        return None
    speed = artifacts.load_metrics(folder).speed
    if speed:
        parts = [f"loss {speed['loss_rows_per_s']:,.1f} rows/s"] if speed.get("loss_rows_per_s") else []
        if speed.get("generation_rows_per_s"):
            parts.append(f"generation {speed['generation_rows_per_s']:,.1f} rows/s ({speed.get('generation_backend')})")
        return ", ".join(parts) or None
    return None

