"""Stage `sae`: SAE fingerprints of every row of one split, from one forward pass up to block L.

Reads `data/` (the `sae.split` rows, the pool by default), the base model and, with
`sae.model: base_adapter`, `train_base/adapter`. Rows go through the one tokenization function; the
model runs only up to block L, whose output (blocks.L.hook_resid_post) is encoded by the SAE (a
SAELens release, a SAELens folder, or a random JumpReLU SAE); `playpen_attribution.sae.features`
says exactly what is computed and how it maps onto Hugging Face `hidden_states`.

Writes `sae/`: `features.npz` (`stats` rows x 10, `feature_mean` and `feature_presence` rows x
d_sae, `residual_mean` rows x d_model, `pooled_tokens` rows) and `index.json` (`example_ids` in
the arrays' row order, the statistic names, SAE release/id, hook name, layer and widths); the
manifest records the SAE, hook, layer and the count of rows with no pooled token.
"""

from __future__ import annotations

from pathlib import Path

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts
from playpen_attribution.run.model_paths import model_path as base_model_path
from playpen_attribution.run.model_paths import tokenizer_path, with_base_model
from playpen_attribution.run.stage_folder import cli_command, run_stage
from playpen_attribution.sae.features import extract_rows, feature_index


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    if cfg.sae is None:
        raise UserError("the config has no 'sae' section; add one to run the sae stage")
    run_dir = Path(run_dir)
    model_path = base_model_path(cfg.model.base, run_dir)
    data_dir = run_dir / artifacts.DATA
    inputs = with_base_model(cfg.model.base, run_dir, {"data": data_dir})
    adapter = None
    if cfg.sae.model == "base_adapter":
        inputs["train_base"] = run_dir / artifacts.TRAIN_BASE
        adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR

    def build(out: Path) -> dict:
        rows = artifacts.load_split(data_dir, cfg.sae.split)
        features, info = extract_rows(cfg.sae, cfg.tokenize, model_path, adapter, rows,
                                       tokenizer_path(cfg.model.base, cfg.model.tokenizer, run_dir))
        artifacts.write_features(out, features, feature_index(info | {"split": cfg.sae.split}))
        return {"sae": info}

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "sae": cfg.sae.model_dump(mode="json"),
    }
    command = cli_command("sae", run_dir, seed=cfg.run_seed if cfg.sweep.retrain_base else None)
    return run_stage(run_dir, artifacts.SAE, stage_cfg, inputs, build, command=command, overwrite=overwrite)
