"""The fast batching paths change speed, not results: same loss on the same rows."""

import pytest
import torch
from helpers import small_training_setup

from playpen_attribution.stages.train import build_trainer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_training_setup(tmp_path_factory)


def _loss(cfg, rows, model_dir, batching, tmp_path):
    train = cfg.train.model_copy(update={"batching": batching})
    trainer = build_trainer(rows, model_dir, train, cfg, tmp_path / batching)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model = trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(model, batch).item(), batch


@pytest.mark.parametrize("batching", ["length_grouped", "padding_free"])
def test_same_loss_as_padded_batches(setup, tmp_path, batching):
    cfg, rows, model_dir = setup
    padded, padded_batch = _loss(cfg, rows, model_dir, "padded", tmp_path)
    other, batch = _loss(cfg, rows, model_dir, batching, tmp_path)
    assert other == pytest.approx(padded, rel=1e-5)
    if batching == "padding_free":
        assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # one flat row, no pad tokens
        assert batch["input_ids"].numel() == int(padded_batch["attention_mask"].sum())


def test_length_grouped_sampler_is_used(setup, tmp_path):
    cfg, rows, model_dir = setup
    trainer = build_trainer(rows, model_dir, cfg.train.model_copy(update={"batching": "length_grouped"}), cfg, tmp_path)
    assert type(trainer._get_train_sampler()).__name__ == "LengthGroupedSampler"
