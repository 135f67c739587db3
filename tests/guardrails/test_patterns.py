"""What the stream filter learns from a pattern's parse tree, and which patterns are refused."""

from __future__ import annotations

import re

import pytest

from apps.guardrails.detectors import DETECTORS
from apps.guardrails.patterns import UNBOUNDED, PatternError, analyse, validate_pattern


def alphabet_matches(pattern: str, chars: str) -> dict[str, bool]:
    alphabet = re.compile(analyse(pattern).alphabet)
    return {c: bool(alphabet.fullmatch(c)) for c in chars}


def test_the_alphabet_is_what_a_match_can_consume():
    seen = alphabet_matches(r"(?<![\w.])PRJ-\d{2,4}(?!\w)", "PRJ-09 ax.")
    # Lookbehinds and a final one-character lookahead are tested, never consumed.
    assert seen == {c: c in "PRJ-09" for c in "PRJ-09 ax."}


def test_case_insensitive_patterns_have_case_insensitive_alphabets():
    assert alphabet_matches(r"(?i)abc", "aAbBz") == {
        "a": True,
        "A": True,
        "b": True,
        "B": True,
        "z": False,
    }
    assert alphabet_matches(r"x(?i:y)", "yY") == {"y": True, "Y": True}


def test_any_character_means_no_alphabet():
    assert analyse(r"secret.*plan").alphabet is None
    assert analyse(r"[^x]+").alphabet == "[^x]"


def test_reach_counts_lookaheads_and_one_more_character():
    assert analyse(r"\d{3}(?![ .-]?\d)").reach == 3 + 2 + 1
    assert analyse(r"a+").reach == UNBOUNDED


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detectors_are_bounded_and_never_consume_letters_and_spaces_together(name):
    info = analyse(DETECTORS[name].pattern)
    assert info.reach < UNBOUNDED and info.min_width > 0
    alphabet = re.compile(info.alphabet)
    # Prose (lowercase words and spaces) always breaks a detector's run within a word.
    assert not (alphabet.fullmatch("e") and alphabet.fullmatch(" "))


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("(?:x|)", "empty"),
        ("(a*)*b", "exponential"),
        (r"(?:\w+\s?)+$", "exponential"),
        ("(?<=" + "x" * 70 + ")y", "look back"),
        ("[", "not a valid"),
        ("x" * 600, "longer than"),
    ],
)
def test_unsafe_patterns_are_refused(pattern, message):
    with pytest.raises(PatternError, match=message):
        validate_pattern(pattern)


def test_safe_patterns_pass():
    for pattern in (r"\bPRJ-\d{4}\b", r"(?i)internal[ -]only", r"(?:\w{1,20}\.){1,5}example"):
        validate_pattern(pattern)
