"""Every stage folder and file of a run by name, and the one writer and typed loader of each artifact.

No other module spells an artifact's file name or reads or writes one by hand; stages join on
`example_id`, never on row order. Loaders return small records (dataclasses) or id-keyed mappings;
a missing file is a UserError naming it. The folder names of per-model stages are derived here too
(`train_<arm>`, `eval_<model>`, `rank_<name>`, `seed_<s>`, and `layer_<L>` inside `sae/`), and
`training_stage` is the one mapping from an evaluated model's name to the training stage whose
adapter it loads.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import yaml

from playpen_attribution.core import atomic, locking
from playpen_attribution.core.jsonl import dumps, read_jsonl, write_jsonl
from playpen_attribution.errors import UserError

# --- stage folders inside a run directory ------------------------------------------------------
DATA = "data"
BASE_MODEL = "base_model"
TRAIN_BASE = "train_base"
ATTRIBUTE = "attribute"
BASELINES = "baselines"
SAE = "sae"
PREDICT = "predict"
SELECT = "select"
REPORT = "report"
JOBS = "jobs"  # the launcher's job logs and submitit pickles (launcher kind local / slurm); not a stage folder
TRACKING = "tracking"  # experiment tracking (`tracking.backend`): TensorBoard event files, wandb's offline runs
SHARED_MODELS = ("base", "base_adapter")
"""Evaluated models that are not arms: the base model and the base adapter."""


def train_arm_dir(arm: str) -> str:
    """Folder of the training on one arm."""
    return f"train_{arm}"


def eval_dir(model_name: str) -> str:
    """Folder of the evaluation of one model (base, base_adapter or an arm)."""
    return f"eval_{model_name}"


def rank_dir(name: str) -> str:
    """Folder of a ranking of new rows by a saved predictor (features + predictions, no gradients)."""
    return f"rank_{name}"


def sae_layer_dir(layer: int) -> str:
    """Subfolder of `sae/` (and of `sae/candidates/`) holding the features of an extra layer (`sae.extra_layers`)."""
    return f"layer_{layer}"


def lock_file(stage_folder: Path) -> Path:
    """The lock file of a stage folder's build: `.locks/<name>.lock` beside it (a seed's link to a shared
    folder is followed, so both paths share one lock)."""
    return locking.lock_path(Path(stage_folder).resolve())


def seed_dir(seed: int) -> str:
    """Folder of one sweep seed inside the run directory."""
    return f"seed_{seed}"


def training_stage(model_name: str) -> str | None:
    """The training stage whose adapter an evaluated model loads: none for `base`, `train_base` for
    `base_adapter`, `train_<arm>` for an arm."""
    if model_name == "base":
        return None
    return TRAIN_BASE if model_name == "base_adapter" else train_arm_dir(model_name)


def stage_kind(folder_name: str) -> tuple[str, str | None]:
    """(kind, model or arm) of a stage folder name: ('train', arm or None), ('eval', model), ('rank', name)
    or (name, None) for the other stages."""
    if folder_name == TRAIN_BASE:
        return "train", None
    for kind in ("train", "eval", "rank"):
        if folder_name.startswith(kind + "_"):
            return kind, folder_name.removeprefix(kind + "_")
    return folder_name, None


# --- files ---------------------------------------------------------------------------------------
EXPERIMENT_FILE = "experiment.yaml"   # the run's whole resolved config, in the run directory
OVERRIDES_FILE = "overrides.yaml"     # ... the config file, its --set overrides and the command line given
RUN_LOG = "run.log"                   # ... every command's log records at DEBUG, appended
TRAINING_LOSS_PLOT = "training_loss.png"  # report: loss per logged step of every training
CONFIG_FILE = "config.yaml"           # every stage folder: the stage's resolved config
MANIFEST_FILE = "manifest.json"       # every stage folder: inputs, outputs, hashes, versions, times
FORMAT_VERSION = 2
"""The stage-folder format, recorded in each manifest (`format_version`; none = 1). Bump it when what a folder
holds or how its config is written changes meaning: a folder of another format is refused (rebuild it with
--overwrite), so no reader keeps code for folders written before."""
BUILDING_MARK = ".building"           # every <stage>.part while it is built: the build's fingerprint
SPLITS_DIR = "splits"                 # data
MODEL_DIR = "model"                   # base_model
ADAPTER_DIR = "adapter"               # train
MERGED_DIR = "merged"
TRAIN_LOG = "train_log.json"
TRAINER_SCRATCH = "_trainer"          # train: the trainer's own output folder, removed after training
SCORES_FILE = "scores.jsonl"          # attribute
ROW_DIAGNOSTICS_FILE = "row_diagnostics.jsonl"
ATTRIBUTION_SUMMARY = "summary.json"
INDIVIDUAL_SCORES_FILE = "individual_scores.npz"
SCORE_HISTOGRAM_PLOT = "score_histogram.png"
SCORE_VS_LENGTH_PLOT = "score_vs_length.png"
BERGSON_DIR = "bergson"
METHODS_DIR = "methods"                # attribute with several methods: methods/<method>/ (scores, summary, bergson/)
ROW_BASELINES_FILE = "row_baselines.jsonl"   # baselines
SAE_FEATURES = "features.npz"         # sae, rank_<name>
SAE_INDEX = "index.json"
PREDICTOR_FILE = "predictor.joblib"   # predict
PREDICTED_SCORES = "predicted_scores.jsonl"
CANDIDATE_SCORES = "candidate_scores.jsonl"  # predict, when data/ has a candidates split
CANDIDATES_DIR = "candidates"         # sae: the candidates split's features (same files as sae/ itself)
PROBE_RESIDUALS = "probe_residuals.npz"  # sae with sae.probe_layers: pooled residuals per layer, features' row order
PROBE_STUDY = "probe_study.json"      # predict (from probe_residuals), report: the probe study's table rows
PROBE_STUDY_PLOT = "probe_study.png"  # predict, report: Spearman over layers, one line per pooling
RANKED_FILE = "ranked.jsonl"          # rank_<name>
SELECTIONS_FILE = "selections.json"   # select
PREDICTIONS_FILE = "predictions.jsonl"  # evaluate
METRICS_FILE = "metrics.json"         # evaluate, predict
BENCHMARKS_FILE = "benchmarks.json"   # evaluate with evaluate.benchmarks: lm-eval results per task
BENCHMARK_SAMPLES_FILE = "benchmark_samples.jsonl"  # ... and its per-item scores (task, doc_id, filter)
REPORT_MD = "report.md"               # report
REPORT_JSON = "report.json"
DIFFERENCES_PLOT = "differences.png"  # arm − vs per seed, with the across-seed interval
ACCURACY_PLOT = "accuracy.png"
EVAL_LOSS_PLOT = "eval_loss.png"
ACCURACY_VS_K_PLOT = "accuracy_vs_k.png"
BENCHMARKS_PLOT = "benchmarks.png"

BASELINE_RANKINGS = {"loss": "loss", "embedding": "embedding_cosine"}
"""Ranking name -> the field of row_baselines.jsonl it reads."""


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: no {what} here (the stage that writes it has not run)")
    return path


def _write_json(path: Path, data: dict) -> None:
    path.write_text(dumps(data, indent=1) + "\n")


def _read_json(path: Path, what: str):
    """A JSON file the package wrote; a damaged one (cut short, not JSON) is a UserError naming it."""
    try:
        return json.loads(_need(path, what).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: damaged {what} (not valid JSON: {exc}); rebuild the stage with --overwrite") from None


def _finite_or_none(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# --- run config and stage configs --------------------------------------------------------------
def write_experiment_config(run_dir: Path, config_yaml: str) -> None:
    atomic.write_text(Path(run_dir) / EXPERIMENT_FILE, config_yaml)


def write_overrides(run_dir: Path, origin_yaml: str) -> None:
    """The config file a run was given, its --set overrides and the command line (beside experiment.yaml)."""
    atomic.write_text(Path(run_dir) / OVERRIDES_FILE, origin_yaml)


def write_building_mark(part_dir: Path, fingerprint: str) -> None:
    (Path(part_dir) / BUILDING_MARK).write_text(fingerprint + "\n")


def read_building_mark(part_dir: Path) -> str | None:
    """The fingerprint of the build that left `part_dir`, None when it left no mark."""
    path = Path(part_dir) / BUILDING_MARK
    return path.read_text().strip() if path.is_file() else None


def remove_building_mark(part_dir: Path) -> None:
    (Path(part_dir) / BUILDING_MARK).unlink(missing_ok=True)


def write_stage_config(stage_dir: Path, config_yaml: str) -> None:
    (Path(stage_dir) / CONFIG_FILE).write_text(config_yaml)


def load_stage_config(stage_dir: Path) -> dict:
    """The resolved config a stage folder was built with (its config.yaml); a damaged one is a UserError."""
    path = _need(Path(stage_dir) / CONFIG_FILE, "stage config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: damaged stage config (not valid YAML: {str(exc).splitlines()[0]}); rebuild the "
                        "stage with --overwrite") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: damaged stage config (not a mapping); rebuild the stage with --overwrite")
    return data


# --- manifests -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """A stage folder's manifest.json; `fields` holds every entry, the stage's own ones included."""

    stage: str
    fingerprint: str
    content_hash: str
    consumed: dict
    """Input name -> {path, content_hash} of each upstream folder it read."""
    produced: dict
    """File (relative path) -> {bytes, sha256}."""
    wall_seconds: float
    fields: dict
    format_version: int = FORMAT_VERSION


def write_manifest(stage_dir: Path, manifest: dict) -> None:
    (Path(stage_dir) / MANIFEST_FILE).write_text(dumps(manifest, indent=2) + "\n")


def load_manifest(stage_dir: Path) -> Manifest:
    """A stage folder's manifest; a damaged one (cut short, not JSON, a required field missing) or one of another
    stage-folder format (`FORMAT_VERSION`) is a UserError."""
    path = Path(stage_dir) / MANIFEST_FILE
    raw = _read_json(path, "stage manifest")
    missing = [k for k in ("stage", "fingerprint", "content_hash") if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise UserError(f"{path}: damaged stage manifest (no {', '.join(missing)}); rebuild the stage with --overwrite")
    version = raw.get("format_version", 1)
    if version != FORMAT_VERSION:
        raise UserError(f"{Path(stage_dir)}: a stage folder of format {version}, written by another version of the tool "
                        f"(this one reads format {FORMAT_VERSION}); rebuild it with --overwrite (or remove it)")
    return Manifest(stage=raw["stage"], fingerprint=raw["fingerprint"], content_hash=raw["content_hash"],
                    consumed=raw.get("consumed") or {}, produced=raw.get("produced") or {},
                    wall_seconds=float(raw.get("wall_seconds") or 0.0), fields=raw, format_version=version)


def is_stage_folder(path: Path) -> bool:
    """A finished stage folder (it has a manifest)."""
    return (Path(path) / MANIFEST_FILE).is_file()


# --- data: the splits ----------------------------------------------------------------------------
def split_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / SPLITS_DIR / f"{split}.jsonl"


def write_split(data_dir: Path, split: str, rows: list[dict]) -> None:
    split_path(data_dir, split).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(split_path(data_dir, split), rows)


def load_split(data_dir: Path, split: str) -> list[dict]:
    """Rows of one split written by the data stage."""
    path = split_path(data_dir, split)
    if not path.is_file():
        known = sorted(p.stem for p in (Path(data_dir) / SPLITS_DIR).glob("*.jsonl"))
        raise UserError(f"unknown split '{split}' in {data_dir} (have: {', '.join(known) or 'none'})")
    return read_jsonl(path)


def load_planted(data_dir: Path) -> dict[str, list[str]]:
    """Planted-row kind -> example_ids, as the source recorded them in the data manifest (demo: the
    harmful rows whose truth is known); empty for sources that plant nothing."""
    return dict((load_manifest(data_dir).fields.get("source") or {}).get("planted") or {})


# --- train ---------------------------------------------------------------------------------------
def write_train_log(train_dir: Path, entries: list[dict]) -> None:
    (Path(train_dir) / TRAIN_LOG).write_text(dumps(entries, indent=1) + "\n")


def load_train_log(train_dir: Path) -> list[dict]:
    """The trainer's logged steps (loss, learning rate, epoch, ...)."""
    return _read_json(Path(train_dir) / TRAIN_LOG, "training log")


