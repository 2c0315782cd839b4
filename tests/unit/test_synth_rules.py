"""Unit tests of the pure Taboo rules, word sources and config (no server, no files beyond tmp)."""

from __future__ import annotations

import json

import pytest

from playpen_attribution.errors import UserError
from playpen_attribution.synth import rules
from playpen_attribution.synth.config import build_config
from playpen_attribution.synth.targets import (
    DEFAULT_TARGETS_FILE,
    Target,
    load_targets,
    parse_targets,
)


@pytest.mark.parametrize(
    "a, b",
    [
        ("apple", "apples"), ("box", "boxes"), ("church", "churches"), ("berry", "berries"),
        ("bake", "baking"), ("bake", "baked"), ("bake", "baker"), ("run", "running"),
        ("happy", "happily"), ("happy", "happiness"), ("glass", "glasses"), ("play", "players"),
        ("cookie", "cookies"), ("dance", "dancing"), ("quick", "quickly"),
    ],
)
def test_stem_joins_word_forms(a, b):
    assert rules.stem(a) == rules.stem(b)


@pytest.mark.parametrize("word", ["sing", "king", "red", "bed", "bus", "glass", "this", "is"])
def test_stem_keeps_short_words_whole(word):
    assert len(rules.stem(word)) >= min(len(word), rules.MIN_STEM)
    assert rules.stem(word).startswith(word[:3])


@pytest.mark.parametrize(
    "clue, target, related",
    [
        ("a snow day", "snow", []),  # the target itself
        ("It is SNOW!", "snow", []),  # case and punctuation
        ("falling snowflakes", "snow", []),  # compound containing the target
        ("build a snowman", "snow", []),
        ("it is snowing", "snow", []),  # -ing form
        ("a snowy hill", "snow", []),  # -y form
        ("red fruits", "apple", ["fruit", "red", "tree"]),  # related word and its plural
        ("many apples", "pie", ["apple"]),  # plural of a related word
        ("she baked it", "bread", ["bake"]),  # -ed form of a related word
        ("a fast runner", "sprint", ["run"]),  # -er form with a doubled consonant
        ("berries grow there", "jam", ["berry"]),  # -ies plural
        ("happily ever after", "fairytale", ["happy"]),  # -ily adverb
        ("kick the ball", "football", []),  # the target contains the clue word
        ("round balls", "football", []),  # ... also in plural
        ("many arts", "art", []),  # a short target: inflections only
        ("an artist paints", "art", []),
        ("a sunny day", "sun", []),  # doubled final consonant plus -y
        ("a campfire", "fire", []),  # target at the end of a compound
        ("fire-fighter", "firefighter", []),  # hyphenated target parts
        ("chocolate", "ice cream", ["chocolate"]),
        ("ice", "ice cream", []),  # one word of a two-word target
    ],
)
def test_clue_violations_are_found(clue, target, related):
    assert rules.clue_violation(clue, target, related) is not None


@pytest.mark.parametrize(
    "clue, target, related",
    [
        ("you start a party with heart", "art", []),  # short stems never match inside words
        ("a train in the street", "rain", ["tree"]),  # 'rain' in 'train' is not a compound
        ("thin ice", "something", []),  # 'thin' only sits in 'something' across a boundary
        ("a long beard", "bear", []),  # '-d' only follows '-e' ('iced'), so no 'bear' + 'd'
        ("a painting", "pain", []),  # split after stripping '-ing': 'paint' holds no compound
        ("a card game", "car", []),
        ("the planet", "plan", []),
        ("bring the string in spring", "ring", []),
        ("wheat", "heat", []),
        ("it will appear", "pear", []),
        ("a red round fruit from an orchard", "apple", ["tree", "pie", "juice"]),
    ],
)
def test_legal_clues_are_not_flagged(clue, target, related):
    assert rules.clue_violation(clue, target, related) is None


def test_short_stem_gap_is_documented():
    """Closed compounds of words under four letters pass (no dictionary to tell 'artwork' from
    'article'); forms and inflections of them do not."""
    assert rules.clue_violation("artwork", "art", []) is None
    assert rules.clue_violation("article", "art", []) is None
    assert rules.clue_violation("smart painters", "art", ["paint"]) is not None


def test_violation_message_names_the_word():
    message = rules.clue_violation("many apples here", "pie", ["apple"])
    assert "'apples'" in message and "'apple'" in message and "taboo word" in message
    assert "target word" in rules.clue_violation("snow", "snow", [])


def test_short_function_words_of_related_phrases_are_not_taboo():
    assert rules.taboo_words("queen", ["king of the castle"]) == ["queen", "king", "castle"]
    assert rules.clue_violation("the ruler of a land", "queen", ["king of the castle"]) is None


