"""The one tokenization rule with every assistant turn supervised: the trainer's dataset and the
collated batch carry exactly the labels `tokenize_rows` gives (what Bergson scores), one supervised
span per assistant turn, so TRL adds or drops no mask of its own."""

from __future__ import annotations

import pytest
from helpers import small_training_setup

from playpen_attribution.core.modeling import load_tokenizer
from playpen_attribution.core.tokenization import IGNORE_INDEX, TokenizeConfig, tokenize_rows
from playpen_attribution.stages.train import build_trainer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_training_setup(tmp_path_factory)


def _three_turn(rows):
    out = []
    for r in rows:
        clues = r["prompt"]
        messages = [{"role": "user", "content": clues}, {"role": "assistant", "content": "GUESS: apple"},
                    {"role": "user", "content": clues}, {"role": "assistant", "content": "GUESS: dog"},
                    {"role": "user", "content": clues}]
        out.append(r | {"prompt_messages": messages})
    return out


@pytest.mark.parametrize("fmt", ["chat_template", "raw"])
def test_trainer_trains_on_every_assistant_turn_exactly_as_tokenized(setup, tmp_path, fmt):
    cfg, rows, model_dir = setup
    rows = _three_turn(rows)
    if fmt == "raw":  # the raw prompt must hold the messages' text, as a source renders it
        rows = [r | {"prompt": "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in r["prompt_messages"])
                     + "\n\nASSISTANT:"} for r in rows]
    cfg = cfg.model_copy(update={"tokenize": cfg.tokenize.model_copy(
        update={"format": fmt, "supervise": "all_assistant_turns", "max_length": 128})})
    trainer = build_trainer(rows, model_dir, cfg.train, cfg, tmp_path / fmt)
    expected = tokenize_rows(load_tokenizer(model_dir), rows, TokenizeConfig(format=fmt, max_length=128, supervise="all_assistant_turns"))
    assert trainer.train_dataset["labels"] == expected["labels"]
    for labels in expected["labels"]:
        starts = sum(1 for i, t in enumerate(labels) if t != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX))
        assert starts == 3  # two earlier assistant turns and the completion
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    for labels, mask in zip(batch["labels"], batch["attention_mask"], strict=True):
        kept = mask.bool()
        assert labels[kept].tolist() in expected["labels"]
