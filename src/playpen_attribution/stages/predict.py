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
  so no arm is drawn from in-sample predictions. With `sae.probe_layers`, one more column `probe@<L>` per
  block: the named probe `residual@<L>` (the same probe on block L's residual, `predict.probe_pooling`),
  cross-fitted on the same folds, the ranking of `probe_top_k@<L>`;
- with `sae/candidates/`: `candidate_scores.jsonl` (example_id, predicted, probe, and `probe@<L>` when
  `sae/candidates/probe_residuals.npz` holds the candidates' residuals) for every candidate,
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
from playpen_attribution.log import logger
from playpen_attribution.report.probe_study import plot_probe_study
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.sae.models import layer_of, score, targets
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


def candidate_residuals(candidates: tuple, layers: list[int], pooling: str) -> dict[int, np.ndarray] | None:
    """Block L -> the candidates' pooled residual (`sae/candidates/probe_residuals.npz`); None when the sae folder
    was built before the candidates had them (the `probe@<L>` columns are then left out, said so in the manifest)."""
    if not candidates or not layers:
        return {}
    features, _, folder = candidates
    if not (folder / artifacts.PROBE_RESIDUALS).is_file():
        return None
    loaded = load_probe_residuals(folder, layers, features.example_ids)
    return {layer: loaded[(layer, pooling)] for layer in layers}


def rank_candidates(candidates: tuple, fit: Fit, bundle: dict, index: dict, pooling: str,
                    residuals: dict[int, np.ndarray] | None = None) -> list[dict]:
    """(example_id, predicted, probe[, probe@<L>]) of every candidate, by the final fits, after the spec checks."""
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
    named = {f"probe@{layer}": score(fit.pipelines[f"residual@{layer}"], "residual", x.astype(np.float64))
             for layer, x in sorted((residuals or {}).items())}
    return [{"example_id": eid, "predicted": float(p), "probe": float(q)}
            | {name: float(values[i]) for name, values in named.items()}
            for i, (eid, p, q) in enumerate(zip(features.example_ids, predicted, probe, strict=True))]


def probe_study(out: Path, residuals: dict, features, index: dict, fit: Fit, scores: dict, cfg: ExperimentConfig) -> dict:
    """The probe study on the `sae.probe_layers` residuals ((layer, pooling) -> rows x d_model; and the main
    layer's SAE features, `sae`), over the predictor's grouped folds and target, length = tokens fed to the
    model; writes its table rows and plot."""
    predict = cfg.predict
    assert predict is not None, "called by the predict stage, which refuses a config without one"
    ids = features.example_ids
    layers = [int(layer) for layer in index["probe_layers"]]
    inputs = dict(residuals) | {(int(index["layer"]), "sae"): features.feature_mean}
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
        probe_layers = [int(layer) for layer in index.get("probe_layers", [])]
        residuals = load_probe_residuals(sae_dir, probe_layers, features.example_ids) if probe_layers else {}
        pooling = predict.probe_pooling
        fit = fit_and_evaluate(features, rows, scores, predict, files,
                               {layer: f for layer, (f, _) in layers.items()},
                               {layer: residuals[(layer, pooling)] for layer in probe_layers})
        layer = layer_of(predict.model)
        model_features, model_index = (features, index) if layer is None else layers[layer]
        spec = predictor_spec(model_index, predict)
        bundle = {"pipeline": fit.pipeline, "spec": spec}
        artifacts.write_predictor(out, fit.pipeline, spec)
        artifacts.write_predictor_metrics(out, fit.metrics)
        apply_predictor(bundle, model_features, model_index, str(sae_dir))  # the spec check
        artifacts.write_predicted_scores(out, [
            {"example_id": eid, "predicted": fit.predicted[eid], "probe": fit.probe[eid]}
            | {f"probe@{layer}": fit.crossfitted[f"residual@{layer}"][eid] for layer in probe_layers}
            | {"fold": fit.fold[eid]}
            for eid in features.example_ids
        ])
        probe = fit.metrics["models"]["residual"]
        manifest = {"metrics": {m: v["spearman"] for m, v in fit.metrics["models"].items()},
                    "rows": len(fit.predicted), "cross_fitted": True, "predicted_by": predict.model,
                    "probe": {"pooling": predict.probe_pooling, "alpha": probe["alpha"]}}
        if probe_layers:
            manifest["probe_study"] = probe_study(out, residuals, features, index, fit, scores, cfg)
            manifest["named_probes"] = [f"probe@{layer}" for layer in probe_layers]
        if candidates is not None:
            cand_residuals = candidate_residuals(candidates, probe_layers, pooling)
            if cand_residuals is None:
                logger.warning("%s has no candidates' probe residuals (built before them): candidate_scores.jsonl "
                               "has no probe@<L> columns; rerun `sae` with --overwrite for probe_top_k@<L> arms",
                               sae_dir / artifacts.CANDIDATES_DIR)
                manifest["candidates_without_named_probes"] = "sae/candidates has no probe_residuals.npz"
            ranked = rank_candidates(candidates, fit, bundle, index, pooling, cand_residuals)
            artifacts.write_candidate_scores(out, ranked)
            manifest["candidates_ranked"] = len(ranked)
        return manifest

    stage_cfg = {"predict": predict.model_dump(mode="json")}
    command = stage_table.command_line(stage_table.PREDICT, cfg, run_dir)
    return run_stage(run_dir, artifacts.PREDICT, stage_cfg, inputs, build, command=command, overwrite=overwrite)
