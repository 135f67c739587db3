"""Built-in PII and secret detectors: a pattern finds candidates, a check confirms them.

Each detector is tuned for few false positives, since a redaction in the middle of an
ordinary answer is a visible defect:

* ``email``: RFC-shaped ASCII addresses with a dotted domain and an alphabetic TLD;
* ``phone``: E.164 (``+`` and 8-15 digits, separators allowed), North American
  ``(415) 555-2671`` / ``415-555-2671`` / ``1 415 555 2671`` with valid area and exchange
  codes, and national numbers with a trunk ``0`` written in groups (``020 7946 0958``,
  ``01 23 45 67 89``). Bare digit runs without ``+`` are never phones: they are far
  more often ids, amounts and timestamps;
* ``credit_card``: 13-19 digits, optionally grouped with spaces or dashes, starting
  with a major network's digit (2-6) and passing the Luhn check;
* ``iban``: a known country code, the IBAN length of that country, mod-97 check;
  compact or in groups of four;
* ``us_ssn``: ``AAA-GG-SSSS`` (or with spaces), excluding the never-issued ranges:
  area 000, 666 and 900-999, group 00, serial 0000;
* ``secret_token``: keys with a known shape (OpenAI/Anthropic ``sk-…``, our own
  ``gw-…``, AWS ``AKIA…``, GitHub ``ghp_…``/``github_pat_…``, GitLab, Slack ``xox?-…``,
  Google ``AIza…``, Stripe, JWTs) and long random-looking base64 strings. Bare hex
  strings are not reported: they are commit ids and digests far more often than keys.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

# A check gets the candidate and returns the end of the confirmed match (usually the
# candidate's own end), or None to reject it.
Check = Callable[[re.Match[str]], int | None]


@dataclass(frozen=True)
class Detector:
    name: str
    label: str
    pattern: str
    check: Check | None = None
    hint: str | None = None  # a substring every match contains: a cheap pre-test
    description: str = ""


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


# --- email ---------------------------------------------------------------------------

# Patterns start with a character class and check what precedes it with a lookbehind
# after that first character: a leading class lets the regex engine skip ahead in C
# to candidate characters (digits are rare in prose), a leading lookbehind would not.

EMAIL = (
    r"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-].)"
    r"[A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
    r"[A-Za-z]{2,24}"
    r"(?![A-Za-z0-9-])"
)

# --- phone ---------------------------------------------------------------------------

# Each alternative re-reads the first character with a lookbehind (see above).
PHONE = (
    r"[+(\d](?<![\w+].)(?<!\d[ .-].)"
    r"(?:"
    r"(?P<intl>(?<=\+)[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,5})"
    r"|(?P<nanp>(?:(?<=1)[ .-](?:\([2-9]\d\d\)[ ]?|[2-9]\d\d[ .-])"
    r"|(?<=\()[2-9]\d\d\)[ ]?|(?<=[2-9])\d\d[ .-])[2-9]\d\d[ .-]\d{4})"
    r"|(?P<national>(?<=0)\d{1,4}(?:[ .-]\d{2,4}){2,4}|(?<=0)\d{2,4}[ -]\d{5,8}"
    r"|(?<=\()0\d{1,4}\)[ ]?\d{2,4}(?:[ .-]?\d{2,4}){1,3})"
    r")"
    r"(?![ .-]?\d)(?!\w)"
)


def _phone_check(match: re.Match[str]) -> int | None:
    count = len(_digits(match.group()))
    if match.group("intl"):
        ok = 8 <= count <= 15
    elif match.group("nanp"):
        ok = count in (10, 11)
    else:
        ok = 9 <= count <= 12
    return match.end() if ok else None


# --- credit card ---------------------------------------------------------------------

CREDIT_CARD = r"[2-6](?<![\d-].)(?<!\d .)\d{3}(?:[ -]?\d){9,15}(?![ -]?\d)"


def luhn_valid(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card_check(match: re.Match[str]) -> int | None:
    digits = _digits(match.group())
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return match.end()
    return None


# --- IBAN ----------------------------------------------------------------------------

IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

IBAN = r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])"


def iban_valid(compact: str) -> bool:
    """Length for the country and the ISO 7064 mod-97 check."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_check(match: re.Match[str]) -> int | None:
    text = match.group()
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    # The pattern may run on into a following all-caps word ("… 00 DUE"): cut at the
    # country's length, which must end a group.
    seen = 0
    for index, char in enumerate(text):
        if char != " ":
            seen += 1
        if seen == length:
            end = index + 1
            if end < len(text) and text[end] != " ":
                return None
            return match.start() + end if iban_valid(text[:end].replace(" ", "")) else None
    return None


# --- US social security number --------------------------------------------------------

US_SSN = (
    r"[0-8](?<![\d-].)(?<!\d .)\d\d(?<!000)(?<!666)"
    r"(?:-(?!00)\d{2}-|[ ](?!00)\d{2}[ ])(?!0000)\d{4}"
    r"(?![ -]?\d)"
)

# --- secrets -------------------------------------------------------------------------

SECRET_TOKEN = (
    r"(?<![A-Za-z0-9_+/-])"
    r"(?:"
    r"sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}"
    r"|gw-[A-Za-z0-9_-]{32,64}"
    r"|(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,76}"
    r"|github_pat_[A-Za-z0-9_]{40,120}"
    r"|glpat-[A-Za-z0-9_-]{20,40}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,120}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,120}"
    r"|eyJ[A-Za-z0-9_-]{8,512}\.[A-Za-z0-9_-]{8,1024}\.[A-Za-z0-9_-]{8,512}"
    r"|(?P<generic>[A-Za-z0-9+/]{32,512}={0,2}|[A-Za-z0-9_-]{32,512})"
    r")"
    r"(?![A-Za-z0-9_+/=-])"
)

_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}")
MIN_ENTROPY = 3.5  # bits per character; random base64 of 32+ characters is above 4.3


def shannon_entropy(text: str) -> float:
    length = len(text)
    return -sum(n / length * math.log2(n / length) for n in Counter(text).values())


def looks_random(text: str) -> bool:
    """Mixed-case letters and digits, high entropy, not made of words (paths, names)."""
    upper = sum(ch.isupper() for ch in text)
    lower = sum(ch.islower() for ch in text)
    digits = sum(ch.isdigit() for ch in text)
    if upper < 2 or lower < 2 or digits < 2:
        return False
    wordy = sum(len(m) for m in _WORDISH.findall(text))
    if wordy > 0.6 * len(text):
        return False
    return shannon_entropy(text) >= MIN_ENTROPY


def _secret_check(match: re.Match[str]) -> int | None:
    generic = match.group("generic")
    if generic is None or looks_random(generic.rstrip("=")):
        return match.end()
    return None


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("email", "EMAIL", EMAIL, hint="@", description="Email addresses"),
        Detector("phone", "PHONE", PHONE, _phone_check, description="Phone numbers"),
        Detector(
            "credit_card",
            "CREDIT_CARD",
            CREDIT_CARD,
            _card_check,
            description="Payment card numbers (Luhn-checked)",
        ),
        Detector("iban", "IBAN", IBAN, _iban_check, description="IBANs (mod-97-checked)"),
        Detector("us_ssn", "US_SSN", US_SSN, description="US social security numbers"),
        Detector(
            "secret_token",
            "SECRET_TOKEN",
            SECRET_TOKEN,
            _secret_check,
            description="API keys, tokens and random-looking secrets",
        ),
    )
}