@pytest.mark.parametrize(
    "reply, clue",
    [
        ("CLUE: a red fruit", "a red fruit"),
        ("  clue:   a red fruit  \nGood luck!", "a red fruit"),
        ("Sure!\n**CLUE:** a red fruit", "a red fruit"),
    ],
)
def test_parse_clue(reply, clue):
    assert rules.parse_clue(reply) == (clue, None)


@pytest.mark.parametrize("reply", ["a red fruit", "", "CLUE:", "CLUE:   ..."])
def test_parse_clue_rejects(reply):
    clue, problem = rules.parse_clue(reply)
    assert clue is None and problem


@pytest.mark.parametrize(
    "reply, guess",
    [
        ("GUESS: apple", "apple"),
        ("guess: Apple.", "apple"),
        ("I think...\nGUESS: \"APPLE\"!", "apple"),
        ("**GUESS:** apple", "apple"),
        ("GUESS: <apple>", "apple"),
    ],
)
def test_parse_guess(reply, guess):
    assert rules.parse_guess(reply) == (guess, None)


@pytest.mark.parametrize(
    "reply, fragment",
    [
        ("GUESS:", "empty"),
        ("GUESS:    ", "empty"),
        ("GUESS: <word>", "placeholder"),
        ("GUESS: word", "placeholder"),
        ("GUESS: guess", "placeholder"),
        ("GUESS: ...", "placeholder"),
        ("GUESS: ???", "placeholder"),
        ("apple", "no line starting with 'GUESS:'"),
        ("", "no line starting with 'GUESS:'"),
        ("GUESS: red apple", "more than one word"),
    ],
)
def test_parse_guess_rejects(reply, fragment):
    guess, problem = rules.parse_guess(reply)
    assert guess is None and fragment in problem


def test_two_word_guess_allowed_for_two_word_target():
    assert rules.parse_guess("GUESS: Ice-cream", max_words=2) == ("ice cream", None)


@pytest.mark.parametrize(
    "guess, target, correct",
    [("apple", "apple", True), ("Apple!", "apple", True), (" APPLE ", "Apple", True),
     ("ice-cream", "ice cream", True), ("apples", "apple", False), ("", "apple", False)],
)
def test_is_correct(guess, target, correct):
    assert rules.is_correct(guess, target) is correct


def test_parse_clembench_instances_and_json_list():
    clembench = {"experiments": [{"name": "high_en", "game_instances": [
        {"game_id": 0, "target_word": "snow", "related_word": ["cold", "white", "winter"]}]}]}
    assert parse_targets(clembench, "x") == [Target("snow", ("cold", "white", "winter"))]
    listed = [{"target_word": "rain", "related_words": ["wet"]}]
    assert parse_targets(listed, "x") == [Target("rain", ("wet",))]


def test_bad_word_source_names_the_entry():
    with pytest.raises(UserError, match=r"f.json: experiment 'e1', game instance 2.*target_word"):  # 1-based
        parse_targets({"experiments": [{"name": "e1", "game_instances": [
            {"target_word": "a", "related_word": []}, {"related_word": []}]}]}, "f.json")
    with pytest.raises(UserError, match="entry 2.*related_words"):
        parse_targets([{"target_word": "b", "related_words": []}, {"target_word": "a", "related_words": 3}], "f.json")


def test_default_targets_and_exclusions(tmp_path):
    default = load_targets(None, None)
    assert len(default) >= 40 and all(len(t.related) == 3 for t in default)
    assert DEFAULT_TARGETS_FILE.is_file()
    text = tmp_path / "eval.txt"
    text.write_text("Apple\n\nbicycle\n")
    words = {t.word for t in load_targets(None, text)}
    assert "apple" not in words and "bicycle" not in words and len(words) == len(default) - 2
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps({"target_word": "candle", "prompt": "x"}) + "\n")
    assert "candle" not in {t.word for t in load_targets(None, jsonl)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"target_word": "a"}\n{oops\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        load_targets(None, bad)


def test_everything_excluded_is_an_error(tmp_path):
    source = tmp_path / "t.json"
    source.write_text(json.dumps([{"target_word": "snow", "related_words": []}]))
    words = tmp_path / "w.txt"
    words.write_text("snow\n")
    with pytest.raises(UserError, match="no target words left"):
        load_targets(source, words)


def test_config_errors_name_field_and_value(tmp_path):
    with pytest.raises(UserError, match=r"field 'games_per_guesser' = 0"):
        build_config({"output_dir": tmp_path, "describer_model": "d", "guesser_models": ["g"],
                      "games_per_guesser": 0}, "synth flags")
    with pytest.raises(UserError, match=r"field 'describer_model' = missing"):
        build_config({"output_dir": tmp_path, "guesser_models": ["g"], "games_per_guesser": 1}, "c.yaml")
    with pytest.raises(UserError, match="field 'colour'"):
        build_config({"output_dir": tmp_path, "describer_model": "d", "guesser_models": ["g"],
                      "games_per_guesser": 1, "colour": "red"}, "c.yaml")
