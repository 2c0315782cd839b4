import pytest

from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.core.tokenization import (
    IGNORE_INDEX,
    tokenize_row,
    tokenize_rows,
)
from playpen_attribution.errors import UserError

ROW = {"example_id": "a", "prompt": "USER: CLUE: fruit red\nASSISTANT:", "completion": "GUESS: apple"}


def test_prompt_masked_completion_kept_eos_appended(tokenizer):
    out = tokenize_row(tokenizer, ROW, "raw", 64)
    p = tokenizer(ROW["prompt"])["input_ids"]
    c = tokenizer(ROW["completion"], add_special_tokens=False)["input_ids"]
    assert out["input_ids"] == p + c + [tokenizer.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(p) + c + [tokenizer.eos_token_id]
    assert out["input_ids"][0] == tokenizer.bos_token_id


def test_truncation_drops_prompt_from_the_left_keeping_bos(tokenizer):
    full = tokenize_row(tokenizer, ROW, "raw", 64)
    out = tokenize_row(tokenizer, ROW, "raw", 8)
    assert len(out["input_ids"]) == 8
    assert out["input_ids"][0] == tokenizer.bos_token_id
    assert out["input_ids"][-5:] == full["input_ids"][-5:]  # completion (3 words + ':' ) + EOS intact
    assert out["labels"][-1] == tokenizer.eos_token_id
    assert sum(t != IGNORE_INDEX for t in out["labels"]) == sum(t != IGNORE_INDEX for t in full["labels"])


def test_completion_longer_than_max_length_keeps_eos_last(tokenizer):
    row = dict(ROW, completion=" ".join(["apple"] * 20))
    out = tokenize_row(tokenizer, row, "raw", 10)
    assert len(out["input_ids"]) <= 10
    assert out["input_ids"][-1] == tokenizer.eos_token_id
    assert out["labels"][-1] == tokenizer.eos_token_id


def test_chat_template_format_wraps_prompt_as_user_turn(tokenizer):
    out = tokenize_row(tokenizer, ROW, "chat_template", 64)
    text = tokenizer.apply_chat_template([{"role": "user", "content": ROW["prompt"]}], add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert out["input_ids"][: len(prompt)] == prompt
    assert out["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)


def test_chat_template_uses_prompt_messages_when_present(tokenizer):
    messages = [{"role": "user", "content": "CLUE: fruit"}, {"role": "assistant", "content": "GUESS: pear"},
                {"role": "user", "content": "CLUE: red"}]
    out = tokenize_row(tokenizer, dict(ROW, prompt_messages=messages), "chat_template", 64)
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert out["input_ids"][: len(tokenizer(text, add_special_tokens=False)["input_ids"])] == tokenizer(
        text, add_special_tokens=False)["input_ids"]


def test_empty_completion_names_the_row(tokenizer):
    with pytest.raises(UserError, match=r"row 'x7': empty completion"):
        tokenize_row(tokenizer, dict(ROW, example_id="x7", completion="  "), "raw", 64)


def test_tokenizer_without_eos_is_refused():
    tok = train_word_tokenizer(["a b c"], eos=False)
    with pytest.raises(UserError, match="no EOS token"):
        tokenize_row(tok, ROW, "raw", 64)


def test_tokenize_rows_keeps_ids_and_order(tokenizer):
    rows = [dict(ROW, example_id=f"r{i}", completion=f"GUESS: {w}") for i, w in enumerate(["apple", "dog", "sun"])]
    ds = tokenize_rows(tokenizer, rows, "raw", 64)
    assert ds["example_id"] == ["r0", "r1", "r2"]
    assert ds["input_ids"][1] == tokenize_row(tokenizer, rows[1], "raw", 64)["input_ids"]
