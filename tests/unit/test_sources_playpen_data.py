import json

import pytest
from pydantic import ValidationError

from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.sources.playpen_data import (
    PlaypenDataSource,
    load_playpen_data,
)


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return fast


def _episode(task, outcome="success", game="taboo", role="WordGuesser", experiment="0_high_en", guess="winter"):
    return {
        "messages": [
            {"role": "user", "content": "Guess the word.\n\nCLUE: cold season"},
            {"role": "assistant", "content": "GUESS: autumn"},
            {"role": "user", "content": "CLUE: snow"},
            {"role": "assistant", "content": f"GUESS: {guess}"},
        ],
        "meta": {
            "game": game,
            "game_role": role,
            "outcome": outcome,
            "experiment": experiment,
            "task_id": task,
            "model": "llama",
        },
    }


def _split_rows(n_tasks, offset=0):
    rows = []
    for t in range(n_tasks):
        task = offset + t
        rows.append(_episode(task, outcome="success" if t % 3 else "failure"))
        rows.append(_episode(task, outcome="success", guess=f"w{task}"))  # a second game of the same task
    rows.append(_episode(999, outcome="aborted"))
    rows.append(_episode(998, game="wordle"))
    rows.append(_episode(997, role="WordDescriber"))
    return rows


@pytest.fixture
def local_dataset(tmp_path):
    folder = tmp_path / "playpen"
    folder.mkdir()
    for split, rows in {"train": _split_rows(6), "validation": _split_rows(20, offset=100)}.items():
        with (folder / f"{split}.jsonl").open("w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    return folder


def test_filters_flattens_and_counts(local_dataset):
    out = load_playpen_data(PlaypenDataSource(dataset=str(local_dataset)), seed=1)
    assert out.dropped == {"aborted": 2, "other_game": 2, "other_role": 2}
    assert len(out.splits["train_base"]) == 12
    assert len(out.splits["attr_query"]) + len(out.splits["eval"]) == 40
    row = out.splits["train_base"][0]
    assert set(ROW_COLUMNS) <= set(row)
    assert row["prompt"] == (
        "USER: Guess the word.\n\nCLUE: cold season\n\nASSISTANT: GUESS: autumn\n\nUSER: CLUE: snow\n\nASSISTANT:"
    )  # the supervised turn's cue, exactly as the earlier assistant turn has its own
    assert row["completion"] == "GUESS: winter"
    assert row["game"] == "taboo" and row["game_role"] == "WordGuesser" and row["model"] == "llama"
    assert row["experiment"] == "0_high_en" and row["task_id"] == "0" and row["group_id"] == "0_high_en::0"
    assert row["target_word"] is None
    assert {r["outcome"] for rows in out.splits.values() for r in rows} == {"success", "failure"}


def test_validation_split_by_group_and_seeded(local_dataset):
    cfg = PlaypenDataSource(dataset=str(local_dataset))
    a = load_playpen_data(cfg, seed=5)
    query_groups = {r["group_id"] for r in a.splits["attr_query"]}
    eval_groups = {r["group_id"] for r in a.splits["eval"]}
    assert not query_groups & eval_groups
    assert len(query_groups) == 8 and len(eval_groups) == 12  # query_fraction 0.4 of 20 tasks
    assert a.splits == load_playpen_data(cfg, seed=5).splits
    assert a.splits != load_playpen_data(cfg, seed=6).splits


def test_example_ids_unique(local_dataset):
    out = load_playpen_data(PlaypenDataSource(dataset=str(local_dataset)), seed=1)
    ids = [r["example_id"] for rows in out.splits.values() for r in rows]
    assert len(ids) == len(set(ids))


def test_saved_dataset_dict_loads_the_same_rows(local_dataset, tmp_path):
    from datasets import Dataset, DatasetDict

    saved = tmp_path / "saved"
    DatasetDict(
        {
            s: Dataset.from_list(_split_rows(6) if s == "train" else _split_rows(20, 100))
            for s in ("train", "validation")
        }
    ).save_to_disk(str(saved))
    a = load_playpen_data(PlaypenDataSource(dataset=str(local_dataset)), seed=1)
    b = load_playpen_data(PlaypenDataSource(dataset=str(saved)), seed=1)
    assert a.splits == b.splits


def test_prompt_is_raw_and_prompt_messages_are_kept(local_dataset):
    from playpen_attribution.core.tokenization import prompt_ids

    tok = tiny_tokenizer()
    out = load_playpen_data(PlaypenDataSource(dataset=str(local_dataset)), seed=1, tokenizer=tok)
    row = out.splits["train_base"][0]
    assert row["prompt"].startswith("USER: Guess the word.") and "<|" not in row["prompt"]
    assert row["prompt_messages"] == _episode(0)["messages"][:3]
    assert row["completion"] == "GUESS: winter"
    # chat_template is applied once, by tokenization, to the kept messages (not to the raw prompt)
    templated = tok.apply_chat_template(row["prompt_messages"], add_generation_prompt=True, tokenize=False)
    assert templated.startswith("<|user|>Guess the word.") and "USER:" not in templated
    assert prompt_ids(tok, row, "chat_template") == tok(templated, add_special_tokens=False)["input_ids"]


def test_format_field_is_rejected():
    with pytest.raises(ValidationError, match=r"format\n  Extra inputs are not permitted"):
        PlaypenDataSource(format="chat_template")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PlaypenDataSource(format="raw")


def test_missing_assistant_turn_names_the_row(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    bad = _episode(1)
    bad["messages"] = bad["messages"][:1]
    for split in ("train", "validation"):
        (folder / f"{split}.jsonl").write_text(json.dumps(_episode(0)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match="train row 2: no assistant message"):  # 1-based, like every row number
        load_playpen_data(PlaypenDataSource(dataset=str(folder)), seed=1)


def test_missing_split_and_missing_folder(tmp_path):
    folder = tmp_path / "only_train"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(_episode(1)) + "\n")
    with pytest.raises(UserError, match="no 'validation' split"):
        load_playpen_data(PlaypenDataSource(dataset=str(folder)), seed=1)
    with pytest.raises(UserError, match="no such folder"):
        load_playpen_data(PlaypenDataSource(dataset=str(tmp_path / "absent")), seed=1)


def test_config_is_validated_without_io():
    cfg = PlaypenDataSource(dataset="/does/not/exist")
    assert cfg.kind == "playpen_data" and cfg.config_name == "interactions"
    with pytest.raises(ValidationError, match="query_fraction"):
        PlaypenDataSource(query_fraction=1.5)
    with pytest.raises(ValidationError, match="game_rol"):
        PlaypenDataSource(game_rol="WordGuesser")
