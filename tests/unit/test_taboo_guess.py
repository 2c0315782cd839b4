import pytest

from playpen_attribution.taboo.guess import extract_guess, gold_word


@pytest.mark.parametrize("text,word", [
    ("GUESS: apple", "apple"),
    ("guess: Apple.", "apple"),
    ("GUESS : apple", "apple"),          # word-level tokenizers decode with spaces
    ("I think... GUESS: ice-cream!", "ice-cream"),
    ("GUESS: apple GUESS: pear", "apple"),
    ("apple", None),
    ("", None),
    ("GUESS:", None),
])
def test_extract_guess(text, word):
    assert extract_guess(text) == word


def test_gold_word_falls_back_to_first_word():
    assert gold_word("GUESS: Tiger") == "tiger"
    assert gold_word("tiger, I think") == "tiger"
    assert gold_word("") is None
