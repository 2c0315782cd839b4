"""When the machine or an API says no: a run folder under a file or on a location that refuses writes, and
an API that answers 200 with a body cut short, not JSON or without a message, end every command in one
line naming the path or the model (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from fake_openai_server import FakeOpenAIServer, Reply, deterministic_responder
from helpers import api_env, small_demo_dict, synth_flags

from playpen_attribution.cli import main
from playpen_attribution.log import logger

TARGETS = [{"target_word": "snow", "related_words": ["cold", "white", "winter"]},
           {"target_word": "candle", "related_words": ["wax", "flame", "light"]}]


@pytest.fixture
def cli_log(caplog):
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture
def config(tmp_path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_demo_dict()))
    return str(path)


@pytest.fixture
def targets_file(tmp_path) -> Path:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(TARGETS))
    return path


def _one_error(cli_log) -> str:
    errors = {r.getMessage() for r in cli_log.records if r.levelname == "ERROR"}
    assert len(errors) == 1, errors
    error = errors.pop()
    assert "\n" not in error
    return error


def _commands(config: str, where: Path, targets_file: Path) -> list[list[str]]:
    return [["run", config, "--run-dir", str(where / "run")],
            ["data", "--config", config, "--run-dir", str(where / "run")],
            ["synth", *synth_flags(where / "synth_out", targets_file)],
            ["prepare-model", "gemma-3-270m", "--out-dir", str(where / "model")]]


def test_a_folder_under_a_file_is_one_line_for_every_command(tmp_path, config, targets_file, cli_log, monkeypatch):
    api_env(monkeypatch, "http://127.0.0.1:9/v1")  # never reached: the output folder fails first
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for argv in _commands(config, blocker, targets_file):
        cli_log.clear()
        assert main(argv) == 2, argv
        assert str(blocker) in _one_error(cli_log), argv


def test_a_location_that_refuses_writes_is_one_line_for_every_command(tmp_path, config, targets_file, cli_log,
                                                                       monkeypatch):
    api_env(monkeypatch, "http://127.0.0.1:9/v1")
    if os.geteuid() == 0:  # root writes through permissions; sysfs refuses every new entry, also to root
        refusing = Path("/sys/playpen-attribution-test")
        if not Path("/sys").is_dir():
            pytest.skip("no /sys to refuse writes to root")
    else:
        refusing = tmp_path / "read_only"
        refusing.mkdir()
        refusing.chmod(0o555)
    for argv in _commands(config, refusing, targets_file):
        cli_log.clear()
        assert main(argv) == 2, argv
        error = _one_error(cli_log)
        assert str(refusing) in error and "(check the path, its permissions and free space)" in error, argv


def _body(message) -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                       "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})


@pytest.mark.parametrize("reply, says", [
    (Reply(body=_body(None)), "a 200 reply with a choice without a message"),
    (Reply(body='{"id": "x", "choices": [{"mess'), "a 200 reply with a body that is not JSON"),
    (Reply(body="[]"), "a 200 reply with no choices"),
    (Reply("CLUE: a cold white thing that falls in winter", cut_at=40), "connection error"),
], ids=["null_message", "cut_json", "a_list", "cut_in_transit"])
def test_a_bad_api_reply_is_retried_then_one_line_naming_the_model(reply, says, tmp_path, targets_file, cli_log,
                                                                   monkeypatch):
    with FakeOpenAIServer(lambda request: reply) as server:
        api_env(monkeypatch, server.base_url)
        assert main(["synth", *synth_flags(tmp_path / "out", targets_file, 1)]) == 2
        assert len(server.requests) >= 3  # retried (--max-retries 2) before giving up
    final = [r.getMessage() for r in cli_log.records if r.levelname == "ERROR"][-1]
    assert final.startswith("synth: model 'fake/describer': gave up after 3 attempts; last status: " + says)
    assert "Traceback" not in cli_log.text


def test_a_null_message_content_is_an_empty_reply_the_rules_judge(tmp_path, targets_file, cli_log, monkeypatch):
    play = deterministic_responder()

    def respond(request):
        if "you are the describer" in request["messages"][0]["content"].lower():
            return Reply(body=_body({"role": "assistant", "content": None}))
        return play(request)

    with FakeOpenAIServer(respond) as server:
        api_env(monkeypatch, server.base_url)
        assert main(["synth", *synth_flags(tmp_path / "out", targets_file, 1)]) == 0
    games = [json.loads(line) for line in (tmp_path / "out" / "games.jsonl").read_text().splitlines()]
    assert games and all(g["outcome"] == "aborted" for g in games)
