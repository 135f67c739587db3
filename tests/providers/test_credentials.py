"""Provider credentials are encrypted at rest; references are resolved only when used."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from apps.core import crypto
from apps.core.secrets import SecretReferenceError
from apps.providers.models import Provider
from apps.providers.services import provider_create, provider_update

pytestmark = pytest.mark.django_db


def raw_credential(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credential_encrypted, credential_ref FROM providers_provider WHERE id = %s",
            [provider.pk],
        )
        return repr(cursor.fetchone())


def test_literal_credential_is_encrypted():
    provider = provider_create(name="p", kind="openai", credential="sk-live-very-secret")
    raw = raw_credential(provider)
    assert "sk-live-very-secret" not in raw
    assert Provider.objects.get(pk=provider.pk).get_credential() == "sk-live-very-secret"


def test_env_and_file_references_are_kept_as_references(monkeypatch, tmp_path):
    monkeypatch.setenv("UPSTREAM_KEY", "from-env")
    provider = provider_create(name="p", kind="openai", credential="env:UPSTREAM_KEY")
    assert "from-env" not in raw_credential(provider)
    assert provider.get_credential() == "from-env"
    secret_file = tmp_path / "key"
    secret_file.write_text("from-file\n")
    provider_update(provider=provider, credential=f"file:{secret_file}")
    assert provider.get_credential() == "from-file"
    monkeypatch.delenv("UPSTREAM_KEY")
    provider_update(provider=provider, credential="env:UPSTREAM_KEY")
    with pytest.raises(SecretReferenceError):
        provider.get_credential()


def test_update_without_credential_keeps_it():
    provider = provider_create(name="p", kind="openai", credential="keep-me")
    provider_update(provider=provider, base_url="http://127.0.0.1:1/v1")
    assert Provider.objects.get(pk=provider.pk).get_credential() == "keep-me"


def test_key_rotation_keeps_old_ciphertext_readable(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.GATEWAY_ENCRYPTION_KEYS = [old]
    crypto.reset_keys()
    token = crypto.encrypt("rotate-me")
    settings.GATEWAY_ENCRYPTION_KEYS = [new, old]
    crypto.reset_keys()
    assert crypto.decrypt(token) == "rotate-me"
    rotated = crypto.reencrypt(token)
    settings.GATEWAY_ENCRYPTION_KEYS = [new]
    crypto.reset_keys()
    assert crypto.decrypt(rotated) == "rotate-me"
    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(token)
    settings.GATEWAY_ENCRYPTION_KEYS = []
    crypto.reset_keys()
