"""Stage `sae`: SAE fingerprints of every row of one split (and of the candidates), from one forward pass.

Reads `data/` (the `sae.split` rows, the pool by default, and the `candidates` split when data/ has
one), the base model and, with `sae.model: base_adapter`, `train_base/adapter`. Rows go through the
one tokenization function; the model runs only up to the deepest block it needs (block L, and with
`sae.extra_layers` every extra block, all hooked in the same forward pass), whose output
(blocks.L.hook_resid_post) is encoded by the SAE (a SAELens release, a SAELens folder, or a random
JumpReLU SAE; an extra layer gets the random SAE that `layer: L` would build);
`playpen_attribution.sae.features` says exactly what is computed and how it maps onto Hugging Face
`hidden_states`. The model and the SAEs are loaded once for both row sets.

Writes `sae/`: `features.npz` (`stats` rows x 10, `feature_mean` and `feature_presence` rows x
d_sae, `residual_mean` and `residual_last` rows x d_model, `pooled_tokens` rows, `topk_ids` and
`topk_values` rows x K) and `index.json` (`example_ids` in the arrays' row order, the statistic
names, SAE release/id, hook name, layer, widths, K, the split); per extra layer the same two files in
`sae/layer_<L>/`; with a candidates split, the candidates' features in `sae/candidates/` (and
`sae/candidates/layer_<L>/`), index `split: candidates`; with `sae.probe_layers`, `probe_residuals.npz`
(the pool rows' residuals at those blocks, pooled last token / mean / first response token, from the same
forward pass; `sae.probe_residuals`) for the predict stage's probe study and named probes (and the same file in
`sae/candidates/`, so a named probe `probe@<L>` ranks the candidates). The manifest records the SAE, hook,
layer, the extra layers, the count of rows with no pooled token (zeros, never dropped) and the
number of candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from playpen_attribution.config import ExperimentConfig
from playpen_attribution.core.rows import CANDIDATES
from playpen_attribution.errors import UserError
from playpen_attribution.run import artifacts, stage_table
from playpen_attribution.run.model_paths import base_model
from playpen_attribution.run.stage_folder import run_stage
from playpen_attribution.sae.features import extract_split, feature_index, open_extraction
from playpen_attribution.sae.probe_residuals import write_probe_residuals


def _write_layers(folder: Path, by_layer: dict, main: int, split: str, extra_layers: list[int],
                  probe_layers: Sequence[int] = ()) -> None:
    """The main layer's features in `folder`, each extra layer's in `folder/layer_<L>/`; the main index
    lists the extra layers and the probe study's layers (when there are any)."""
    for layer, (features, info) in by_layer.items():
        index = info | {"split": split} | ({"extra_layers": extra_layers} if layer == main and extra_layers else {})
        index |= {"probe_layers": list(probe_layers)} if layer == main and probe_layers else {}
        target = folder if layer == main else folder / artifacts.sae_layer_dir(layer)
        artifacts.write_features(target, features, feature_index(index))


def run(cfg: ExperimentConfig, run_dir: Path, *, overwrite: bool = False) -> Path:
    sae = cfg.sae
    if sae is None:
        raise UserError("the config has no 'sae' section; add one to run the sae stage")
    run_dir = Path(run_dir)
    base = base_model(cfg.model, run_dir)
    data_dir = run_dir / artifacts.DATA
    inputs = base.inputs({"data": data_dir})
    adapter = None
    if sae.model == "base_adapter":
        inputs["train_base"] = run_dir / artifacts.TRAIN_BASE
        adapter = run_dir / artifacts.TRAIN_BASE / artifacts.ADAPTER_DIR

    def build(out: Path) -> dict:
        rows = artifacts.load_split(data_dir, sae.split)
        has_candidates = sae.split != CANDIDATES and artifacts.split_path(data_dir, CANDIDATES).is_file()
        candidates = artifacts.load_split(data_dir, CANDIDATES) if has_candidates else []
        extraction = open_extraction(sae, cfg.tokenize, base.path, adapter, base.tokenizer)
        extra = sorted(layer for layer in extraction.saes if layer != extraction.layer)
        probes: dict = {}
        pool = extract_split(extraction, rows, f"sae.split = {sae.split!r}", probes)
        _write_layers(out, pool, extraction.layer, sae.split, extra, sae.probe_layers)
        info = pool[extraction.layer][1]
        manifest: dict = {"sae": info, "tokens_processed": int(pool[extraction.layer][0].stats[:, 0].sum())}  # seq_len
        if sae.probe_layers:
            write_probe_residuals(out, probes, pool[extraction.layer][0].example_ids)
            manifest["probe_layers"] = list(sae.probe_layers)
        if extra:
            manifest["extra_layers"] = {str(layer): pool[layer][1]["hook_name"] for layer in extra}
        if has_candidates:
            manifest["candidates"] = {"rows": len(candidates), "empty_pooled_rows": 0}
            if candidates:
                cand_probes: dict | None = {} if sae.probe_layers else None
                found = extract_split(extraction, candidates, f"{CANDIDATES} split", cand_probes)
                _write_layers(out / artifacts.CANDIDATES_DIR, found, extraction.layer, CANDIDATES, extra)
                if cand_probes is not None:  # the named probes (probe@<L>) rank the candidates too
                    write_probe_residuals(out / artifacts.CANDIDATES_DIR, cand_probes,
                                          found[extraction.layer][0].example_ids)
                manifest["candidates"]["empty_pooled_rows"] = found[extraction.layer][1]["empty_pooled_rows"]
                manifest["tokens_processed"] += int(found[extraction.layer][0].stats[:, 0].sum())
        return manifest

    stage_cfg = {
        "model": cfg.model.model_dump(mode="json"), "tokenize": cfg.tokenize.model_dump(mode="json"),
        "sae": sae.model_dump(mode="json"),
    }
    command = stage_table.command_line(stage_table.SAE, cfg, run_dir)
    return run_stage(run_dir, artifacts.SAE, stage_cfg, inputs, build, command=command, overwrite=overwrite)