# --- rankings: attribution scores, baselines, predictions ----------------------------------------
def write_scores(attribute_dir: Path, scores: dict[str, float], ranks: dict[str, int]) -> None:
    """example_id, score (null when not finite) and rank per row, in `scores` order."""
    write_jsonl(Path(attribute_dir) / SCORES_FILE, [
        {"example_id": eid, "score": _finite_or_none(s), "rank": ranks[eid]} for eid, s in scores.items()])


def load_scores(attribute_dir: Path) -> dict[str, float]:
    """example_id -> attribution score (NaN kept as NaN)."""
    return load_ranking(Path(attribute_dir) / SCORES_FILE, "score")


def method_dir(attribute_dir: Path, method: str) -> Path:
    """The folder of one method's files when the attribute stage scores with several (`attribute.methods`)."""
    return Path(attribute_dir) / METHODS_DIR / method


def load_method_ranking(run_dir: Path, ranking: str) -> dict[str, float]:
    """The ranking `attribution@<method>`: that method's scores in `run_dir`'s attribute folder."""
    method = ranking.split("@", 1)[1]
    path = method_dir(Path(run_dir) / ATTRIBUTE, method) / SCORES_FILE
    if not path.is_file():
        raise UserError(f"{path}: no scores of method {method!r}; rerun `attribute` with it in attribute.methods")
    return load_ranking(path, "score")


