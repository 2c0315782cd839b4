import json
import logging
import re
from collections import Counter

import pytest
from helpers import CLEMBENCH_RECORDS, clembench_readme_counts
from pydantic import ValidationError

from playpen_attribution.core.rows import ROW_COLUMNS
from playpen_attribution.errors import UserError
from playpen_attribution.sources.clembench import (
    ClembenchSource,
    load_clembench,
    read_episode,
)

REAL = CLEMBENCH_RECORDS.parent  # ../shared beside the repository, never an absolute path
README_OUTCOME = {"won": "success", "lost": "failure", "aborted": "aborted"}

DESCRIBER_PROMPT = (
    "You are playing a collaborative word guessing game in which you have to describe a target word.\n\n"
    "This is the target word that you need to describe and that the other player needs to guess:\n\n"
    "{target}\n\nRelated words are:\n\n- {r1}\n- {r2}\n- {r3}\n\nImportant: be brief!"
)
GUESSER_PROMPT = "You are playing a collaborative word guessing game.\n\nLet us start.\n"


def _ev(src, dst, kind, content):
    return {"from": src, "to": dst, "timestamp": "t", "action": {"type": kind, "content": content}}


def _game_b(target, clues_and_guesses, ending, model="m1"):
    """A format-B record: describer prompt first, the first clue folded into the guesser prompt."""
    players = {
        "GM": "Game master for taboo",
        "Player 1": f"WordDescriber, {model}",
        "Player 2": f"WordGuesser, {model}",
    }
    prompt = DESCRIBER_PROMPT.format(target=target, r1="a", r2="b", r3="c")
    turns = []
    for i, (clue, guess) in enumerate(clues_and_guesses):
        rnd = [_ev("GM", "Player 1", "send message", prompt if i == 0 else f"GUESS: {clues_and_guesses[i - 1][1]}")]
        rnd.append(_ev("Player 1", "GM", "get message", f"CLUE: {clue}"))
        rnd.append(_ev("GM", "GM", "valid clue", clue.lower()))
        text = (GUESSER_PROMPT + f"\n\nCLUE: {clue}") if i == 0 else f"CLUE: {clue}"
        rnd.append(_ev("GM", "Player 2", "send message", text))
        if guess is not None:
            rnd.append(_ev("Player 2", "GM", "get message", f"GUESS: {guess}"))
            rnd.append(_ev("GM", "GM", "valid guess", guess.lower()))
        turns.append(rnd)
    turns[-1].append(_ev("GM", "GM", ending, "end game"))
    return {"players": players, "turns": turns}


def _game_c(target):
    """A format-C record: long player names, guesser prompt and first clue as separate messages."""
    p1, p2 = "Player 1 (WordDescriber)", "Player 2 (WordGuesser)"
    players = {"GM": "Game master for taboo", p1: f"{p1} (WordDescriber): olmo", p2: f"{p2} (WordGuesser): olmo"}
    rnd = [
        _ev("GM", p1, "send message", DESCRIBER_PROMPT.format(target=target, r1="x", r2="y", r3="z")),
        _ev(p1, "GM", "get message", "CLUE: a sweet fruit"),
        _ev("GM", p2, "send message", GUESSER_PROMPT),
        _ev("GM", p2, "send message", "CLUE: a sweet fruit"),
        _ev(p2, "GM", "get message", f"GUESS: {target.title()}"),
        _ev("GM", "GM", "correct guess", "end game"),
    ]
    return {"meta": {"experiment_name": "low_en"}, "players": players, "turns": [rnd]}


def _write(root, rel, record):
    path = root / rel / "interactions.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))


@pytest.fixture
def records(tmp_path):
    root = tmp_path / "records"
    base = "v2.0/m1--m1/taboo"
    _write(
        root,
        f"{base}/0_high_en/episode_0",
        _game_b("winter", [("cold", "Autumn"), ("snow", "Winter")], "correct guess"),
    )
    _write(
        root,
        f"{base}/0_high_en/episode_1",
        _game_b("song", [("music", "tune"), ("sing", "melody"), ("x", "hum")], "max turns reached"),
    )
    _write(root, f"{base}/1_medium_en/episode_0", _game_b("fort", [("castle", "GUESS is keep")], "invalid format"))
    _write(root, f"{base}/1_medium_en/episode_1", _game_b("chan", [("a chan", None)], "invalid clue"))
    _write(root, f"{base}/2_low_en/episode_0", '{"players": {')  # broken JSON
    _write(root, "v2.0/olmo--olmo/taboo/2_low_en/episode_1", _game_c("mango"))
    _write(root, "v2.0/m1--m1/wordle/0_high_en/episode_0", {"players": {}, "turns": []})
    return root


