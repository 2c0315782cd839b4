"""Stage `report`: gather the finished stage folders into files a person reads in a minute.

Reads the run directory alone (`report.results` says what and computes the statistics), so
`playpen-attribution report --run-dir D` regenerates it. Writes `report/`: `report.json`,
`report.md`, `differences.png` (arm − vs per seed with the across-seed interval, when arms were compared;
report.md shows it under the answer), `accuracy.png`, `eval_loss.png` (when losses exist), `accuracy_vs_k.png` (when an arm
family ran at several k), `benchmarks.png` (when lm-eval benchmarks ran), `training_loss.png` (every
training's train_log.json), `probe_study.png` (when the predict stage ran the probe study; report.md shows
its table) and, when the attribute stage drew them, copies of `score_histogram.png`
and `score_vs_length.png`; and copies all of them into the run directory, its front page.

Before reading, it checks every stage folder against what is on disk (`stage_folder.stale_stages`):
a folder whose files changed, or that was built from an upstream folder since replaced, is refused,
naming it and what it was built from, unless `allow_stale` (then report.md says so at the top and
report.json lists them under `stale`). It also checks the sweep is complete (`run.completeness`): a
planned (arm, seed) unit without a finished evaluation is refused, naming every one, unless
`allow_incomplete` (then report.json lists them under `missing_units` and the answer names them). The
plan is the config's; without one, the run's `experiment.yaml`; without that, its seed folders' selections.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from playpen_attribution.attribution.arms import plan_arms
from playpen_attribution.config import ExperimentConfig, load_config
from playpen_attribution.errors import UserError
from playpen_attribution.log import logger
from playpen_attribution.report import plots
from playpen_attribution.report.config import ReportConfig
from playpen_attribution.report.markdown import render_markdown
from playpen_attribution.report.probe_study import plot_probe_study
from playpen_attribution.report.records import to_json
from playpen_attribution.report.results import attribution_plots, collect, stage_folders
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.completeness import describe_units, missing_units, planned_from_folders
from playpen_attribution.run.stage_folder import run_stage, stale_stages


def training_curves(folders: dict[str, Path]) -> list[dict]:
    """{name, seed, steps, losses} of every training folder among `folders` (label -> folder), from its
    train_log.json: the base adapter first, then each arm by seed."""
    curves = []
    for label, folder in folders.items():
        kind, arm = artifacts.stage_kind(folder.name)
        if kind != "train":
            continue
        seed = folder.parent.name.removeprefix("seed_") if "/" in label else None
        logged = [e for e in artifacts.load_train_log(folder) if e.get("loss") is not None]
        curves.append({"name": arm or "base_adapter", "seed": int(seed) if seed is not None else None,
                       "steps": [e.get("step") for e in logged], "losses": [e["loss"] for e in logged]})
    return sorted(curves, key=lambda c: (c["name"] != "base_adapter", c["seed"] if c["seed"] is not None else -1))


def draw(report: dict, run_dir: Path, out: Path) -> list[str]:
    """Write the plots of `report` (report.json's form) into `out`; the file names, in reading order."""
    arms = report["arms"]
    drawn = []
    if report.get("aggregate"):
        plots.plot_seed_differences(report, out / artifacts.DIFFERENCES_PLOT)
        drawn.append(artifacts.DIFFERENCES_PLOT)
    if any(a["accuracy"] is not None for a in arms):
        plots.plot_accuracy(arms, out / artifacts.ACCURACY_PLOT)
        drawn.append(artifacts.ACCURACY_PLOT)
    if any(a.get("eval_loss") is not None for a in arms):
        plots.plot_eval_loss(arms, out / artifacts.EVAL_LOSS_PLOT)
        drawn.append(artifacts.EVAL_LOSS_PLOT)
    sizes: dict[str, set[int]] = {}
    for a in arms:
        if a.get("family") and a.get("k") and a["accuracy"] is not None:
            sizes.setdefault(a["family"], set()).add(a["k"])
    if any(len(ks) > 1 for ks in sizes.values()):
        plots.plot_accuracy_vs_k(arms, out / artifacts.ACCURACY_VS_K_PLOT)
        drawn.append(artifacts.ACCURACY_VS_K_PLOT)
    if report.get("benchmarks", {}).get("results"):
        plots.plot_benchmarks(report["benchmarks"]["results"], out / artifacts.BENCHMARKS_PLOT)
        drawn.append(artifacts.BENCHMARKS_PLOT)
    curves = training_curves(stage_folders(run_dir))
    if curves:
        plots.plot_training_loss(curves, out / artifacts.TRAINING_LOSS_PLOT)
        drawn.append(artifacts.TRAINING_LOSS_PLOT)
    for source in attribution_plots(run_dir):
        shutil.copy2(source, out / source.name)
        drawn.append(source.name)
    return drawn


def _stale_note(stale: dict[str, str]) -> str:
    head = ("> **Stale results (--allow-stale):** these stage folders no longer agree with the folders they "
            "were built from; their numbers below may not belong together.")
    lines = [head, ">"]
    return "\n".join(lines + [f"> - `{label}/`: {why}" for label, why in stale.items()]) + "\n\n"


def _report_section(run_dir: Path) -> ReportConfig:
    """The `report` section of the run's resolved config (experiment.yaml), when the report is rebuilt without a
    config; the defaults when the run has none yet."""
    path = run_dir / artifacts.EXPERIMENT_FILE
    data = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return ReportConfig.model_validate(data.get("report") or {})


def planned_sweep(cfg: ExperimentConfig | None, run_dir: Path) -> tuple[list[int], list[str]]:
    """(seeds, arm names) the run planned: `cfg`'s, else its experiment.yaml's, else its seed folders'."""
    if cfg is None and (run_dir / artifacts.EXPERIMENT_FILE).is_file():
        try:
            cfg = load_config(run_dir / artifacts.EXPERIMENT_FILE)
        except UserError as exc:
            logger.warning("%s; the planned sweep is read from the seed folders instead", exc)
    if cfg is None:
        return planned_from_folders(run_dir)
    return cfg.seeds, [arm.name for arm in plan_arms(cfg.select, cfg.attribute.methods)]


def _check_complete(cfg: ExperimentConfig | None, run_dir: Path, allow_incomplete: bool) -> list[tuple[str, int]]:
    """The planned units without an evaluation; refused unless `allow_incomplete`."""
    missing = missing_units(run_dir, *planned_sweep(cfg, run_dir))
    if missing and not allow_incomplete:
        raise UserError(f"{run_dir}: the sweep is incomplete, {len(missing)} planned (arm, seed) unit(s) have no "
                        f"evaluation: {describe_units(missing)}; run them (rerun `run`), or pass --allow-incomplete "
                        "to report the rest and name these")
    if missing:
        logger.warning("reporting an incomplete sweep (--allow-incomplete); missing: %s", describe_units(missing))
    return missing


def run(cfg: ExperimentConfig | None, run_dir: Path, *, overwrite: bool = False, allow_stale: bool = False,
        allow_incomplete: bool = False) -> Path:
    """Always rebuilt, so `overwrite` changes nothing (the report is cheap, and reflects whatever stage
    folders and report code exist now); `cfg` names the report (None: the run folder's name)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir}: " + ("not a folder" if run_dir.exists() else "no such folder"))
    name = cfg.name if cfg is not None else run_dir.name
    inputs = stage_folders(run_dir)
    stale = stale_stages(inputs)
    if stale and not allow_stale:
        label, why = next(iter(stale.items()))
        more = f" (and {len(stale) - 1} more stale: {', '.join(list(stale)[1:4])})" if len(stale) > 1 else ""
        raise UserError(f"{run_dir / label}: stale, {why}{more}; rebuild it (run with --overwrite) or pass "
                        f"--allow-stale to report anyway")
    missing = _check_complete(cfg, run_dir, allow_incomplete)

    section = cfg.report if cfg is not None else _report_section(run_dir)

    def build(out: Path) -> dict:
        primary = section.primary.model_dump() if section.primary is not None else None
        report = collect(run_dir, primary, section.expect)
        study = None
        if artifacts.is_stage_folder(run_dir / artifacts.PREDICT):  # the probe study: drawn in its own section
            study = artifacts.load_probe_study(run_dir / artifacts.PREDICT)
        if study:
            plot_probe_study(study["rows"], out / artifacts.PROBE_STUDY_PLOT)
        report = replace(report, plots=draw(to_json(report), run_dir, out), probe_study=study or None,
                         stale=stale or None,
                         missing_units=[{"arm": arm, "seed": seed} for arm, seed in missing] or None)
        markdown = render_markdown(report, name)
        artifacts.write_report(out, to_json(report), _stale_note(stale) + markdown if stale else markdown)
        return {"plots": report.plots, "stale": stale, "missing_units": report.missing_units or []}

    report_dir = run_stage(run_dir, artifacts.REPORT, {"name": name, "report": section.model_dump(mode="json")}, inputs, build,
                           command=stage_table.command_line(stage_table.REPORT, cfg, run_dir), overwrite=True, reuse=False,
                           verify_inputs=not allow_stale)
    for path in report_dir.iterdir():  # the run's front page: report.md and its plots beside the stage folders
        if path.name not in (artifacts.CONFIG_FILE, artifacts.MANIFEST_FILE):
            shutil.copy2(path, run_dir / path.name)
    return report_dir
