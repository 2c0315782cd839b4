"""`train.keep_best`: the saved adapter is the epoch checkpoint with the lowest loss on the named split, and the
default split (`validation`) shares no row or group with the reported eval."""

from __future__ import annotations

import json

import pytest
from helpers import small_demo_dict, small_training_setup

from playpen_attribution.config import parse_config
from playpen_attribution.core.rows import VALIDATION
from playpen_attribution.stages.data import clean_splits, load_source, with_validation
from playpen_attribution.stages.train import build_trainer, train_rows


def test_validation_split_shares_no_row_or_group_with_eval():
    cfg = parse_config(small_demo_dict(data={"validation_fraction": 0.3}, train={"keep_best": "validation"}))
    splits, _ = clean_splits(cfg, load_source(cfg))
    out = with_validation(cfg, splits)
    validation, reported = out[VALIDATION], out["eval"]
    assert validation and reported and len(validation) + len(reported) == len(splits["eval"])
    assert not {r["example_id"] for r in validation} & {r["example_id"] for r in reported}
    assert not {r["group_id"] for r in validation} & {r["group_id"] for r in reported}
    assert with_validation(parse_config(small_demo_dict()), splits) == splits  # none by default


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_training_setup(tmp_path_factory)


def _loss_on(cfg, train, model_dir, adapter, rows, tmp_path) -> float:
    trainer = build_trainer(rows, model_dir, train, cfg, tmp_path / "judge", init_adapter=adapter, best_rows=rows)
    return trainer.evaluate()["eval_loss"]


def test_the_saved_adapter_is_the_checkpoint_with_the_lowest_loss_on_the_split(setup, tmp_path):
    cfg, rows, model_dir = setup
    # trained towards a wrong word, judged on the right one: the judged loss falls while the format is learned,
    # then rises, so the best epoch is not the last one
    wrong = [r | {"completion": "GUESS: " + rows[(i + 1) % len(rows)]["target_word"]} for i, r in enumerate(rows)]
    train = cfg.train.model_copy(update={"keep_best": "eval", "epochs": 6, "learning_rate": 2e-2, "batch_size": 4,
                                         "scheduler": "constant", "warmup_ratio": 0.0})
    out = tmp_path / "out"
    out.mkdir()
    record = train_rows(wrong, model_dir, train, cfg, out, best_rows=rows)["keep_best"]
    losses = {int(step): loss for step, loss in record["eval_losses"].items()}
    assert len(losses) == 6 and record["split"] == "eval" and record["rows"] == len(rows)
    best_step = min(losses, key=losses.get)
    assert record["best_step"] == best_step != max(losses)  # a checkpoint before the last one
    assert record["best_eval_loss"] == pytest.approx(losses[best_step])
    saved = _loss_on(cfg, train, model_dir, out / "adapter", rows, tmp_path)
    assert saved == pytest.approx(losses[best_step], rel=1e-4)
    assert saved < losses[max(losses)]
    json.dumps(record)  # goes into the manifest as is
