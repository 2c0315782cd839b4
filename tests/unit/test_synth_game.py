"""One game and one client against a real local HTTP server speaking the OpenAI chat API."""

from __future__ import annotations

import pytest
from fake_openai_server import FakeOpenAIServer, Reply, by_role

from playpen_attribution.core.rows import OUTCOMES, ROW_COLUMNS
from playpen_attribution.synth.client import (
    ApiSettings,
    ChatCallError,
    ChatClient,
    RetryPolicy,
    api_settings_from_env,
)
from playpen_attribution.synth.game import GameSpec, guesser_row, play_game
from playpen_attribution.synth.targets import Target

KEY = "sk-or-test-SECRET-7f3a9c"
SNOW = Target("snow", ("cold", "white", "winter"))
HELLO = [{"role": "user", "content": "x"}]


def client_for(server: FakeOpenAIServer, **policy) -> ChatClient:
    policy = {"timeout_s": 5.0, "max_retries": 3, "backoff_base_s": 0.01, **policy}
    return ChatClient(ApiSettings(server.base_url, KEY, "OPENROUTER_API_KEY"), RetryPolicy(**policy))


def play(describer: list, guesser: list, max_turns: int = 3, max_repairs: int = 2):
    with FakeOpenAIServer(by_role(describer, guesser)) as server:
        spec = GameSpec(0, "guesser/model", "describer/model", SNOW, "synthetic")
        record = play_game(spec, client_for(server), max_turns=max_turns, max_repairs=max_repairs)
    return record, server.requests


def test_normal_game_succeeds_and_makes_a_full_row():
    record, requests = play(["CLUE: it falls from the sky as flakes in December"], ["GUESS: Snow"])
    assert record["outcome"] == "success" and record["turns"] == 1
    assert record["repairs"] == {"describer": 0, "guesser": 0}
    assert [r["model"] for r in requests] == ["describer/model", "guesser/model"]
    assert requests[0]["_headers"]["authorization"] == f"Bearer {KEY}"
    assert "Target word: snow" in requests[0]["messages"][1]["content"]
    assert set(record["usage"]) == {"describer/model", "guesser/model"}
    assert record["usage"]["guesser/model"]["completion_tokens"] > 0
    row = guesser_row(record)
    assert set(ROW_COLUMNS) <= set(row)
    assert row["game"] == "taboo" and row["game_role"] == "WordGuesser" and row["outcome"] in OUTCOMES
    assert row["completion"] == "GUESS: snow"
    assert row["prompt"].startswith("SYSTEM: You are the guesser")
    assert row["prompt"].endswith("USER: CLUE: it falls from the sky as flakes in December")
    assert row["related_words"] == ["cold", "white", "winter"]
    assert (row["describer_model"], row["guesser_model"]) == ("describer/model", "guesser/model")
    assert row["group_id"] == "synthetic::snow" and row["task_id"] == "guesser/model|snow|0"


def test_three_wrong_guesses_fail_and_the_prompt_holds_the_whole_conversation():
    record, _ = play(
        ["CLUE: falls from clouds", "CLUE: flakes", "CLUE: skiing needs it"],
        ["GUESS: rain", "GUESS: cereal", "GUESS: water"],
    )
    assert record["outcome"] == "failure" and record["turns"] == 3
    row = guesser_row(record)
    blocks = row["prompt"].split("\n\n")
    roles = [b.split(":")[0] for b in blocks]
    assert roles == ["SYSTEM", "USER", "ASSISTANT", "USER", "ASSISTANT", "USER"]
    assert blocks[2] == "ASSISTANT: GUESS: rain" and blocks[-1] == "USER: CLUE: skiing needs it"
    assert row["completion"] == "GUESS: water" and row["outcome"] == "failure"


def test_clue_with_a_related_words_plural_is_repaired():
    clues = ["CLUE: it falls in winters", "CLUE: frozen flakes from the sky"]
    record, requests = play(clues, ["GUESS: snow"])
    assert record["outcome"] == "success" and record["repairs"] == {"describer": 1, "guesser": 0}
    repair_request = requests[1]["messages"]
    assert repair_request[-2] == {"role": "assistant", "content": "CLUE: it falls in winters"}
    assert "'winters'" in repair_request[-1]["content"] and "'winter'" in repair_request[-1]["content"]
    assert record["clues"] == ["frozen flakes from the sky"]
    assert "winters" not in guesser_row(record)["prompt"]  # the broken clue never reaches the guesser
    assert [c["problem"] is None for c in record["calls"]] == [False, True, True]