def write_row_diagnostics(attribute_dir: Path, records: list[dict]) -> None:
    write_jsonl(Path(attribute_dir) / ROW_DIAGNOSTICS_FILE, records)


def load_row_diagnostics(attribute_dir: Path) -> list[dict]:
    """Per pool row, in rank order: example_id, rank, score, loss, length, outcome, group_id."""
    return read_jsonl(_need(Path(attribute_dir) / ROW_DIAGNOSTICS_FILE, "row diagnostics"))


def write_attribution_summary(attribute_dir: Path, summary: dict) -> None:
    _write_json(Path(attribute_dir) / ATTRIBUTION_SUMMARY, summary)


def load_attribution_summary(attribute_dir: Path) -> dict:
    """Coverage, range, top-k composition, AUROC and correlations of the scores (see attribution.diagnostics)."""
    return _read_json(Path(attribute_dir) / ATTRIBUTION_SUMMARY, "attribution summary")


def write_individual_scores(attribute_dir: Path, example_ids: list[str], query_ids: list[str], scores) -> None:
    np.savez(Path(attribute_dir) / INDIVIDUAL_SCORES_FILE, example_ids=np.array(example_ids),
             query_ids=np.array(query_ids), scores=scores)


def write_row_baselines(baselines_dir: Path, records: list[dict]) -> None:
    """example_id, length, loss, embedding_cosine per pool row (non-finite values as null)."""
    write_jsonl(Path(baselines_dir) / ROW_BASELINES_FILE, [
        {k: _finite_or_none(v) if k in ("loss", "embedding_cosine") else v for k, v in r.items()} for r in records])


