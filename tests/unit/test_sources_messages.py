import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.sources.messages import (
    merge_consecutive,
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
    with pytest.raises(UserError, match="row 3: message 2 must"):  # 1-based
        split_at_last_assistant([{"role": "user", "content": "hi"}, {"role": "user"}], where="row 3")
    with pytest.raises(UserError, match="row 3: 'messages' must be a list"):
        split_at_last_assistant("hello", where="row 3")


def test_a_raw_prompt_ends_with_the_assistant_cue_of_the_supervised_turn():
    from playpen_attribution.sources.messages import render_raw_prompt

    assert render_raw_prompt(CHAT[:2]) == "SYSTEM: Be brief.\n\nUSER: CLUE: cold season\n\nASSISTANT:"
    assert render_raw_prompt([]) == "ASSISTANT:"


def test_sources_render_raw_only():
    from playpen_attribution.sources import messages

    assert not hasattr(messages, "render_prompt")  # the chat template is tokenization's job alone


def test_merge_consecutive_joins_same_role():
    merged = merge_consecutive(
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    )
    assert merged == [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}]