def test_fixture_tree(records, caplog):
    with caplog.at_level(logging.WARNING, logger="playpen_attribution"):
        out = load_clembench(ClembenchSource(path=records, query_fraction=0.0, eval_fraction=0.0), seed=0)
    assert "2_low_en/episode_0/interactions.json: not valid JSON" in caplog.text
    assert out.dropped == {"invalid_json": 1, "other_game": 1, "no_guesser_turn": 1, "aborted": 1}
    assert out.info["episode_outcomes"] == {"success": 2, "failure": 2, "aborted": 1}
    rows = {r["target_word"]: r for r in out.splits["train_base"]}
    assert set(rows) == {"winter", "song", "mango"}
    win = rows["winter"]
    assert set(ROW_COLUMNS) <= set(win)
    assert win["completion"] == "GUESS: Winter" and win["outcome"] == "success"
    assert win["prompt"].startswith("USER: You are playing") and win["prompt"].endswith("USER: CLUE: snow\n\nASSISTANT:")
    assert "ASSISTANT: GUESS: Autumn" in win["prompt"]
    assert win["related_words"] == ["a", "b", "c"] and win["model"] == "m1" and win["describer_model"] == "m1"
    assert (
        win["experiment"] == "0_high_en" and win["task_id"] == "episode_0" and win["group_id"] == "0_high_en::episode_0"
    )
    assert (
        win["benchmark_version"] == "v2.0"
        and win["record_path"] == "v2.0/m1--m1/taboo/0_high_en/episode_0/interactions.json"
    )
    assert rows["song"]["outcome"] == "failure"
    mango = rows["mango"]
    assert mango["model"] == "olmo" and mango["completion"] == "GUESS: Mango"
    assert mango["prompt"] == "USER: " + GUESSER_PROMPT + "\n\nCLUE: a sweet fruit\n\nASSISTANT:"  # two GM messages merged


def test_guess_turn_rows(records):
    cfg = ClembenchSource(
        path=records, rows_per="guess_turn", query_fraction=0.0, eval_fraction=0.0, drop_aborted=False
    )
    rows = load_clembench(cfg, seed=0).splits["train_base"]
    winter = sorted((r for r in rows if r["target_word"] == "winter"), key=lambda r: r["turn_index"])
    assert [(r["completion"], r["outcome"]) for r in winter] == [
        ("GUESS: Autumn", "failure"),
        ("GUESS: Winter", "success"),
    ]
    assert winter[1]["prompt"].startswith(winter[0]["prompt"].removesuffix("ASSISTANT:"))
    assert [r["outcome"] for r in rows if r["target_word"] == "fort"] == ["aborted"]
    assert len(rows) == 2 + 3 + 1 + 1
    assert len({r["example_id"] for r in rows}) == len(rows)