def write_predicted_scores(predict_dir: Path, records: list[dict]) -> None:
    write_jsonl(Path(predict_dir) / PREDICTED_SCORES, records)


def write_candidate_scores(predict_dir: Path, records: list[dict]) -> None:
    """example_id, predicted, probe for every row of the candidates split: the predictor and the probe
    fitted on every scored pool row (a candidate never reaches a fit, so no cross-fitting is needed)."""
    write_jsonl(Path(predict_dir) / CANDIDATE_SCORES, records)


def write_ranked(rank_folder: Path, predicted: dict[str, float]) -> None:
    """The rows best first: example_id, predicted, rank."""
    ranked = sorted(predicted.items(), key=lambda kv: -kv[1])
    write_jsonl(Path(rank_folder) / RANKED_FILE,
                [{"example_id": eid, "predicted": p, "rank": i + 1} for i, (eid, p) in enumerate(ranked)])


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


RANKING_FILES = {"attribution": (ATTRIBUTE, SCORES_FILE, "score"),
                 "loss": (BASELINES, ROW_BASELINES_FILE, "loss"),
                 "embedding": (BASELINES, ROW_BASELINES_FILE, "embedding_cosine"),
                 "sae": (PREDICT, PREDICTED_SCORES, "predicted"),
                 "probe": (PREDICT, PREDICTED_SCORES, "probe")}