def test_describer_that_never_complies_aborts_the_game():
    record, requests = play(["CLUE: snow"] * 3, [], max_repairs=2)
    assert record["outcome"] == "aborted" and "describer" in record["abort_reason"]
    assert len(requests) == 3 and record["repairs"]["describer"] == 2
    assert record["turns"] == 0 and guesser_row(record) is None


@pytest.mark.parametrize("bad", ["GUESS:", "GUESS: <word>", "GUESS: ...", "I have no idea", ""])
def test_empty_and_placeholder_guesses_are_repaired(bad):
    record, requests = play(["CLUE: frozen flakes"], [bad, "GUESS: snow"])
    assert record["outcome"] == "success" and record["repairs"] == {"describer": 0, "guesser": 1}
    assert "breaks the rules" in requests[-1]["messages"][-1]["content"]
    assert guesser_row(record)["completion"] == "GUESS: snow"


def test_guesser_that_never_complies_aborts_but_keeps_its_last_valid_guess():
    clues = ["CLUE: frozen flakes", "CLUE: skiing needs it"]
    record, _ = play(clues, ["GUESS: rain", "GUESS:", "", "?"])
    assert record["outcome"] == "aborted" and "guesser" in record["abort_reason"]
    row = guesser_row(record)
    assert row["completion"] == "GUESS: rain" and row["outcome"] == "aborted"


@pytest.mark.parametrize("status", [429, 500, 503])
def test_rate_limit_and_server_errors_are_retried(status, caplog):
    script = [Reply(status=status), Reply(status=status), "CLUE: frozen flakes"]
    record, requests = play(script, ["GUESS: snow"])
    assert record["outcome"] == "success" and len(requests) == 4
    assert f"HTTP {status}" in caplog.text


def test_slow_reply_past_the_timeout_is_retried():
    script = [Reply("CLUE: too late", delay=1.0), Reply("CLUE: frozen flakes")]
    with FakeOpenAIServer(lambda request: script.pop(0)) as server:
        reply = client_for(server, timeout_s=0.3).complete("describer/model", HELLO)
    assert reply.content == "CLUE: frozen flakes" and len(server.requests) == 2


def test_retry_budget_spent_gives_a_clear_error_naming_model_and_status():
    with FakeOpenAIServer(lambda request: Reply("late", delay=1.0)) as server:
        client = client_for(server, timeout_s=0.2, max_retries=1)
        expected = r"model 'slow/model': gave up after 2 attempts; last status: timeout"
        with pytest.raises(ChatCallError, match=expected):
            client.complete("slow/model", HELLO)
    with FakeOpenAIServer(lambda request: Reply(status=429)) as server:
        with pytest.raises(ChatCallError, match="model 'busy/model'.*HTTP 429"):
            client_for(server, max_retries=2).complete("busy/model", HELLO)
        assert len(server.requests) == 3


def test_client_errors_are_not_retried_and_never_show_the_key(caplog):
    def echo_key(request):
        return Reply(status=401, error_message=f"bad key {request['_headers']['authorization']}")

    with FakeOpenAIServer(echo_key) as server, pytest.raises(ChatCallError) as caught:
        client_for(server).complete("any/model", HELLO)
    assert len(server.requests) == 1
    assert "HTTP 401" in str(caught.value) and "***" in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in caplog.text


def test_api_settings_from_env():
    settings = api_settings_from_env({"OPENROUTER_API_KEY": KEY})
    assert settings.base_url == "https://openrouter.ai/api/v1" and KEY not in settings.describe()
    generic = api_settings_from_env({"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://x/v1"})
    assert (generic.base_url, generic.key_variable) == ("http://x/v1", "OPENAI_API_KEY")
    with pytest.raises(Exception, match="no API key found: set OPENROUTER_API_KEY"):
        api_settings_from_env({"OPENROUTER_BASE_URL": "http://x/v1"})
