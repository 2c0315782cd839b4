"""Stage `predict`: learn attribution from SAE fingerprints (no gradients at prediction time).

Reads `data/` (the rows of the split the features were extracted from, for their group key and
metadata), `attribute/scores.jsonl` and `sae/`. It cross-fits the SAE predictor and its two
baselines (length only; a ridge probe on the raw residual) over grouped folds, as described in
`playpen_attribution.sae.predictor`, and writes `predict/`: `predictor.joblib` (the sklearn pipeline
fitted on every scored row + the feature spec it expects), `metrics.json` (out-of-fold metrics of
the three models, fold sizes, SmolTalk metadata validation when the rows carry it) and
`predicted_scores.jsonl` (example_id, predicted, probe, fold) for every row: each prediction comes from a
model that never saw that row (`fold` says which fold's model; null = a row without a finite score,
predicted by the saved predictor). `probe` is the residual-stream ridge probe's prediction on the same folds. Higher = more helpful: the
rankings the `sae_top_k` and `probe_top_k` arms read, so
no arm is drawn from in-sample predictions. Ranking new rows with the saved predictor is the `rank`
stage.
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import cli_command, run_stage
from playpen_attribution.sae.predictor import (
    SPEC_KEYS,
    apply_predictor,
    fit_and_evaluate,
)


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    if cfg.predict is None:
        raise UserError("the config has no 'predict' section; add one to run the predict stage")
    run_dir = Path(run_dir)
    data_dir, attr_dir, sae_dir = run_dir / artifacts.DATA, run_dir / artifacts.ATTRIBUTE, run_dir / artifacts.SAE
    inputs = {"data": data_dir, "attribute": attr_dir, "sae": sae_dir}

    def build(out: Path) -> dict:
        features, index = artifacts.load_features(sae_dir)
        rows = {r["example_id"]: r for r in artifacts.load_split(data_dir, index["split"])}
        files = {"features": str(sae_dir / artifacts.SAE_INDEX), "scores": str(attr_dir / artifacts.SCORES_FILE),
                 "rows": str(artifacts.split_path(data_dir, index["split"]))}
        fit = fit_and_evaluate(features, rows, artifacts.load_scores(attr_dir), cfg.predict, files)
        spec = {k: index[k] for k in SPEC_KEYS} | {"target": cfg.predict.target, "design": "stats + feature_mean"}
        artifacts.write_predictor(out, fit.pipeline, spec)
        artifacts.write_predictor_metrics(out, fit.metrics)
        apply_predictor({"pipeline": fit.pipeline, "spec": spec}, features, index, str(sae_dir))  # the spec check
        artifacts.write_predicted_scores(out, [
            {"example_id": eid, "predicted": fit.predicted[eid], "probe": fit.probe[eid], "fold": fit.fold[eid]}
            for eid in features.example_ids
        ])
        return {"metrics": {m: v["spearman"] for m, v in fit.metrics["models"].items()}, "rows": len(fit.predicted),
                "cross_fitted": True}

    stage_cfg = {"predict": cfg.predict.model_dump(mode="json")}
    command = cli_command("predict", run_dir, seed=cfg.run_seed if cfg.sweep.retrain_base else None)
    return run_stage(run_dir, artifacts.PREDICT, stage_cfg, inputs, build, command=command, overwrite=overwrite)
