"""Names of every stage folder and file, in one place, and the typed loaders that read them back.

No other module spells an artifact's file name; stages join on `example_id`, never on row order.
"""

from __future__ import annotations

import json
from pathlib import Path

from playpen_attribution.errors import UserError
from playpen_attribution.jsonl import read_jsonl

# Stage folders inside a run directory.
DATA = "data"
BASE_MODEL = "base_model"
TRAIN_BASE = "train_base"
ATTRIBUTE = "attribute"
SELECT = "select"
REPORT = "report"


def train_arm_dir(arm: str) -> str:
    """Folder of the continued training on one arm."""
    return f"train_{arm}"


def eval_dir(model_name: str) -> str:
    """Folder of the evaluation of one model (base, base_adapter or an arm)."""
    return f"eval_{model_name}"


# Files every stage folder holds.
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"

# data
SPLITS_DIR = "splits"
# base_model
MODEL_DIR = "model"
# train
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
TRAIN_LOG = "train_log.json"
# attribute
SCORES_FILE = "scores.jsonl"
ATTRIBUTION_SUMMARY = "summary.json"
BERGSON_DIR = "bergson"
# select
SELECTIONS_FILE = "selections.json"
# evaluate
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
# report
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
ACCURACY_PLOT = "accuracy.png"


def split_path(data_dir: Path, split: str) -> Path:
    return data_dir / SPLITS_DIR / f"{split}.jsonl"


def load_split(data_dir: Path, split: str) -> list[dict]:
    """Rows of one split written by the data stage."""
    path = split_path(data_dir, split)
    if not path.is_file():
        known = sorted(p.stem for p in (data_dir / SPLITS_DIR).glob("*.jsonl"))
        raise UserError(f"unknown split '{split}' in {data_dir} (have: {', '.join(known) or 'none'})")
    return read_jsonl(path)


def load_manifest(stage_dir: Path) -> dict:
    return json.loads((stage_dir / MANIFEST_FILE).read_text())


def load_scores(attribute_dir: Path) -> dict[str, float]:
    """example_id -> attribution score (NaN kept as NaN)."""
    return {r["example_id"]: float("nan") if r["score"] is None else r["score"] for r in read_jsonl(attribute_dir / SCORES_FILE)}


def load_selections(select_dir: Path) -> dict[str, dict]:
    """arm name -> {example_ids, rows, tokens, ...}."""
    return json.loads((select_dir / SELECTIONS_FILE).read_text())


def load_metrics(eval_stage_dir: Path) -> dict:
    return json.loads((eval_stage_dir / METRICS_FILE).read_text())


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# sae (SAE fingerprints) and predict (attribution predictor)
SAE = "sae"
PREDICT = "predict"
SAE_FEATURES = "features.npz"
SAE_INDEX = "index.json"
PREDICTOR_FILE = "predictor.joblib"
PREDICTED_SCORES = "predicted_scores.jsonl"
RANKED_FILE = "ranked.jsonl"


def rank_dir(name: str) -> str:
    """Folder of a ranking of new rows by a saved predictor (features + predictions, no gradients)."""
    return f"rank_{name}"

# attribute: diagnostics and per-query scores
ROW_DIAGNOSTICS_FILE = "row_diagnostics.jsonl"
INDIVIDUAL_SCORES_FILE = "individual_scores.npz"
SCORE_HISTOGRAM_PLOT = "score_histogram.png"
SCORE_VS_LENGTH_PLOT = "score_vs_length.png"

# sweep: one folder per seed holding that seed's select/, train_<arm>/ and eval_<arm>/ (and, with
# sweep.retrain_base, its own train_base/, attribute/, baselines/, eval_base_adapter/)
BASELINES = "baselines"
ROW_BASELINES_FILE = "row_baselines.jsonl"
BASELINE_RANKINGS = {"loss": "loss", "embedding": "embedding_cosine"}
"""Ranking name -> the field of row_baselines.jsonl it reads."""
EVAL_LOSS_PLOT = "eval_loss.png"
ACCURACY_VS_K_PLOT = "accuracy_vs_k.png"


def seed_dir(seed: int) -> str:
    """Folder of one sweep seed inside the run directory."""
    return f"seed_{seed}"


def load_ranking(path: Path, field: str = "score") -> dict[str, float]:
    """example_id -> score from a JSONL file with `example_id` and `field` (null -> NaN, ranked last)."""
    out: dict[str, float] = {}
    for line_no, row in enumerate(read_jsonl(path), start=1):
        if "example_id" not in row or field not in row:
            raise UserError(f"{path}: row {line_no} lacks 'example_id' or '{field}'")
        value = row[field]
        if value is not None and not isinstance(value, (int, float)):
            raise UserError(f"{path}: row {line_no} ({row['example_id']}): '{field}' = {value!r} is not a number")
        out[row["example_id"]] = float("nan") if value is None else float(value)
    return out


def load_predictions(eval_stage_dir: Path) -> list[dict]:
    """Per-row predictions (example_id, correct, loss, ...) of one evaluation."""
    return read_jsonl(eval_stage_dir / PREDICTIONS_FILE)


def load_stage_config(stage_dir: Path) -> dict:
    """The resolved config a stage folder was built with (its config.yaml)."""
    import yaml

    return yaml.safe_load((stage_dir / CONFIG_FILE).read_text()) or {}
