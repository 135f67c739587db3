"""Blocked terms, regex rules and the three actions on input; merging policies."""

from __future__ import annotations

import copy

import pytest

from apps.core.errors import ContentBlocked
from apps.guardrails.engine import Action, compile_policies
from apps.guardrails.validation import (
    PolicyError,
    normalize_detectors,
    normalize_regex_rules,
    normalize_terms,
    policy_spec,
)
from tests.guardrails.factories import engine


def user(text):
    return [{"role": "user", "content": text}]


# --- blocked terms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "this is Forbidden.",
        "FORBIDDEN",
        "(forbidden)",
        "say forbidden!",
        "top  secret",
        "Top\nSecret",
    ],
)
def test_terms_match_in_any_case_as_whole_words(text):
    policy = engine(blocked_terms=["forbidden", "top secret"])
    assert policy.check_input(user(text)).blocked


@pytest.mark.parametrize(
    "text", ["unforbidden", "forbiddenness", "forbidden_x", "topsecret", "top-secrets"]
)
def test_terms_do_not_match_inside_words(text):
    policy = engine(blocked_terms=["forbidden", "top secret"])
    assert not policy.check_input(user(text)).blocked


def test_terms_with_symbols_are_literal():
    policy = engine(blocked_terms=["c++", "a.b"])
    assert policy.check_input(user("I like C++ a lot")).blocked
    assert not policy.check_input(user("I like axb")).blocked


def test_many_terms():
    policy = engine(blocked_terms=[f"word{i}" for i in range(1500)], blocked_terms_action="redact")
    result = policy.check_input_text("say word1499 and word7 but not word15000")
    assert (
        result.emit == "say [REDACTED:BLOCKED_TERM] and [REDACTED:BLOCKED_TERM] but not word15000"
    )


# --- regex rules -------------------------------------------------------------------------


def test_regex_rules_with_labels_and_actions():
    policy = engine(
        regex_rules=[
            {"pattern": r"\bPRJ-\d{4}\b", "action": "redact", "label": "project"},
            {"pattern": r"(?i)internal only", "action": "flag", "label": "internal"},
            {"pattern": r"\bDROP TABLE\b", "action": "block", "label": "sql"},
        ]
    )
    result = policy.check_input_text("PRJ-1234 is Internal Only")
    assert result.emit == "[REDACTED:PROJECT] is Internal Only"
    assert result.flags == ("INTERNAL",)
    verdict = policy.check_input(user("please DROP TABLE users"))
    assert verdict.blocked and verdict.labels == ("SQL",)


# --- actions on input --------------------------------------------------------------------


def test_block_on_input_gives_a_400_content_policy_violation():
    verdict = engine(detectors={"credit_card": "block"}).check_input(
        [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "my card is 4111 1111 1111 1111"},
        ]
    )
    assert verdict.blocked
    assert verdict.labels == ("CREDIT_CARD",)
    error = verdict.error()
    assert isinstance(error, ContentBlocked)
    assert error.status == 400
    assert error.to_dict()["error"]["code"] == "content_policy_violation"
    assert "4111" not in error.message  # the matched text is never echoed


def test_redact_on_input_returns_new_messages_and_leaves_the_callers_alone():
    messages = [
        {"role": "system", "content": "Reply to ops@example.com"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "I am jane@example.com"},
                {"type": "image_url", "image_url": {"url": "https://x/a@b.com.png"}},
            ],
            "name": "jane",
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "lookup: bob@example.org", "tool_call_id": "1"},
    ]
    original = copy.deepcopy(messages)
    verdict = engine(detectors={"email": "redact"}).check_input(messages)
    assert messages == original
    assert not verdict.blocked and verdict.redacted
    assert verdict.redactions == ("EMAIL",)
    out = verdict.messages
    assert out is not messages
    assert out[0]["content"] == "Reply to [REDACTED:EMAIL]"
    assert out[1]["content"][0] == {"type": "text", "text": "I am [REDACTED:EMAIL]"}
    assert out[1]["content"][1] == messages[1]["content"][1]  # not text: untouched
    assert out[1]["name"] == "jane"
    assert out[2] is messages[2]
    assert out[3]["content"] == "lookup: [REDACTED:EMAIL]"
    assert out[3]["tool_call_id"] == "1"