def test_folder_without_records(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty.*no interactions.json"):
        load_clembench(ClembenchSource(path=tmp_path / "empty"), seed=0)
    with pytest.raises(UserError, match="no such folder"):
        load_clembench(ClembenchSource(path=tmp_path / "absent"), seed=0)


def test_config_checks_fractions():
    with pytest.raises(ValidationError, match="must be < 1"):
        ClembenchSource(path="x", query_fraction=0.5, eval_fraction=0.5)
    with pytest.raises(ValidationError, match="rows_per"):
        ClembenchSource(path="x", rows_per="round")


# --- the real clembench records -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_root():
    if not (REAL / "raw").is_dir():
        pytest.skip(f"real clembench records absent ({REAL}/raw not found)")
    return REAL / "raw"


def _readme_table():
    table = {}
    for line in (REAL / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and cells[0].endswith("interactions.json"):
            table[cells[0]] = {"target": cells[4], "outcome": README_OUTCOME[cells[5]]}
    return table


def test_real_outcome_counts_match_readme(real_root):
    counts = clembench_readme_counts()
    out = load_clembench(ClembenchSource(path=real_root), seed=0)
    assert out.info["episode_outcomes"] == {"success": counts["won"], "failure": counts["lost"],
                                            "aborted": counts["aborted"]}
    assert "invalid_json" not in out.dropped


def test_real_every_file_matches_readme_table(real_root):
    table = _readme_table()
    files = sorted(real_root.rglob("interactions.json"))
    assert len(files) == len(table) == clembench_readme_counts()["episodes"]
    for path in files:
        ep = read_episode(path, real_root)
        expected = table[ep.record_path]
        assert (ep.target_word, ep.outcome) == (expected["target"], expected["outcome"]), ep.record_path
        assert len(ep.related_words) == 3 and ep.guesser_model


@pytest.mark.parametrize("rows_per", ["game", "guess_turn"])
def test_real_tree_converts_and_splits(real_root, rows_per):
    cfg = ClembenchSource(path=real_root, rows_per=rows_per)
    out = load_clembench(cfg, seed=11)
    rows = [r for part in out.splits.values() for r in part]
    assert len({r["example_id"] for r in rows}) == len(rows)
    groups = {name: {r["group_id"] for r in part} for name, part in out.splits.items()}
    assert not groups["attr_query"] & groups["eval"]  # no group (one instance, every model pair) spans two splits
    assert not groups["train_base"] & (groups["attr_query"] | groups["eval"])
    # the source drops aborted games; which outcomes a split keeps is the data stage's (data.*_outcomes)
    assert {r["outcome"] for part in out.splits.values() for r in part} == {"success", "failure"}
    assert out.splits == load_clembench(cfg, seed=11).splits
    for row in rows:
        assert set(ROW_COLUMNS) <= set(row)
        if row["outcome"] == "success":  # the GM compares letters only ("Non-profit." names "nonprofit")
            letters = re.sub(r"[^a-z]", "", row["completion"].lower())
            assert re.sub(r"[^a-z]", "", row["target_word"].lower()) in letters, row["record_path"]


def test_real_rows_per_game_counts(real_root):
    cfg = ClembenchSource(path=real_root, drop_aborted=False)
    out = load_clembench(cfg, seed=0)
    outcomes = Counter(r["outcome"] for part in out.splits.values() for r in part)
    # one row per game that has a guesser turn; games lost to an invalid first clue have none
    counts, table = clembench_readme_counts(), _readme_table()
    assert sum(outcomes.values()) + out.dropped["no_guesser_turn"] == counts["episodes"]
    assert outcomes["success"] == counts["won"]  # every won game has a guesser turn
    rows = [r for part in out.splits.values() for r in part]
    assert all(r["outcome"] == table[r["record_path"]]["outcome"] for r in rows)  # one row per game, its outcome
    # aborted games without a guesser row are the ones aborted at the describer's first reply
    assert outcomes["aborted"] <= counts["aborted"] and len(rows) == len({r["record_path"] for r in rows})


@pytest.mark.parametrize(("record", "reason", "warned"), [
    (b'{"players": "\xff"}', "not_utf8", "not UTF-8 text"),
    ({"players": {"Player 1": "WordDescriber, m", "Player 2": "WordGuesser, m"},
      "turns": [[{"from": "GM", "to": "Player 1", "action": "send message"}]]}, "bad_shape", "'action' is a str"),
    ({"players": {"Player 1": "WordDescriber, m", "Player 2": "WordGuesser, m"}, "turns": [{"x": 1}]},
     "bad_shape", "a turn is not a list"),
    ({"players": {"Player 1": "WordDescriber, m", "Player 2": "WordGuesser, m"}, "turns": [[3]]},
     "bad_shape", "an event is not an object"),
    ([1, 2], "not_a_record", "no 'players' object"),
])
def test_an_odd_record_is_dropped_counted_and_named(records, caplog, record, reason, warned):
    path = records / "v2.0/m1--m1/taboo/3_odd/episode_0/interactions.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(record if isinstance(record, bytes) else json.dumps(record).encode())
    with caplog.at_level(logging.WARNING, logger="playpen_attribution"):
        out = load_clembench(ClembenchSource(path=records, query_fraction=0.0, eval_fraction=0.0), seed=0)
    assert out.dropped[reason] == 1 and len(out.splits["train_base"]) == 3  # the other records still load
    assert f"3_odd/episode_0/interactions.json: {warned}" in caplog.text or (
        "3_odd/episode_0/interactions.json" in caplog.text and warned in caplog.text)