"""Ranking read from a stage folder -> (stage, file, field)."""

CANDIDATE_RANKING_FILES = {"sae": (PREDICT, CANDIDATE_SCORES, "predicted"),
                           "probe": (PREDICT, CANDIDATE_SCORES, "probe")}
"""Ranking of the candidates split (rows never scored by gradients) -> (stage, file, field)."""


def load_candidate_ranking(run_dir: Path, name: str) -> dict[str, float]:
    """A predictor's ranking of the candidates split (CANDIDATE_RANKING_FILES), from `run_dir`."""
    stage, file, column = CANDIDATE_RANKING_FILES[name]
    path = Path(run_dir) / stage / file
    if not path.is_file():
        raise UserError(f"{path}: no ranking of the candidates split; rerun `predict` (data/ has a candidates split)")
    return load_ranking(path, column)


def load_stage_ranking(run_dir: Path, name: str) -> dict[str, float]:
    """A ranking named in RANKING_FILES, from its stage folder in `run_dir`."""
    stage, file, column = RANKING_FILES[name]
    return load_ranking(Path(run_dir) / stage / file, column)


# --- select --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmSelection:
    """One arm of one seed: its rows in rank/draw order, their counts, and its resolved spec."""

    example_ids: list[str]
    rows: int
    tokens: int
    outcomes: dict[str, int]
    strata: dict[str, int]
    kind: str
    ranking: str | None
    n: int | None
    ranks: list[int] | None
    beyond: int | None
    versus: list[str]
    """The arms this one is tested against in the report, the main comparison first."""
    family: str | None
    k: int | None
    seed: int
    matching: dict | None = None
    """Random arms matched on strata: matched, unmatched_filled, shortfall_by_stratum (and token matching)."""
    completion_tokens: int | None = None
    """Supervised tokens of the arm's rows (its completion-token budget); None in selections from before it."""
    split: str = "train_base"
    """The split of data/ the rows come from: train_base (the pool), or candidates for a predictor arm."""

    def summary(self) -> dict:
        """Everything but the ids (for manifests and the report)."""
        return {k: v for k, v in asdict(self).items()
                if k != "example_ids" and (k not in ("matching", "completion_tokens") or v is not None)
                and (k != "split" or v != "train_base")}


def write_selections(select_dir: Path, selections: dict[str, ArmSelection]) -> None:
    """The selection file; `matching` only where set, `split` only where not the pool (files from before it)."""
    _write_json(Path(select_dir) / SELECTIONS_FILE, {
        name: {k: v for k, v in asdict(arm).items()
               if (k != "matching" or v is not None) and (k != "split" or v != "train_base")}
        for name, arm in selections.items()})


def load_selections(select_dir: Path) -> dict[str, ArmSelection]:
    """arm name -> its selection, in plan order."""
    raw = _read_json(Path(select_dir) / SELECTIONS_FILE, "selection")
    names = {f.name for f in fields(ArmSelection)}
    return {name: ArmSelection(**{k: v for k, v in arm.items() if k in names}) for name, arm in raw.items()}


