"""Each detector: what it must find, and near misses it must leave alone."""

from __future__ import annotations

import pytest

from apps.guardrails.detectors import iban_valid, looks_random, luhn_valid
from tests.guardrails.factories import engine

# Fixed random-looking material (not real keys).
B64 = "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8dKLzd"
GW_KEY = "gw-Qm4xT0pZ3vK9wL2sR7yN1cB5hJ8dF6gA0eU3iO4kM2q"


def redacts(detector: str, text: str) -> bool:
    result = engine(detectors={detector: "redact"}).filter_output_text(text)
    return "[REDACTED:" in result.emit


CASES = {
    "email": (
        [
            "john.doe@example.com",
            "a.b+tag@sub.example.co.uk",
            "x_y%z@domain-name.io",
            "Mail JOHN@EXAMPLE.COM.",
        ],
        [
            "user@localhost",
            "@example.com",
            "john@",
            "john@example",
            "name@example.c",
            "follow @handle",
            "foo@bar.123",
        ],
    ),
    "phone": (
        [
            "+1 (415) 555-2671",
            "+14155552671",
            "+44 20 7946 0958",
            "+49 30 12345678",
            "+33 1 23 45 67 89",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "1 415 555 2671",
            "020 7946 0958",
            "01 23 45 67 89",
            "07700 900123",
        ],
        [
            "12345",
            "2024",
            "2024-01-15",
            "01.02.2024",
            "4155552671",  # bare digits: an id as often as a phone
            "call 555-2671",  # too short
            "v1.2.3",
            "192.168.100.200",
            "$1,234,567",
            "+123",
            "115-555-2671",  # no area code starts with 1
            "415-155-2671",  # nor an exchange
            "10:30",
            "1234 5678",
        ],
    ),
    "credit_card": (
        [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5555 5555 5555 4444",
            "378282246310005",
            "6011111111111117",
        ],
        [
            "4111 1111 1111 1112",  # Luhn fails
            "1234 5678 9012 3456",
            "0000 0000 0000 0000",
            "411111111111",  # 12 digits
            "41111111111111111111",  # 20 digits
            "7992739871300",  # Luhn-valid, but no card network starts with 7
            "4111 1111 1111 1111 1",  # part of a longer number
        ],
    ),
    "iban": (
        [
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "NL91ABNA0417164300",
            "FR1420041010050500013M02606",
        ],
        [
            "DE89 3704 0044 0532 0130 01",  # check digits do not match
            "GB82WEST12345698765433",
            "XX89370400440532013000",  # no such country
            "DE8937040044053201300",  # one character short for DE
            "ABCD1234EFGH5678IJKL",
        ],
    ),
    "us_ssn": (
        ["123-45-6789", "123 45 6789", "078-05-1121", "SSN:123-45-6789."],
        [
            "000-12-3456",  # area 000 is never issued
            "666-12-3456",
            "900-12-3456",  # 900 to 999
            "123-00-4567",  # group 00
            "123-45-0000",  # serial 0000
            "123-45-67890",
            "1123-45-6789",
            "123456789",
            "123-456-789",
        ],
    ),
    "secret_token": (
        [
            "sk-proj-" + B64,
            "sk-ant-api03-" + B64,
            GW_KEY,
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_" + B64[:36],
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "AIza" + B64[:35],
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "sk_live_" + B64[:24],
            "token=" + B64 + ".",
        ],
        [
            "sk-short",
            "3f786850e387550fdab836ed7e6dc881de23001b",  # a commit id
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a digest
            "550e8400-e29b-41d4-a716-446655440000",
            "ThisIsAVeryLongCamelCaseIdentifierName2024",
            "/usr/local/lib/python3.11/site-packages/django",
            "a" * 40,
            "https://example.com/docs/getting-started/installation-guide",
            "the_quick_brown_fox_jumps_over_the_lazy_dog_42",
        ],
    ),
}


@pytest.mark.parametrize(
    ("detector", "text"),
    [(d, t) for d, (positives, _) in CASES.items() for t in positives],
)
def test_detector_finds(detector, text):
    assert redacts(detector, f"before {text} after"), text


@pytest.mark.parametrize(
    ("detector", "text"),
    [(d, t) for d, (_, negatives) in CASES.items() for t in negatives],
)
def test_detector_leaves_near_misses_alone(detector, text):
    assert not redacts(detector, f"before {text} after"), text


def test_redaction_keeps_the_surrounding_text():
    policy = engine(detectors={"email": "redact", "phone": "redact"})
    result = policy.filter_output_text("Mail john@example.com, or call +1 (415) 555-2671!")
    assert result.emit == "Mail [REDACTED:EMAIL], or call [REDACTED:PHONE]!"
    assert result.redactions == ("EMAIL", "PHONE")


def test_iban_followed_by_capitals_is_cut_at_the_country_length():
    result = engine(detectors={"iban": "redact"}).filter_output_text(
        "IBAN DE89 3704 0044 0532 0130 00 DUE today"
    )
    assert result.emit == "IBAN [REDACTED:IBAN] DUE today"


def test_checks():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")
    assert looks_random(B64)
    assert not looks_random("ThisIsAVeryLongCamelCaseIdentifierName2024")
