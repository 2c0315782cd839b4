"""Stage `rank`: rank new rows with a run's saved attribution predictor, without gradients.

Reads the rows of any JSONL file (example_id, prompt, completion), the base model (and, with
`sae.model: base_adapter`, `train_base/adapter`) and `predict/predictor.joblib`: one forward pass up
to block L + SAE + the saved predictor per row (L: the layer the predictor reads, an extra layer for
a `sae@<L>` predictor). Writes `rank_<name>/` (name: the rows file's stem unless
given): the rows' `features.npz` + `index.json` and `ranked.jsonl` (example_id, predicted, rank;
best first). `rank_new_rows` applies a saved predictor to any feature folder.
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.hashing import file_sha256
from playpen_attribution.core.jsonl import read_jsonl
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import base_model
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.sae.config import SaeConfig
from playpen_attribution.sae.features import extract_rows, feature_index
from playpen_attribution.sae.predictor import apply_predictor


def rank_new_rows(predict_dir: Path, features_dir: Path) -> dict[str, float]:
    """example_id -> predicted attribution for the rows whose features lie in `features_dir` (no gradients)."""
    bundle = artifacts.load_predictor(predict_dir)
    features, index = artifacts.load_features(features_dir)
    predicted = apply_predictor(bundle, features, index, str(features_dir))
    return {eid: float(p) for eid, p in zip(features.example_ids, predicted, strict=True)}


def _sae_for(sae: SaeConfig, spec: dict) -> SaeConfig:
    """The sae section that extracts the layer the saved predictor reads: a sae@<L> predictor reads extra layer
    L (with the random SAE `layer: L` builds, or the SAE of extra_sae_ids its spec names); every other
    predictor the main layer."""
    plain: dict[str, list] = {"extra_layers": [], "extra_sae_ids": []}
    if sae.release == "random" and spec.get("layer") in sae.extra_layers:
        return sae.model_copy(update=plain | {"layer": spec["layer"]})
    if sae.release != "random" and (spec.get("release"), spec.get("sae_id")) != (sae.release, sae.sae_id):
        for extra in sae.extra_saes():  # a sae@<L> predictor of an SAE in extra_sae_ids: its index names it
            if (extra.release, extra.sae_id) == (spec.get("release"), spec.get("sae_id")):
                return extra
    return sae


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


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False, rows: Path, name: str | None = None) -> Path:
    """Rank the rows of the JSONL file `rows` with the run's saved predictor into `rank_<name>/`."""
    sae = cfg.sae
    if sae is None:
        raise UserError("the config has no 'sae' section; ranking new rows extracts SAE features with it")
    run_dir, rows_path = Path(run_dir), Path(rows)
    if not rows_path.is_file():
        raise UserError(f"{rows_path}: rows file not found")
    base = base_model(cfg.model, run_dir)
    predict_dir = run_dir / artifacts.PREDICT
    inputs = base.inputs({"predict": predict_dir})
    adapter = None
    if sae.model == "base_adapter":
        inputs["train_base"] = run_dir / artifacts.TRAIN_BASE
        adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR
    name = name or rows_path.stem

    def build(out: Path) -> dict:
        new_rows = _read_rows(rows_path)
        features, info = extract_rows(_sae_for(sae, artifacts.load_predictor(predict_dir)["spec"]), cfg.tokenize,
                                      base.path, adapter, new_rows, base.tokenizer)
        artifacts.write_features(out, features, feature_index(info | {"split": str(rows_path)}))
        artifacts.write_ranked(out, rank_new_rows(predict_dir, out))
        return {"sae": info, "rows": len(new_rows)}

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "sae": sae.model_dump(mode="json"), "rows_path": str(rows_path.resolve()),
        "rows_sha256": file_sha256(rows_path),
    }
    command = stage_table.command_line(stage_table.RANK, cfg, run_dir, rows=rows_path, name=name)
    return run_stage(run_dir, artifacts.rank_dir(name), stage_cfg, inputs, build, command=command, overwrite=overwrite)
