"""Stage `predict`: learn attribution from SAE fingerprints, and rank new rows without gradients.

`run` reads `data/` (the rows of the split the features were extracted from, for their group key
and metadata), `attribute/scores.jsonl` and `sae/`. It fits the SAE predictor and its two
baselines (length only; a ridge probe on the raw residual) on one grouped split, as described in
`playpen_attribution.predictor`, and writes `predict/`: `predictor.joblib` (the sklearn pipeline +
the feature spec it expects), `metrics.json` (held-out metrics of the three models, split sizes,
SmolTalk metadata validation when the rows carry it) and `predicted_scores.jsonl` (example_id,
predicted, part = fit | test | unscored) for every row: higher = more helpful, the ranking the
`sae_top_k` arm reads.

`run_rank` ranks the rows of any JSONL file (example_id, prompt, completion) with the saved
predictor: one forward pass up to block L + SAE + regressor per row, no gradient. It writes the
stage folder `rank_<name>/`: the rows' `features.npz` + `index.json` and `ranked.jsonl`
(example_id, predicted, rank; best first). `rank_new_rows` applies a saved predictor to any
feature folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from playpen_attribution import artifacts
from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.jsonl import read_jsonl, write_jsonl
from playpen_attribution.predictor import (
    SPEC_KEYS, apply_predictor, fit_and_evaluate, load_predictor, save_predictor,
)
from playpen_attribution.sae_features import extract_rows, load_features, write_features
from playpen_attribution.stage_folder import run_stage
from playpen_attribution.stages.base_model import with_base_model


def run(cfg: ExperimentConfig, run_dir: Path, overwrite: bool = False) -> Path:
    if cfg.predict is None:
        raise UserError("the config has no 'predict' section; add one to run the predict stage")
    run_dir = Path(run_dir)
    data_dir, attr_dir, sae_dir = run_dir / artifacts.DATA, run_dir / artifacts.ATTRIBUTE, run_dir / artifacts.SAE
    inputs = {"data": data_dir, "attribute": attr_dir, "sae": sae_dir}

    def build(out: Path) -> dict:
        features, index = load_features(sae_dir)
        rows = {r["example_id"]: r for r in artifacts.load_split(data_dir, index["split"])}
        files = {"features": str(sae_dir / artifacts.SAE_INDEX), "scores": str(attr_dir / artifacts.SCORES_FILE),
                 "rows": str(artifacts.split_path(data_dir, index["split"]))}
        fit = fit_and_evaluate(features, rows, artifacts.load_scores(attr_dir), cfg.predict, files)
        spec = {k: index[k] for k in SPEC_KEYS} | {"target": cfg.predict.target, "design": "stats + feature_mean"}
        save_predictor(out / artifacts.PREDICTOR_FILE, fit.pipeline, spec)
        (out / artifacts.METRICS_FILE).write_text(json.dumps(fit.metrics, indent=1) + "\n")
        predicted = apply_predictor({"pipeline": fit.pipeline, "spec": spec}, features, index, str(sae_dir))
        write_jsonl(out / artifacts.PREDICTED_SCORES, [
            {"example_id": eid, "predicted": float(p), "part": fit.part[eid]}
            for eid, p in zip(features.example_ids, predicted)
        ])
        return {"metrics": {m: v["spearman"] for m, v in fit.metrics["models"].items()}, "rows": len(predicted)}

    stage_cfg = {"predict": cfg.predict.model_dump(mode="json")}
    return run_stage(run_dir, artifacts.PREDICT, stage_cfg, inputs, build, overwrite)


def rank_new_rows(predict_dir: Path, sae_dir: Path) -> dict[str, float]:
    """example_id -> predicted attribution for the rows whose features lie in `sae_dir` (no gradients)."""
    bundle = load_predictor(Path(predict_dir) / artifacts.PREDICTOR_FILE)
    features, index = load_features(sae_dir)
    predicted = apply_predictor(bundle, features, index, str(sae_dir))
    return {eid: float(p) for eid, p in zip(features.example_ids, predicted)}


def _read_rows(rows_path: Path) -> list[dict]:
    rows = read_jsonl(rows_path)
    seen = set()
    for line, row in enumerate(rows, start=1):
        eid = row.get("example_id")
        if not isinstance(eid, str) or not eid:
            raise UserError(f"{rows_path}: row {line} has no 'example_id'")
        if eid in seen:
            raise UserError(f"{rows_path}: example_id {eid!r} appears twice")
        seen.add(eid)
    return rows


def run_rank(cfg: ExperimentConfig, run_dir: Path, model_path: str, rows_path: Path, name: str | None = None,
             overwrite: bool = False) -> Path:
    """Rank the rows of `rows_path` with the run's saved predictor into `rank_<name>/` (name: the file's stem)."""
    if cfg.sae is None:
        raise UserError("the config has no 'sae' section; ranking new rows extracts SAE features with it")
    run_dir, rows_path = Path(run_dir), Path(rows_path)
    if not rows_path.is_file():
        raise UserError(f"{rows_path}: rows file not found")
    predict_dir = run_dir / artifacts.PREDICT
    inputs = with_base_model(cfg, run_dir, {"predict": predict_dir})
    adapter = None
    if cfg.sae.model == "base_adapter":
        inputs["train_base"] = run_dir / artifacts.TRAIN_BASE
        adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR

    def build(out: Path) -> dict:
        rows = _read_rows(rows_path)
        features, info = extract_rows(cfg.sae, cfg.tokenize, model_path, adapter, rows)
        write_features(out, features, info | {"split": str(rows_path)})
        predicted = rank_new_rows(predict_dir, out)
        ranked = sorted(predicted.items(), key=lambda kv: -kv[1])
        write_jsonl(out / artifacts.RANKED_FILE, [
            {"example_id": eid, "predicted": p, "rank": i + 1} for i, (eid, p) in enumerate(ranked)
        ])
        return {"sae": info, "rows": len(rows)}

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "sae": cfg.sae.model_dump(mode="json"), "rows_path": str(rows_path.resolve()),
        "rows_sha256": hashlib.sha256(rows_path.read_bytes()).hexdigest(),
    }
    return run_stage(run_dir, artifacts.rank_dir(name or rows_path.stem), stage_cfg, inputs, build, overwrite)
