import pytest

from playpen_attribution.core.tiny_model import train_word_tokenizer
from playpen_attribution.core.tokenization import IGNORE_INDEX, TokenizeConfig, tokenize_row, tokenize_rows
from playpen_attribution.errors import UserError

ROW = {"example_id": "a", "prompt": "USER: CLUE: fruit red\nASSISTANT:", "completion": "GUESS: apple"}


def test_prompt_masked_completion_kept_eos_appended(tokenizer):
    out = tokenize_row(tokenizer, ROW, TokenizeConfig(max_length=64))
    p = tokenizer(ROW["prompt"])["input_ids"]
    c = tokenizer(ROW["completion"], add_special_tokens=False)["input_ids"]
    assert out["input_ids"] == p + c + [tokenizer.eos_token_id]
    assert out["labels"] == [IGNORE_INDEX] * len(p) + c + [tokenizer.eos_token_id]
    assert out["input_ids"][0] == tokenizer.bos_token_id


def test_truncation_drops_prompt_from_the_left_keeping_bos(tokenizer):
    full = tokenize_row(tokenizer, ROW, TokenizeConfig(max_length=64))
    out = tokenize_row(tokenizer, ROW, TokenizeConfig(max_length=8))
    assert len(out["input_ids"]) == 8
    assert out["input_ids"][0] == tokenizer.bos_token_id
    assert out["input_ids"][-5:] == full["input_ids"][-5:]  # completion (3 words + ':' ) + EOS intact
    assert out["labels"][-1] == tokenizer.eos_token_id
    assert sum(t != IGNORE_INDEX for t in out["labels"]) == sum(t != IGNORE_INDEX for t in full["labels"])


def test_completion_longer_than_max_length_keeps_eos_last(tokenizer):
    row = dict(ROW, completion=" ".join(["apple"] * 20))
    out = tokenize_row(tokenizer, row, TokenizeConfig(max_length=10))
    assert len(out["input_ids"]) <= 10
    assert out["input_ids"][-1] == tokenizer.eos_token_id
    assert out["labels"][-1] == tokenizer.eos_token_id


def test_chat_template_format_wraps_prompt_as_user_turn(tokenizer):
    out = tokenize_row(tokenizer, ROW, TokenizeConfig(format="chat_template", max_length=64))
    text = tokenizer.apply_chat_template([{"role": "user", "content": ROW["prompt"]}], add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert out["input_ids"][: len(prompt)] == prompt
    assert out["labels"][: len(prompt)] == [IGNORE_INDEX] * len(prompt)


def test_chat_template_uses_prompt_messages_when_present(tokenizer):
    messages = [{"role": "user", "content": "CLUE: fruit"}, {"role": "assistant", "content": "GUESS: pear"},
                {"role": "user", "content": "CLUE: red"}]
    out = tokenize_row(tokenizer, dict(ROW, prompt_messages=messages), TokenizeConfig(format="chat_template", max_length=64))
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert out["input_ids"][: len(tokenizer(text, add_special_tokens=False)["input_ids"])] == tokenizer(
        text, add_special_tokens=False)["input_ids"]


def test_empty_completion_names_the_row(tokenizer):
    with pytest.raises(UserError, match=r"row 'x7': empty completion"):
        tokenize_row(tokenizer, dict(ROW, example_id="x7", completion="  "), TokenizeConfig(max_length=64))


def test_tokenizer_without_eos_is_refused():
    tok = train_word_tokenizer(["a b c"], eos=False)
    with pytest.raises(UserError, match="no EOS token"):
        tokenize_row(tok, ROW, TokenizeConfig(max_length=64))


def test_tokenize_rows_keeps_ids_and_order(tokenizer):
    rows = [dict(ROW, example_id=f"r{i}", completion=f"GUESS: {w}") for i, w in enumerate(["apple", "dog", "sun"])]
    ds = tokenize_rows(tokenizer, rows, TokenizeConfig(max_length=64))
    assert ds["example_id"] == ["r0", "r1", "r2"]
    assert ds["input_ids"][1] == tokenize_row(tokenizer, rows[1], TokenizeConfig(max_length=64))["input_ids"]


THREE_TURNS = [
    {"role": "user", "content": "CLUE: fruit red"}, {"role": "assistant", "content": "GUESS: apple"},
    {"role": "user", "content": "CLUE: animal bark"}, {"role": "assistant", "content": "GUESS: dog"},
    {"role": "user", "content": "CLUE: sky hot"},
]
THREE_TURN_ROW = {
    "example_id": "m3",
    "prompt": "USER: CLUE: fruit red\n\nASSISTANT: GUESS: apple\n\nUSER: CLUE: animal bark\n\nASSISTANT: GUESS: dog"
              "\n\nUSER: CLUE: sky hot\n\nASSISTANT:",
    "completion": "GUESS: sun", "prompt_messages": THREE_TURNS,
}


def _supervised_segments(out):
    """Runs of consecutive supervised positions, as lists of ids."""
    segments, current = [], []
    for t in out["labels"]:
        if t == IGNORE_INDEX:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(t)
    return segments + ([current] if current else [])


def _boundary_ids(tokenizer, messages, i):
    """The ids of assistant turn i as the template writes it: the text between the template for the turns
    before it (with the generation prompt) and the template through it, trailing whitespace dropped."""
    before = tokenizer.apply_chat_template(messages[:i], add_generation_prompt=True, tokenize=False)
    through = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False).rstrip()
    return tokenizer(through[len(before):], add_special_tokens=False)["input_ids"]


