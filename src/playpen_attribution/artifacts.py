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