# --- evaluate ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One eval row: its loss and, with generation, what the model wrote and whether it was right."""

    example_id: str
    loss: float | None
    generated: str | None = None
    predicted: str | None = None
    gold: str | None = None
    target_word: str | None = None
    correct: bool | None = None
    target_correct: bool | None = None
    choice_rank: int | None = None
    """The target word's rank among the row's choices (1 = first; the choice metric, `evaluate.choices`)."""
    choice_correct: bool | None = None
    choices: int | None = None
    """How many words the target was ranked among."""


@dataclass(frozen=True)
class EvalMetrics:
    """An evaluation's metrics.json (generation fields are None for loss-only runs)."""

    model: str
    seed: int | None
    eval_loss: float | None
    loss_rows: int
    loss_non_finite: int
    correct: int | None = None
    total: int | None = None
    accuracy: float | None = None
    no_guess: int | None = None
    target_correct: int | None = None
    target_total: int | None = None
    target_accuracy: float | None = None
    choice_correct: int | None = None
    choice_total: int | None = None
    choice_accuracy: float | None = None
    choice_mrr: float | None = None
    """Mean reciprocal rank of the target among its choices."""
    choice_skipped: int | None = None
    speed: dict = field(default_factory=dict)


def write_predictions(eval_folder: Path, predictions: list[Prediction]) -> None:
    """One line per eval row: example_id and loss, plus every field a metric set (generation, choice)."""
    write_jsonl(Path(eval_folder) / PREDICTIONS_FILE, [
        {k: v for k, v in asdict(p).items() if v is not None or k == "loss"} for p in predictions])


def load_predictions(eval_folder: Path) -> list[Prediction]:
    """Per-row predictions of one evaluation, in eval-split order."""
    rows = read_jsonl(_need(Path(eval_folder) / PREDICTIONS_FILE, "predictions"))
    return [Prediction(**r) for r in rows]


def write_metrics(eval_folder: Path, metrics: EvalMetrics) -> None:
    _write_json(Path(eval_folder) / METRICS_FILE, {
        k: v for k, v in asdict(metrics).items() if v is not None or k in ("model", "seed", "eval_loss")})


def load_metrics(eval_folder: Path) -> EvalMetrics:
    raw = _read_json(Path(eval_folder) / METRICS_FILE, "evaluation metrics")
    return EvalMetrics(**raw)


def write_benchmarks(eval_folder: Path, results: dict, samples: list[dict], switches: dict) -> None:
    """lm-eval's results per task (metrics with the harness's stderr, n), the switches used, and per-item scores."""
    _write_json(Path(eval_folder) / BENCHMARKS_FILE, {"tasks": results, "switches": switches})
    write_jsonl(Path(eval_folder) / BENCHMARK_SAMPLES_FILE, samples)


def has_benchmarks(eval_folder: Path) -> bool:
    return (Path(eval_folder) / BENCHMARKS_FILE).is_file()


def load_benchmarks(eval_folder: Path) -> tuple[dict, list[dict]]:
    """({tasks, switches}, per-item records {task, doc_id, filter, scores}) of one evaluation."""
    raw = _read_json(Path(eval_folder) / BENCHMARKS_FILE, "benchmark results")
    samples = read_jsonl(_need(Path(eval_folder) / BENCHMARK_SAMPLES_FILE, "benchmark samples"))
    return raw, samples


# --- sae and rank_<name>: features -----------------------------------------------------------------
FEATURE_ARRAYS = ("stats", "feature_mean", "feature_presence", "residual_mean", "pooled_tokens")
OPTIONAL_FEATURE_ARRAYS = ("residual_last", "topk_ids", "topk_values")
"""Arrays added later: feature files written before them lack them (loaded as None)."""


@dataclass
class RowFeatures:
    """SAE fingerprints of rows, every array in `example_ids` order."""

    example_ids: list[str]
    stats: np.ndarray  # rows x len(stat_names)
    feature_mean: np.ndarray  # rows x d_sae
    feature_presence: np.ndarray  # rows x d_sae
    residual_mean: np.ndarray  # rows x d_model
    pooled_tokens: np.ndarray  # rows
    residual_last: np.ndarray | None = None
    """rows x d_model: the residual at each row's last pooled token (zeros for a row with none)."""
    topk_ids: np.ndarray | None = None
    """rows x K (int): the K features of largest mean activation, largest first; -1 pads a row with fewer
    than K active features."""
    topk_values: np.ndarray | None = None
    """rows x K: their mean activations (0 where the id is -1)."""


