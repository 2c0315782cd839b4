"""Stage `predict`: learn attribution from SAE fingerprints (no gradients at prediction time).

Reads `data/` (the rows of the split the features were extracted from, for their group key and
metadata; the candidates split, when there is one), `attribute/scores.jsonl` and `sae/` (with its
`layer_<L>/` and `candidates/` subfolders when the sae stage wrote them). It cross-fits the SAE
predictor variants (`sae`, `sae_topk`, `sae_logistic`, one `sae@<L>` per extra layer) and the two
baselines (length only; a ridge probe on the raw residual, mean- or last-token-pooled) over the same
grouped folds, as described in `playpen_attribution.sae.predictor` and `sae.models`, and writes
`predict/`:

- `predictor.joblib`: the `predict.model` variant (default `sae`) fitted on every scored row + the
  feature spec it expects (the `rank` stage reads it);
- `metrics.json`: out-of-fold metrics of every model (Spearman, Pearson, R², top-k overlap, AUROC
  top-vs-rest and top decile, the regularisation chosen; Pearson and R² null for the classifier,
  said so under `null_metrics`; `skipped_models` names a variant the features cannot feed, e.g.
  sae_topk on an sae folder built before top-K ids), fold sizes, SmolTalk metadata validation when
  the rows carry it;
- `predicted_scores.jsonl` (example_id, predicted, probe, fold) for every row: each prediction comes
  from a model that never saw that row (`fold` says which fold's model; null = a row without a
  finite score, predicted by the final fit). `predicted` is the `predict.model` variant, `probe` the
  residual probe; higher = more helpful: the rankings the `sae_top_k` and `probe_top_k` arms read,
  so no arm is drawn from in-sample predictions;
- with `sae/candidates/`: `candidate_scores.jsonl` (example_id, predicted, probe) for every candidate,
  from the predictor and the probe fitted on every scored pool row (no candidate reaches a fit, so
  nothing needs cross-fitting; a candidate id that is also a pool row is refused), after the same spec
  check the `rank` stage makes. The manifest counts the candidates ranked.

- with `sae/probe_residuals.npz` (`sae.probe_layers`): `probe_study.json` and `probe_study.png`, the probe
  study (`sae.probe_study`): per layer x pooling (and the SAE features of the main layer, pooling `sae`)
  a ridge probe cross-fitted on the predictor's grouped folds, raw and with length (tokens fed to the
  model) regressed out of features and target, judged by held-out Spearman, R² and the partial Spearman
  with the target given length; a length-only probe as the baseline.

Ranking any other rows file with the saved predictor is the `rank` stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.errors import UserError
from playpen_attribution.report.probe_study import plot_probe_study
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.sae.models import layer_of, targets
from playpen_attribution.sae.predictor import (
    SPEC_KEYS,
    Fit,
    apply_predictor,
    apply_probe,
    check_spec,
    fit_and_evaluate,
    predictor_spec,
)
from playpen_attribution.sae.probe_residuals import load_probe_residuals
from playpen_attribution.sae.probe_study import study_rows


def _load_layers(folder: Path, index: dict) -> dict[int, tuple]:
    """Extra layer L -> (features, index) from `folder/layer_<L>/`, for the layers the main index lists."""
    return {int(layer): artifacts.load_features(folder / artifacts.sae_layer_dir(int(layer)))
            for layer in index.get("extra_layers", [])}


def candidate_features(sae_dir: Path, data_dir: Path, pool_ids: list[str]) -> tuple | None:
    """(features, index, folder) of the candidates, checked before any fit; None when data/ has no candidates
    split, () when it has an empty one."""
    folder, split = sae_dir / artifacts.CANDIDATES_DIR, artifacts.split_path(data_dir, CANDIDATES)
    if not folder.is_dir():
        if split.is_file() and artifacts.load_split(data_dir, CANDIDATES):
            raise UserError(f"{split}: data/ has a candidates split but {sae_dir} holds no candidates' features "
                            "(built before the split); rerun `sae`")
        return () if split.is_file() else None
    features, index = artifacts.load_features(folder)
    shared = sorted(set(features.example_ids) & set(pool_ids))
    if shared:
        raise UserError(f"{folder}: {len(shared)} candidate(s) are also scored pool rows (e.g. {shared[:3]}); a "
                        "candidate must be a row no fit has seen")
    return features, index, folder


def rank_candidates(candidates: tuple, fit: Fit, bundle: dict, index: dict, pooling: str) -> list[dict]:
    """(example_id, predicted, probe) of every candidate, by the final fits, after the spec checks."""
    if not candidates:
        return []
    features, cand_index, folder = candidates
    check_spec({k: index[k] for k in SPEC_KEYS}, cand_index, str(folder))  # the probe reads the main layer
    layer = layer_of(fit.model)
    if layer is None:
        predicted = apply_predictor(bundle, features, cand_index, str(folder))
    else:
        layer_features, layer_index = _load_layers(folder, cand_index)[layer]
        predicted = apply_predictor(bundle, layer_features, layer_index, str(folder / artifacts.sae_layer_dir(layer)))
    probe = apply_probe(fit.pipelines["residual"], features, pooling)
    return [{"example_id": eid, "predicted": float(p), "probe": float(q)}
            for eid, p, q in zip(features.example_ids, predicted, probe, strict=True)]


def probe_study(out: Path, sae_dir: Path, features, index: dict, fit: Fit, scores: dict, cfg: ExperimentConfig) -> dict:
    """The probe study on the `sae.probe_layers` residuals (and the main layer's SAE features, `sae`), over the
    predictor's grouped folds and target, length = tokens fed to the model; writes its table rows and plot."""
    predict = cfg.predict
    assert predict is not None, "called by the predict stage, which refuses a config without one"
    ids = features.example_ids
    layers = [int(layer) for layer in index["probe_layers"]]
    inputs = load_probe_residuals(sae_dir, layers, ids) | {(int(index["layer"]), "sae"): features.feature_mean}
    scored = np.array([i for i, eid in enumerate(ids) if fit.fold[eid] is not None])
    folds = np.array([fit.fold[ids[i]] for i in scored])
    target = targets(scores, [ids[i] for i in scored], predict.target)
    rows = study_rows({key: x[scored] for key, x in inputs.items()}, target, features.stats[scored, 0], folds,
                      predict.alphas)
    artifacts.write_probe_study(out, {
        "target": predict.target, "length": "tokens fed to the model (sae.max_tokens cap)", "rows_fitted": len(scored),
        "folds": predict.folds, "group_key": predict.group_key, "layers": layers, "rows": rows})
    plot_probe_study(rows, out / artifacts.PROBE_STUDY_PLOT)
    return {"layers": layers, "rows_fitted": len(scored)}


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    predict = cfg.predict
    if predict is None:
        raise UserError("the config has no 'predict' section; add one to run the predict stage")
    run_dir = Path(run_dir)
    data_dir, attr_dir, sae_dir = run_dir / artifacts.DATA, run_dir / artifacts.ATTRIBUTE, run_dir / artifacts.SAE
    inputs = {"data": data_dir, "attribute": attr_dir, "sae": sae_dir}

    def build(out: Path) -> dict:
        features, index = artifacts.load_features(sae_dir)
        layers = _load_layers(sae_dir, index)
        rows = {r["example_id"]: r for r in artifacts.load_split(data_dir, index["split"])}
        candidates = candidate_features(sae_dir, data_dir, features.example_ids)
        files = {"features": str(sae_dir / artifacts.SAE_INDEX), "scores": str(attr_dir / artifacts.SCORES_FILE),
                 "rows": str(artifacts.split_path(data_dir, index["split"]))}
        scores = artifacts.load_scores(attr_dir)
        fit = fit_and_evaluate(features, rows, scores, predict, files,
                               {layer: f for layer, (f, _) in layers.items()})
        layer = layer_of(predict.model)
        model_features, model_index = (features, index) if layer is None else layers[layer]
        spec = predictor_spec(model_index, predict)
        bundle = {"pipeline": fit.pipeline, "spec": spec}
        artifacts.write_predictor(out, fit.pipeline, spec)
        artifacts.write_predictor_metrics(out, fit.metrics)
        apply_predictor(bundle, model_features, model_index, str(sae_dir))  # the spec check
        artifacts.write_predicted_scores(out, [
            {"example_id": eid, "predicted": fit.predicted[eid], "probe": fit.probe[eid], "fold": fit.fold[eid]}
            for eid in features.example_ids
        ])
        probe = fit.metrics["models"]["residual"]
        manifest = {"metrics": {m: v["spearman"] for m, v in fit.metrics["models"].items()},
                    "rows": len(fit.predicted), "cross_fitted": True, "predicted_by": predict.model,
                    "probe": {"pooling": predict.probe_pooling, "alpha": probe["alpha"]}}
        if index.get("probe_layers"):
            manifest["probe_study"] = probe_study(out, sae_dir, features, index, fit, scores, cfg)
        if candidates is not None:
            ranked = rank_candidates(candidates, fit, bundle, index, predict.probe_pooling)
            artifacts.write_candidate_scores(out, ranked)
            manifest["candidates_ranked"] = len(ranked)
        return manifest

    stage_cfg = {"predict": predict.model_dump(mode="json")}
    command = stage_table.command_line(stage_table.PREDICT, cfg, run_dir)
    return run_stage(run_dir, artifacts.PREDICT, stage_cfg, inputs, build, command=command, overwrite=overwrite)
