import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.sources.messages import (
    merge_consecutive,
    render_prompt,
    render_raw,
    split_at_last_assistant,
)

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "CLUE: cold season"},
    {"role": "assistant", "content": "GUESS: autumn"},
    {"role": "user", "content": "CLUE: snow"},
    {"role": "assistant", "content": "  GUESS: winter \n"},
]


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


def test_render_raw_upper_cases_roles_and_joins_with_blank_lines():
    assert render_raw(CHAT[:2]) == "SYSTEM: Be brief.\n\nUSER: CLUE: cold season"


def test_split_at_last_assistant():
    earlier, completion = split_at_last_assistant(CHAT, where="row 7")
    assert completion == "GUESS: winter"
    assert earlier == CHAT[:4]


def test_no_assistant_turn_names_the_row():
    with pytest.raises(UserError, match="row 7: no assistant message"):
        split_at_last_assistant(CHAT[:2], where="row 7")


def test_malformed_message_names_the_row():
    with pytest.raises(UserError, match="row 3: message 0"):
        split_at_last_assistant([{"role": "user"}], where="row 3")
    with pytest.raises(UserError, match="row 3: 'messages' must be a list"):
        split_at_last_assistant("hello", where="row 3")


def test_render_prompt_chat_template():
    prompt = render_prompt(CHAT[:4], "chat_template", tiny_tokenizer())
    assert prompt.startswith("<|system|>Be brief.\n")
    assert prompt.endswith("<|assistant|>")


def test_chat_template_needs_a_tokenizer_with_a_template():
    with pytest.raises(UserError, match="x.format = 'chat_template' needs the run's tokenizer"):
        render_prompt(CHAT, "chat_template", None, field="x.format")
    tok = tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        render_prompt(CHAT, "chat_template", tok)


def test_merge_consecutive_joins_same_role():
    merged = merge_consecutive(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    )
    assert merged == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}]
