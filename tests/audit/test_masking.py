"""Which values the audit trail keeps: names decide, references are not secrets."""

from __future__ import annotations

import pytest

from apps.audit.services import MASK, is_secret_field, mask_value


@pytest.mark.parametrize(
    "name",
    [
        "secret_hash",
        "previous_secret_hash",
        "signing_secret_encrypted",
        "webhook_secret_encrypted",
        "credential_encrypted",
        "credential_ref",
        "password",
        "access_token",
        "api_key",
        "clientSecret",
        "private_key",
    ],
)
def test_secret_names(name):
    assert is_secret_field(name)
    assert mask_value(name, "anything-at-all") == MASK


@pytest.mark.parametrize(
    "name", ["max_output_tokens", "prefix", "key", "name", "tpm", "limits_bypass", "keyword"]
)
def test_ordinary_names(name):
    assert not is_secret_field(name)
    assert mask_value(name, "shown") == "shown"


def test_empty_secrets_say_not_set():
    assert mask_value("credential_encrypted", "") == ""
    assert mask_value("webhook_secret_encrypted", None) is None


def test_references_are_shown_literals_in_a_reference_field_are_not():
    assert mask_value("credential_ref", "env:OPENAI_API_KEY") == "env:OPENAI_API_KEY"
    assert mask_value("credential_ref", "vault:secret/openai#key") == "vault:secret/openai#key"
    assert mask_value("credential_ref", "sk-live-oops") == MASK


def test_nested_json_keys_are_masked_eagerly():
    value = {
        "headers": {"Authorization": "Bearer x", "api-key": "y", "X-Trace": "on"},
        "items": [{"token": "z", "n": 1}],
        "keep": "me",
    }
    assert mask_value("options", value) == {
        "headers": {"Authorization": MASK, "api-key": MASK, "X-Trace": "on"},
        "items": [{"token": MASK, "n": 1}],
        "keep": "me",
    }