def write_features(folder: Path, features: RowFeatures, index: dict) -> None:
    """`features.npz` (arrays in row order) and `index.json` (example_ids in that order, plus `index`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(features, name) for name in FEATURE_ARRAYS + OPTIONAL_FEATURE_ARRAYS}
    np.savez_compressed(folder / SAE_FEATURES, **{k: v for k, v in arrays.items() if v is not None})
    _write_json(folder / SAE_INDEX, {"example_ids": features.example_ids, **index})


def load_features(folder: Path) -> tuple[RowFeatures, dict]:
    """Features and index written by `write_features`, checked for matching row counts."""
    folder = Path(folder)
    index_path, npz_path = folder / SAE_INDEX, folder / SAE_FEATURES
    if not index_path.is_file() or not npz_path.is_file():
        raise UserError(f"{folder} holds no SAE features ({SAE_FEATURES} + {SAE_INDEX}); run `sae`")
    index = _read_json(index_path, "SAE feature index")
    with np.load(npz_path) as npz:
        missing = [name for name in FEATURE_ARRAYS if name not in npz.files]
        if missing:
            raise UserError(f"{npz_path}: no array(s) {', '.join(missing)}; rerun `sae` with --overwrite")
        arrays = {name: npz[name] for name in FEATURE_ARRAYS + OPTIONAL_FEATURE_ARRAYS if name in npz.files}
    ids = index["example_ids"]
    for name, value in arrays.items():
        if value.shape[0] != len(ids):
            raise UserError(f"{npz_path}: '{name}' has {value.shape[0]} rows but {index_path} lists {len(ids)} example_ids")
    if len(set(ids)) != len(ids):
        raise UserError(f"{index_path}: example_ids are not unique")
    return RowFeatures(example_ids=list(ids), **arrays), index


# --- predict: the saved predictor and its metrics ------------------------------------------------
def write_predictor(predict_dir: Path, pipeline, spec: dict) -> None:
    """The fitted sklearn pipeline and the feature spec it expects, in one joblib file."""
    import joblib

    joblib.dump({"pipeline": pipeline, "spec": spec}, Path(predict_dir) / PREDICTOR_FILE)


def load_predictor(predict_dir: Path) -> dict:
    """{"pipeline": the fitted sklearn pipeline, "spec": the feature spec it was fitted on}."""
    import joblib

    path = Path(predict_dir) / PREDICTOR_FILE
    if not path.is_file():
        raise UserError(f"{path}: no saved predictor; run `predict` first")
    return joblib.load(path)


def write_predictor_metrics(predict_dir: Path, metrics: dict) -> None:
    _write_json(Path(predict_dir) / METRICS_FILE, metrics)


def write_probe_study(predict_dir: Path, study: dict) -> None:
    _write_json(Path(predict_dir) / PROBE_STUDY, study)


def load_probe_study(predict_dir: Path) -> dict | None:
    """The probe study's table (predict with sae.probe_layers); None when the predict folder has none."""
    path = Path(predict_dir) / PROBE_STUDY
    return _read_json(path, "probe study") if path.is_file() else None


def load_predictor_metrics(predict_dir: Path) -> dict:
    """Held-out metrics of the SAE predictor and its baselines (see sae.predictor)."""
    return _read_json(Path(predict_dir) / METRICS_FILE, "predictor metrics")


# --- report --------------------------------------------------------------------------------------
def write_report(report_dir: Path, report: dict, markdown: str) -> None:
    _write_json(Path(report_dir) / REPORT_JSON, report)
    (Path(report_dir) / REPORT_MD).write_text(markdown)


def load_report(report_dir: Path) -> dict:
    return _read_json(Path(report_dir) / REPORT_JSON, "report")
