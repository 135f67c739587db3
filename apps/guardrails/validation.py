"""Validation of policy settings, shared by the model, the admin and the API.

Each ``normalize_*`` returns the canonical stored form (deduplicated terms, upper-case
labels, lower-case actions) or raises :class:`PolicyError` naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from apps.guardrails.detectors import DETECTORS
from apps.guardrails.engine import Action, PolicySpec, RegexRule
from apps.guardrails.patterns import PatternError, validate_pattern

MAX_TERMS = 2000
MAX_TERM_LENGTH = 100
MAX_REGEX_RULES = 100
_LABEL = re.compile(r"^[A-Z0-9_]{1,40}$")
_SPACES = re.compile(r"\s+")


class PolicyError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalize_label(value: Any) -> str:
    label = _SPACES.sub("_", str(value or "").strip()).upper().replace("-", "_")
    if not _LABEL.match(label):
        raise ValueError("labels are 1-40 letters, digits or underscores")
    return label


def normalize_terms(terms: Any) -> list[str]:
    if terms in (None, ""):
        return []
    if not isinstance(terms, list | tuple):
        raise PolicyError("blocked_terms", "Expected a list of terms.")
    seen: dict[str, str] = {}
    for raw in terms:
        if not isinstance(raw, str):
            raise PolicyError("blocked_terms", "Every term must be text.")
        term = " ".join(raw.split())
        if not term:
            continue
        if len(term) > MAX_TERM_LENGTH:
            raise PolicyError(
                "blocked_terms", f"Terms are at most {MAX_TERM_LENGTH} characters: {term[:30]}…"
            )
        seen.setdefault(term.lower(), term)
    if len(seen) > MAX_TERMS:
        raise PolicyError("blocked_terms", f"At most {MAX_TERMS} terms per policy.")
    return list(seen.values())


def normalize_action(value: Any, field: str) -> Action:
    try:
        return Action(str(value).strip().lower())
    except ValueError:
        raise PolicyError(field, f"Unknown action {value!r}: use block, redact or flag.")


def normalize_regex_rules(rules: Any) -> list[dict[str, str]]:
    if rules in (None, ""):
        return []
    if not isinstance(rules, list | tuple):
        raise PolicyError("regex_rules", "Expected a list of {pattern, action, label}.")
    if len(rules) > MAX_REGEX_RULES:
        raise PolicyError("regex_rules", f"At most {MAX_REGEX_RULES} rules per policy.")
    out = []
    for number, rule in enumerate(rules, start=1):
        if not isinstance(rule, dict):
            raise PolicyError("regex_rules", f"Rule {number}: expected {{pattern, action, label}}.")
        unknown = set(rule) - {"pattern", "action", "label"}
        if unknown:
            raise PolicyError(
                "regex_rules", f"Rule {number}: unknown field(s) {', '.join(sorted(unknown))}."
            )
        pattern = rule.get("pattern")
        try:
            validate_pattern(pattern)
        except PatternError as exc:
            raise PolicyError("regex_rules", f"Rule {number}: {exc}.")
        try:
            action = normalize_action(rule.get("action", Action.REDACT), "regex_rules")
        except PolicyError as exc:
            raise PolicyError("regex_rules", f"Rule {number}: {exc.message}")
        try:
            label = normalize_label(rule.get("label") or "CUSTOM")
        except ValueError as exc:
            raise PolicyError("regex_rules", f"Rule {number}: {exc}.")
        out.append({"pattern": pattern, "action": action.value, "label": label})
    return out


def normalize_detectors(detectors: Any) -> dict[str, str]:
    """``{detector: action}``; ``off``, ``""`` and ``None`` drop a detector."""
    if detectors in (None, ""):
        return {}
    if not isinstance(detectors, dict):
        raise PolicyError("detectors", "Expected an object of detector → action.")
    out = {}
    for name, action in detectors.items():
        if name not in DETECTORS:
            raise PolicyError(
                "detectors", f"Unknown detector {name!r}: use {', '.join(DETECTORS)}."
            )
        if action in (None, "", "off"):
            continue
        out[name] = normalize_action(action, "detectors").value
    return {name: out[name] for name in DETECTORS if name in out}


def policy_spec(
    *,
    name: str = "",
    applies_to_input: bool = True,
    applies_to_output: bool = True,
    blocked_terms: Any = (),
    blocked_terms_action: Any = Action.BLOCK,
    regex_rules: Any = (),
    detectors: Any = None,
) -> PolicySpec:
    """A validated :class:`PolicySpec` from raw values (raises :class:`PolicyError`)."""
    return PolicySpec(
        name=name,
        applies_to_input=bool(applies_to_input),
        applies_to_output=bool(applies_to_output),
        blocked_terms=tuple(normalize_terms(list(blocked_terms or ()))),
        blocked_terms_action=normalize_action(blocked_terms_action, "blocked_terms_action"),
        regex_rules=tuple(
            RegexRule(r["pattern"], Action(r["action"]), r["label"])
            for r in normalize_regex_rules(list(regex_rules or ()))
        ),
        detectors={k: Action(v) for k, v in normalize_detectors(detectors or {}).items()},
    )
