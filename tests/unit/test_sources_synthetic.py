import pytest

from playpen_attribution.core.jsonl import write_jsonl
from playpen_attribution.core.rows import make_example_id
from playpen_attribution.errors import UserError
from playpen_attribution.sources.synthetic import (
    SyntheticAppend,
    append_synthetic,
    guess_word,
)


def _row(target, guess, outcome="success", source="pool"):
    return {
        "example_id": make_example_id(source, target, guess, outcome),
        "prompt": f"USER: CLUE: something about {target}",
        "completion": f"GUESS: {guess}",
        "game": "taboo",
        "game_role": "WordGuesser",
        "outcome": outcome,
        "experiment": "synthetic",
        "task_id": target,
        "group_id": f"synthetic::{target}",
        "target_word": target,
    }


def _synth(target, guess, outcome="success"):
    return {
        **_row(target, guess, outcome, "synth"),
        "related_words": ["a", "b"],
        "describer_model": "d",
        "guesser_model": "g",
    }


POOL = [{**_row("apple", "apple"), "model": "llama"}]
EVAL = [_row("winter", "winter"), _row("castle", "fortress", outcome="failure"), _row("ocean", "sea")]


def test_guess_word():
    assert guess_word("GUESS: Winter.") == "winter"
    assert guess_word('Reasoning...\nGUESS: "Snow"\nmore') == "snow"
    assert guess_word("GUESS: <word>") == "<word>"
    assert guess_word("GUESS: ...") == ""
    assert guess_word("no guess here") == ""


def test_filters_and_counts(tmp_path):
    path = tmp_path / "synth.jsonl"
    write_jsonl(
        path,
        [
            _synth("river", "river"),  # kept
            _synth("mountain", "hill", outcome="failure"),  # kept
            _synth("lamp", "<word>"),  # placeholder
            _synth("desk", ""),  # empty guess
            _synth("word", "word"),  # placeholder, but it is the target: kept
            _synth("bread", "toast", outcome="aborted"),  # aborted
            _synth("winter", "winter"),  # eval target
            _synth("fish", "sea"),  # eval gold guess of a successful eval row ("ocean" -> "sea")
            _synth("tower", "fortress"),  # a failed eval row's guess is not gold: kept
        ],
    )
    rows, dropped = append_synthetic(POOL, SyntheticAppend(path=path), EVAL)
    assert dropped == {"placeholder_guess": 2, "aborted": 1, "eval_word_overlap": 2}
    assert [r["target_word"] for r in rows] == ["apple", "river", "mountain", "word", "tower"]
    columns = set(rows[0])
    assert all(set(r) == columns for r in rows)
    assert {"model", "related_words", "describer_model", "guesser_model"} <= columns
    assert rows[0]["related_words"] is None and rows[1]["model"] is None

    rows, dropped = append_synthetic(POOL, SyntheticAppend(path=path, allow_eval_word_overlap=True), EVAL)
    assert dropped == {"placeholder_guess": 2, "aborted": 1}
    assert len(rows) == 1 + 6


def test_saved_dataset_folder(tmp_path):
    from datasets import Dataset

    Dataset.from_list([_synth("river", "river")]).save_to_disk(str(tmp_path / "synth"))
    rows, dropped = append_synthetic(POOL, SyntheticAppend(path=tmp_path / "synth"), EVAL)
    assert len(rows) == 2 and dropped == {}
    assert rows[1]["related_words"] == ["a", "b"]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "synth.jsonl"
    write_jsonl(path, [_synth("river", "river")])
    with path.open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(UserError, match=r"synth\.jsonl:2: malformed JSON line"):
        append_synthetic(POOL, SyntheticAppend(path=path), EVAL)


def test_missing_column_and_duplicate_id(tmp_path):
    path = tmp_path / "synth.jsonl"
    bad = _synth("river", "river")
    del bad["group_id"]
    write_jsonl(path, [_synth("lake", "lake"), bad])
    with pytest.raises(UserError, match=r"synth\.jsonl line 2: missing column 'group_id'"):  # 1-based
        append_synthetic(POOL, SyntheticAppend(path=path), EVAL)
    write_jsonl(path, [_synth("river", "river"), _synth("river", "river")])
    with pytest.raises(UserError, match="already in the pool"):
        append_synthetic(POOL, SyntheticAppend(path=path), EVAL)


def test_unknown_outcome(tmp_path):
    path = tmp_path / "synth.jsonl"
    write_jsonl(path, [_synth("river", "river", outcome="won")])
    with pytest.raises(UserError, match="outcome 'won'"):
        append_synthetic(POOL, SyntheticAppend(path=path), EVAL)
