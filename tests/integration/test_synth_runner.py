"""The synth command end to end: output files, resume after a crash or a kill, key hygiene."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Reply, deterministic_responder
from helpers import KEY, TESTS, api_env, synth, synth_flags

from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.synth.client import ChatCallError
from playpen_attribution.synth.store import load_synth_rows

TARGETS = [
    {"target_word": "snow", "related_words": ["cold", "white", "winter"]},
    {"target_word": "candle", "related_words": ["wax", "flame", "light"]},
    {"target_word": "garden", "related_words": ["flowers", "plants", "grow"]},
    {"target_word": "pencil", "related_words": ["write", "lead", "eraser"]},
    {"target_word": "rocket", "related_words": ["space", "launch", "fly"]},
    {"target_word": "wallet", "related_words": ["money", "pocket", "cards"]},
]


@pytest.fixture
def targets_file(tmp_path) -> Path:
    path = tmp_path / "targets.json"
    path.write_text(json.dumps(TARGETS))
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_folder(out: Path, n_games: int) -> list[dict]:
    """Every game once, one row per game, every row complete, summary equal to the rows."""
    games = read_lines(out / "games.jsonl")
    rows = load_synth_rows(out)
    keys = [g["game_key"] for g in games]
    assert len(keys) == len(set(keys)) == n_games
    assert sorted(r["task_id"] for r in rows) == sorted(keys)
    assert len({r["example_id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(ROW_COLUMNS) <= set(row)
        assert row["game"] == "taboo" and row["game_role"] == "WordGuesser"
        assert row["completion"].startswith("GUESS: ")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["games"] == summary["rows"] == len(rows) == n_games
    wins = sum(r["outcome"] == "success" for r in rows)
    assert summary["outcomes"]["success"] == wins and summary["success_rate"] == wins / n_games
    by_model = summary["per_guesser_model"]
    assert by_model["fake/right"]["success_rate"] == 1.0
    assert by_model["fake/wrong"]["success_rate"] == 0.0
    return rows


def test_synth_writes_games_rows_and_summary_and_never_the_key(
    tmp_path, targets_file, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        assert synth(synth_flags(out, targets_file)) == 0
    check_folder(out, 6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_turns"] == (3 * 1 + 3 * 2) / 6 and summary["aborts"] == 0
    assert summary["per_guesser_model"]["fake/wrong"]["outcomes"]["failure"] == 3
    tokens = summary["usage_tokens"]
    assert set(tokens) == {"fake/describer", "fake/right", "fake/wrong"}
    assert tokens["fake/right"]["prompt_tokens"] > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "games.jsonl", "rows_wordguesser.jsonl", "summary.json"]
    assert all(r["_headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests)
    for path in out.iterdir():
        assert KEY not in path.read_text()
    assert KEY not in caplog.text and "OPENROUTER_API_KEY" in caplog.text


def test_missing_api_key_fails_before_any_request(tmp_path, targets_file, monkeypatch):
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, None)
        monkeypatch.setenv("OPENROUTER_BASE_URL", server.base_url)
        with pytest.raises(UserError, match="no API key found: set OPENROUTER_API_KEY"):
            synth(synth_flags(tmp_path / "out", targets_file))
    assert server.requests == [] and not (tmp_path / "out").exists()


def test_resume_after_a_crash_replays_only_unfinished_games(tmp_path, targets_file, monkeypatch):
    out = tmp_path / "out"
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        synth(synth_flags(out, targets_file))
    games, rows = (out / "games.jsonl"), (out / "rows_wordguesser.jsonl")
    kept = games.read_text().splitlines(keepends=True)[:2]
    games.write_text("".join(kept) + '{"game_key": "fake/right|sn')  # a write cut by a kill
    rows.write_text(rows.read_text().splitlines(keepends=True)[0] + '{"example_id": "ab')
    with pytest.raises(UserError, match="last line is cut off.*rerun the same synth command"):
        load_synth_rows(out)
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        synth(synth_flags(out, targets_file))
    guesser_requests = [r for r in server.requests if r["model"] != "fake/describer"]
    replayed = {(r["model"], r["messages"][1]["content"]) for r in guesser_requests}
    assert len(replayed) == 4  # 6 games - 2 kept; the cut-off one is played again
    check_folder(out, 6)

    (out / "rows_wordguesser.jsonl").write_text(
        "".join((out / "rows_wordguesser.jsonl").read_text().splitlines(keepends=True)[:-1]))
    with FakeOpenAIServer(deterministic_responder()) as server:  # killed between game and row write
        api_env(monkeypatch, server.base_url)
        synth(synth_flags(out, targets_file))
    assert server.requests == []
    check_folder(out, 6)


def test_failed_calls_stop_the_run_keep_finished_games_and_resume(tmp_path, targets_file, monkeypatch):
    out = tmp_path / "out"
    healthy = deterministic_responder()

    def flaky(request):
        return Reply(status=500) if request["model"] == "fake/wrong" else healthy(request)

    with FakeOpenAIServer(flaky) as server:
        api_env(monkeypatch, server.base_url)
        expected = "model 'fake/wrong': gave up after 3 attempts; last status: HTTP 500"
        with pytest.raises(ChatCallError, match=expected):
            synth(synth_flags(out, targets_file, 3, "--concurrency", "1"))
    games = read_lines(out / "games.jsonl")
    assert [g["guesser_model"] for g in games] == ["fake/right"] * 3
    assert json.loads((out / "summary.json").read_text())["games"] == 3
    with FakeOpenAIServer(healthy) as server:
        api_env(monkeypatch, server.base_url)
        synth(synth_flags(out, targets_file))
    check_folder(out, 6)


def test_a_different_describer_cannot_resume_the_folder(tmp_path, targets_file, monkeypatch):
    out = tmp_path / "out"
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        synth(synth_flags(out, targets_file, 1))
        flags = synth_flags(out, targets_file, 1)
        flags[flags.index("fake/describer")] = "other/describer"
        with pytest.raises(UserError, match="describer_model: folder has 'fake/describer'"):
            synth(flags)


def test_yaml_config_with_flag_override_and_hf_dataset(tmp_path, targets_file, monkeypatch):
    config = tmp_path / "synth.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'out'}\ndescriber_model: fake/describer\n"
        f"guesser_models: [fake/right, fake/wrong]\ngames-per-guesser: 1\nmax_turns: 2\n"
        f"targets_file: {targets_file}\nbackoff_base: 0.01\n"
    )
    with FakeOpenAIServer(deterministic_responder()) as server:
        api_env(monkeypatch, server.base_url)
        synth(["--config", str(config), "--games-per-guesser", "2", "--save-hf-dataset"])
    rows = check_folder(tmp_path / "out", 4)
    from datasets import load_from_disk

    dataset = load_from_disk(str(tmp_path / "out" / "hf_dataset"))
    assert len(dataset) == len(rows) and set(ROW_COLUMNS) <= set(dataset.column_names)
    config.write_text("output_dir: [1, 2\n")
    with pytest.raises(UserError, match="synth.yaml:2:1: not valid YAML"):
        synth(["--config", str(config)])


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_kill_mid_run_and_resume_loses_and_duplicates_nothing(tmp_path, targets_file):
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "fake_openai_server.py"), "--port-file", str(port_file),
         "--script", "deterministic", "--delay", "0.08"],
    )
    try:
        _wait_for(port_file.exists, 20, "the fake server")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPENROUTER_"))}
        base_url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        env.update(OPENROUTER_BASE_URL=base_url, OPENROUTER_API_KEY=KEY)
        out = tmp_path / "out"
        command = [sys.executable, "-m", "playpen_attribution.synth.command",
                   *synth_flags(out, targets_file, 8)]
        first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        games = out / "games.jsonl"
        _wait_for(lambda: games.exists() and games.read_text().count("\n") >= 3, 30, "three games")
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert first.returncode == -signal.SIGKILL
        done_at_kill = games.read_text().count("\n")
        assert done_at_kill < 16, "the run finished before it was killed; raise --delay"
        with games.open("a") as handle:  # what a kill in the middle of a write leaves behind
            handle.write('{"game_key": "fake/wrong|pen')
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 0, second.stderr
        assert f"{done_at_kill} already in" in second.stderr
        assert KEY not in second.stderr + first.stderr.read()
        check_folder(out, 16)
    finally:
        server.kill()
        server.wait()


def test_two_runs_into_one_output_folder_play_each_game_once(tmp_path, targets_file):
    port_file = tmp_path / "port"
    server = subprocess.Popen(
        [sys.executable, str(TESTS / "fake_openai_server.py"), "--port-file", str(port_file),
         "--script", "deterministic", "--delay", "0.6"],
    )
    runs = []
    try:
        _wait_for(port_file.exists, 20, "the fake server")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPENROUTER_"))}
        env.update(OPENROUTER_BASE_URL=f"http://127.0.0.1:{port_file.read_text()}/v1", OPENROUTER_API_KEY=KEY)
        out = tmp_path / "out"
        command = [sys.executable, "-m", "playpen_attribution.synth.command", *synth_flags(out, targets_file, 8)]
        runs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
        games = out / "games.jsonl"
        _wait_for(lambda: games.exists() and games.read_text().count("\n") >= 1, 30, "a first game")
        runs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))  # a second terminal
        logs = [run.communicate(timeout=120)[1] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], logs
        assert "waiting for synth output" in logs[1] and f"pid {runs[0].pid} on host" in logs[1]
        assert "16 already in" in logs[1]  # it waited, then found every game played
        check_folder(out, 16)
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
        server.kill()
        server.wait()