def test_all_assistant_turns_supervises_each_turn_at_the_template_boundaries(tokenizer):
    out = tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(format="chat_template", max_length=128, supervise="all_assistant_turns"))
    last = tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(format="chat_template", max_length=128))
    assert out["input_ids"] == last["input_ids"]  # the same tokens, only the mask differs
    full = THREE_TURNS + [{"role": "assistant", "content": "GUESS: sun"}]
    expected = [_boundary_ids(tokenizer, full, i) for i in (1, 3, 5)]
    assert _supervised_segments(out) == expected
    assert expected[0][-1] == tokenizer.eos_token_id  # the tiny template closes a turn with <eos>
    assert _supervised_segments(last) == expected[2:]


def test_all_assistant_turns_in_raw_format_supervises_earlier_contents(tokenizer):
    out = tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(max_length=128, supervise="all_assistant_turns"))
    assert out["input_ids"] == tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(max_length=128))["input_ids"]
    words = [tokenizer.decode(s) for s in _supervised_segments(out)]
    assert words == ["GUESS : apple", "GUESS : dog", "GUESS : sun <eos>"]


def test_all_assistant_turns_masks_survive_left_truncation(tokenizer):
    full = tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(format="chat_template", max_length=128, supervise="all_assistant_turns"))
    cut = tokenize_row(tokenizer, THREE_TURN_ROW, TokenizeConfig(format="chat_template", max_length=20, supervise="all_assistant_turns"))
    assert len(cut["input_ids"]) == 20
    assert cut["labels"][1:] == full["labels"][len(full["labels"]) - 19:]


def test_raw_prompt_missing_a_message_is_named(tokenizer):
    row = dict(THREE_TURN_ROW, prompt="USER: something else\n\nASSISTANT:")
    with pytest.raises(UserError, match=r"row 'm3': prompt_messages content"):
        tokenize_row(tokenizer, row, TokenizeConfig(max_length=128, supervise="all_assistant_turns"))


def test_a_template_out_of_turn_order_names_the_1_based_message(tokenizer):
    import copy

    reversed_turns = copy.deepcopy(tokenizer)
    reversed_turns.chat_template = ("{% for m in messages|reverse %}{{ m['content'] }}\n{% endfor %}"
                                    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    with pytest.raises(UserError, match=r"row 'm3': the chat template does not render message 2 \(an assistant"):
        tokenize_row(reversed_turns, THREE_TURN_ROW, TokenizeConfig(format="chat_template", max_length=128, supervise="all_assistant_turns"))


def test_truncation_counts_say_which_rows_the_rule_cut(tokenizer):
    from playpen_attribution.core.tokenization import truncation_counts

    long_completion = dict(ROW, example_id="c", completion=" ".join(["apple"] * 20))
    rows = [ROW, dict(ROW, example_id="b"), long_completion]
    full = len(tokenize_row(tokenizer, ROW, TokenizeConfig(max_length=64))["input_ids"])
    assert truncation_counts(tokenizer, rows[:2], TokenizeConfig(max_length=full)) == {"completion": 0, "prompt": 0}
    assert truncation_counts(tokenizer, rows[:2], TokenizeConfig(max_length=full - 1)) == {"completion": 0, "prompt": 2}
    assert truncation_counts(tokenizer, rows, TokenizeConfig(max_length=full)) == {"completion": 1, "prompt": 1}  # it also loses prompt
