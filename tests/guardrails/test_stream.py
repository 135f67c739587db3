"""Output filtering on streams: matches across chunk boundaries, blocks, bounded lag."""

from __future__ import annotations

import random

import pytest

from apps.guardrails.engine import FilterResult
from tests.guardrails.factories import engine

EVERYTHING = {
    "detectors": {
        name: "redact"
        for name in ("email", "phone", "credit_card", "iban", "us_ssn", "secret_token")
    },
    "blocked_terms": ["top secret"],
    "blocked_terms_action": "redact",
    "regex_rules": [
        {"pattern": r"\bPRJ-\d{4}\b", "action": "redact", "label": "project"},
        {"pattern": r"confidential\s+memo", "action": "flag", "label": "memo"},
    ],
}


def run(flt, chunks: list[str]) -> tuple[str, bool, list[FilterResult]]:
    results = []
    for chunk in chunks:
        results.append(flt.feed(chunk))
        if results[-1].blocked:
            return "".join(r.emit for r in results), True, results
    results.append(flt.finish())
    return "".join(r.emit for r in results), results[-1].blocked, results


def test_email_split_across_three_chunks_is_redacted():
    flt = engine(detectors={"email": "redact"}).output_filter()
    first = flt.feed("Write to john.d")
    second = flt.feed("oe@exam")
    third = flt.feed("ple.com today")
    last = flt.finish()
    text = first.emit + second.emit + third.emit + last.emit
    assert text == "Write to [REDACTED:EMAIL] today"
    assert "john" not in first.emit + second.emit  # nothing of it left early
    assert first.emit == "Write to "  # the clean prefix is not held
    assert third.redactions == ("EMAIL",)


def test_card_split_into_digits_is_redacted():
    flt = engine(detectors={"credit_card": "redact"}).output_filter()
    text, blocked, _ = run(flt, ["card: 41", "11 11", "11 1", "111 11", "11, thanks"])
    assert (text, blocked) == ("card: [REDACTED:CREDIT_CARD], thanks", False)


def test_blocked_term_split_across_chunks_blocks_after_the_clean_prefix():
    flt = engine(blocked_terms=["top secret"], applies_to_input=False).output_filter()
    results = [flt.feed(c) for c in ("The plan is ", "to", "p se", "cret: launch")]
    assert [r.blocked for r in results] == [False, False, False, True]
    assert "".join(r.emit for r in results) == "The plan is "
    assert results[-1].labels == ("BLOCKED_TERM",)
    assert "blocked" in results[-1].reason
    # The stream is over: nothing more is sent, whatever arrives.
    assert flt.feed("more") == FilterResult(blocked=True)
    assert flt.finish() == FilterResult(blocked=True)


def test_block_on_output_detector():
    flt = engine(detectors={"us_ssn": "block"}).output_filter()
    text, blocked, results = run(flt, ["Sure. Your SSN is 123-", "45-6789 as requested."])
    assert blocked and text == "Sure. Your SSN is "
    assert results[-1].labels == ("US_SSN",)


def test_the_clean_prefix_before_a_block_is_emitted_with_its_redactions():
    policy = engine(detectors={"email": "redact", "credit_card": "block"})
    text, blocked, _ = run(
        policy.output_filter(), ["Mail a@b.io", " then pay 4111", " 1111 1111 1111 ok"]
    )
    assert (text, blocked) == ("Mail [REDACTED:EMAIL] then pay ", True)


def test_finish_flushes_the_held_tail():
    flt = engine(detectors={"email": "redact"}, blocked_terms=["forbidden"]).output_filter()
    sent = flt.feed("Contact: hello").emit + flt.feed(" forbid").emit
    assert flt.held > 0
    final = flt.finish()
    assert sent + final.emit == "Contact: hello forbid"
    assert not final.blocked
    assert flt.held == 0
    with pytest.raises(RuntimeError):
        flt.feed("late")


def test_finish_completes_a_match_at_the_very_end():
    flt = engine(detectors={"email": "redact"}).output_filter()
    assert flt.feed("mail jo@example.com").emit == "mail "
    assert flt.finish().emit == "[REDACTED:EMAIL]"


def test_long_clean_text_fed_char_by_char_streams_with_bounded_lag():
    flt = engine(**EVERYTHING).output_filter()
    text = (
        "The quarterly report shows revenue grew 12% to $1,234,567 in 2024 (see table 3). "
        "Version 1.2.3 shipped on Monday at 10:30 UTC; the rollout went smoothly.\n"
    ) * 40
    sent: list[str] = []
    worst = 0
    for char in text:
        sent.append(flt.feed(char).emit)
        worst = max(worst, flt.held)
    sent.append(flt.finish().emit)
    assert "".join(sent) == text
    assert worst <= 24  # about a word, never the whole answer
    assert sum(1 for piece in sent if piece) > len(text) / 12  # released as it comes


def test_no_rules_passes_text_straight_through():
    flt = engine(detectors={"email": "block"}, applies_to_output=False).output_filter()
    assert flt.feed("a@b.co").emit == "a@b.co"
    assert flt.finish().emit == ""


SAMPLES = [
    "Reach jane.doe@example.com or +44 20 7946 0958; card 4111-1111-1111-1111.",
    "IBAN DE89 3704 0044 0532 0130 00 DUE, SSN 123-45-6789, ref PRJ-1234.",
    "key sk-proj-u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzd and top   secret notes",
    "a confidential   memo about 2024-01-15 and 4111 1111 1111 1112 (not a card)",
    "no matches here, just prose with numbers 12 345 6789 and v1.2.3",
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_streaming_equals_filtering_the_whole_text(sample):
    """However the answer is chunked, the client gets what a whole answer would give."""
    policy = engine(**EVERYTHING)
    whole = policy.filter_output_text(sample)
    rng = random.Random(sample)
    for _ in range(150):
        chunks, pos = [], 0
        while pos < len(sample):
            step = rng.randint(1, 9)
            chunks.append(sample[pos : pos + step])
            pos += step
        text, blocked, results = run(policy.output_filter(), chunks)
        assert (text, blocked) == (whole.emit, whole.blocked), chunks
        flags = [label for r in results for label in r.flags]
        assert tuple(dict.fromkeys(flags)) == whole.flags


def test_large_term_lists_stream_too():
    """Past a few thousand characters of terms the hold looks tails up in the sorted
    terms instead of a prefix regex: same results."""
    terms = [f"codename {i:04d} alpha" for i in range(600)]
    policy = engine(blocked_terms=terms, blocked_terms_action="redact")
    assert policy.output_rules[0].prefix is None  # the lookup path
    sample = "We shipped Codename 0042   Alpha and codename 0599 alphabet, then codename 12."
    whole = policy.filter_output_text(sample)
    assert whole.emit == (
        "We shipped [REDACTED:BLOCKED_TERM] and codename 0599 alphabet, then codename 12."
    )
    rng = random.Random(5)
    for _ in range(100):
        chunks, pos = [], 0
        while pos < len(sample):
            step = rng.randint(1, 7)
            chunks.append(sample[pos : pos + step])
            pos += step
        assert run(policy.output_filter(), chunks)[:2] == (whole.emit, False), chunks