def test_flag_on_input_changes_nothing_and_reports():
    messages = user("call +1 (415) 555-2671")
    verdict = engine(detectors={"phone": "flag"}).check_input(messages)
    assert not verdict.blocked and not verdict.redacted
    assert verdict.messages == messages
    assert verdict.flags == ("PHONE",)
    assert verdict.findings[0].action is Action.FLAG


def test_clean_input():
    verdict = engine(detectors={"email": "block"}, blocked_terms=["x"]).check_input(user("hi"))
    assert not verdict.blocked and not verdict.redacted and verdict.findings == ()


def test_overlapping_redactions_merge_and_block_wins():
    policy = engine(
        detectors={"email": "redact"},
        regex_rules=[{"pattern": r"example\.com", "action": "redact", "label": "domain"}],
    )
    assert policy.check_input_text("a jo@example.com b").emit == "a [REDACTED:EMAIL] b"
    policy = engine(
        detectors={"email": "redact"},
        regex_rules=[{"pattern": r"example", "action": "block", "label": "domain"}],
    )
    assert policy.check_input(user("jo@example.com")).blocked


def test_directions():
    inbound = engine(detectors={"email": "block"}, applies_to_output=False)
    assert inbound.check_input(user("jo@example.com")).blocked
    assert inbound.filter_output_text("jo@example.com").emit == "jo@example.com"
    outbound = engine(detectors={"email": "block"}, applies_to_input=False)
    assert not outbound.check_input(user("jo@example.com")).blocked
    assert outbound.filter_output_text("jo@example.com").blocked
    assert not outbound.filters_input and outbound.filters_output


def test_merging_policies_the_strongest_action_wins():
    merged = compile_policies(
        [
            policy_spec(name="a", detectors={"email": "flag"}, blocked_terms=["alpha"]),
            policy_spec(
                name="b",
                detectors={"email": "block"},
                blocked_terms=["ALPHA", "beta"],
                blocked_terms_action="redact",
            ),
        ]
    )
    assert merged.check_input(user("jo@example.com")).blocked
    assert merged.check_input(user("alpha")).blocked  # block (a) beats redact (b)
    assert merged.check_input_text("beta").emit == "[REDACTED:BLOCKED_TERM]"


# --- validation --------------------------------------------------------------------------


def test_normalize_terms():
    assert normalize_terms(["  Top   secret ", "top SECRET", "", "x"]) == ["Top secret", "x"]
    with pytest.raises(PolicyError):
        normalize_terms(["x" * 101])
    with pytest.raises(PolicyError):
        normalize_terms("not a list")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"pattern": "(", "action": "block"}, "not a valid regular expression"),
        ({"pattern": "a*", "action": "block"}, "empty"),
        ({"pattern": "(a+)+b", "action": "block"}, "exponential"),
        ({"pattern": "x" * 501, "action": "block"}, "longer than"),
        ({"pattern": "x", "action": "explode"}, "Unknown action"),
        ({"pattern": "x", "label": "bad label!"}, "labels"),
        ({"pattern": "x", "extra": 1}, "unknown field"),
    ],
)
def test_regex_rules_are_validated(rule, message):
    with pytest.raises(PolicyError, match=message):
        normalize_regex_rules([rule])


def test_regex_rule_defaults():
    assert normalize_regex_rules([{"pattern": r"\d{4}", "label": "pin code"}]) == [
        {"pattern": r"\d{4}", "action": "redact", "label": "PIN_CODE"}
    ]


def test_normalize_detectors():
    assert normalize_detectors({"iban": "BLOCK", "email": "off", "phone": ""}) == {"iban": "block"}
    with pytest.raises(PolicyError, match="Unknown detector"):
        normalize_detectors({"dna": "block"})
