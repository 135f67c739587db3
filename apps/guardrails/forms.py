"""The policy editor's form: lists and rules edited as text, one entry per line."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from apps.guardrails.detectors import DETECTORS
from apps.guardrails.engine import Action
from apps.guardrails.models import Policy
from apps.guardrails.validation import PolicyError, normalize_regex_rules, normalize_terms

DETECTOR_CHOICES = [("", "off"), *((a.value, a.value) for a in Action)]
RULE_SEPARATOR = "|"


def detector_field_name(detector: str) -> str:
    return f"detector_{detector}"


class LinesField(forms.CharField):
    """A list of strings edited one per line."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 60, "spellcheck": "false"})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(str(v) for v in value)
        return value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class RegexRulesField(forms.CharField):
    """``action | LABEL | pattern`` per line (the pattern may contain ``|``)."""

    widget = forms.Textarea(
        attrs={"rows": 5, "cols": 80, "spellcheck": "false", "class": "gw-mono"}
    )

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return "\n".join(
                f"{r.get('action', '')} {RULE_SEPARATOR} {r.get('label', '')} "
                f"{RULE_SEPARATOR} {r.get('pattern', '')}"
                for r in value
                if isinstance(r, dict)
            )
        return value

    def to_python(self, value: Any) -> list[dict[str, str]]:
        if isinstance(value, list | tuple):
            return list(value)
        rules = []
        text = super().to_python(value) or ""
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(RULE_SEPARATOR, 2)
            if len(parts) != 3 or not parts[2].strip():
                raise ValidationError(
                    f"Line {number}: write “action | LABEL | pattern”, "
                    "e.g. “redact | PROJECT | \\bPRJ-\\d{4}\\b”."
                )
            action, label, pattern = (p.strip() for p in parts)
            rules.append({"action": action, "label": label, "pattern": pattern})
        return rules

    def validate(self, value: list[dict[str, str]]) -> None:
        try:
            normalize_regex_rules(value)
        except PolicyError as exc:
            raise ValidationError(exc.message)


def _detector(name: str) -> forms.ChoiceField:
    return forms.ChoiceField(
        choices=DETECTOR_CHOICES, required=False, label=DETECTORS[name].description
    )


class PolicyForm(forms.ModelForm):
    # One select per detector (declared, so the admin's fieldsets may name them).
    detector_email = _detector("email")
    detector_phone = _detector("phone")
    detector_credit_card = _detector("credit_card")
    detector_iban = _detector("iban")
    detector_us_ssn = _detector("us_ssn")
    detector_secret_token = _detector("secret_token")

    blocked_terms = LinesField(
        required=False,
        help_text="One word or phrase per line; matched as whole words, in any case, with "
        "any spacing between words.",
    )
    regex_rules = RegexRulesField(
        required=False,
        label="Regex rules",
        help_text="One rule per line: <code>action | LABEL | pattern</code>, e.g. "
        "<code>redact | PROJECT | \\bPRJ-\\d{4}\\b</code>. Actions: block, redact, flag. "
        "Python syntax; use <code>(?i)</code> for any case. Patterns that can match spaces "
        "make streamed answers wait for up to their length before text is sent.",
    )

    class Meta:
        model = Policy
        fields = (
            "tenant",
            "key",
            "name",
            "description",
            "enabled",
            "applies_to_input",
            "applies_to_output",
            "blocked_terms",
            "blocked_terms_action",
            "regex_rules",
            "detectors",
        )
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2, "cols": 60}),
            "detectors": forms.HiddenInput,
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.detectors or {}
        for name in DETECTORS:
            field = self.fields.get(detector_field_name(name))
            if field is not None:
                field.initial = current.get(name, "")
        if "detectors" in self.fields:
            self.fields["detectors"].required = False

    def clean_blocked_terms(self) -> list[str]:
        try:
            return normalize_terms(self.cleaned_data.get("blocked_terms"))
        except PolicyError as exc:
            raise ValidationError(exc.message)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if detector_field_name("email") in self.fields:
            data["detectors"] = {
                name: data[detector_field_name(name)]
                for name in DETECTORS
                if data.get(detector_field_name(name))
            }
        tenant = data.get("tenant") or (self.instance.tenant if self.instance.pk else None)
        key = data.get("key")
        if key is not None and tenant is not None and key.tenant_id != tenant.pk:
            self.add_error("key", "This key belongs to another tenant.")
        return data
